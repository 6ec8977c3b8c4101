"""The fleet report as one self-contained HTML file: inline CSS, no script, nothing fetched,
so it opens from a CI artifact or a mail attachment as it is."""

from __future__ import annotations

from html import escape

from kcheck.fleet.merge import Finding, Fleet
from kcheck.fleet.render import headline

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.bar { display: flex; height: 1.6em; width: 100%; border: 1px solid #999; }
.bar span { color: #fff; text-align: center; white-space: nowrap; overflow: hidden; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th.check { writing-mode: vertical-rl; transform: rotate(180deg); font-weight: normal; }
td.cell { width: 1.2em; padding: 0; }
.ready, .pass { background: #2e7d32; color: #fff; }
.not-ready, .fail { background: #c62828; color: #fff; }
.undecided, .unknown { background: #6a1b9a; color: #fff; }
.skip, .absent { background: #e0e0e0; color: #222; }
.yes { background: #c8e6c9; } .no { background: #ffcdd2; }
.fix { color: #555; }
"""


def render_html(fleet: Fleet) -> str:
    title = escape(headline(fleet))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{STYLE}</style></head><body>",
        f'<h1 id="headline">{title}</h1>',
        _summary_bar(fleet),
        _replaced(fleet),
        _not_ready(fleet),
        _grid(fleet),
        _matrix(fleet),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_bar(fleet: Fleet) -> str:
    total = max(len(fleet.hosts), 1)
    spans = "".join(
        f'<span class="{verdict}" style="width:{100 * count / total:.2f}%" '
        f'title="{count} {verdict}">{count} {verdict}</span>'
        for verdict, count in fleet.counts.items()
        if count
    )
    return f'<div class="bar" id="summary">{spans}</div>'


def _replaced(fleet: Fleet) -> str:
    items = "".join(
        f"<li>{escape(r.key)}: two reports, kept the newer {escape(r.kept)} over {escape(r.dropped)}</li>"
        for r in fleet.replaced
    )
    return f'<ul id="replaced">{items}</ul>' if items else ""


def _not_ready(fleet: Fleet) -> str:
    rows = []
    cells_of: dict[Finding, str] = {}  # hosts share findings: each is escaped once
    for host in fleet.hosts:
        if host.report.verdict == "ready":
            continue
        key, verdict = escape(host.key), escape(host.report.verdict)
        for finding in host.failing:
            cells = cells_of.get(finding)
            if cells is None:
                cells = cells_of[finding] = _finding_cells(finding)
            rows.append(f'<tr class="finding"><td>{key}</td><td class="{verdict}">{verdict}</td>{cells}</tr>')
    if not rows:
        return '<h2>Not ready</h2><p id="not-ready">Every host is ready.</p>'
    head = "<tr><th>host</th><th>verdict</th><th>status</th><th>check</th><th>detail and fix</th></tr>"
    return f'<h2>Not ready and undecided</h2><table id="not-ready">{head}{"".join(rows)}</table>'


def _finding_cells(finding: Finding) -> str:
    fix = f'<div class="fix">fix: {escape(finding.remedy)}</div>' if finding.remedy else ""
    return (
        f'<td class="{escape(finding.status)}">{escape(finding.status)}</td>'
        f"<td>{escape(finding.id)}</td><td>{escape(finding.detail)}{fix}</td>"
    )


def _grid(fleet: Fleet) -> str:
    """Hosts x checks, each cell coloured by the check's status on that host."""
    checks = sorted(fleet.check_counts())
    head = "<tr><th>host</th><th>verdict</th>" + "".join(
        f'<th class="check">{escape(check)}</th>' for check in checks
    )
    rows = []
    cells_of: dict[tuple, str] = {}  # one row's cells per kind of statuses
    for host in fleet.hosts:
        cells = cells_of.get(host.status_pairs)
        if cells is None:
            cells = cells_of[host.status_pairs] = _status_cells(host.report.statuses, checks)
        verdict = escape(host.report.verdict)
        rows.append(
            f'<tr class="host"><td>{escape(host.key)}</td><td class="{verdict}">{verdict}</td>{cells}</tr>'
        )
    return f'<h2>Hosts and checks</h2><table id="grid">{head}</tr>{"".join(rows)}</table>'


def _status_cells(statuses: dict[str, str], checks: list[str]) -> str:
    return "".join(
        f'<td class="cell {escape(statuses.get(check, "absent"))}" '
        f'title="{escape(check)}: {escape(statuses.get(check, "not run"))}"></td>'
        for check in checks
    )


def _matrix(fleet: Fleet) -> str:
    """Classes, then source class (rows) x target class (columns): can a checkpoint move?"""
    classes = "".join(
        f'<tr><td>{c.id}</td><td>{len(c.hosts)}</td><td class="{escape(c.example.verdict)}">'
        f"{escape(c.example.verdict)}</td><td>{escape(c.example.machine or '?')}</td>"
        f"<td>{escape(c.example.release)}</td><td>{escape(c.example.criu or 'none')}</td></tr>"
        for c in fleet.classes
    )
    head = "<tr><th>source \\ target</th>" + "".join(f"<th>{c.id}</th>" for c in fleet.classes) + "</tr>"
    rows = []
    for source in fleet.classes:
        cells = []
        for target in fleet.classes:
            problems = fleet.matrix[(source.id, target.id)]
            reasons = escape("; ".join(p.message for p in problems)) or "compatible"
            mark = "no" if problems else "yes"
            cells.append(f'<td class="pair {mark}" title="{reasons}">{mark}</td>')
        rows.append(f"<tr><th>{source.id}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Migration classes</h2>"
        '<table id="classes"><tr><th>class</th><th>hosts</th><th>verdict</th><th>arch</th>'
        f"<th>kernel</th><th>criu</th></tr>{classes}</table>"
        f'<table id="matrix">{head}{"".join(rows)}</table>'
    )
