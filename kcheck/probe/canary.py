"""The canary that `criu.trial` checkpoints and restores (see `kcheck.probe.trial`).

It runs as a fresh program (`python -I -c ...`), PID 1 of its own PID namespace, so that
everything it maps comes from the trial's mount namespace. It holds a file on the overlay
open and mmapped and an AIO ring with a completed, unreaped read; it counts into a file;
after SIGUSR1 (sent once it is restored) it reports what it sees, for the verdict.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from kcheck.probe import syscalls

CANARY_FILE = "canary-file"
PAGE = 4096
POLL = 0.02


def main(args: list[str]) -> None:
    merged, count_file, ready_file, report_file = (Path(arg) for arg in args[:4])
    expires = float(args[4])
    try:
        os.chdir(merged)
        fd = os.open(merged / CANARY_FILE, os.O_RDWR)  # opened for writing: copied up
        syscalls.mmap(PAGE, syscalls.PROT_READ, syscalls.MAP_SHARED, fd)
        context = syscalls.io_setup(16)
        flags = syscalls.MAP_PRIVATE | syscalls.MAP_ANONYMOUS
        buffer = syscalls.mmap(PAGE, syscalls.PROT_READ | syscalls.PROT_WRITE, flags)
        syscalls.io_submit_pread(context, fd, buffer, PAGE)
        while syscalls.aio_ring_pending(context) == 0:  # completed, and left unreaped
            time.sleep(POLL)
        asked: list[int] = []
        signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))
        ready_file.write_text("ready\n")
        count = 0
        temp = count_file.with_suffix(".tmp")
        while time.time() < expires:
            count += 1
            temp.write_text(f"{count}\n")
            os.replace(temp, count_file)  # a dump between the two never sees an empty count
            if asked:
                asked.clear()
                _report(report_file, context, fd)
            time.sleep(POLL)
    except Exception as exc:
        report_file.write_text(json.dumps({"error": repr(exc)}))
        sys.exit(1)


def _report(report_file: Path, context: int, fd: int) -> None:
    report: dict[str, object] = {"fd_link": os.readlink(f"/proc/self/fd/{fd}")}
    try:
        report["aio_results"] = syscalls.io_getevents_results(context, 4)
    except OSError as exc:
        report["aio_errno"] = syscalls.errno_name(exc.errno)
    temp = report_file.with_suffix(".tmp")
    temp.write_text(json.dumps(report))
    os.replace(temp, report_file)
