"""The overlayfs probe's collector: a child that mounts an overlay in its own mount namespace
and reports what /proc says of files opened and mapped on it.

Light imports only: kcheck.probe.early forks this child before the rest of kcheck loads."""

from __future__ import annotations

import errno
import os
import time

from kcheck.probe import syscalls
from kcheck.probe.children import Finisher, start_child

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from typing import Any

PAGE = 4096
# Where the overlay child mounts its private tmpfs: hidden from the host by the
# child's own mount namespace, so nothing is ever created in the host's /tmp.
SCRATCH_CANDIDATES = ("/tmp", "/run", "/mnt", "/var/tmp")
SCRATCH_DIR_NAME = "kcheck"  # the layers: /tmp/kcheck/{lower,upper,work,merged}
PRIVILEGE_ERRNOS = {errno.EPERM, errno.EACCES}
# Debugging aid: keep the overlay probe's mounts alive this many seconds, so an admin
# can inspect them with `nsenter -t CHILD_PID -m`. The timeout still applies.
HOLD_ENV = "KCHECK_OVERLAY_HOLD"


def start_overlay(timeout: float, lingering: list[int]) -> Finisher:
    """Mount an overlay in a forked child with its own mount namespace, and report.

    The child dies with its namespace, so every mount it made vanishes on any exit
    path: success, error, timeout (SIGKILL from here) or this process being killed
    (PR_SET_PDEATHSIG). Once it reported it lingers in `lingering`: its exit tears the
    mounts down, and the probe reaps it last.
    """
    return start_child("overlay probe", lambda report: report(_overlay_child()), timeout, linger=lingering)


def _overlay_child() -> dict[str, Any]:
    try:
        userns = _enter_private_mount_namespace()
    except OSError as exc:
        return {"unavailable": exc.strerror or str(exc)}
    scratch = next((p for p in SCRATCH_CANDIDATES if os.path.isdir(p)), None)
    if scratch is None:
        return {"unavailable": f"no directory to mount a scratch tmpfs on ({', '.join(SCRATCH_CANDIDATES)})"}
    stage = "mount tmpfs"
    try:
        syscalls.mount("kcheck", scratch, "tmpfs", 0, "size=4m,mode=0700")
        stage = "prepare layers"
        base = os.path.join(scratch, SCRATCH_DIR_NAME)
        lower, upper, work, merged = (os.path.join(base, d) for d in ("lower", "upper", "work", "merged"))
        for directory in (lower, upper, work, merged):
            os.makedirs(directory)
        for name in ("lower-only", "copied-up"):
            _write(os.path.join(lower, name), b"k" * PAGE)
        stage = "mount overlay"
        syscalls.mount("overlay", merged, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")
        stage = "open files"
        files = []
        for name, flags in (("lower-only", os.O_RDONLY), ("copied-up", os.O_RDWR)):
            path = os.path.join(merged, name)
            fd = os.open(path, flags)
            status = os.fstat(fd)
            stage = f"mmap {name}"
            address = syscalls.mmap(PAGE, syscalls.PROT_READ, syscalls.MAP_SHARED, fd)
            files.append(
                {
                    "name": name,
                    "path": path,
                    "fdinfo": _read(f"/proc/self/fdinfo/{fd}"),
                    "link": os.readlink(f"/proc/self/fd/{fd}"),
                    "map_address": address,
                    "fstat": [os.major(status.st_dev), os.minor(status.st_dev), status.st_ino],
                }
            )
        stage = "read /proc"
        observation = {
            "mount_point": merged,
            "layers": {"lower": lower, "upper": upper},
            "userns": userns,
            "files": files,
            "mountinfo": _read("/proc/self/mountinfo"),
            "maps": _read("/proc/self/maps"),
        }
        time.sleep(float(os.environ.get(HOLD_ENV) or 0))
        return observation
    except OSError as exc:
        if exc.errno in PRIVILEGE_ERRNOS and stage.startswith("mount"):
            return {"unavailable": f"{stage} refused ({syscalls.errno_name(exc.errno)}): needs CAP_SYS_ADMIN"}
        return {"error": {"stage": stage, "errno": syscalls.errno_name(exc.errno), "message": str(exc)}}


def _enter_private_mount_namespace() -> bool:
    """unshare a mount namespace, through a user namespace when not privileged.

    Returns whether a user namespace was needed; OSError says why neither worked.
    """
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        userns = False
    except OSError as first:
        if first.errno not in PRIVILEGE_ERRNOS:
            raise
        uid, gid = os.geteuid(), os.getegid()
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS)
            _write("/proc/self/setgroups", b"deny")
            _write("/proc/self/uid_map", f"0 {uid} 1".encode())
            _write("/proc/self/gid_map", f"0 {gid} 1".encode())
        except OSError as exc:
            raise OSError(
                exc.errno,
                "mount namespace needs CAP_SYS_ADMIN and an unprivileged user namespace "
                f"was refused ({syscalls.errno_name(exc.errno)})",
            ) from None
        userns = True
    syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
    return userns


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
