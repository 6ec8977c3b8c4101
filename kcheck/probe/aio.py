"""The AIO ring probe's collector: a child that sets up a ring, moves it and tests it.

Light imports only: kcheck.probe.early forks this child before the rest of kcheck loads."""

from __future__ import annotations

import os

from kcheck.probe import syscalls
from kcheck.probe.children import Finisher, Report, read_or_none, start_child


def start_aio(timeout: float, lingering: list[int]) -> Finisher:
    """Create an AIO ring, move it, and test it (CRIU's aio_remap), in a child.

    The child creates the ring itself: a ring inherited across fork is never moved
    (that oopses kernels without "aio: fix mremap after fork null-deref"). It reports
    before io_destroy, whose RCU wait (30-50 ms here) would otherwise hold the probe up, and
    lingers in `lingering`: the probe reaps it last, after writing its report, so that wait
    overlaps all the rest.
    """
    return start_child("AIO probe", _aio_child, timeout, linger=lingering)


def _aio_child(report: Report) -> None:
    obs: dict[str, object] = {}
    try:
        context = syscalls.io_setup(16)
    except OSError as exc:
        obs["io_setup_errno"] = syscalls.errno_name(exc.errno)
        obs["aio_max_nr"] = read_or_none("/proc/sys/fs/aio-max-nr")
        report(obs)
        return
    live_context = context
    try:
        with open("/proc/self/maps") as file:  # a failure is reported below, not hidden
            maps = file.read()
        obs.update(context=context, maps=maps)
        length = _mapping_length(maps, context)
        if length is None:
            return
        target = syscalls.mmap(length, syscalls.PROT_READ, syscalls.MAP_PRIVATE | syscalls.MAP_ANONYMOUS)
        try:
            live_context = syscalls.mremap_fixed(context, length, target)
        except OSError as exc:
            obs["remap_errno"] = syscalls.errno_name(exc.errno)
            return
        obs["moved_to"] = live_context
        result, code = syscalls.io_getevents_probe(live_context)
        obs["getevents_moved"] = [result, syscalls.errno_name(code)]
        result, code = syscalls.io_getevents_probe(context)
        obs["getevents_old"] = [result, syscalls.errno_name(code)]
        obs["reopen_errno"] = _reopen_errno(live_context, live_context + length)
    except OSError as exc:  # e.g. mmap of the target refused: say so, do not hide it
        obs["error"] = str(exc)
    finally:
        report(obs)
        _destroy_ring(live_context, context)


def _mapping_length(maps: str, start: int) -> int | None:
    """The length of the mapping that starts at `start`, from its /proc/self/maps line
    ("START-END ..."). The verdict parses the whole text (procparse); the child needs only
    this, and its io_destroy, the probe's last wait, must not wait for an import and a regex."""
    for line in maps.splitlines():
        low, _, high = line.partition(" ")[0].partition("-")
        if int(low, 16) == start:  # compared as numbers: maps pads addresses to 8 digits
            return int(high, 16) - start
    return None


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
