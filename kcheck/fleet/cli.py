"""`kcheck fleet`: its arguments and handler; the work is imported when the command runs."""

from __future__ import annotations

import argparse

from kcheck.core.args import path_arg

FORMATS = ("text", "json", "html")


def register(jobs) -> None:
    parser = jobs.add_parser(
        "fleet",
        help="merge many hosts' probe reports into one fleet view",
        description="Work on the probe reports of many hosts (from Ansible, Kubernetes or by hand).",
    )
    actions = parser.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    report = actions.add_parser(
        "report",
        help="who is ready, why the others are not, and where a checkpoint can move",
        description="Merge `kcheck probe --format json` reports, one per host (a later report "
        "of the same host replaces an earlier one). Exit 0 all ready, 1 some not ready, "
        "2 some undecided and none not ready, 3 bad input.",
    )
    report.add_argument(
        "paths",
        nargs="+",
        type=path_arg,
        metavar="REPORT.json|DIR",
        help="probe reports, or directories of them (*.json)",
    )
    report.add_argument("--format", choices=FORMATS, default="text", help="output format")
    report.add_argument(
        "--output", type=path_arg, metavar="FILE", help="write the report here (a regular file atomically)"
    )
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from kcheck.core.output import emit, text_style
    from kcheck.fleet.merge import load_fleet
    from kcheck.fleet.render import render_json, render_text

    fleet = load_fleet(args.paths)
    if args.format == "html":
        from kcheck.fleet.html import render_html

        text = render_html(fleet)
    elif args.format == "json":
        text = render_json(fleet)
    else:
        table, color = text_style(args.output)
        text = render_text(fleet, table=table, color=color)
    emit(args.output, text)
    return int(fleet.exit_code)
