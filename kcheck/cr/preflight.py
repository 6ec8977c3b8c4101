"""The pre-flight: the probe's required checks, in-process, before any checkpoint or restore.

A checkpoint on a kernel with the overlayfs or AIO bugs loses the container, so kcheck
refuses to run one there unless told loudly not to check.
"""

from __future__ import annotations

from pathlib import Path

from kcheck.core import channel
from kcheck.core.render import STATUS_LABEL
from kcheck.core.result import Report, Status, Verdict
from kcheck.errors import Refused

# External C/R runs the criu on PATH itself: it must pass its own check and a real trial.
EXTERNAL_REQUIRES = ["criu.check", "criu.trial"]


def run_preflight(action: str, external: bool, config: Path | None, catalog: Path | None) -> None:
    """Probe the running kernel; refuse (exit 1) unless every required check passes.

    External C/R runs the installed criu itself, so `criu check` and a trial dump and
    restore of a canary are required too.
    """
    from kcheck.probe.engine import probe_setup, run_probe, select_checks

    extra = EXTERNAL_REQUIRES if external else []
    specs = [spec for spec in select_checks(require=extra) if spec.required]
    report = run_probe(specs, probe_setup(catalog, config))
    if report.verdict != Verdict.READY:
        raise Refused(refusal(action, report))
    among = f", {' and '.join(extra)} among them" if extra else ""
    channel.note(
        f"pre-flight: kernel {report.kernel.get('release')} is ready "
        f"({len(report.checks)} required checks pass{among})"
    )


def refusal(action: str, report: Report) -> str:
    """The failing checks, each with its remedy: the patchset that fixes it, a kernel, a tool."""
    required = [c for c in report.checks if c.required]
    failing = [c for c in required if c.status != Status.PASS]
    lines = [
        f"pre-flight refused the {action}: kernel {report.kernel.get('release')} is {report.verdict} "
        f"({len(failing)} of {len(required)} required checks not passing)"
    ]
    for check in failing:
        lines.append(f"  {STATUS_LABEL[check.status]} {check.id}: {check.detail}")
        if check.remedy:
            lines.append(f"      fix: {check.remedy}")
    lines.append(
        "run `kcheck probe` for the full report; --skip-preflight runs anyway, at the container's risk"
    )
    return "\n".join(lines)


def warn_skipped(action: str) -> None:
    channel.warn(
        f"--skip-preflight: the kernel was NOT checked before this {action}; "
        "on a kernel with the overlayfs or AIO bugs the container can be lost"
    )
