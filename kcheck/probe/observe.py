"""Collectors: the only probe code that makes syscalls or runs tools.

Each returns raw observations (mostly /proc text) for the pure verdicts in
`kcheck.probe.verdicts`, or raises `Unavailable` when this process cannot observe.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kcheck.core.kconfig import RUNNING_CONFIG, config_locations, read_config_file, running_config_candidates
from kcheck.errors import KcheckError
from kcheck.probe import DEFAULT_TIMEOUT, syscalls
from kcheck.probe.image import observe_image

if TYPE_CHECKING:
    import subprocess

    from kcheck.patchsets.catalog import Patchset

PAGE = 4096
# Where the overlay child mounts its private tmpfs: hidden from the host by the
# child's own mount namespace, so nothing is ever created in the host's /tmp.
SCRATCH_CANDIDATES = ("/tmp", "/run", "/mnt", "/var/tmp")
SCRATCH_DIR_NAME = "kcheck"  # the layers: /tmp/kcheck/{lower,upper,work,merged}
PRIVILEGE_ERRNOS = {errno.EPERM, errno.EACCES}
# Debugging aid: keep the overlay probe's mounts alive this many seconds, so an admin
# can inspect them with `nsenter -t CHILD_PID -m`. The timeout still applies.
HOLD_ENV = "KCHECK_OVERLAY_HOLD"


class Unavailable(Exception):
    """This process cannot observe the kernel here (privilege, environment); not a verdict."""


Finisher = Callable[[], Any]


@dataclass(frozen=True)
class Background:
    """A collector that starts work (a child, a tool) and finishes it later, so several
    can wait at the same time. Called directly, it starts and finishes at once. The
    slowest start first (lower `order`), so everything else hides behind them."""

    start: Callable[[ProbeContext], Finisher]
    order: int = 0

    def __call__(self, ctx: ProbeContext) -> Any:
        return self.start(ctx)()


@dataclass(frozen=True)
class _Started:
    finish: Finisher


def _collect(produce: Callable[[], Any]) -> Any:
    try:
        return produce()
    except Unavailable as exc:
        return exc


@dataclass
class ProbeContext:
    """Inputs shared by the collectors, and a cache so each collector runs once."""

    release: str
    catalog: Mapping[str, Patchset] = field(default_factory=dict)
    config_path: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    mode: str = "live"  # or "offline": judge an image's kernel from files, not syscalls
    root: Path | None = None  # the image root, offline
    other_releases: tuple[str, ...] = ()  # kernels in the image that were not judged
    # Collectors by source name; tests swap in captured observations here.
    sources: Mapping[str, Callable[[ProbeContext], Any]] = field(default_factory=lambda: SOURCES)

    def __post_init__(self) -> None:
        self._cache: dict[str, Any] = {}
        # Children that reported and still finish their own cleanup (the AIO ring's io_destroy);
        # close() waits for them, so their exit overlaps the rest of the probe.
        self.lingering: list[int] = []

    def prefetch(self, sources: Iterable[str]) -> None:
        """Start the background collectors among `sources` now, slowest first, so their waits overlap."""
        started = [s for s in sources if isinstance(self.sources[s], Background) and s not in self._cache]
        for source in sorted(started, key=lambda s: self.sources[s].order):
            self._cache[source] = _collect(lambda c=self.sources[source]: _Started(c.start(self)))

    def close(self) -> None:
        """Finish what was started and never collected, and reap every child: nothing this
        probe started outlives it, whatever the exit path."""
        for source, value in list(self._cache.items()):
            if isinstance(value, _Started):
                self._cache[source] = _collect(value.finish)
        deadline = time.monotonic() + self.timeout
        while self.lingering:
            wait_or_kill(self.lingering.pop(), deadline)

    def observe(self, source: str) -> Any:
        if source not in self._cache:
            self._cache[source] = _collect(lambda: self.sources[source](self))
        value = self._cache[source]
        if isinstance(value, _Started):
            value = self._cache[source] = _collect(value.finish)
        if isinstance(value, Unavailable):
            raise value
        return value

    def cached(self, source: str) -> Any:
        """What a collector returned, if it already ran and could observe; else None."""
        value = self._cache.get(source)
        return None if isinstance(value, Unavailable) else value


def observe_release(ctx: ProbeContext) -> dict[str, Any]:
    return {"release": ctx.release, "patchsets": list(ctx.catalog.values())}


def observe_fdinfo(ctx: ProbeContext) -> str:
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        return Path(f"/proc/self/fdinfo/{fd}").read_text()
    finally:
        os.close(fd)


# --- kernel config -----------------------------------------------------------------


def config_candidates(release: str, root: Path | None = None) -> list[Path]:
    """Where distros keep a kernel's config, in CRIU/lxc-checkconfig order.

    /proc/config.gz describes only the running kernel, so an image root skips it.
    """
    if root is None:
        return running_config_candidates(release)
    from kcheck.probe.image import image_path

    return [image_path(root, path) for path in config_locations(release)]  # links resolve inside the image


def observe_config(ctx: ProbeContext) -> dict[str, Any]:
    if ctx.config_path is not None:
        return {"path": str(ctx.config_path), "options": read_config_file(ctx.config_path)}
    candidates = config_candidates(ctx.release, ctx.root)
    if ctx.mode == "offline":  # /proc/config.gz is the running kernel's, not the one judged
        candidates = [path for path in candidates if path != RUNNING_CONFIG]
    problems = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            return {"path": str(path), "options": read_config_file(path)}
        except KcheckError as exc:
            if ctx.mode == "offline":
                raise  # a broken config in an image is bad input for the gate
            problems.append(str(exc))
    where = ", ".join(str(p) for p in candidates)
    raise Unavailable("; ".join(problems) or f"no kernel config found in {where}; pass --config FILE")


# --- criu ----------------------------------------------------------------------------


def start_criu(ctx: ProbeContext) -> Finisher:
    criu = shutil.which("criu")
    if criu is None:
        return lambda: {"installed": False}
    version = _start_tool([criu, "--version"])
    try:
        check = _start_tool([criu, "check"])
    except Unavailable:
        _finish_tool(version, ctx.timeout)
        raise

    def finish() -> dict[str, Any]:
        try:
            version_done = _finish_tool(version, ctx.timeout)
            check_done = _finish_tool(check, ctx.timeout * 3, "3 × --timeout")
        finally:
            for process in (version, check):
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return {
            "installed": True,
            "path": criu,
            "version_output": version_done["output"],
            "returncode": check_done["returncode"],
            "output": check_done["output"],
        }

    return finish


def _start_tool(argv: list[str]) -> subprocess.Popen:
    import subprocess  # only when a tool (criu) is installed: keeps the probe's start-up short

    try:
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise Unavailable(f"cannot run {argv[0]}: {exc.strerror}") from None


def _finish_tool(process: subprocess.Popen, timeout: float, allowed: str = "--timeout") -> dict[str, Any]:
    import subprocess

    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise Unavailable(
            f"{shlex.join(process.args)} did not finish within {timeout:g}s ({allowed}); raise --timeout"
        ) from None
    return {"returncode": process.returncode, "output": stderr + stdout}


# --- AIO -----------------------------------------------------------------------------


def start_aio(ctx: ProbeContext) -> Finisher:
    """Create an AIO ring, move it, and test it (CRIU's aio_remap), in a child.

    The child creates the ring itself: a ring inherited across fork is never moved
    (that oopses kernels without "aio: fix mremap after fork null-deref"). It reports
    before io_destroy, whose RCU wait (~30 ms) would otherwise hold the probe up, and
    lingers: the probe reaps it last (ProbeContext.close), so that wait overlaps the rest.
    """
    return start_child("AIO probe", _aio_child, ctx.timeout, linger=ctx.lingering)


def _aio_child(report: Callable[[dict[str, Any]], None]) -> None:
    from kcheck.core.procparse import mapping_at, parse_maps

    obs: dict[str, Any] = {}
    try:
        context = syscalls.io_setup(16)
    except OSError as exc:
        obs["io_setup_errno"] = syscalls.errno_name(exc.errno)
        obs["aio_max_nr"] = read_or_none("/proc/sys/fs/aio-max-nr")
        report(obs)
        return
    live_context = context
    try:
        maps = Path("/proc/self/maps").read_text()
        obs.update(context=context, maps=maps)
        ring = mapping_at(parse_maps(maps), context)
        if ring is None:
            return
        target = syscalls.mmap(ring.length, syscalls.PROT_READ, syscalls.MAP_PRIVATE | syscalls.MAP_ANONYMOUS)
        try:
            live_context = syscalls.mremap_fixed(context, ring.length, target)
        except OSError as exc:
            obs["remap_errno"] = syscalls.errno_name(exc.errno)
            return
        obs["moved_to"] = live_context
        result, code = syscalls.io_getevents_probe(live_context)
        obs["getevents_moved"] = [result, syscalls.errno_name(code)]
        result, code = syscalls.io_getevents_probe(context)
        obs["getevents_old"] = [result, syscalls.errno_name(code)]
        obs["reopen_errno"] = _reopen_errno(live_context, live_context + ring.length)
    except OSError as exc:  # e.g. mmap of the target refused: say so, do not hide it
        obs["error"] = str(exc)
    finally:
        report(obs)
        _destroy_ring(live_context, context)


def _reopen_errno(start: int, end: int) -> str | None:
    """errno name of opening the ring via map_files O_RDWR; None when it (wrongly) opened."""
    try:
        fd = os.open(f"/proc/self/map_files/{start:x}-{end:x}", os.O_RDWR)
    except OSError as exc:
        return syscalls.errno_name(exc.errno)
    os.close(fd)
    return None


def _destroy_ring(live_context: int, original: int) -> None:
    """io_destroy the ring wherever the kernel thinks it is now."""
    for candidate in dict.fromkeys((live_context, original)):
        try:
            syscalls.io_destroy(candidate)
            return
        except OSError:
            continue


def read_or_none(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


# --- overlayfs ------------------------------------------------------------------------


def start_overlay(ctx: ProbeContext) -> Finisher:
    """Mount an overlay in a forked child with its own mount namespace, and report.

    The child dies with its namespace, so every mount it made vanishes on any exit
    path: success, error, timeout (SIGKILL from here) or this process being killed
    (PR_SET_PDEATHSIG).
    """

    def work(report: Callable[[dict[str, Any]], None]) -> None:
        report(_overlay_child())

    return start_child("overlay probe", work, ctx.timeout)


def start_child(
    what: str,
    work: Callable[[Callable[[dict[str, Any]], None]], None],
    timeout: float,
    *,
    linger: list[int] | None = None,
) -> Finisher:
    """Run `work` in a forked child; it reports one JSON observation through a pipe.

    The child dies with this process, and is killed on timeout. Once it reported, it is
    reaped at once, or with `linger` left to finish its cleanup: its pid goes there, and
    the caller reaps it later (wait_or_kill).
    """
    try:
        read_end, write_end = os.pipe()
    except OSError as exc:
        raise Unavailable(f"{what}: cannot create a pipe ({exc.strerror})") from None
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        raise Unavailable(f"{what}: cannot fork ({exc.strerror})") from None
    if pid == 0:  # child: must never return into the caller
        code = 0
        try:
            os.close(read_end)
            syscalls.set_parent_death_signal(signal.SIGKILL)
            work(lambda obs: os.write(write_end, json.dumps(obs).encode() + b"\n"))
        except BaseException as exc:
            os.write(write_end, json.dumps({"crash": repr(exc)}).encode() + b"\n")
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout

    def finish() -> dict[str, Any]:
        reported = False
        try:
            line = _read_line(read_end, deadline)
            reported = True
        except TimeoutError:
            raise Unavailable(f"{what} did not finish within {timeout:g}s; raise --timeout") from None
        finally:
            os.close(read_end)
            if reported and linger is not None:
                linger.append(pid)
            else:
                reap(pid)
        try:
            result = json.loads(line or b"{}")
        except ValueError:
            raise Unavailable(f"{what} child sent a cut-short report: {line[:80]!r}") from None
        if "unavailable" in result:
            raise Unavailable(result["unavailable"])
        if "crash" in result or not result:
            raise Unavailable(f"{what} child failed: {result.get('crash', 'no output')}")
        return result

    return finish


def _read_line(fd: int, deadline: float) -> bytes:
    """One newline-terminated message (or whatever came before EOF); TimeoutError if late."""
    chunks: list[bytes] = []
    while not chunks or not chunks[-1].endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).split(b"\n", 1)[0]


def reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def wait_or_kill(pid: int, deadline: float) -> None:
    """Reap a child that is finishing on its own; kill it if it is still there at `deadline`."""
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.001)
    reap(pid)


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
            Path(lower, name).write_bytes(b"k" * PAGE)
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
                    "fdinfo": Path(f"/proc/self/fdinfo/{fd}").read_text(),
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
            "mountinfo": Path("/proc/self/mountinfo").read_text(),
            "maps": Path("/proc/self/maps").read_text(),
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
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
            Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
        except OSError as exc:
            raise OSError(
                exc.errno,
                "mount namespace needs CAP_SYS_ADMIN and an unprivileged user namespace "
                f"was refused ({syscalls.errno_name(exc.errno)})",
            ) from None
        userns = True
    syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
    return userns


def start_criu_trial(ctx: ProbeContext) -> Finisher:
    """Imported only when criu.trial is selected (`--check`, `--require`, the external C/R
    pre-flight): it is never on the default path."""
    from kcheck.probe.trial import start_criu_trial as start

    return start(ctx)


SOURCES: dict[str, Callable[[ProbeContext], Any]] = {
    "release": observe_release,
    "fdinfo": observe_fdinfo,
    "config": observe_config,
    "criu": Background(start_criu, order=0),  # criu check: the longest wait
    "trial": Background(start_criu_trial, order=1),
    "aio": Background(start_aio, order=2),
    "overlay": Background(start_overlay, order=3),
    "image": observe_image,
}
