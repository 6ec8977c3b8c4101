"""`criu.trial`: prove C/R on this host by doing it, on a canary.

`criu check` passing does not mean a dump works. This collector checkpoints and restores
a canary that has exactly what kcheck exists for: a file on an overlay mount, open and
mmapped, and an AIO ring holding a completed, unreaped event. It reports raw
observations; the verdict (`verdicts.criu_trial`) decides.

Layout, all inside a driver child with its own private mount namespace:
- a tmpfs over the scratch dir (as the overlay probe does), holding the overlay layers,
  criu's images and logs: everything vanishes with the namespace, on any exit path;
- the canary: PID 1 of a new PID namespace (restore needs its PIDs free), orphaned to the
  driver, which is a child subreaper, so that the restored tree is the driver's to reap;
- criu runs in the same mount namespace, so the overlay file is dumped by its path, through
  the fdinfo mnt_id and the /proc/PID/fd link: the two things the overlayfs bug breaks.
The canary also exits by itself at a deadline, in case the driver is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kcheck
from kcheck.core.criu import log_first_error
from kcheck.probe import syscalls
from kcheck.probe.canary import CANARY_FILE, PAGE, POLL
from kcheck.probe.children import Finisher, Unavailable, read_or_none, reap, start_child
from kcheck.probe.observe import ProbeContext

TRIAL_DIR = "kcheck-trial"
# The driver gets DRIVER_TIMEOUTS probe timeouts before it is killed; its own steps stop one
# timeout earlier, so that it always has time to kill and reap what it started.
DRIVER_TIMEOUTS = 3
# How long the canary may live beyond the probe's timeout.
CANARY_GRACE = 5.0
# Run with -I (no environment, no user site): kcheck comes from the path given as argv[1].
CANARY_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); from kcheck.probe.canary import main; main(sys.argv[2:])"
)


def start_criu_trial(ctx: ProbeContext) -> Finisher:
    import atexit
    import shutil
    import tempfile

    criu = shutil.which("criu")
    if criu is None:
        return lambda: {"installed": False}
    # An empty directory of our own to mount the scratch tmpfs on: mounting over /tmp would
    # hide files the canary maps (a venv's python) from criu's restore.
    try:
        scratch = tempfile.mkdtemp(prefix="kcheck-trial-")
    except OSError as exc:
        raise Unavailable(f"criu trial: cannot create a scratch directory ({exc.strerror})") from None

    # Empty on the host (its contents live in the driver's namespace); removed when the trial
    # is read, or at exit if the probe stops before that (Ctrl-C, an error elsewhere).
    atexit.register(_remove_dir, scratch)

    def work(report: Callable[[dict[str, Any]], None]) -> None:
        report(_drive(criu, scratch, ctx.timeout))

    try:
        finish = start_child("criu trial", work, ctx.timeout * DRIVER_TIMEOUTS)
    except Unavailable:
        _remove_dir(scratch)
        raise

    def finish_and_clean() -> dict[str, Any]:
        try:
            return finish()
        finally:
            _remove_dir(scratch)

    return finish_and_clean


def _remove_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # gone already, or still mounted by a dying driver
        os.rmdir(path)


def _drive(criu: str, scratch: str, timeout: float) -> dict[str, Any]:
    obs: dict[str, Any] = {"installed": True, "path": criu, "stage": "setup"}
    started = time.monotonic()
    deadline = started + timeout * (DRIVER_TIMEOUTS - 1)
    version = subprocess.run([criu, "--version"], capture_output=True, text=True, timeout=timeout)
    obs["version_output"] = version.stdout
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount("none", "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
        syscalls.set_child_subreaper()
        syscalls.mount("kcheck-trial", scratch, "tmpfs", 0, "size=512m,mode=0700")
    except OSError as exc:
        return {"unavailable": f"cannot set up the trial's private mounts: {exc}"}
    base = Path(scratch, TRIAL_DIR)
    layers = {name: base / name for name in ("lower", "upper", "work", "merged", "images")}
    for directory in layers.values():
        directory.mkdir(parents=True)
    (layers["lower"] / CANARY_FILE).write_bytes(b"c" * PAGE)
    merged = layers["merged"]
    options = f"lowerdir={layers['lower']},upperdir={layers['upper']},workdir={layers['work']}"
    syscalls.mount("overlay", str(merged), "overlay", 0, options)
    count_file, ready_file, report_file = (base / name for name in ("count", "ready", "report.json"))
    canary = _spawn_canary(
        merged, count_file, ready_file, report_file, time.time() + timeout * DRIVER_TIMEOUTS + CANARY_GRACE
    )
    restored: int | None = None
    try:
        obs["stage"] = "canary"
        # A canary that fails reports its error and exits instead of getting ready.
        _wait_for(lambda: ready_file.exists() or report_file.exists(), deadline)
        if not ready_file.exists():
            obs["canary_error"] = read_or_none(str(report_file)) or "the canary did not get ready"
            return obs
        obs["stage"] = "dump"
        images = layers["images"]
        dump = _criu(
            obs,
            "dump",
            [criu, "dump", "-t", str(canary), "-D", str(images), "-o", "dump.log", "-v4"],
            images / "dump.log",
            deadline,
        )
        reap(canary)  # criu killed it after the dump
        canary = None
        if dump != 0:
            return obs
        obs["count_at_dump"] = _count(count_file)
        obs["stage"] = "restore"
        pidfile = base / "restore.pid"
        argv = [
            criu,
            "restore",
            "-d",
            "-D",
            str(images),
            "-o",
            "restore.log",
            "-v4",
            "--pidfile",
            str(pidfile),
        ]
        if _criu(obs, "restore", argv, images / "restore.log", deadline) != 0:
            return obs
        restored = int(pidfile.read_text().split()[0])
        obs["stage"] = "verify"
        before = obs["count_at_dump"] or 0
        _wait_for(lambda: (_count(count_file) or 0) > before, min(deadline, time.monotonic() + 2))
        obs["count_after_restore"] = _count(count_file)
        os.kill(restored, signal.SIGUSR1)
        if _wait_for(report_file.exists, deadline):  # written whole, then renamed into place
            obs["canary_report"] = json.loads(report_file.read_text())
        obs["expected_path"] = str(merged / CANARY_FILE)
        obs["stage"] = "done"
        return obs
    finally:
        obs["seconds"] = round(time.monotonic() - started, 3)
        for pid in (canary, restored):
            if pid is not None:
                reap(pid)


def _criu(obs: dict[str, Any], step: str, argv: list[str], log: Path, deadline: float) -> int:
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=max(deadline - started, 0.1),
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_driver,
        )
        code = done.returncode
        output = done.stderr + done.stdout
    except subprocess.TimeoutExpired:
        code, output = -1, "timed out"
    obs[step] = {
        "returncode": code,
        "seconds": round(time.monotonic() - started, 3),
        "first_error": log_first_error(log) or (output.strip().splitlines() or [None])[0],
    }
    return code


def _die_with_driver() -> None:
    """criu must not outlive a killed driver: it would keep the trial's namespace alive."""
    syscalls.set_parent_death_signal(signal.SIGKILL)


def _spawn_canary(merged: Path, count_file: Path, ready_file: Path, report_file: Path, expires: float) -> int:
    """Fork a helper that enters a new PID namespace and forks the canary as its PID 1, then
    exits: the canary is orphaned to us (a subreaper). Returns the canary's pid here."""
    argv = [
        sys.executable,
        "-I",
        "-c",
        CANARY_CODE,
        str(Path(kcheck.__file__).parent.parent),
        *(str(arg) for arg in (merged, count_file, ready_file, report_file, expires)),
    ]
    read_end, write_end = os.pipe()
    helper = os.fork()
    if helper == 0:
        try:
            os.close(read_end)
            syscalls.unshare(syscalls.CLONE_NEWPID)
            canary = os.fork()
            if canary == 0:
                # A fresh program: every mapping the canary has then comes from this mount
                # namespace, as criu requires (this process's are the host's).
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                os.execv(argv[0], argv)
            os.write(write_end, f"{canary}\n".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        line = stream.readline()
    os.waitpid(helper, 0)
    if not line.strip():
        raise Unavailable("criu trial: could not start the canary in a new PID namespace")
    return int(line)


def _wait_for(condition: Callable[[], bool], deadline: float) -> bool:
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _count(count_file: Path) -> int | None:
    text = read_or_none(str(count_file))
    return int(text) if text and text.isdigit() else None
