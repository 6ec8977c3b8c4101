"""Verdicts on captured /proc text: FAIL on broken kernels, PASS on this fixed one.

The tables assert whole Outcomes (status, detail, unobservable, evidence, remedy): the detail
is what an SRE reads, so a changed word is a changed verdict."""

import copy
from itertools import zip_longest

import pytest
from conftest import load_capture
from hypothesis import given
from hypothesis import strategies as st

from kcheck.core.kconfig import parse_kconfig
from kcheck.core.result import Evidence, Status
from kcheck.patchsets.catalog import load_catalog
from kcheck.probe import verdicts
from kcheck.probe.verdicts import Outcome

FIXED = load_capture("overlay-fixed-6.18.json")
BROKEN = load_capture("overlay-broken-pre4.2.json")
DEBIAN_61 = load_capture("overlay-debian-6.1-maps.json")
AIO_FIXED = load_capture("aio-fixed-6.18.json")
AIO_BROKEN = load_capture("aio-broken-pre3.19.json")
CATALOG = load_catalog()
OVERLAY_VERDICTS = [verdicts.overlay_mnt_id, verdicts.overlay_fd_path, verdicts.overlay_maps]
USERNS = " (observed in an unprivileged user namespace)"
DROP = object()  # as a value in edit(): remove the key


def edit(capture: dict, *file_changes: dict, **changes) -> dict:
    """A copy of a capture with top-level keys changed and its first files updated (DROP removes a key)."""

    def changed(old: dict, new: dict) -> dict:
        return {key: value for key, value in {**old, **new}.items() if value is not DROP}

    obs = changed(capture, changes)
    if file_changes:
        obs["files"] = [
            changed(entry, change) for entry, change in zip_longest(obs["files"], file_changes, fillvalue={})
        ]
    return copy.deepcopy(obs)


# --- overlayfs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", OVERLAY_VERDICTS)
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            {"stage": "mount overlay", "errno": "ENODEV", "message": "No such device"},
            Outcome(Status.FAIL, "kernel has no overlayfs (mount: ENODEV); enable CONFIG_OVERLAY_FS"),
        ),
        # Only ENODEV from the overlay mount itself means the kernel has no overlayfs.
        (
            {"stage": "mount overlay", "errno": "EPERM", "message": "Operation not permitted"},
            Outcome(Status.UNKNOWN, "overlay probe failed at mount overlay: Operation not permitted"),
        ),
        (
            {"stage": "mount tmpfs", "errno": "ENODEV", "message": "No such device"},
            Outcome(Status.UNKNOWN, "overlay probe failed at mount tmpfs: No such device"),
        ),
    ],
)
def test_overlay_setup_errors(verdict, error, expected):
    assert verdict({"error": error}) == expected


@pytest.mark.parametrize("verdict", OVERLAY_VERDICTS)
@pytest.mark.parametrize("files", [[], DROP, ["not a file entry"]])
def test_overlay_without_files_is_unknown(verdict, files):
    assert verdict(edit(FIXED, files=files)) == Outcome(Status.UNKNOWN, "overlay probe reported no files")


NO_MNT_ID = "pos:\t0\nflags:\t0\n"


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (FIXED, Outcome(Status.PASS, "fdinfo mnt_id 66 is the overlay mount for lower-only and copied-up")),
        (
            DEBIAN_61,
            Outcome(Status.PASS, "fdinfo mnt_id 103 is the overlay mount for lower-only and copied-up"),
        ),
        (
            edit(FIXED, userns=True),
            Outcome(
                Status.PASS, f"fdinfo mnt_id 66 is the overlay mount for lower-only and copied-up{USERNS}"
            ),
        ),
        (
            BROKEN,
            Outcome(
                Status.FAIL,
                "lower-only: fdinfo mnt_id 63 (tmpfs /tmp) but overlay is mount 66 (/tmp/kcheck/merged); "
                "copied-up: fdinfo mnt_id 63 (tmpfs /tmp) but overlay is mount 66 (/tmp/kcheck/merged)",
            ),
        ),
        (
            edit(FIXED, {}, {"fdinfo": "mnt_id:\t99\n"}),
            Outcome(
                Status.FAIL,
                "copied-up: fdinfo mnt_id 99 (not in mountinfo) but overlay is mount 66 (/tmp/kcheck/merged)",
            ),
        ),
        (
            edit(FIXED, {"fdinfo": NO_MNT_ID}, {"fdinfo": DROP}),
            Outcome(
                Status.FAIL, "lower-only: fdinfo has no mnt_id line; copied-up: fdinfo has no mnt_id line"
            ),
        ),
        (
            edit(FIXED, mount_point="/tmp"),  # a mount, but not an overlay
            Outcome(Status.UNKNOWN, "no overlay mount at /tmp in mountinfo"),
        ),
        (
            edit(FIXED, mount_point="/nowhere"),
            Outcome(Status.UNKNOWN, "no overlay mount at /nowhere in mountinfo"),
        ),
        (edit(FIXED, mount_point=DROP), Outcome(Status.UNKNOWN, "no overlay mount at  in mountinfo")),
        (
            edit(FIXED, mountinfo=DROP),
            Outcome(Status.UNKNOWN, "no overlay mount at /tmp/kcheck/merged in mountinfo"),
        ),
    ],
)
def test_overlay_mnt_id(obs, expected):
    assert verdicts.overlay_mnt_id(obs) == expected


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (FIXED, Outcome(Status.PASS, "fd links name the overlay path (/tmp/kcheck/merged/lower-only, ...)")),
        (
            DEBIAN_61,
            Outcome(Status.PASS, "fd links name the overlay path (/tmp/kcheck/merged/lower-only, ...)"),
        ),
        (
            edit(FIXED, userns=True),
            Outcome(
                Status.PASS, f"fd links name the overlay path (/tmp/kcheck/merged/lower-only, ...){USERNS}"
            ),
        ),
        (
            BROKEN,
            Outcome(
                Status.FAIL,
                "lower-only: /proc/self/fd link is /tmp/kcheck/lower/lower-only "
                "but the file is /tmp/kcheck/merged/lower-only; "
                "copied-up: /proc/self/fd link is /tmp/kcheck/upper/copied-up "
                "but the file is /tmp/kcheck/merged/copied-up",
            ),
        ),
    ],
)
def test_overlay_fd_path(obs, expected):
    assert verdicts.overlay_fd_path(obs) == expected


CRIU_MAPS_ERROR = ' (CRIU cannot dump mmapped overlay files: "Can\'t lookup mount=NNN for fd=-3")'
NOT_MAPPED = Outcome(Status.UNKNOWN, "lower-only: mapping not found in /proc/self/maps")


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (FIXED, Outcome(Status.PASS, "maps dev:ino of mmapped overlay files equals fstat")),
        (
            edit(FIXED, userns=True),
            Outcome(Status.PASS, f"maps dev:ino of mmapped overlay files equals fstat{USERNS}"),
        ),
        (
            DEBIAN_61,
            Outcome(
                Status.FAIL,
                "lower-only: maps shows 0:56 ino 7 but fstat shows 0:57 ino 7; "
                "copied-up: maps shows 0:56 ino 13 but fstat shows 0:57 ino 8" + CRIU_MAPS_ERROR,
            ),
        ),
        (edit(FIXED, {"map_address": DROP}), NOT_MAPPED),
        (edit(FIXED, {"map_address": 4096}), NOT_MAPPED),
        # Only an int is an address: a float from JSON equal to one must not match.
        (edit(FIXED, {"map_address": float(FIXED["files"][0]["map_address"])}), NOT_MAPPED),
        (edit(FIXED, maps=DROP), NOT_MAPPED),
        (edit(FIXED, {"fstat": [0, 40]}), NOT_MAPPED),
        (edit(FIXED, {"fstat": "0:40 7"}), NOT_MAPPED),
    ],
)
def test_overlay_maps(obs, expected):
    assert verdicts.overlay_maps(obs) == expected


# --- AIO ---------------------------------------------------------------------------------------

NO_RING = Outcome(Status.UNKNOWN, "no /[aio] mapping at the AIO context address in /proc/self/maps")
NOT_RUN = Outcome(Status.UNKNOWN, "io_getevents on the moved ring was not run")
STACK = 0x7FFD8385B000  # the [stack] mapping of the AIO captures


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (
            AIO_FIXED,
            Outcome(Status.PASS, "io_getevents on the moved ring returned 0; old address gives EINVAL"),
        ),
        (
            edit(AIO_FIXED, getevents_old=[0, None]),
            Outcome(Status.PASS, "io_getevents on the moved ring returned 0; old address gives 0"),
        ),
        # The old address is only reported, never judged.
        (
            edit(AIO_FIXED, getevents_old=DROP),
            Outcome(Status.PASS, "io_getevents on the moved ring returned 0; old address gives None"),
        ),
        (
            AIO_BROKEN,
            Outcome(
                Status.FAIL,
                "io_getevents on the moved AIO ring returned -1 (EINVAL): "
                "the kernel did not follow the remap, so CRIU cannot restore AIO",
            ),
        ),
        (
            {"io_setup_errno": "ENOSYS", "aio_max_nr": None},
            Outcome(Status.FAIL, "io_setup(16) failed with ENOSYS: the kernel has no AIO (CONFIG_AIO off)"),
        ),
        (
            {"io_setup_errno": "EAGAIN", "aio_max_nr": "0"},
            Outcome(
                Status.FAIL, "io_setup(16) failed with EAGAIN: AIO context limit reached (fs.aio-max-nr=0)"
            ),
        ),
        (
            {"io_setup_errno": "ENOMEM", "aio_max_nr": "65536"},
            Outcome(Status.FAIL, "io_setup(16) failed with ENOMEM"),
        ),
        (
            {
                "context": AIO_FIXED["context"],
                "maps": AIO_FIXED["maps"],
                "error": "[Errno 12] Cannot allocate memory",
            },
            Outcome(Status.UNKNOWN, "AIO probe failed: [Errno 12] Cannot allocate memory"),
        ),
        (edit(AIO_FIXED, context=STACK), NO_RING),  # a mapping, but not the ring
        (edit(AIO_FIXED, context=STACK + 4096), NO_RING),
        (edit(AIO_FIXED, context=DROP), NO_RING),
        (edit(AIO_FIXED, context=float(AIO_FIXED["context"])), NO_RING),
        (edit(AIO_FIXED, maps=DROP), NO_RING),
        (
            {"context": AIO_FIXED["context"], "maps": AIO_FIXED["maps"], "remap_errno": "EINVAL"},
            Outcome(Status.FAIL, "mremap of the 4096-byte AIO ring failed with EINVAL"),
        ),
        (edit(AIO_FIXED, getevents_moved=DROP), NOT_RUN),
        (edit(AIO_FIXED, getevents_moved=[0]), NOT_RUN),
        (edit(AIO_FIXED, getevents_moved=[0, None, None]), NOT_RUN),
        (edit(AIO_FIXED, getevents_moved=[None, "EINVAL"]), NOT_RUN),
    ],
)
def test_aio_ring_remap(obs, expected):
    assert verdicts.aio_ring_remap(obs) == expected


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (AIO_FIXED, Outcome(Status.PASS, "reopening the AIO ring via /proc/self/map_files fails with ENXIO")),
        (
            AIO_BROKEN,
            Outcome(Status.FAIL, "reopening the AIO ring via /proc/self/map_files succeeded; expected ENXIO"),
        ),
        *[
            (
                edit(AIO_FIXED, reopen_errno=code),
                Outcome(
                    Status.UNKNOWN,
                    f"opening /proc/self/map_files needs CAP_SYS_ADMIN ({code})",
                    unobservable=True,
                ),
            )
            for code in ("EPERM", "EACCES")
        ],
        (
            edit(AIO_FIXED, reopen_errno="EINVAL"),
            Outcome(Status.UNKNOWN, "reopening the AIO ring failed with EINVAL, expected ENXIO"),
        ),
        (
            {"io_setup_errno": "ENOSYS", "aio_max_nr": None},
            Outcome(Status.UNKNOWN, "no AIO ring to reopen: io_setup failed with ENOSYS"),
        ),
        (
            {"context": 1, "error": "[Errno 12] Cannot allocate memory"},
            Outcome(
                Status.UNKNOWN,
                "the AIO ring could not be set up for the reopen test: [Errno 12] Cannot allocate memory",
            ),
        ),
        (
            {"context": 1, "remap_errno": "EINVAL"},
            Outcome(Status.UNKNOWN, "the AIO ring could not be set up for the reopen test"),
        ),
    ],
)
def test_aio_reopen_enxio(obs, expected):
    assert verdicts.aio_reopen_enxio(obs) == expected


# --- fdinfo and kernel config ------------------------------------------------------------------


def test_fdinfo_field():
    assert verdicts.fdinfo_mnt_id_field("pos:\t0\nmnt_id:\t27\n") == Outcome(
        Status.PASS, "fdinfo has mnt_id (27 for /)"
    )
    assert verdicts.fdinfo_mnt_id_field("pos:\t0\nflags:\t0100000\n") == Outcome(
        Status.FAIL, "fdinfo has no mnt_id line (kernel older than 3.15?)"
    )


CONFIG = {
    "path": "/boot/config-x",
    "options": parse_kconfig('CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S=""\n'),
}


@pytest.mark.parametrize(
    ("option", "obs", "expected"),
    [
        ("CONFIG_A", CONFIG, Outcome(Status.PASS, "CONFIG_A=y in /boot/config-x")),
        ("CONFIG_B", CONFIG, Outcome(Status.PASS, "CONFIG_B=m in /boot/config-x")),
        ("CONFIG_C", CONFIG, Outcome(Status.FAIL, "CONFIG_C is not set in /boot/config-x")),
        ("CONFIG_S", CONFIG, Outcome(Status.FAIL, "CONFIG_S is not set in /boot/config-x")),
        ("CONFIG_D", CONFIG, Outcome(Status.FAIL, "CONFIG_D is absent from /boot/config-x")),
        ("CONFIG_A", {"options": CONFIG["options"]}, Outcome(Status.PASS, "CONFIG_A=y in config")),
        (
            "CONFIG_A",
            {"path": "/proc/config.gz"},
            Outcome(Status.FAIL, "CONFIG_A is absent from /proc/config.gz"),
        ),
    ],
)
def test_config_option(option, obs, expected):
    assert verdicts.config_option(option, obs) == expected


# --- criu ----------------------------------------------------------------------------------------

# Captured here: Debian's criu 3.17.1 `criu check` on kernel 6.18 (exit 1).
CRIU_317_ON_6X = (
    "Error (criu/util.c:642): exited, status=1\n"
    "Error (criu/util.c:642): exited, status=1\n"
    "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n"
    "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
    "Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.\n"
    "Error (criu/crtools.c:260): Could not initialize kernel features detection.\n"
)
# Captured here: criu 3.17.1 run as root without CAP_SYS_ADMIN; its first real error is not
# the vDSO one, so nothing may say "too old".
CRIU_317_WITHOUT_CAP_SYS_ADMIN = (
    "Error (criu/util.c:642): exited, status=1\n"
    "Error (criu/util.c:642): exited, status=1\n"
    "Error (criu/net.c:3711): Unable create a network namespace: Operation not permitted\n"
    "Warn  (criu/net.c:3767): NSID isn't reported for network links\n"
    "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n"
    "Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable\n"
    "Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.\n"
    "Error (criu/crtools.c:260): Could not initialize kernel features detection.\n"
)
# Captured here: criu 4.2 warns on stderr, then says its verdict on stdout.
CRIU_42_GOOD = "Warn  (criu/kerndat.c:1642): CRIU was built without libnftables support\nLooks good.\n"
CRIU_317 = {"installed": True, "version_output": "Version: 3.17.1\n", "returncode": 1}
NO_DETECTION = ", before any check (its kernel feature detection failed)"


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        ({"installed": False}, Outcome(Status.SKIP, "criu is not installed")),
        (
            {"installed": True, "version_output": "Version: 4.2\n", "returncode": 0, "output": CRIU_42_GOOD},
            Outcome(Status.PASS, "criu 4.2 (criu): criu check passed (Looks good.)"),
        ),
        (
            {"installed": True, "path": "/usr/sbin/criu", "returncode": 0, "output": " \n\n"},
            Outcome(Status.PASS, "criu unknown version (/usr/sbin/criu): criu check passed (no output)"),
        ),
        (
            {"installed": True, "version_output": "criu: bad option\n", "returncode": 0},
            Outcome(Status.PASS, "criu unknown version (criu): criu check passed (no output)"),
        ),
        (
            CRIU_317 | {"output": CRIU_317_ON_6X},
            Outcome(
                Status.FAIL,
                f"criu 3.17.1 (criu): criu check exit 1{NO_DETECTION}; this criu is too old for the kernel: "
                "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds",
                remedy=verdicts.BUILD_CRIU_REMEDY,
            ),
        ),
        (
            CRIU_317 | {"output": CRIU_317_WITHOUT_CAP_SYS_ADMIN},
            Outcome(
                Status.FAIL,
                f"criu 3.17.1 (criu): criu check exit 1{NO_DETECTION}: "
                "Error (criu/net.c:3711): Unable create a network namespace: Operation not permitted",
            ),
        ),
        # Either of criu's two ways of saying its feature detection failed is enough.
        (
            CRIU_317
            | {"output": "Error (criu/kerndat.c:1571): kerndat_uffd failed when initializing kerndat.\n"},
            Outcome(
                Status.FAIL,
                f"criu 3.17.1 (criu): criu check exit 1{NO_DETECTION}: "
                "Error (criu/kerndat.c:1571): kerndat_uffd failed when initializing kerndat.",
            ),
        ),
        (
            CRIU_317
            | {"output": "Error (criu/crtools.c:260): Could not initialize kernel features detection.\n"},
            Outcome(
                Status.FAIL,
                f"criu 3.17.1 (criu): criu check exit 1{NO_DETECTION}: "
                "Error (criu/crtools.c:260): Could not initialize kernel features detection.",
            ),
        ),
        # A vDSO error outside feature detection is not the too-old failure: building criu would not help.
        (
            CRIU_317
            | {"path": "/usr/local/sbin/criu", "output": "Error (criu/vdso.c:1): vdso: cannot park\n"},
            Outcome(
                Status.FAIL,
                "criu 3.17.1 (/usr/local/sbin/criu): criu check exit 1: "
                "Error (criu/vdso.c:1): vdso: cannot park",
            ),
        ),
        (
            {"installed": True, "version_output": "Version: 4.0\n", "returncode": -9},
            Outcome(Status.FAIL, "criu 4.0 (criu): criu check exit -9: (no output)"),
        ),
    ],
)
def test_criu_check(obs, expected):
    assert verdicts.criu_check(obs) == expected


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
CRIU_42 = "criu 4.2 (/opt/criu/sbin/criu)"
VDSO_ERROR = "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {},
            Outcome(
                Status.PASS,
                f"{CRIU_42}: dumped and restored a canary (PID namespace, overlay file open and mmapped, AIO "
                "ring with a completed event) in 0.15s + 0.1s; it counted on from 12 to 15, reaped its AIO "
                "read, and its fd still names /tmp/t/merged/canary",
            ),
        ),
        (
            {"installed": False},
            Outcome(
                Status.FAIL,
                "criu is not installed, so nothing can be checkpointed",
                remedy=verdicts.INSTALL_CRIU_REMEDY,
            ),
        ),
        (
            {"stage": "canary", "canary_error": "no overlay", "path": DROP, "version_output": DROP},
            Outcome(Status.UNKNOWN, "criu unknown version (criu): the canary did not start: no overlay"),
        ),
        (
            {"stage": "dump", "dump": {"returncode": 1, "first_error": VDSO_ERROR}},
            Outcome(
                Status.FAIL,
                f"{CRIU_42}: criu dump of the canary failed (exit 1): {VDSO_ERROR}",
                remedy=verdicts.BUILD_CRIU_REMEDY,
            ),
        ),
        (
            {
                "stage": "restore",
                "restore": {"returncode": 1, "first_error": "Error (criu/mount.c:1): no mnt"},
            },
            Outcome(
                Status.FAIL,
                f"{CRIU_42}: criu restore of the canary failed (exit 1): Error (criu/mount.c:1): no mnt",
            ),
        ),
        # A stage without its step's result, or one that is no step, stops the trial undecided.
        ({"stage": "dump", "dump": None}, Outcome(Status.UNKNOWN, f"{CRIU_42}: the trial stopped at dump")),
        ({"stage": "overlay"}, Outcome(Status.UNKNOWN, f"{CRIU_42}: the trial stopped at overlay")),
        (
            {"count_after_restore": 12},
            Outcome(Status.FAIL, f"{CRIU_42}: the restored canary does not count on (at dump 12, now 12)"),
        ),
        (
            {"count_after_restore": 11},
            Outcome(Status.FAIL, f"{CRIU_42}: the restored canary does not count on (at dump 12, now 11)"),
        ),
        (
            {"count_at_dump": None},
            Outcome(Status.FAIL, f"{CRIU_42}: the restored canary does not count on (at dump None, now 15)"),
        ),
        (
            {"count_after_restore": "15"},
            Outcome(Status.FAIL, f"{CRIU_42}: the restored canary does not count on (at dump 12, now 15)"),
        ),
        (
            {"canary_report": None},
            Outcome(Status.FAIL, f"{CRIU_42}: the restored canary did not answer (counted 12 -> 15)"),
        ),
        (
            {"canary_report": {"fd_link": "/tmp/t/upper/canary", "aio_results": [4096]}},
            Outcome(
                Status.FAIL,
                f"{CRIU_42}: after restore the overlay file's fd link is /tmp/t/upper/canary, "
                "not /tmp/t/merged/canary",
            ),
        ),
        (
            {"canary_report": {"fd_link": "/tmp/t/merged/canary", "aio_results": [], "aio_errno": 22}},
            Outcome(
                Status.FAIL,
                f"{CRIU_42}: after restore the AIO ring gave errno 22, not the one completed 4096-byte read",
            ),
        ),
        (
            {
                "canary_report": {
                    "fd_link": "/tmp/t/merged/canary",
                    "aio_results": [4096, 4096],
                    "aio_errno": 0,
                }
            },
            Outcome(
                Status.FAIL,
                f"{CRIU_42}: after restore the AIO ring gave events [4096, 4096], "
                "not the one completed 4096-byte read",
            ),
        ),
    ],
)
def test_criu_trial(change, expected):
    obs = {key: value for key, value in (TRIAL_DONE | change).items() if value is not DROP}
    assert verdicts.criu_trial(obs) == expected


def test_criu_remedies_name_build_criu():
    assert "`kcheck build-criu`" in verdicts.INSTALL_CRIU_REMEDY
    assert "`kcheck build-criu`" in verdicts.BUILD_CRIU_REMEDY


# --- kernel release and version evidence -------------------------------------------------------

PATCHSETS = list(CATALOG.values())


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (
            {"release": "3.19.0-15-generic", "patchsets": PATCHSETS},
            "3.19.0-15-generic is version 3.19.0: aio-ring-remap fixed (>= 3.19.0); "
            "overlayfs-mnt-id needed unless backported (< 4.2.0)",
        ),
        (
            {"release": "3.10.0", "patchsets": PATCHSETS},
            "3.10.0 is version 3.10.0: aio-ring-remap needed unless backported (< 3.19.0); "
            "overlayfs-mnt-id not applicable (< 3.18.0)",
        ),
        (
            {"release": "4.2", "patchsets": PATCHSETS},
            "4.2 is version 4.2.0: aio-ring-remap fixed (>= 3.19.0); overlayfs-mnt-id fixed (>= 4.2.0)",
        ),
        ({"release": "6.1.0-28-amd64"}, "6.1.0-28-amd64 is version 6.1.0: no patchsets to compare"),
    ],
)
def test_kernel_release_implications(obs, expected):
    assert verdicts.kernel_release(obs) == Outcome(Status.PASS, expected)


def test_kernel_release_that_is_no_version_is_unknown():
    assert verdicts.kernel_release({"release": "garbage", "patchsets": PATCHSETS}) == Outcome(
        Status.UNKNOWN, "cannot parse kernel release 'garbage'"
    )
    assert verdicts.kernel_release({}) == Outcome(Status.UNKNOWN, "cannot parse kernel release None")


@pytest.mark.parametrize(
    ("release", "min_version", "decides"),
    [
        ("6.1.0-28-amd64", "4.2", True),
        ("4.2.0", "4.2", True),
        ("4.2.0-rc2", "4.2", False),
        ("4.1.52-1-amd64", "4.2", False),
        ("6.1.0-28-amd64", None, False),
        ("custom", "4.2", False),
    ],
)
def test_by_version_passes_only_at_or_above_the_fix(release, min_version, decides):
    outcome = verdicts.by_version(release, min_version, "needs CAP_SYS_ADMIN")
    version = release.split("-")[0]
    expected = Outcome(
        Status.PASS,
        f"not observed live (needs CAP_SYS_ADMIN); kernel {version} >= 4.2 has the fix by version",
        evidence=Evidence.VERSION,
    )
    assert outcome == (expected if decides else None)


# --- offline: a kernel that is not running, judged from its image ------------------------------

OLD = "3.19.0-15-generic"
OVERLAY_FIX = CATALOG["overlayfs-mnt-id"]
RECORD_PATH = f"/img/var/lib/kcheck/builds/{OLD}.json"
CHANGELOG_PATH = f"/img/usr/share/doc/linux-image-{OLD}/changelog.Debian.gz"
BOOT_IT = "; boot it with kcheck probe --boot for a live answer"


def changelog(*lines: str) -> dict:
    """An image observation with a Debian changelog of these entries."""
    body = "linux (3.19.0-15.15) vivid; urgency=medium\n\n" + "".join(f"  * {line}\n" for line in lines)
    return {"changelog": body, "changelog_path": CHANGELOG_PATH}


def record(*names: str) -> dict:
    """An image observation with a build record (as read after its schema check) applying these."""
    return {
        "record": {"release": OLD, "patchsets": [{"name": n, "commits": []} for n in names]},
        "record_path": RECORD_PATH,
    }


# The Debian way of naming an upstream commit: its subject, or an abbreviated SHA.
BACKPORTED = [
    "VFS: Introduce inode-getting helpers for layered/unioned fs environments",
    "vfs: add a fallthrough flag for marking virtual dentries",  # any case
    "overlay: Call ovl_drop_write() earlier in ovl_dentry_open()",
    "overlayfs: f_path fix (upstream commit 4bacc9c923)",  # only the 10-digit abbreviation
    "ovl: fix a braino (cherry picked from commit 9391dd00d1)",
]


@pytest.mark.parametrize(
    ("release", "image", "expected"),
    [
        pytest.param(
            OLD,
            record("aio-ring-remap", "overlayfs-mnt-id") | changelog("nothing relevant"),
            Outcome(
                Status.PASS,
                f"build record {RECORD_PATH} says kcheck build-kernel applied overlayfs-mnt-id",
                evidence=Evidence.TREE,
            ),
            id="build-record",
        ),
        pytest.param(
            OLD,
            record("aio-ring-remap"),
            Outcome(
                Status.UNKNOWN,
                f"judged offline: kernel {OLD} is older than 4.2{BOOT_IT}",
                evidence=Evidence.VERSION,
            ),
            id="build-record-of-another-patchset",
        ),
        pytest.param(
            OLD,
            changelog(*BACKPORTED),
            Outcome(
                Status.PASS,
                f"changelog {CHANGELOG_PATH} names every overlayfs-mnt-id commit the 3.19.0 release lacks",
                evidence=Evidence.TREE,
            ),
            id="changelog-names-all",
        ),
        pytest.param(
            OLD,
            changelog(BACKPORTED[0], BACKPORTED[2], BACKPORTED[4]),
            Outcome(
                Status.UNKNOWN,
                "judged offline: changelog lacks "
                "df1a085af1 'VFS: Add a fallthrough flag for marking virtual dentries', "
                "4bacc9c923 'overlayfs: Make f_path always point to the overlay and f_inode to the underlay'"
                f"; kernel {OLD} is older than 4.2{BOOT_IT}",
                evidence=Evidence.VERSION,
            ),
            id="changelog-lacks-some",
        ),
        # A commit tagged v4.0-rc1 is in 4.0.0-rc1 itself: the changelog need not name it.
        pytest.param(
            "4.0.0-rc1",
            changelog(*BACKPORTED[2:]),
            Outcome(
                Status.PASS,
                f"changelog {CHANGELOG_PATH} names every overlayfs-mnt-id commit the 4.0.0-rc1 release lacks",
                evidence=Evidence.TREE,
            ),
            id="changelog-and-version",
        ),
        # 6.1 holds every overlayfs-mnt-id commit: a changelog or record naming them proves nothing more.
        pytest.param(
            "6.1.0-50-amd64",
            changelog(*BACKPORTED),
            Outcome(
                Status.PASS,
                "not observed live (judged offline); kernel 6.1.0 >= 4.2 has the fix by version",
                evidence=Evidence.VERSION,
            ),
            id="changelog-the-version-implies",
        ),
        pytest.param(
            "6.1.0-50-amd64",
            record("overlayfs-mnt-id"),
            Outcome(
                Status.PASS,
                "not observed live (judged offline); kernel 6.1.0 >= 4.2 has the fix by version",
                evidence=Evidence.VERSION,
            ),
            id="build-record-the-version-implies",
        ),
        pytest.param(
            "6.1.0-28-amd64",
            {},
            Outcome(
                Status.PASS,
                "not observed live (judged offline); kernel 6.1.0 >= 4.2 has the fix by version",
                evidence=Evidence.VERSION,
            ),
            id="version",
        ),
        pytest.param(
            OLD,
            {},
            Outcome(
                Status.UNKNOWN,
                "judged offline: no build record or kernel changelog in the image; "
                f"kernel {OLD} is older than 4.2{BOOT_IT}",
                evidence=Evidence.VERSION,
            ),
            id="no-evidence",
        ),
        pytest.param(
            OLD,
            {
                "record_path": RECORD_PATH,
                "record_error": f"{RECORD_PATH}: not a kcheck build record ($.patchsets: 5 is not an array)",
                "changelog_error": f"{CHANGELOG_PATH}: decompresses to more than 64 MB",
            },
            Outcome(
                Status.UNKNOWN,
                f"judged offline: cannot use {RECORD_PATH}: not a kcheck build record ($.patchsets: 5 is not "
                f"an array); cannot use {CHANGELOG_PATH}: decompresses to more than 64 MB; kernel {OLD} is "
                f"older than 4.2{BOOT_IT}",
                evidence=Evidence.VERSION,
            ),
            id="unusable-evidence",
        ),
        pytest.param(
            "custom",
            changelog(*BACKPORTED),
            Outcome(
                Status.UNKNOWN,
                "judged offline: kernel release 'custom' has no version kcheck can read, "
                f"so it decides nothing{BOOT_IT}",
                evidence=Evidence.VERSION,
            ),
            id="release-without-version",
        ),
    ],
)
def test_offline_fix_of_a_patchset(release, image, expected):
    assert verdicts.offline_fix(release, OVERLAY_FIX, "4.2", image) == expected


def test_offline_fix_with_a_tag_that_names_no_release_needs_the_changelog():
    """A site catalog may fetch from any tag (for-linus-4.2): it says nothing of the release."""
    first = OVERLAY_FIX.commits[0]
    site_fix = OVERLAY_FIX._replace(commits=(first._replace(tag="for-linus-4.2"),))
    release = "4.3.0-1-amd64"  # every v4.x tag is in it, but the site tag tells nothing
    assert verdicts.offline_fix(release, site_fix, "4.2", changelog(first.subject)) == Outcome(
        Status.PASS,
        f"changelog {CHANGELOG_PATH} names every overlayfs-mnt-id commit the 4.3.0 release lacks",
        evidence=Evidence.TREE,
    )
    lacking = verdicts.offline_fix(release, site_fix, "4.2", changelog("nothing relevant"))
    assert lacking.status == Status.PASS and lacking.evidence == Evidence.VERSION  # the version decides


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({}, "judged offline: no build record or kernel changelog in the image" + BOOT_IT),
        (changelog(*BACKPORTED), "judged offline: no evidence decides this" + BOOT_IT),
        (record("overlayfs-mnt-id"), "judged offline: no evidence decides this" + BOOT_IT),
    ],
)
def test_offline_fix_without_a_patchset_or_version_decides_nothing(image, expected):
    """A check no patchset fixes and no version decides (overlayfs.maps): never a PASS."""
    assert verdicts.offline_fix(OLD, None, None, image) == Outcome(Status.UNKNOWN, expected)


# --- total on malformed observations -----------------------------------------------------------

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
