"""`criu --version` and `criu check`, run beside the live probes as the criu.check evidence.

Light imports only: kcheck.probe.early starts them before the rest of kcheck loads."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import time

from kcheck.probe import syscalls
from kcheck.probe.children import Finisher, Unavailable, wait_or_kill

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    import subprocess


def start_criu(timeout: float) -> Finisher:
    criu = shutil.which("criu")
    if criu is None:
        return lambda: {"installed": False}
    _subreaper(True)  # what criu starts and leaves behind becomes ours to reap
    version = _start_tool([criu, "--version"])
    try:
        check = _start_tool([criu, "check"])
    except Unavailable:
        _finish_tool(version, timeout)
        _subreaper(False)
        raise

    def finish() -> dict[str, object]:
        try:
            version_done = _finish_tool(version, timeout)
            check_done = _finish_tool(check, timeout * 3, "3 × --timeout")
        finally:
            deadline = time.monotonic() + timeout
            for process in (version, check):
                _end_group(process, deadline)
            _subreaper(False)
        return {
            "installed": True,
            "path": criu,
            "version_output": version_done["output"],
            "returncode": check_done["returncode"],
            "output": check_done["output"],
        }

    return finish


def _subreaper(enable: bool) -> None:
    with contextlib.suppress(OSError):  # prctl: Linux >= 3.4
        syscalls.set_child_subreaper(enable)


def _start_tool(argv: list[str]) -> subprocess.Popen:
    import subprocess  # only when criu is installed: keeps the probe's start-up short without it

    try:
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: a kill reaches what it started
        )
    except OSError as exc:
        raise Unavailable(f"cannot run {argv[0]}: {exc.strerror}") from None


def _end_group(process: subprocess.Popen, deadline: float) -> None:
    """Kill what is left of a tool's process group and reap it all: the tool, and what it
    started and orphaned (ours, as a subreaper), so nothing is left to a PID 1 that may never
    reap it. Gives up at `deadline` on a process that cannot die (stuck in the kernel)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    wait_or_kill(process.pid, deadline)
    process.returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(-process.pid, os.WNOHANG)
        except ChildProcessError:
            return  # none of its group is left
        if not reaped:
            time.sleep(0.001)


def _finish_tool(process: subprocess.Popen, timeout: float, allowed: str = "--timeout") -> dict[str, object]:
    import subprocess

    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_group(process, time.monotonic() + timeout)
        process.communicate()
        raise Unavailable(
            f"{shlex.join(process.args)} did not finish within {timeout:g}s ({allowed}); raise --timeout"
        ) from None
    return {"returncode": process.returncode, "output": stderr + stdout}
