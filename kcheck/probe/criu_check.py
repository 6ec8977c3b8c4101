"""`criu --version` and `criu check`, run beside the live probes as the criu.check evidence.

Light imports only: kcheck.probe.early starts them before the rest of kcheck loads."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
from typing import TYPE_CHECKING

from kcheck.probe import syscalls
from kcheck.probe.children import Finisher, Unavailable

if TYPE_CHECKING:
    import subprocess


def start_criu(timeout: float) -> Finisher:
    criu = shutil.which("criu")
    if criu is None:
        return lambda: {"installed": False}
    version = _start_tool([criu, "--version"])
    try:
        check = _start_tool([criu, "check"])
    except Unavailable:
        _finish_tool(version, timeout)
        raise

    def finish() -> dict[str, object]:
        try:
            version_done = _finish_tool(version, timeout)
            check_done = _finish_tool(check, timeout * 3, "3 × --timeout")
        finally:
            for process in (version, check):
                if process.poll() is None:
                    _kill_tool(process)
        return {
            "installed": True,
            "path": criu,
            "version_output": version_done["output"],
            "returncode": check_done["returncode"],
            "output": check_done["output"],
        }

    return finish


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


def _kill_tool(process: subprocess.Popen) -> None:
    """Kill a tool and everything it started, and reap them all: its orphans are made ours
    (a subreaper), so none is left to a PID 1 that may never reap it."""
    with contextlib.suppress(OSError):  # prctl: Linux >= 3.4
        syscalls.set_child_subreaper()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    with contextlib.suppress(ChildProcessError):
        while True:
            os.waitpid(-process.pid, 0)  # the rest of its process group, now our children


def _finish_tool(process: subprocess.Popen, timeout: float, allowed: str = "--timeout") -> dict[str, object]:
    import subprocess

    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tool(process)
        process.communicate()
        raise Unavailable(
            f"{shlex.join(process.args)} did not finish within {timeout:g}s ({allowed}); raise --timeout"
        ) from None
    return {"returncode": process.returncode, "output": stderr + stdout}
