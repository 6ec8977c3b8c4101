"""kcheck cr compare: can a checkpoint taken on the source host be restored on the target?

Both inputs are `kcheck probe --format json` reports. The rules: the target is ready;
every check that passes on the source passes on the target; the target runs the same
architecture and a kernel at least as new; its criu is at least as new as the source's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kcheck.core import channel
from kcheck.core.files import FilePath
from kcheck.core.release import parse_release
from kcheck.core.report import read_report_document
from kcheck.core.result import ExitCode, Status, decide

COMPARE_SCHEMA = "kcheck.cr.compare/1"


@dataclass(frozen=True)
class HostReport:
    """What compare reads from one probe report."""

    path: str
    hostname: str
    verdict: str
    release: str
    machine: str | None
    criu: str | None
    statuses: dict[str, str]  # check id -> status
    details: dict[str, str]


@dataclass(frozen=True)
class Problem:
    """One reason the checkpoint would not restore on the target."""

    rule: str  # target-ready, check, kernel, criu
    message: str
    check: str | None = None


# How a status reads in a sentence ("... but fails on the target").
STATUS_WORD = {
    Status.PASS: "passing",
    Status.FAIL: "failing",
    Status.UNKNOWN: "unknown",
    Status.SKIP: "skipped",
}


def load_report(path: Path) -> HostReport:
    """A probe JSON report, read by the one report reader; bad input (exit 3) naming the file."""
    return host_report(path, read_report_document(path))


def host_report(path: FilePath, document: dict[str, Any]) -> HostReport:
    """What the compare rules read of a checked probe report document (read_report_document);
    `kcheck fleet report` reads thousands of them this way, without building each Report."""
    kernel, checks = document["kernel"], document["checks"]
    criu = document["tools"].get("criu")
    return HostReport(
        path=str(path),
        hostname=str(document.get("hostname", "?")),
        verdict=str(decide(c["status"] for c in checks if c["required"])),
        release=kernel["release"],
        machine=kernel.get("machine"),
        criu=criu,
        statuses={c["id"]: c["status"] for c in checks},
        details={c["id"]: c["detail"] for c in checks},
    )


def compare(source: HostReport, target: HostReport) -> list[Problem]:
    problems = []
    if target.verdict != "ready":
        problems.append(
            Problem("target-ready", f"target is {target.verdict}, not ready: run kcheck probe there")
        )
    for check, status in source.statuses.items():
        on_target = target.statuses.get(check)
        if status == Status.PASS and on_target != Status.PASS:
            detail = f": {target.details[check]}" if on_target else ""
            problems.append(
                Problem(
                    "check",
                    f"{check} passes on the source but "
                    f"{f'is {STATUS_WORD[on_target]}' if on_target else 'was not run'} on the target{detail}",
                    check,
                )
            )
    problems += _kernel_problems(source, target)
    problems += _criu_problems(source, target)
    return problems


def _kernel_problems(source: HostReport, target: HostReport) -> list[Problem]:
    for host, name in ((source, "source"), (target, "target")):
        if host.machine is None:
            return [
                Problem("kernel", f"the {name} report has no architecture (offline): probe the booted host")
            ]
    if source.machine != target.machine:
        return [Problem("kernel", f"architectures differ: source {source.machine}, target {target.machine}")]
    old, new = parse_release(source.release), parse_release(target.release)
    if old is None or new is None:
        unreadable = source.release if old is None else target.release
        return [Problem("kernel", f"kernel release {unreadable!r} has no version to compare")]
    if new.version < old.version:
        return [
            Problem(
                "kernel",
                f"target kernel {new.version} is older than source kernel {old.version}: "
                "the images may use features it lacks",
            )
        ]
    return []


def _criu_problems(source: HostReport, target: HostReport) -> list[Problem]:
    for host, name in ((source, "source"), (target, "target")):
        if host.criu is None:
            return [
                Problem("criu", f"no criu version in the {name} report: install criu there and probe as root")
            ]
    from packaging.version import InvalidVersion, Version

    try:
        old, new = Version(str(source.criu)), Version(str(target.criu))
    except InvalidVersion:
        return [Problem("criu", f"criu versions {source.criu!r} and {target.criu!r} cannot be compared")]
    if new < old:
        return [Problem("criu", f"target criu {target.criu} is older than source criu {source.criu}")]
    return []


def exit_code(problems: list[Problem]) -> ExitCode:
    return ExitCode.NOT_READY if problems else ExitCode.READY


def _host(report: HostReport) -> dict[str, Any]:
    return {
        "report": report.path,
        "hostname": report.hostname,
        "verdict": report.verdict,
        "kernel": report.release,
        "machine": report.machine,
        "criu": report.criu,
    }


def render_json(source: HostReport, target: HostReport, problems: list[Problem]) -> str:
    return (
        json.dumps(
            {
                "schema": COMPARE_SCHEMA,
                "compatible": not problems,
                "exit_code": int(exit_code(problems)),
                "source": _host(source),
                "target": _host(target),
                "problems": [asdict(p) for p in problems],
            },
            indent=2,
        )
        + "\n"
    )


def render_text(source: HostReport, target: HostReport, problems: list[Problem]) -> str:
    lines = ["kcheck cr compare: can a checkpoint taken on the source restore on the target?"]
    lines += [
        f"  {label} {host.hostname}: kernel {host.release} ({host.machine}), "
        f"criu {host.criu or 'unknown'}, {host.verdict}"
        for label, host in (("source", source), ("target", target))
    ]
    lines += [f"  FAIL {p.rule}: {p.message}" for p in problems]
    if problems:
        lines.append(f"verdict: not compatible (exit 1): {len(problems)} problem(s)")
    else:
        lines.append("verdict: compatible (exit 0)")
    return "\n".join(lines) + "\n"


def run_compare(source_path: Path, target_path: Path, output_format: str) -> int:
    source, target = load_report(source_path), load_report(target_path)
    problems = compare(source, target)
    render = render_json if output_format == "json" else render_text
    channel.say(render(source, target, problems), end="")
    return int(exit_code(problems))
