"""Renderers: one Report, several formats operators and pipelines read."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence

from kcheck.core.report import report_dict
from kcheck.core.result import CheckResult, Report, Status

STATUS_LABEL = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.UNKNOWN: "UNKNOWN", Status.SKIP: "SKIP"}
NPD_MAX = 80


def _label(check: CheckResult) -> str:
    """FAIL on an optional check is a warning: it does not change the verdict."""
    if check.status == Status.FAIL and not check.required:
        return "WARN"
    return STATUS_LABEL[check.status]


def _summary(report: Report) -> str:
    required = [c for c in report.checks if c.required]
    passed = sum(c.status == Status.PASS for c in required)
    warnings = sum(c.status != Status.PASS and not c.required for c in report.checks)
    text = f"{passed}/{len(required)} required checks pass"
    return text + (f", {warnings} optional not passing" if warnings else "")


def _headline(report: Report) -> str:
    kernel = report.kernel
    machine = f" ({kernel['machine']})" if kernel.get("machine") else ""
    text = f"kcheck probe: kernel {kernel.get('release')}{machine}, mode {report.mode}"
    image = kernel.get("image")
    if isinstance(image, dict):
        text += f", image {image.get('root')}"
        if image.get("other_releases"):
            text += f" (other kernels there: {', '.join(image['other_releases'])})"
    return text


def align_columns(rows: Sequence[Sequence[str]]) -> tuple[list[str], int]:
    """Plain-text table: every column but the last padded to its widest cell. Also returns
    the last column's indent, for continuation lines under it."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    return lines, sum(widths) + 2 * len(widths)


def render_text(report: Report, table: bool = False, color: bool = False) -> str:
    """Plain aligned text; a rich table (for a terminal) with `table`, coloured with `color`."""
    if table:
        return _render_rich(report, color)
    rows = [("STATUS", "CHECK", "REQUIRED", "EVIDENCE", "DETAIL")]
    rows += [
        (_label(c), c.id, "yes" if c.required else "no", str(c.evidence), c.detail) for c in report.checks
    ]
    table, indent = align_columns(rows)
    lines = [_headline(report), "", table[0]]
    for line, check in zip(table[1:], report.checks, strict=True):
        lines.append(line)
        if check.remedy:
            lines.append(" " * indent + f"fix: {check.remedy}")
    lines += ["", f"verdict: {report.verdict} (exit {int(report.exit_code)}): {_summary(report)}"]
    return "\n".join(lines) + "\n"


def _render_rich(report: Report, color: bool) -> str:
    import shutil

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    style = {"PASS": "green", "FAIL": "bold red", "WARN": "yellow", "UNKNOWN": "magenta", "SKIP": "dim"}
    table = Table(title=escape(_headline(report)), title_justify="left")
    for column in ("status", "check", "req", "evidence", "detail"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        label = _label(check)
        # what a check reports ("/[aio]" mappings, paths) is text, never rich markup
        detail = escape(check.detail) + (f"\n[dim]fix: {escape(check.remedy)}[/dim]" if check.remedy else "")
        table.add_row(
            f"[{style[label]}]{label}[/]",
            check.id,
            "yes" if check.required else "no",
            str(check.evidence),
            detail,
        )
    verdict_style = {"ready": "bold green", "not-ready": "bold red", "undecided": "bold magenta"}
    # Without colour rich still draws the table, with no escape codes at all.
    console = Console(force_terminal=color, no_color=not color, width=shutil.get_terminal_size().columns)
    with console.capture() as capture:
        console.print(table)
        console.print(
            f"verdict: [{verdict_style[report.verdict]}]{report.verdict}[/] "
            f"(exit {int(report.exit_code)}): {_summary(report)}"
        )
    return capture.get()


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2) + "\n"


def render_junit(report: Report) -> str:
    """One testcase per check: required FAIL is a failure, required UNKNOWN an error
    (the gate is undecided), and anything that does not decide the verdict is skipped."""
    import xml.etree.ElementTree as ET

    counts = Counter()
    suite = ET.Element("testsuite", name="kcheck.probe", hostname=os.uname().nodename)
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("kernel.release", report.kernel.get("release")),
        ("mode", report.mode),
        ("verdict", report.verdict),
    ):
        ET.SubElement(properties, "property", name=name, value=str(value))
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"kcheck.{check.id.split('.')[0]}", name=check.id)
        message = check.detail + (f" | fix: {check.remedy}" if check.remedy else "")
        if check.status == Status.FAIL and check.required:
            ET.SubElement(case, "failure", message=message, type="fail").text = message
            counts["failures"] += 1
        elif check.status in (Status.UNKNOWN, Status.SKIP) and check.required:
            ET.SubElement(case, "error", message=message, type=str(check.status)).text = message
            counts["errors"] += 1
        elif check.status != Status.PASS:
            ET.SubElement(case, "skipped", message=f"{_label(check).lower()} (optional): {message}")
            counts["skipped"] += 1
        ET.SubElement(case, "system-out").text = f"evidence={check.evidence}: {check.detail}"
    for key in ("failures", "errors", "skipped"):
        suite.set(key, str(counts[key]))
    suite.set("tests", str(len(report.checks)))
    root = ET.Element("testsuites", name="kcheck", tests=str(len(report.checks)))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _prom_label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(report: Report) -> str:
    release = _prom_label(report.kernel.get("release"))
    lines = [
        "# HELP kcheck_check_pass 1 when the kcheck probe check passed, else 0 (see status label).",
        "# TYPE kcheck_check_pass gauge",
    ]
    for check in report.checks:
        labels = (
            f'check="{_prom_label(check.id)}",required="{str(check.required).lower()}",'
            f'status="{check.status}",evidence="{check.evidence}"'
        )
        lines.append(f"kcheck_check_pass{{{labels}}} {int(check.status == Status.PASS)}")
    lines += [
        "# HELP kcheck_ready 1 when every required check passed (kernel ready for CRIU C/R).",
        "# TYPE kcheck_ready gauge",
        f'kcheck_ready{{verdict="{report.verdict}",release="{release}",mode="{report.mode}"}} '
        f"{int(report.verdict == 'ready')}",
        "# HELP kcheck_probe_exit_code Exit code of the last kcheck probe (0 ready, 1 not, 2 undecided).",
        "# TYPE kcheck_probe_exit_code gauge",
        f"kcheck_probe_exit_code {int(report.exit_code)}",
        "# HELP kcheck_probe_timestamp_seconds When the last kcheck probe ran.",
        "# TYPE kcheck_probe_timestamp_seconds gauge",
        f"kcheck_probe_timestamp_seconds {time.time():.0f}",
    ]
    return "\n".join(lines) + "\n"


def render_npd(report: Report) -> str:
    """node-problem-detector: one line of at most 80 characters."""
    failed = [c.id for c in report.checks if c.required and c.status == Status.FAIL]
    undecided = [c.id for c in report.checks if c.required and c.status not in (Status.PASS, Status.FAIL)]
    if failed:
        line = f"CRIU not ready, failed: {', '.join(failed)}"
    elif undecided:
        line = f"CRIU readiness undecided: {', '.join(undecided)}"
    else:
        line = f"CRIU ready: {_summary(report)}"
    return npd_line(line)


def npd_line(line: str) -> str:
    """One line, at most NPD_MAX characters, as node-problem-detector shows it."""
    line = " ".join(line.split())
    if len(line) > NPD_MAX:
        line = line[: NPD_MAX - 3] + "..."
    return line + "\n"


def _gh_escape(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_github(report: Report) -> str:
    """Workflow commands: ::error for required failures, ::warning for the rest not passing."""
    lines = []
    for check in report.checks:
        if check.status == Status.PASS or (check.status == Status.SKIP and not check.required):
            continue
        command = "error" if check.required and check.status == Status.FAIL else "warning"
        title = _gh_escape(f"kcheck {check.id} {_label(check)}", property_value=True)
        message = check.detail + (f" | fix: {check.remedy}" if check.remedy else "")
        lines.append(f"::{command} title={title}::{_gh_escape(message)}")
    lines.append(f"::notice title=kcheck verdict::{report.verdict}: {_gh_escape(_summary(report))}")
    return "\n".join(lines) + "\n"


def github_step_summary(report: Report) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY."""
    lines = [
        f"### kcheck probe: {report.verdict}",
        "",
        f"Kernel `{report.kernel.get('release')}`, mode {report.mode}: {_summary(report)}.",
        "",
        "| status | check | required | evidence | detail |",
        "|---|---|---|---|---|",
    ]
    for c in report.checks:
        detail = c.detail.replace("|", "\\|") + (f" (fix: {c.remedy})" if c.remedy else "")
        lines.append(
            f"| {_label(c)} | `{c.id}` | {'yes' if c.required else 'no'} | {c.evidence} | {detail} |"
        )
    return "\n".join(lines) + "\n\n"


FORMATS: dict[str, Callable[[Report], str]] = {
    "text": render_text,
    "json": render_json,
    "junit": render_junit,
    "prometheus": render_prometheus,
    "npd": render_npd,
    "github": render_github,
}
