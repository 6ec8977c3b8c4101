"""Writing results: atomically to files (textfile collectors read them at any moment)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from kcheck.errors import KcheckError


def write_atomic(path: Path, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write via an unpredictable temp file in the same directory, then rename: readers never
    see half a file, and a planted symlink cannot redirect a root-run kcheck's write.
    Only for files kcheck owns or a regular file's path (see write_output)."""
    import tempfile  # not at module level: most runs print to stdout and never need it

    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise KcheckError(
            f"cannot write {path}: {exc.strerror}; check that its directory exists and is writable"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(stream.fileno(), *owner)
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise KcheckError(f"cannot write {path}: {exc.strerror}") from None


def write_output(path: Path, text: str) -> None:
    """Where a user's --output points: `-` is stdout; a character device, a FIFO or an fd
    (`/dev/stdout`, `/proc/self/fd/N`) is written through, never replaced; a regular file is
    replaced atomically, keeping its mode and owner, and a symlink to one keeps the link.
    Anything else (a directory, a socket, a dangling link) is bad input."""
    import stat

    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if _names_an_fd(path):  # reopening the fd's file appends, as the shell's redirection would
        _write_through(path, text, os.O_WRONLY | os.O_APPEND)
        return
    try:
        found = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise KcheckError(
                f"--output {path} is a symlink to nothing; remove it or pass another path"
            ) from None
        write_atomic(path, text)
        return
    except OSError as exc:
        raise KcheckError(f"--output {path}: {exc.strerror}; pass another path") from None
    if stat.S_ISREG(found.st_mode):
        target = Path(os.path.realpath(path))
        write_atomic(target, text, stat.S_IMODE(found.st_mode), (found.st_uid, found.st_gid))
    elif stat.S_ISCHR(found.st_mode):
        _write_through(path, text, os.O_WRONLY)
    elif stat.S_ISFIFO(found.st_mode):
        _write_through(path, text, os.O_WRONLY | os.O_NONBLOCK)  # no reader: ENXIO, not a hang
    else:
        kind = "a directory" if stat.S_ISDIR(found.st_mode) else "not a file, device or FIFO"
        raise KcheckError(f"--output {path} is {kind}; pass a file path")


def _names_an_fd(path: Path) -> bool:
    """Whether path leads, through symlinks, to /proc/PID/fd/N (as /dev/stdout does)."""
    import re

    current = os.path.abspath(path)
    for _ in range(40):  # the kernel's own symlink limit
        current = os.path.join(os.path.realpath(os.path.dirname(current)), os.path.basename(current))
        if re.fullmatch(r"/proc/[^/]+/fd/\d+", current):
            return True
        if not os.path.islink(current):
            return False
        current = os.path.join(os.path.dirname(current), os.readlink(current))
    return False


def _write_through(path: Path, text: str, flags: int) -> None:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        why = "a FIFO with no reader" if exc.errno == errno.ENXIO else exc.strerror
        raise KcheckError(f"--output {path}: cannot open it ({why}); pass another path") from None
    try:
        os.set_blocking(fd, True)
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
    except OSError as exc:
        raise KcheckError(f"--output {path}: cannot write ({exc.strerror})") from None
    finally:
        os.close(fd)


def append_text(path: Path, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as exc:
        raise KcheckError(f"cannot append to {path}: {exc.strerror}") from None
