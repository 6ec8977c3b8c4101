"""Verdicts on captured /proc text: FAIL on broken kernels, PASS on this fixed one."""

import copy

import pytest
from conftest import load_capture
from hypothesis import given
from hypothesis import strategies as st

from kcheck.core.procparse import parse_kconfig
from kcheck.core.result import Status
from kcheck.patchsets.catalog import load_catalog
from kcheck.probe import verdicts
from kcheck.probe.checks import CHECK_IDS

FIXED = load_capture("overlay-fixed-6.18.json")
BROKEN = load_capture("overlay-broken-pre4.2.json")
DEBIAN_61 = load_capture("overlay-debian-6.1-maps.json")
AIO_FIXED = load_capture("aio-fixed-6.18.json")
AIO_BROKEN = load_capture("aio-broken-pre3.19.json")


@pytest.mark.parametrize(
    "verdict", [verdicts.overlay_mnt_id, verdicts.overlay_fd_path, verdicts.overlay_maps]
)
def test_overlay_fixed_kernel_passes(verdict):
    assert verdict(FIXED).status == Status.PASS


def test_mnt_id_of_lower_mount_fails_with_actionable_detail():
    outcome = verdicts.overlay_mnt_id(BROKEN)
    assert outcome.status == Status.FAIL
    assert "fdinfo mnt_id 63 (tmpfs /tmp) but overlay is mount 66 (/tmp/kcheck/merged)" in outcome.detail


def test_link_under_upperdir_fails():
    outcome = verdicts.overlay_fd_path(BROKEN)
    assert outcome.status == Status.FAIL
    assert (
        "link is /tmp/kcheck/upper/copied-up but the file is /tmp/kcheck/merged/copied-up" in outcome.detail
    )


def test_maps_mismatch_fails_as_on_debian_61():
    assert verdicts.overlay_mnt_id(DEBIAN_61).status == Status.PASS
    assert verdicts.overlay_fd_path(DEBIAN_61).status == Status.PASS
    outcome = verdicts.overlay_maps(DEBIAN_61)
    assert outcome.status == Status.FAIL
    assert "lower-only: maps shows 0:56 ino 7 but fstat shows 0:57 ino 7" in outcome.detail


def test_missing_mnt_id_line_fails():
    obs = copy.deepcopy(FIXED)
    obs["files"][0]["fdinfo"] = "pos:\t0\nflags:\t0\n"
    assert verdicts.overlay_mnt_id(obs).status == Status.FAIL


def test_no_overlayfs_fails_other_setup_errors_unknown():
    no_overlay = {"error": {"stage": "mount overlay", "errno": "ENODEV", "message": "No such device"}}
    assert verdicts.overlay_mnt_id(no_overlay).status == Status.FAIL
    other = {"error": {"stage": "mount tmpfs", "errno": "ENOMEM", "message": "x"}}
    assert verdicts.overlay_fd_path(other).status == Status.UNKNOWN


def test_aio_fixed_passes():
    assert verdicts.aio_ring_remap(AIO_FIXED).status == Status.PASS
    assert verdicts.aio_reopen_enxio(AIO_FIXED).status == Status.PASS


def test_aio_getevents_einval_fails():
    outcome = verdicts.aio_ring_remap(AIO_BROKEN)
    assert outcome.status == Status.FAIL
    assert "returned -1 (EINVAL)" in outcome.detail


def test_aio_reopen_that_opens_fails():
    assert verdicts.aio_reopen_enxio(AIO_BROKEN).status == Status.FAIL


def test_aio_reopen_without_privilege_is_unobservable():
    obs = {**AIO_FIXED, "reopen_errno": "EPERM"}
    outcome = verdicts.aio_reopen_enxio(obs)
    assert outcome.status == Status.UNKNOWN and outcome.unobservable


def test_aio_io_setup_eagain_fails_naming_the_limit():
    outcome = verdicts.aio_ring_remap({"io_setup_errno": "EAGAIN", "aio_max_nr": "0"})
    assert outcome.status == Status.FAIL
    assert "fs.aio-max-nr=0" in outcome.detail


def test_aio_remap_refused_fails():
    assert verdicts.aio_ring_remap({**AIO_FIXED, "remap_errno": "EINVAL"}).status == Status.FAIL


def test_fdinfo_field():
    assert verdicts.fdinfo_mnt_id_field("pos:\t0\nmnt_id:\t27\n").status == Status.PASS
    assert verdicts.fdinfo_mnt_id_field("pos:\t0\nflags:\t0100000\n").status == Status.FAIL


def test_config_option():
    options = parse_kconfig("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n")
    obs = {"path": "/boot/config-x", "options": options}
    assert verdicts.config_option("CONFIG_A", obs).status == Status.PASS
    assert verdicts.config_option("CONFIG_B", obs).status == Status.PASS
    assert "not set" in verdicts.config_option("CONFIG_C", obs).detail
    assert "absent" in verdicts.config_option("CONFIG_D", obs).detail


# Captured here: Debian's criu 3.17.1 `criu check` on kernel 6.18 (exit 1).
CRIU_317_ON_6X = (
    "Error (criu/util.c:642): exited, status=1\n"
    "Error (criu/util.c:642): exited, status=1\n"
    "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n"
    "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
    "Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.\n"
    "Error (criu/crtools.c:260): Could not initialize kernel features detection.\n"
)


def test_criu_too_old_shows_first_error_verbatim():
    outcome = verdicts.criu_check(
        {"installed": True, "version_output": "Version: 3.17.1\n", "returncode": 1, "output": CRIU_317_ON_6X}
    )
    assert outcome.status == Status.FAIL
    assert "criu 3.17.1" in outcome.detail
    assert outcome.detail.endswith(
        "criu check exit 1, before any check (its kernel feature detection failed); this criu is too "
        "old for the kernel: Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"
    )
    assert "kcheck build-criu" in outcome.remedy


def test_criu_failing_feature_detection_for_another_reason_is_not_called_too_old():
    # Captured here: criu 3.17.1 run as root without CAP_SYS_ADMIN; its first real error is not
    # the vDSO one, so nothing says "too old".
    output = (
        "Error (criu/util.c:642): exited, status=1\n"
        "Error (criu/util.c:642): exited, status=1\n"
        "Error (criu/net.c:3711): Unable create a network namespace: Operation not permitted\n"
        "Warn  (criu/net.c:3767): NSID isn't reported for network links\n"
        "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n"
        "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
        "Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.\n"
        "Error (criu/crtools.c:260): Could not initialize kernel features detection.\n"
    )
    obs = {"installed": True, "version_output": "Version: 3.17.1\n", "returncode": 1, "output": output}
    detail = verdicts.criu_check(obs).detail
    assert "before any check (its kernel feature detection failed): Error (criu/net.c:3711)" in detail
    assert "too old" not in detail


def test_criu_other_failures_are_not_called_too_old():
    output = "Error (criu/cr-check.c:100): UFFD is not supported\n"
    obs = {
        "installed": True,
        "path": "/usr/local/sbin/criu",
        "version_output": "Version: 4.0\n",
        "returncode": 1,
        "output": output,
    }
    outcome = verdicts.criu_check(obs)
    assert outcome.detail == f"criu 4.0 (/usr/local/sbin/criu): criu check exit 1: {output.strip()}"
    assert outcome.remedy is None  # not the too-old vDSO failure: building criu would not help


def test_criu_states():
    assert verdicts.criu_check({"installed": False}).status == Status.SKIP
    # captured here: criu 4.2 warns on stderr, then says its verdict on stdout
    output = "Warn  (criu/kerndat.c:1642): CRIU was built without libnftables support\nLooks good.\n"
    good = {"installed": True, "version_output": "Version: 4.2\n", "returncode": 0, "output": output}
    outcome = verdicts.criu_check(good)
    assert outcome.status == Status.PASS
    assert outcome.detail == "criu 4.2 (criu): criu check passed (Looks good.)"


def test_kernel_release_implications():
    patchsets = list(load_catalog(None, CHECK_IDS).values())
    detail = verdicts.kernel_release({"release": "3.19.0-15-generic", "patchsets": patchsets}).detail
    assert "overlayfs-mnt-id needed unless backported" in detail
    assert "aio-ring-remap fixed" in detail
    assert "not applicable" in verdicts.kernel_release({"release": "3.10.0", "patchsets": patchsets}).detail
    assert verdicts.kernel_release({"release": "garbage", "patchsets": patchsets}).status == Status.UNKNOWN


proc_text = st.text(max_size=300) | st.sampled_from(
    [FIXED["mountinfo"], FIXED["maps"], BROKEN["maps"], AIO_FIXED["maps"], "mnt_id:\t66\n"]
)
errno_name = st.none() | st.sampled_from(["ENXIO", "EPERM", "EINVAL", "EAGAIN", "ENOSYS", "E2BIG"])


@given(
    mountinfo=proc_text,
    maps=proc_text,
    fdinfo=proc_text,
    link=st.text(max_size=40),
    fstat=st.lists(st.integers(0, 1 << 20), max_size=4),
    address=st.integers(0, 1 << 48),
)
def test_overlay_verdicts_total_on_malformed_proc_text(mountinfo, maps, fdinfo, link, fstat, address):
    obs = copy.deepcopy(FIXED)
    obs.update(mountinfo=mountinfo, maps=maps)
    obs["files"][0].update(fdinfo=fdinfo, link=link, fstat=fstat, map_address=address)
    for verdict in (verdicts.overlay_mnt_id, verdicts.overlay_fd_path, verdicts.overlay_maps):
        assert verdict(obs).status in (Status.PASS, Status.FAIL, Status.UNKNOWN)


@given(
    maps=proc_text,
    context=st.integers(0, 1 << 48),
    setup=errno_name,
    remap=errno_name,
    reopen=errno_name,
    moved=st.integers(-1, 1),
)
def test_aio_verdicts_total_on_malformed_proc_text(maps, context, setup, remap, reopen, moved):
    obs = {
        **AIO_FIXED,
        "maps": maps,
        "context": context,
        "io_setup_errno": setup,
        "remap_errno": remap,
        "reopen_errno": reopen,
        "getevents_moved": [moved, None],
    }
    for verdict in (verdicts.aio_ring_remap, verdicts.aio_reopen_enxio):
        assert verdict(obs).status in (Status.PASS, Status.FAIL, Status.UNKNOWN)


@given(st.text(max_size=200), st.integers(-2, 2))
def test_criu_verdict_total(output, returncode):
    obs = {"installed": True, "version_output": output, "returncode": returncode, "output": output}
    assert verdicts.criu_check(obs).status in (Status.PASS, Status.FAIL)


TRIAL_DONE = {
    "installed": True,
    "path": "/opt/criu/sbin/criu",
    "version_output": "Version: 4.2\n",
    "stage": "done",
    "dump": {"returncode": 0, "seconds": 0.15},
    "restore": {"returncode": 0, "seconds": 0.1},
    "count_at_dump": 12,
    "count_after_restore": 15,
    "expected_path": "/tmp/t/merged/canary",
    "canary_report": {"fd_link": "/tmp/t/merged/canary", "aio_results": [4096]},
}


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        (
            {},
            Status.PASS,
            "it counted on from 12 to 15, reaped its AIO read, and its fd still names /tmp/t/merged/",
        ),
        (
            {"count_after_restore": 12},
            Status.FAIL,
            "the restored canary does not count on (at dump 12, now 12)",
        ),
        (
            {"canary_report": {"fd_link": "/tmp/t/upper/canary", "aio_results": [4096]}},
            Status.FAIL,
            "the overlay file's fd link is /tmp/t/upper/canary, not /tmp/t/merged/canary",
        ),
        (
            {"canary_report": {"fd_link": "/tmp/t/merged/canary", "aio_results": [], "aio_errno": 22}},
            Status.FAIL,
            "the AIO ring gave errno 22, not the one completed 4096-byte read",
        ),
        (
            {"stage": "dump", "dump": {"returncode": 1, "first_error": "Error (criu/vdso.c:381): vdso: x"}},
            Status.FAIL,
            "criu dump of the canary failed (exit 1): Error (criu/vdso.c:381): vdso: x",
        ),
        (
            {"stage": "canary", "canary_error": "no overlay"},
            Status.UNKNOWN,
            "the canary did not start: no overlay",
        ),
    ],
)
def test_criu_trial_outcomes(change, status, detail):
    outcome = verdicts.criu_trial(TRIAL_DONE | change)
    assert outcome.status == status
    assert outcome.detail.startswith("criu 4.2 (/opt/criu/sbin/criu): ")
    assert detail in outcome.detail
    assert (outcome.remedy == verdicts.BUILD_CRIU_REMEDY) == ("vdso" in detail)


def test_criu_trial_without_criu_fails_and_names_build_criu():
    outcome = verdicts.criu_trial({"installed": False})
    assert outcome.status == Status.FAIL
    assert "kcheck build-criu" in outcome.remedy


# --- the overlay verdicts decide right on consistent observations, fixed or broken ------------------


@st.composite
def overlay_observations(draw):
    """A consistent overlay probe observation, and for each file whether the kernel showed it
    the fixed way (overlay mount id, overlay path, overlay dev:ino) or the broken way (the
    underlying tmpfs layer's)."""
    lower_id, overlay_id = draw(st.lists(st.integers(20, 9999), min_size=2, max_size=2, unique=True))
    lower_dev, overlay_dev = draw(st.lists(st.integers(1, 255), min_size=2, max_size=2, unique=True))
    base = "/" + draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True))
    mount_point = f"{base}/merged"
    mountinfo = (
        f"{lower_id} 1 0:{lower_dev} / {base} rw - tmpfs kcheck rw\n"
        f"{overlay_id} {lower_id} 0:{overlay_dev} / {mount_point} rw - overlay overlay "
        f"rw,lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work\n"
    )
    names = draw(st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=3, unique=True))
    broken = {
        kind: draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
        for kind in ("mnt_id", "link", "maps")
    }
    files, maps = [], ""
    for index, name in enumerate(names):
        inode, address = 100 + index, 0x7F0000000000 + index * 0x10000
        path = f"{mount_point}/{name}"
        seen_id = lower_id if broken["mnt_id"][index] else overlay_id
        seen_dev = lower_dev if broken["maps"][index] else overlay_dev
        maps += f"{address:x}-{address + 4096:x} r--s 00000000 00:{seen_dev:02x} {inode} {path}\n"
        files.append(
            {
                "name": name,
                "path": path,
                "fdinfo": f"pos:\t0\nflags:\t02100000\nmnt_id:\t{seen_id}\nino:\t{inode}\n",
                "link": f"{base}/upper/{name}" if broken["link"][index] else path,
                "map_address": address,
                "fstat": [0, overlay_dev, inode],
            }
        )
    obs = {"mount_point": mount_point, "userns": False, "files": files, "mountinfo": mountinfo, "maps": maps}
    return obs, {kind: any(flags) for kind, flags in broken.items()}


@given(overlay_observations())
def test_overlay_verdicts_fail_exactly_when_the_kernel_showed_the_underlying_layer(case):
    obs, broken = case
    expected = {kind: Status.FAIL if broken[kind] else Status.PASS for kind in broken}
    assert verdicts.overlay_mnt_id(obs).status == expected["mnt_id"]
    assert verdicts.overlay_fd_path(obs).status == expected["link"]
    assert verdicts.overlay_maps(obs).status == expected["maps"]


@given(
    address=st.integers(1, 1 << 30).map(lambda page: page * 4096),
    remap_broken=st.booleans(),
    reopen=st.sampled_from([None, "ENXIO"]),
)
def test_aio_verdicts_fail_exactly_when_the_kernel_behaves_the_old_way(address, remap_broken, reopen):
    """Before 3.19 the context keeps its old address (io_getevents on the moved ring: EINVAL),
    and reopening the ring through map_files succeeds (errno None)."""
    obs = {
        "context": address,
        "maps": f"{address:x}-{address + 4096:x} rw-s 00000000 00:13 5359 /[aio] (deleted)\n",
        "moved_to": address + 0x100000,
        "getevents_moved": [-1, "EINVAL"] if remap_broken else [0, None],
        "getevents_old": [0, None] if remap_broken else [-1, "EINVAL"],
        "reopen_errno": reopen,
    }
    assert verdicts.aio_ring_remap(obs).status == (Status.FAIL if remap_broken else Status.PASS)
    assert verdicts.aio_reopen_enxio(obs).status == (Status.PASS if reopen == "ENXIO" else Status.FAIL)
