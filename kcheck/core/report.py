"""The probe report document (schema kcheck.probe/1, kcheck/schemas/probe-1.json): the Report
model as JSON, and back. `kcheck probe --format json` writes it; `--boot` reads the guest's,
`kcheck cr compare` reads two, `kcheck fleet report` thousands, and build-kernel keeps the
verify report.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from kcheck import __version__
from kcheck.core.result import SCHEMA, CheckResult, Evidence, Fix, Report, Status
from kcheck.errors import KcheckError

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from typing import Any

    from kcheck.core.files import FilePath

SCHEMA_FILE = "probe-1"


def report_dict(report: Report) -> dict:
    counts = Counter(str(c.status) for c in report.checks)
    return {
        "schema": SCHEMA,
        "kcheck_version": __version__,
        "mode": report.mode,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": os.uname().nodename,
        "name": report.name,
        "verdict": str(report.verdict),
        "exit_code": int(report.exit_code),
        "kernel": report.kernel,
        "tools": report.tools,
        "summary": {status.value: counts.get(status.value, 0) for status in Status},
        "checks": [
            {
                "id": c.id,
                "title": c.title,
                "required": c.required,
                "status": str(c.status),
                "evidence": str(c.evidence),
                "detail": c.detail,
                "fix": None
                if c.fix is None
                else {"patchset": c.fix.patchset, "min_version": c.fix.min_version},
                "remedy": c.remedy,
            }
            for c in report.checks
        ],
    }


def report_from_dict(data: dict) -> Report:
    """The inverse of the JSON renderer, for reports another kcheck wrote (e.g. in a VM).

    Raises KeyError, TypeError or ValueError on anything that is not such a report.
    """
    if data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} report")
    checks = [
        CheckResult(
            id=str(c["id"]),
            title=str(c["title"]),
            required=bool(c["required"]),
            status=Status(c["status"]),
            evidence=Evidence(c["evidence"]),
            detail=str(c["detail"]),
            fix=Fix(**c["fix"]) if c.get("fix") else None,
            remedy=c.get("remedy"),
        )
        for c in data["checks"]
    ]
    return Report(
        kernel=dict(data["kernel"]),
        checks=checks,
        mode=str(data["mode"]),
        tools=dict(data["tools"]),
        name=data.get("name"),
    )


def parse_report(data: Any) -> Report:
    """A report another kcheck wrote, checked against its schema first; ValueError saying what
    is wrong with it otherwise."""
    if problem := report_problem(data):
        raise ValueError(problem)
    return report_from_dict(data)


def report_problem(data: Any, whole_schema: bool = True) -> str | None:
    """Why `data` is not a probe report: checked by the whole schema, or with `whole_schema`
    False by model_problem (for reading many at once); None when it is one."""
    from kcheck.core.validate import first_problem

    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return f"not a {SCHEMA} probe report"
    if problem := first_problem(data, SCHEMA_FILE) if whole_schema else model_problem(data):
        return f"a malformed {SCHEMA} report ({problem})"
    return None


_STATUSES = tuple(Status)  # tuples: a list or dict from a bad report must not raise on `in`
_EVIDENCE = tuple(Evidence)
_OPTIONAL_TEXT = ("hostname", "generated_at")
_FIX_KEYS = frozenset(("patchset", "min_version"))


def model_problem(data: dict[str, Any]) -> str | None:
    """The fast structural check (types and required fields) of what the Report model and the
    fleet read, for reading thousands of reports: the schema's whole walk costs ~3 ms each.
    It accepts everything the schema accepts, and nothing report_from_dict or the fleet cannot
    read; the tests check both against jsonschema."""
    if data.get("schema") != SCHEMA:
        return f"$.schema is not {SCHEMA}"
    if data.get("mode") not in ("live", "offline", "vm"):
        return "$.mode is not live, offline or vm"
    kernel, tools, checks = data.get("kernel"), data.get("tools"), data.get("checks")
    if not isinstance(kernel, dict) or not isinstance(kernel.get("release"), str):
        return "$.kernel.release is not a string"
    if not _str_or_none(kernel, "machine", required=True):
        return "$.kernel.machine is not a string or null"
    image = kernel.get("image")
    if image is not None and not (isinstance(image, dict) and isinstance(image.get("root"), str)):
        return "$.kernel.image.root is not a string"
    if not isinstance(tools, dict) or not _str_or_none(tools, "criu"):
        return "$.tools.criu is not a string or null"
    if not _str_or_none(data, "name") or not all(isinstance(data.get(k, ""), str) for k in _OPTIONAL_TEXT):
        return "$.name, $.hostname or $.generated_at is not a string"
    if not isinstance(checks, list):
        return "$.checks is not an array"
    # Straight-line, with a missing key or a check that is not an object caught once: this runs
    # for every check of every report.
    number = 0
    try:
        for number, check in enumerate(checks):
            fix, remedy = check["fix"], check["remedy"]
            if not (
                isinstance(check["id"], str)
                and isinstance(check["title"], str)
                and isinstance(check["detail"], str)
                and type(check["required"]) is bool
                and check["status"] in _STATUSES
                and check["evidence"] in _EVIDENCE
                and (remedy is None or isinstance(remedy, str))
                and (fix is None or _fix_ok(fix))
            ):
                return _check_problem(number)
    except (KeyError, TypeError):
        return _check_problem(number)
    return None


def _check_problem(number: int) -> str:
    return f"$.checks[{number}] lacks a field of a check, or has one of the wrong type"


def _str_or_none(data: dict[str, Any], key: str, required: bool = False) -> bool:
    if key not in data:
        return not required
    return data[key] is None or isinstance(data[key], str)


def _fix_ok(fix: Any) -> bool:
    if not isinstance(fix, dict) or fix.keys() != _FIX_KEYS:
        return False
    patchset, min_version = fix["patchset"], fix["min_version"]
    return (patchset is None or isinstance(patchset, str)) and (
        min_version is None or isinstance(min_version, str)
    )


def read_report_document(path: FilePath, whole_schema: bool = True) -> dict[str, Any]:
    """A probe report file's document, checked (report_problem); bad input (exit 3) naming
    the file when it is not one."""
    from kcheck.core.files import read_json

    fix = "make it with `kcheck probe --format json --output FILE`"
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise KcheckError(f"{path}: no such file; {fix}") from None
    except (OSError, ValueError) as exc:
        raise KcheckError(f"{path}: not readable JSON ({exc}); {fix}") from None
    if problem := report_problem(data, whole_schema):
        raise KcheckError(f"{path}: {problem}; {fix}")
    return data
