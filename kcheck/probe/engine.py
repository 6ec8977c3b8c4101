"""Run the selected checks and assemble a Report; knows no check by name."""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence

from kcheck.core.criu import criu_version
from kcheck.core.release import parse_release
from kcheck.core.result import CheckResult, Evidence, Fix, Report, Status
from kcheck.errors import KcheckError
from kcheck.patchsets.catalog import Patchset, load_catalog
from kcheck.probe import DEFAULT_TIMEOUT
from kcheck.probe.checks import CHECK_IDS, CHECKS, CheckSpec
from kcheck.probe.children import Unavailable
from kcheck.probe.image import select_release
from kcheck.probe.observe import Background, ProbeContext
from kcheck.probe.verdicts import Outcome, by_version, offline_fix

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from pathlib import Path

    from kcheck.probe.early import EarlyStart


def _match(patterns: Iterable[str], option: str) -> set[str]:
    """Check ids matched by exact ids or globs (e.g. 'config.*'); unknown ones are bad input."""
    matched: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(CHECK_IDS, pattern)
        if not hits:
            raise KcheckError(f"{option} {pattern}: unknown check id; valid ids: {', '.join(CHECK_IDS)}")
        matched.update(hits)
    return matched


def select_checks(
    check: Sequence[str] = (), require: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[CheckSpec]:
    """The checks to run, with --require/--ignore applied to their required flag."""
    required, ignored = _match(require, "--require"), _match(ignore, "--ignore")
    chosen = _match(check, "--check") if check else {s.id for s in CHECKS if not s.on_demand} | required
    if left_out := sorted(required - chosen):
        raise KcheckError(
            f"--require {', '.join(left_out)}: not among the --check selection; add it to --check"
        )
    if both := required & ignored:
        raise KcheckError(f"{', '.join(sorted(both))}: both --require and --ignore; pick one")
    return [
        spec._replace(required=(spec.required or spec.id in required) and spec.id not in ignored)
        for spec in CHECKS
        if spec.id in chosen
    ]


def probe_setup(
    catalog_dir: Path | None = None,
    config: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    root: Path | None = None,
    release: str | None = None,
    early: EarlyStart | None = None,
) -> ProbeContext:
    """The context of a probe: the running kernel, or offline with an image root or release.

    `kcheck cr` uses it for its pre-flight. Bad input (catalog, config, image, release)
    raises here, before any probe runs. A live probe's `early` collectors (already running)
    become the context's.
    """
    catalog = load_catalog(catalog_dir)
    others: tuple[str, ...] = ()
    if root is not None:
        release, others = select_release(root, release)
    elif release is not None and parse_release(release) is None:
        raise KcheckError(f"--release {release}: not a kernel release; pass one like 6.1.0-28-amd64")
    ctx = ProbeContext(
        release=release or os.uname().release,
        catalog=catalog,
        config_path=config,
        timeout=timeout,
        mode="offline" if release is not None else "live",
        root=root,
        other_releases=others,
        **({"started": early.hand_over(), "lingering": early.lingering} if early else {}),
    )
    if config is not None or ctx.mode == "offline":
        # A broken config is bad input and raises now, before any probe runs; a missing
        # one (Unavailable) only makes the config checks unknown.
        try:
            with contextlib.suppress(Unavailable):
                ctx.observe("config")
        except BaseException:
            ctx.close()  # the early-started collectors are the context's now
            raise
    return ctx


def run_probe(specs: Sequence[CheckSpec], ctx: ProbeContext) -> Report:
    catalog = ctx.catalog
    try:
        if ctx.mode == "live":
            ctx.prefetch(dict.fromkeys(spec.source for spec in specs if not _privilege_missing(spec)))
        # Checks read in this process first, while the children and criu work; then theirs.
        order = sorted(specs, key=lambda spec: isinstance(ctx.sources[spec.source], Background))
        done = {spec.id: _run_one(spec, ctx) for spec in order}
        results = [done[spec.id] for spec in specs]
    finally:
        ctx.close()  # every child finished (and reaped, but those an EarlyStart reaps last), on every path
    release = parse_release(ctx.release)
    kernel: dict[str, object] = {
        "release": ctx.release,
        "version": str(release.version) if release else None,
        "machine": os.uname().machine if ctx.mode == "live" else None,
        "fixed_by_version": {
            name: (not p.needed_for(release.version)) if release else None for name, p in catalog.items()
        },
    }
    if ctx.root is not None:
        kernel["image"] = {"root": str(ctx.root), "other_releases": list(ctx.other_releases)}
    criu = ctx.cached("criu")
    tools = {"criu": criu_version(criu.get("version_output", "")) if isinstance(criu, dict) else None}
    return Report(kernel=kernel, checks=results, tools=tools, mode=ctx.mode)


def _run_one(spec: CheckSpec, ctx: ProbeContext) -> CheckResult:
    patchset = patchset_for(spec, ctx.catalog)
    min_version = str(patchset.needed_below).removesuffix(".0") if patchset else spec.min_version
    if ctx.mode == "offline" and spec.evidence == Evidence.TOOL:
        outcome = Outcome(Status.SKIP, "offline: tools run only against a live kernel")
    elif ctx.mode == "offline" and spec.needs_live:
        outcome = offline_fix(ctx.release, patchset, min_version, ctx.observe("image"))
    else:
        try:
            if missing := _privilege_missing(spec):
                raise Unavailable(missing)
            outcome = spec.verdict(ctx.observe(spec.source))
        except Unavailable as exc:
            outcome = Outcome(Status.UNKNOWN, str(exc), unobservable=True)
        if outcome.unobservable:
            outcome = by_version(ctx.release, min_version, outcome.detail) or outcome
    name = patchset.name if patchset else None
    return CheckResult(
        id=spec.id,
        title=spec.title,
        required=spec.required,
        status=outcome.status,
        evidence=outcome.evidence or spec.evidence,
        detail=outcome.detail,
        fix=Fix(name, min_version) if (name or min_version) else None,
        remedy=_remedy(spec, outcome, name, min_version),
    )


def patchset_for(spec: CheckSpec, catalog: Mapping[str, Patchset]) -> Patchset | None:
    """The catalog patchset that fixes this check: the one whose `fixes` names it, so a
    site catalog with its own names works; else the one the check itself names."""
    named = [p for p in catalog.values() if spec.id in p.fixes]
    return named[0] if named else catalog.get(spec.patchset or "")


def _privilege_missing(spec: CheckSpec) -> str | None:
    return "needs root" if spec.needs_root and os.geteuid() != 0 else None


def _remedy(spec: CheckSpec, outcome: Outcome, patchset: str | None, min_version: str | None) -> str | None:
    if outcome.status not in (Status.FAIL, Status.UNKNOWN):
        return None
    parts = []
    if not spec.required and spec.affects:
        parts.append(f"optional, affects {spec.affects}")
    if patchset:
        parts.append(f"apply patchset {patchset} (kcheck build-kernel --patchset {patchset})")
    if min_version:
        parts.append(f"or run a kernel >= {min_version}" if patchset else f"run a kernel >= {min_version}")
    if remedy := outcome.remedy or spec.remedy:
        parts.append(remedy)
    return "; ".join(parts) or None
