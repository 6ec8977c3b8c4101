"""`criu --version` and `criu check`, run beside the live probes as the criu.check evidence.

Light imports only: kcheck.probe.early starts them before the rest of kcheck loads. The tools
are started with os.posix_spawn, not subprocess: importing subprocess (with threading and
selectors), or shutil for `which`, would delay criu's start by more than criu takes to start."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

from kcheck.probe import syscalls
from kcheck.probe.children import Finisher, Unavailable, wait_or_kill


def start_criu(timeout: float) -> Finisher:
    criu = find_program("criu")
    if criu is None:
        return lambda: {"installed": False}
    _subreaper(True)  # what criu starts and leaves behind becomes ours to reap
    with contextlib.suppress(ValueError):  # (not the main thread: leave it)
        # criu's exit status is evidence; with SIGCHLD ignored (inherited), the kernel reaps it
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    started: list[_Tool] = []
    try:
        for argv in ([criu, "check"], [criu, "--version"]):  # check first: it takes longest
            started.append(_Tool(argv))
    except Unavailable:
        for tool in started:
            tool.end(timeout)
        _subreaper(False)
        raise
    check, version = started

    def finish() -> dict[str, object]:
        try:
            version_output = version.output(timeout)
            check_output = check.output(timeout * 3, "3 × --timeout")
        finally:
            version.end(timeout)
            check.end(timeout)
            _subreaper(False)
        return {
            "installed": True,
            "path": criu,
            "version_output": version_output,
            "returncode": check.returncode,
            "output": check_output,
        }

    return finish


def find_program(name: str) -> str | None:
    """The first executable file `name` on PATH, as shutil.which finds a plain name."""
    for directory in os.get_exec_path():
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    return None


def _inheritable_fds() -> list[int]:
    """Descriptors above stderr that a spawned tool would inherit (subprocess closes them)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            if int(name) > 2 and os.get_inheritable(int(name)):
                found.append(int(name))
    return found


def _subreaper(enable: bool) -> None:
    with contextlib.suppress(OSError):  # prctl: Linux >= 3.4
        syscalls.set_child_subreaper(enable)


class _Tool:
    """A tool in its own session (so a kill reaches what it started), stdin /dev/null, its
    stdout and stderr read through pipes."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.returncode: int | None = None
        self.pipes: dict[int, list[bytes]] = {}
        ends: list[int] = []
        try:
            ends += os.pipe()  # out_read, out_write
            ends += os.pipe()  # err_read, err_write
            self.pid = os.posix_spawn(
                argv[0],
                argv,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, ends[1], 1),
                    (os.POSIX_SPAWN_DUP2, ends[3], 2),
                    *((os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()),
                ],
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores them; criu must not
            )
        except (OSError, NotImplementedError) as exc:
            for fd in ends:
                os.close(fd)
            raise Unavailable(f"cannot run {argv[0]}: {getattr(exc, 'strerror', None) or exc}") from None
        os.close(ends[1])
        os.close(ends[3])
        self.pipes = {ends[2]: [], ends[0]: []}  # in this order: the output is stderr, then stdout

    def output(self, timeout: float, allowed: str = "--timeout") -> str:
        """Its stderr then stdout once it exits (returncode set); Unavailable if it runs past `timeout`."""
        deadline = time.monotonic() + timeout
        reading = list(self.pipes)
        while reading or self.returncode is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                import shlex

                self.end(timeout)
                raise Unavailable(
                    f"{shlex.join(self.argv)} did not finish within {timeout:g}s ({allowed}); raise --timeout"
                )
            if not reading:  # both pipes closed: the tool is exiting
                self._poll()
                if self.returncode is None:
                    time.sleep(0.001)
                continue
            for fd in select.select(reading, [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                if chunk:
                    self.pipes[fd].append(chunk)
                else:
                    reading.remove(fd)
        return "".join(b"".join(chunks).decode(errors="replace") for chunks in self.pipes.values())

    def _poll(self) -> None:
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # the kernel reaped it: SIGCHLD was ignored when kcheck started
            self.end(0)
            raise Unavailable(
                f"the exit status of {self.argv[0]} was lost (SIGCHLD is ignored); "
                "run kcheck with SIGCHLD at its default"
            ) from None
        if done:
            self.returncode = os.waitstatus_to_exitcode(status)

    def end(self, timeout: float) -> None:
        """Kill what is left of its process group and reap it all: the tool, and what it
        started and orphaned (ours, as a subreaper), so nothing is left to a PID 1 that may
        never reap it. Gives up after `timeout` on a process that cannot die (stuck in the
        kernel). Closes the pipes."""
        if not self.pipes:
            return  # ended already
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.returncode is None:
            wait_or_kill(self.pid, deadline)
            self.returncode = -signal.SIGKILL
        while time.monotonic() < deadline:
            try:
                reaped, _ = os.waitpid(-self.pid, os.WNOHANG)
            except ChildProcessError:
                break  # none of its group is left
            if not reaped:
                time.sleep(0.001)
        for fd in self.pipes:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pipes = {}  # closed: a second end() must not close numbers reused since
