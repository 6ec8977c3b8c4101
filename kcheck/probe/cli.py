"""`kcheck probe`: argument parsing only; the work is imported when the command runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kcheck.patchsets.catalog import Patchset
    from kcheck.probe.observe import ProbeContext

FORMAT_NAMES = ("text", "json", "junit", "prometheus", "npd", "github")


def register(jobs) -> None:
    parser = jobs.add_parser(
        "probe",
        help="decide from live evidence whether this kernel is ready for CRIU C/R",
        description="Probe the running kernel for the bugs that break CRIU checkpoint/restore. "
        "Exit 0 ready, 1 not ready, 2 undecided, 3 bad input.",
    )
    parser.add_argument("--format", choices=FORMAT_NAMES, default="text", help="output format")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the report here (atomically)")
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only these checks (repeatable; globs like 'config.*')",
    )
    parser.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="ID",
        help="make an optional check required (repeatable)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="ID",
        help="make a required check optional: it still runs and warns (repeatable)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="kernel config to check (default: /proc/config.gz, /boot/config-R, ...)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="limit for each live probe (default 10)",
    )
    parser.add_argument("--catalog", type=Path, metavar="DIR", help="patchset catalog directory")
    parser.set_defaults(handler=run)


def probe_setup(
    catalog_dir: Path | None = None, config: Path | None = None, timeout: float = 10.0
) -> tuple[dict[str, Patchset], ProbeContext]:
    """The catalog and the context of a probe of the running kernel (`kcheck cr` pre-flight too)."""
    from kcheck.patchsets.catalog import load_catalog
    from kcheck.probe.checks import CHECK_IDS
    from kcheck.probe.observe import ProbeContext

    catalog = load_catalog(catalog_dir, CHECK_IDS)
    ctx = ProbeContext(
        release=os.uname().release,
        config_path=config,
        timeout=timeout,
        ranges=tuple(
            (name, str(p.needed_from) if p.needed_from else None, str(p.needed_below))
            for name, p in catalog.items()
        ),
    )
    if config is not None:
        ctx.observe("config")  # a bad --config is bad input: fail before any probe runs
    return catalog, ctx


def run(args: argparse.Namespace) -> int:
    from kcheck.core.output import append_text, write_atomic
    from kcheck.core.render import FORMATS, github_step_summary
    from kcheck.errors import KcheckError
    from kcheck.probe.engine import run_probe, select_checks

    if args.timeout <= 0:
        raise KcheckError(f"--timeout {args.timeout}: must be a positive number of seconds")
    specs = select_checks(args.check, args.require, args.ignore)
    catalog, ctx = probe_setup(args.catalog, args.config, args.timeout)
    report = run_probe(specs, ctx, catalog)
    color = (
        args.format == "text"
        and args.output is None
        and sys.stdout.isatty()
        and not os.environ.get("NO_COLOR")
    )
    text = FORMATS[args.format](report, color)
    if args.output is not None:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if args.format == "github" and summary_path:
        append_text(Path(summary_path), github_step_summary(report))
    return int(report.exit_code)
