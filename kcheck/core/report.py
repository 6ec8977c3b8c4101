"""The probe report document (schema kcheck.probe/1, kcheck/schemas/probe-1.json): the Report
model as JSON, and back. `kcheck probe --format json` writes it; `--boot` reads the guest's,
`kcheck cr compare` reads two, and build-kernel keeps the verify report.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kcheck import __version__
from kcheck.core.result import SCHEMA, CheckResult, Evidence, Fix, Report, Status
from kcheck.errors import KcheckError

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
    from kcheck.core.validate import first_problem

    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} probe report")
    if problem := first_problem(data, SCHEMA_FILE):
        raise ValueError(f"a malformed {SCHEMA} report ({problem})")
    return report_from_dict(data)


def read_report(path: Path) -> tuple[Report, dict[str, Any]]:
    """A probe report file: the model, and the document as written (its hostname and time);
    bad input (exit 3) naming the file when it is not one."""
    from kcheck.core.files import read_json

    fix = "make it with `kcheck probe --format json --output FILE`"
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise KcheckError(f"{path}: no such file; {fix}") from None
    except (OSError, ValueError) as exc:
        raise KcheckError(f"{path}: not readable JSON ({exc}); {fix}") from None
    try:
        return parse_report(data), data
    except ValueError as exc:
        raise KcheckError(f"{path}: {exc}; {fix}") from None
