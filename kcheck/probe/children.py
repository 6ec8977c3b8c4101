"""Forked children that report one observation through a pipe, and their reaping.

Light imports only (os, ctypes): the live probe forks its slowest child (the AIO ring's) from
here before the rest of kcheck is imported (kcheck.probe.early)."""

from __future__ import annotations

import contextlib
import marshal
import os
import select
import signal
import time
from collections.abc import Callable

from kcheck.probe import syscalls


class Unavailable(Exception):
    """This process cannot observe the kernel here (privilege, environment); not a verdict."""


Finisher = Callable[[], object]
Report = Callable[[dict[str, object]], None]


def start_child(
    what: str,
    work: Callable[[Report], None],
    timeout: float,
    *,
    linger: list[int] | None = None,
) -> Finisher:
    """Run `work` in a forked child; it reports one JSON observation through a pipe.

    The child dies with this process. It has `timeout` from its start to report; a caller
    that finds no report by then kills it. A report waiting in the pipe counts however late
    the caller comes for it (a probe still importing in an emulated guest). Once it
    reported, it is reaped at once, or with `linger` left to finish its cleanup: its pid
    goes there, and the caller reaps it later (wait_or_kill).
    """
    try:
        read_end, write_end = os.pipe()
    except OSError as exc:
        raise Unavailable(f"{what}: cannot create a pipe ({exc.strerror})") from None
    parent = os.getpid()
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
            if os.getppid() != parent:  # the parent died before the signal was armed
                return
            work(lambda obs: _send(write_end, obs))
        except BaseException as exc:
            _send(write_end, {"crash": repr(exc)})
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout  # from the start: the children run side by side

    def finish() -> dict[str, object]:
        reported = False
        try:
            data = _read_report(read_end, deadline)
            reported = True
        except TimeoutError:
            raise Unavailable(f"{what} did not finish within {timeout:g}s; raise --timeout") from None
        finally:
            os.close(read_end)
            if reported and linger is not None:
                linger.append(pid)
            else:
                reap(pid)
        result = _decode(what, data)
        if "unavailable" in result:
            raise Unavailable(result["unavailable"])
        if "crash" in result or not result:
            raise Unavailable(f"{what} child failed: {result.get('crash', 'no output')}")
        return result

    return finish


# A report is its length in _LENGTH bytes, then the observation (plain dicts, lists, text,
# numbers) in marshal's format. marshal is built in: a child pays no import (json's regexes)
# before it reports, and the AIO child reports before its io_destroy, the probe's last wait.
_LENGTH = 8


def _send(fd: int, observation: dict[str, object]) -> None:
    data = marshal.dumps(observation)
    os.write(fd, len(data).to_bytes(_LENGTH, "little") + data)


def _read_report(fd: int, deadline: float) -> bytes:
    """One report's bytes (fewer when the child died first); TimeoutError if nothing
    more is in the pipe at `deadline`; what is there is read whenever the caller comes."""
    chunks: list[bytes] = []
    size, wanted = 0, _LENGTH
    while size < wanted:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            if remaining <= 0:
                raise TimeoutError
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size >= _LENGTH:
            wanted = _LENGTH + int.from_bytes(b"".join(chunks)[:_LENGTH], "little")
    return b"".join(chunks)


def _decode(what: str, data: bytes) -> dict[str, object]:
    """The observation in a report; {} when the child sent nothing."""
    if not data:
        return {}
    size, result = int.from_bytes(data[:_LENGTH], "little"), None
    if len(data) >= _LENGTH + size:
        with contextlib.suppress(EOFError, ValueError, TypeError):
            result = marshal.loads(data[_LENGTH : _LENGTH + size])
    if not isinstance(result, dict):
        raise Unavailable(f"{what} child sent a cut-short report: {data[:80]!r}")
    return result


def reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def reap_lingering(pids: list[int], timeout: float) -> None:
    """Reap the children in `pids` (emptying it) as they finish; kill any still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while pids:
        wait_or_kill(pids.pop(), deadline)


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


def read_or_none(path: str) -> str | None:
    """A small /proc or /sys file's text, stripped; None when it cannot be read."""
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None
