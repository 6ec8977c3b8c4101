"""The fleet report (schema kcheck.fleet/1, kcheck/schemas/fleet-1.json) as a document, and as
text for an operator: not-ready hosts first with their fixes, ready hosts folded by kernel."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from itertools import groupby

from kcheck import __version__
from kcheck.core.render import align_columns
from kcheck.fleet.merge import Fleet, FleetHost, HostClass

SCHEMA = "kcheck.fleet/1"
FOLDED_NAMES = 8  # ready hosts named per group before "and N more"


def fleet_dict(fleet: Fleet) -> dict:
    class_of = {host.key: c.id for c in fleet.classes for host in c.hosts}
    return {
        "schema": SCHEMA,
        "kcheck_version": __version__,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exit_code": int(fleet.exit_code),
        "counts": fleet.counts,
        "hosts": [_host_dict(host, class_of[host.key]) for host in fleet.hosts],
        "replaced": [asdict(r) for r in fleet.replaced],
        "checks": fleet.check_counts(),
        "classes": [_class_dict(c) for c in fleet.classes],
        "matrix": [
            {
                "source": source,
                "target": target,
                "compatible": not problems,
                "problems": [asdict(p) for p in problems],
            }
            for (source, target), problems in fleet.matrix.items()
        ],
    }


def _host_dict(host: FleetHost, class_id: str) -> dict:
    report = host.report
    return {
        "key": host.key,
        "name": host.name,
        "hostname": report.hostname,
        "image": host.image,
        "report": report.path,
        "generated_at": host.generated_at,
        "mode": host.mode,
        "verdict": report.verdict,
        "kernel": report.release,
        "machine": report.machine,
        "criu": report.criu,
        "class": class_id,
        "failing": [vars(f) for f in host.failing],  # asdict's deep copy is 10x slower
    }


def _class_dict(host_class: HostClass) -> dict:
    example = host_class.example
    return {
        "id": host_class.id,
        "machine": example.machine,
        "kernel": example.release,
        "criu": example.criu,
        "verdict": example.verdict,
        "passing": host_class.passing,
        "hosts": [host.key for host in host_class.hosts],
    }


def render_json(fleet: Fleet) -> str:
    """One line: indenting makes json use its pure-Python encoder, 4x slower on a big fleet."""
    return json.dumps(fleet_dict(fleet)) + "\n"


def headline(fleet: Fleet) -> str:
    counts = fleet.counts
    return (
        f"kcheck fleet: {len(fleet.hosts)} hosts: {counts['ready']} ready, {counts['not-ready']} not ready, "
        f"{counts['undecided']} undecided (exit {int(fleet.exit_code)})"
    )


def _describe(host: FleetHost) -> str:
    report = host.report
    return f"kernel {report.release} ({report.machine or '?'}), criu {report.criu or 'none'}"


def render_text(fleet: Fleet, table: bool = False, color: bool = False) -> str:
    """Plain text; rich tables (for a terminal) with `table`, coloured with `color`."""
    if table:
        return _render_rich(fleet, color)
    lines = [headline(fleet)]
    lines += [f"  {r.key}: two reports, kept the newer {r.kept} over {r.dropped}" for r in fleet.replaced]
    for verdict, hosts in groupby(fleet.hosts, key=lambda h: h.report.verdict):
        members = list(hosts)
        lines += ["", f"{verdict.upper()} ({len(members)})"]
        if verdict == "ready":
            lines += _folded(members)
            continue
        for host in members:
            lines.append(f"  {host.key}: {_describe(host)}, {host.report.path}")
            for finding in host.failing:
                lines.append(f"    {finding.status.upper()} {finding.id}: {finding.detail}")
                if finding.remedy:
                    lines.append(f"      fix: {finding.remedy}")
    lines += ["", *render_matrix(fleet)]
    return "\n".join(lines) + "\n"


def _folded(hosts: list[FleetHost]) -> list[str]:
    """Ready hosts in groups of one kernel and criu: a fleet of thousands reads in a few lines."""
    groups: dict[str, list[str]] = {}
    for host in hosts:
        groups.setdefault(_describe(host), []).append(host.key)
    lines = []
    for described, keys in sorted(groups.items(), key=lambda item: -len(item[1])):
        more = len(keys) - FOLDED_NAMES
        named = ", ".join(keys[:FOLDED_NAMES]) + (f" and {more} more" if more > 0 else "")
        lines.append(f"  {len(keys)} on {described}: {named}")
    return lines


def render_matrix(fleet: Fleet) -> list[str]:
    """The classes, then which class a checkpoint taken on each can restore on."""
    rows = [("CLASS", "HOSTS", "VERDICT", "KERNEL")]
    rows += [(c.id, str(len(c.hosts)), c.example.verdict, _describe(c.hosts[0])) for c in fleet.classes]
    table, _ = align_columns(rows)
    lines = ["MIGRATION: classes of identical arch, kernel, criu, verdict and passing checks", *table, ""]
    lines.append("SOURCE -> TARGETS a checkpoint restores on (by the rules of kcheck cr compare)")
    for source in fleet.classes:
        targets = [t.id for t in fleet.classes if not fleet.matrix[(source.id, t.id)]]
        lines.append(f"  {source.id} -> {', '.join(targets) or 'none'}")
    return lines


def _render_rich(fleet: Fleet, color: bool) -> str:
    import shutil

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    style = {"ready": "green", "not-ready": "bold red", "undecided": "magenta"}
    findings = Table(title=headline(fleet), title_justify="left")
    for column in ("host", "verdict", "check", "detail"):
        findings.add_column(column, overflow="fold")
    for host in fleet.hosts:
        verdict = host.report.verdict
        for finding in host.failing:
            fix = f"\n[dim]fix: {escape(finding.remedy)}[/dim]" if finding.remedy else ""
            findings.add_row(  # a report's text is data, never rich markup
                f"{escape(host.key)}\n[dim]{escape(_describe(host))}[/dim]",
                f"[{style[verdict]}]{verdict}[/]",
                escape(f"{finding.status.upper()} {finding.id}"),
                escape(finding.detail) + fix,
            )
    ready = Table(title="ready, by kernel and criu", title_justify="left")
    ready.add_column("hosts", overflow="fold")
    for line in _folded([h for h in fleet.hosts if h.report.verdict == "ready"]):
        ready.add_row(escape(line.strip()))
    matrix = Table(title="source class -> target class: does a checkpoint restore?", title_justify="left")
    matrix.add_column("class")
    matrix.add_column("hosts")
    matrix.add_column("kernel", overflow="fold")
    for target in fleet.classes:
        matrix.add_column(target.id)
    for source in fleet.classes:
        marks = ["[red]no[/]" if fleet.matrix[(source.id, t.id)] else "[green]yes[/]" for t in fleet.classes]
        verdict = source.example.verdict
        described = f"{escape(_describe(source.hosts[0]))}, [{style[verdict]}]{verdict}[/]"
        matrix.add_row(source.id, str(len(source.hosts)), described, *marks)
    console = Console(force_terminal=color, no_color=not color, width=shutil.get_terminal_size().columns)
    with console.capture() as capture:
        for r in fleet.replaced:
            console.print(escape(f"{r.key}: two reports, kept the newer {r.kept} over {r.dropped}"))
        console.print(findings if any(h.failing for h in fleet.hosts) else headline(fleet))
        console.print(ready)
        console.print(matrix)
    return capture.get()
