"""The engine on captured observations: the same decision path the live probe takes."""

from __future__ import annotations

import pytest
from conftest import load_capture

from kcheck.core.result import Evidence, ExitCode, Status, Verdict
from kcheck.errors import KcheckError
from kcheck.patchsets.catalog import load_catalog
from kcheck.probe.checks import CHECK_IDS
from kcheck.probe.children import Unavailable
from kcheck.probe.early import EARLY, plain_live_probe
from kcheck.probe.engine import run_probe, select_checks
from kcheck.probe.observe import ProbeContext

CATALOG = load_catalog()
GOOD_CONFIG = {
    "path": "captured",
    "options": {f"CONFIG_{i.split('.', 1)[1]}": "y" for i in CHECK_IDS if i.startswith("config.")},
}


def unavailable(reason):
    def source(ctx):
        raise Unavailable(reason)

    return source


def context(release="6.18.44", **overrides) -> ProbeContext:
    sources = {
        "overlay": lambda ctx: load_capture("overlay-fixed-6.18.json"),
        "aio": lambda ctx: load_capture("aio-fixed-6.18.json"),
        "fdinfo": lambda ctx: "pos:\t0\nmnt_id:\t27\n",
        "config": lambda ctx: GOOD_CONFIG,
        "criu": lambda ctx: {"installed": False},
        "release": lambda ctx: {"release": ctx.release, "patchsets": [CATALOG["overlayfs-mnt-id"]]},
        **overrides,
    }
    return ProbeContext(release=release, catalog=CATALOG, sources=sources)


def by_id(report):
    return {c.id: c for c in report.checks}


def test_fixed_kernel_is_ready():
    report = run_probe(select_checks(), context())
    assert report.verdict == Verdict.READY and report.exit_code == ExitCode.READY
    assert {c.evidence for c in report.checks if c.id.startswith(("overlayfs", "aio"))} == {Evidence.LIVE}


def test_broken_overlay_is_not_ready_and_names_the_patchset():
    ctx = context(release="3.19.0-15-generic", overlay=lambda ctx: load_capture("overlay-broken-pre4.2.json"))
    report = run_probe(select_checks(), ctx)
    assert report.verdict == Verdict.NOT_READY and report.exit_code == ExitCode.NOT_READY
    check = by_id(report)["overlayfs.mnt_id"]
    assert check.status == Status.FAIL
    assert check.fix.patchset == "overlayfs-mnt-id" and check.fix.min_version == "4.2"
    assert "kcheck build-kernel --patchset overlayfs-mnt-id" in check.remedy
    assert report.kernel["fixed_by_version"]["overlayfs-mnt-id"] is False


def test_broken_aio_is_not_ready():
    report = run_probe(select_checks(), context(aio=lambda ctx: load_capture("aio-broken-pre3.19.json")))
    assert report.verdict == Verdict.NOT_READY
    assert by_id(report)["aio.ring_remap"].fix.patchset == "aio-ring-remap"


def test_debian_61_maps_failure_only_warns():
    ctx = context(release="6.1.0-28-amd64", overlay=lambda ctx: load_capture("overlay-debian-6.1-maps.json"))
    report = run_probe(select_checks(), ctx)
    maps = by_id(report)["overlayfs.maps"]
    assert maps.status == Status.FAIL and not maps.required
    assert "optional, affects" in maps.remedy
    assert report.verdict == Verdict.READY


def test_unobservable_on_new_kernel_passes_by_version_never_live():
    ctx = context(overlay=unavailable("mount overlay refused (EPERM): needs CAP_SYS_ADMIN"))
    checks = by_id(run_probe(select_checks(), ctx))
    assert checks["overlayfs.mnt_id"].status == Status.PASS
    assert checks["overlayfs.mnt_id"].evidence == Evidence.VERSION
    assert "not observed live" in checks["overlayfs.mnt_id"].detail
    # No version decides the maps bug (Debian's 6.1 has it), so it stays unknown.
    assert checks["overlayfs.maps"].status == Status.UNKNOWN


def test_unobservable_on_old_kernel_is_undecided():
    ctx = context(release="3.19.0", overlay=unavailable("needs CAP_SYS_ADMIN"))
    report = run_probe(select_checks(), ctx)
    assert by_id(report)["overlayfs.mnt_id"].status == Status.UNKNOWN
    assert report.verdict == Verdict.UNDECIDED and report.exit_code == ExitCode.UNDECIDED


def test_failure_outranks_unknown():
    ctx = context(
        release="3.19.0", overlay=unavailable("x"), aio=lambda ctx: load_capture("aio-broken-pre3.19.json")
    )
    assert run_probe(select_checks(), ctx).verdict == Verdict.NOT_READY


def test_missing_config_is_undecided():
    report = run_probe(select_checks(), context(config=unavailable("no kernel config found")))
    assert by_id(report)["config.NAMESPACES"].status == Status.UNKNOWN
    assert report.verdict == Verdict.UNDECIDED


def test_require_and_ignore_change_the_required_set():
    ctx = context(overlay=lambda ctx: load_capture("overlay-debian-6.1-maps.json"))
    required = run_probe(select_checks(require=["overlayfs.maps"]), ctx)
    assert required.verdict == Verdict.NOT_READY
    ignored = run_probe(
        select_checks(ignore=["overlayfs.*"]),
        context(overlay=lambda ctx: load_capture("overlay-broken-pre4.2.json")),
    )
    assert ignored.verdict == Verdict.READY
    assert by_id(ignored)["overlayfs.mnt_id"].status == Status.FAIL


def test_check_runs_a_subset_and_each_source_once():
    calls = []

    def counting(ctx):
        calls.append(1)
        return load_capture("overlay-fixed-6.18.json")

    report = run_probe(select_checks(check=["overlayfs.*"]), context(overlay=counting))
    assert [c.id for c in report.checks] == ["overlayfs.mnt_id", "overlayfs.fd_path", "overlayfs.maps"]
    assert len(calls) == 1


@pytest.mark.parametrize("option", ["check", "require", "ignore"])
def test_unknown_ids_are_bad_input(option):
    with pytest.raises(KcheckError, match="unknown check id; valid ids: overlayfs.mnt_id"):
        select_checks(**{option: ["overlayfs.nope"]})


def test_require_and_ignore_same_id_is_bad_input():
    with pytest.raises(KcheckError, match="both --require and --ignore"):
        select_checks(require=["criu.check"], ignore=["criu.check"])


def test_shipped_catalog_and_checks_name_the_same_patchsets():
    """Each check's declared patchset is the one whose `fixes` lists it, and back."""
    from kcheck.probe.checks import CHECKS
    from kcheck.probe.engine import patchset_for

    for spec in CHECKS:
        found = patchset_for(spec, CATALOG)
        assert (found.name if found else None) == spec.patchset, spec.id
    for patchset in CATALOG.values():
        assert {s.id for s in CHECKS if s.patchset == patchset.name} == set(patchset.fixes)


def test_early_started_sources_are_read_by_the_default_selection():
    """kcheck.probe.early forks these before the imports; a source no default check reads
    would be a child started for nothing."""
    assert EARLY and set(EARLY) <= {spec.source for spec in select_checks()}


@pytest.mark.parametrize(
    ("argv", "plain"),
    [
        (["probe"], True),
        (["probe", "--format", "json", "--name=web-1", "--output", "r.json"], True),
        (["probe", "--config", "c", "--catalog=d"], True),
        (["probe", "--format"], False),  # its value is missing: argparse says so
        (["probe", "--check", "aio.*"], False),
        (["probe", "--timeout", "30"], False),  # its own timeout: started after parsing, with it
        (["probe", "--root", "/img"], False),
        (["probe", "--form", "json"], False),  # an abbreviation: argparse decides what it is
        (["probe", "--help"], False),
        (["fleet", "report", "r.json"], False),
        (["--version"], False),
    ],
)
def test_only_a_plain_live_probe_starts_before_its_arguments_are_parsed(argv, plain):
    """kcheck.cli starts criu check and the AIO child before building its parser only when
    argparse cannot make the probe offline, selective or timed differently."""
    assert plain_live_probe(argv) is plain
