"""The probe's checks, as data. Adding a check means adding an entry here, not engine code."""

from __future__ import annotations

from collections import namedtuple
from functools import partial

from kcheck.core.result import Evidence
from kcheck.probe import verdicts

_FIELDS = (
    "id",  # str, e.g. "overlayfs.mnt_id"
    "title",  # str
    "required",  # bool
    "source",  # str: the collector in kcheck.probe.observe.SOURCES that feeds the verdict
    "verdict",  # the observation -> verdicts.Outcome
    "evidence",  # Evidence: the kind of result (default live)
    "needs_root",  # bool: euid 0; checks that can use a user namespace do not need it
    "patchset",  # str | None: the catalog patchset that fixes a failure
    "min_version",  # str | None: for fixes outside the catalog
    "remedy",  # str | None: what to do when the check fails, beyond the patchset
    "affects",  # str | None: what breaks when an optional check fails
    "on_demand",  # bool: runs only when --check or --require names it (slow, or intrusive)
)


class CheckSpec(
    namedtuple("CheckSpec", _FIELDS, defaults=(Evidence.LIVE, False, None, None, None, None, False))
):
    """One check, as data (its fields are listed above)."""

    __slots__ = ()

    @property
    def needs_live(self) -> bool:
        """Whether it observes a running kernel (so offline it needs other evidence)."""
        return self.evidence in (Evidence.LIVE, Evidence.TOOL)


LIVE_CHECKS = (
    CheckSpec(
        id="overlayfs.mnt_id",
        title="fdinfo mnt_id of an overlay file is the overlay mount",
        required=True,
        source="overlay",
        verdict=verdicts.overlay_mnt_id,
        patchset="overlayfs-mnt-id",
    ),
    CheckSpec(
        id="overlayfs.fd_path",
        title="/proc/self/fd link of an overlay file is its overlay path",
        required=True,
        source="overlay",
        verdict=verdicts.overlay_fd_path,
        patchset="overlayfs-mnt-id",
    ),
    CheckSpec(
        id="overlayfs.maps",
        title="/proc/self/maps dev:ino of an mmapped overlay file equals fstat",
        required=False,
        source="overlay",
        verdict=verdicts.overlay_maps,
        remedy="use a kernel whose overlayfs reports the overlay in /proc/PID/maps",
        affects="dumps of containers that mmap files on overlay (CRIU's overlayfs_maps)",
    ),
    CheckSpec(
        id="aio.ring_remap",
        title="io_getevents works on an mremapped AIO ring",
        required=True,
        source="aio",
        verdict=verdicts.aio_ring_remap,
        patchset="aio-ring-remap",
        remedy="if io_setup failed, raise fs.aio-max-nr or enable CONFIG_AIO",
    ),
    CheckSpec(
        id="aio.reopen_enxio",
        title="reopening the AIO ring via /proc/self/map_files fails with ENXIO",
        required=True,
        source="aio",
        verdict=verdicts.aio_reopen_enxio,
        needs_root=True,
        patchset="aio-ring-remap",
    ),
    CheckSpec(
        id="fdinfo.mnt_id_field",
        title="/proc/PID/fdinfo has a mnt_id line",
        required=True,
        source="fdinfo",
        verdict=verdicts.fdinfo_mnt_id_field,
        min_version="3.15",
    ),
    CheckSpec(
        id="criu.check",
        title="criu check passes",
        required=False,
        source="criu",
        verdict=verdicts.criu_check,
        evidence=Evidence.TOOL,
        needs_root=True,
        remedy="install a criu release that supports this kernel (criu.org/Download)",
        affects="C/R with the installed criu",
    ),
    CheckSpec(
        id="criu.trial",
        title="criu dumps and restores a canary (overlay file, AIO ring, PID namespace)",
        required=False,
        source="trial",
        verdict=verdicts.criu_trial,
        evidence=Evidence.TOOL,
        needs_root=True,
        on_demand=True,
        remedy="read criu's error above; `kcheck probe --check criu.check` for criu's own view",
        affects="C/R with this criu on this kernel",
    ),
    CheckSpec(
        id="kernel.release",
        title="kernel release, and the fixes its version implies",
        required=False,
        source="release",
        verdict=verdicts.kernel_release,
        evidence=Evidence.VERSION,
    ),
)

# (option, required, what breaks without it): criu.org "Linux kernel", lxc-checkconfig.
CONFIG_OPTIONS = (
    ("CHECKPOINT_RESTORE", True, "C/R itself"),
    ("NAMESPACES", True, "containers"),
    ("UTS_NS", True, "UTS namespaces"),
    ("IPC_NS", True, "IPC namespaces"),
    ("PID_NS", True, "PID namespaces"),
    ("NET_NS", True, "network namespaces"),
    ("FHANDLE", True, "dumping inotify and fanotify"),
    ("EVENTFD", True, "eventfd files"),
    ("EPOLL", True, "epoll files"),
    ("INOTIFY_USER", True, "inotify files"),
    ("UNIX_DIAG", True, "unix sockets"),
    ("INET_DIAG", True, "TCP sockets"),
    ("INET_UDP_DIAG", True, "UDP sockets"),
    ("PACKET_DIAG", True, "packet sockets"),
    ("NETLINK_DIAG", True, "netlink sockets"),
    ("TUN", False, "tun/tap devices in containers"),
    ("MEM_SOFT_DIRTY", False, "incremental (pre-)dumps"),
    ("OVERLAY_FS", False, "overlay storage (docker overlay2)"),
    ("AIO", False, "processes that use async IO"),
)

CONFIG_CHECKS = tuple(
    CheckSpec(
        id=f"config.{option}",
        title=f"CONFIG_{option} is enabled",
        required=required,
        source="config",
        verdict=partial(verdicts.config_option, f"CONFIG_{option}"),
        evidence=Evidence.CONFIG,
        remedy=f"rebuild the kernel with CONFIG_{option}=y (kcheck build-kernel --set CONFIG_{option}=y)",
        affects=affects,
    )
    for option, required, affects in CONFIG_OPTIONS
)

CHECKS: tuple[CheckSpec, ...] = LIVE_CHECKS + CONFIG_CHECKS
CHECK_IDS = tuple(spec.id for spec in CHECKS)
