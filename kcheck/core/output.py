"""Writing results: atomically to files (textfile collectors read them at any moment)."""

from __future__ import annotations

import contextlib
import errno
import os
import sys

from kcheck.errors import KcheckError

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from kcheck.core.files import FilePath


def write_atomic(path: FilePath, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write via an unpredictable temp file in the same directory, then rename: readers never
    see half a file, and no file is ever written in place. `owner` is kept only as root."""
    import tempfile  # not at module level: most runs print to stdout and never need it

    directory = os.path.dirname(path) or "."
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise KcheckError(
            f"cannot write {path}: {exc.strerror}; check that its directory exists and is writable"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as stream:
            stream.write(text)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(stream.fileno(), *owner)
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise KcheckError(f"cannot write {path}: {exc.strerror}") from None


def text_style(output: FilePath | None) -> tuple[bool, bool]:
    """(table, colour) for text bound for `output` (None: stdout): rich tables only for a
    terminal, and colour there only without NO_COLOR; a file or a pipe gets plain text."""
    terminal = output is None and sys.stdout.isatty()
    return terminal, terminal and not os.environ.get("NO_COLOR")


def emit(output: FilePath | None, text: str) -> None:
    """A result to --output when one was given (write_output), else to stdout."""
    if output is not None:
        write_output(output, text)
    else:
        sys.stdout.write(text)


def write_output(path: FilePath, text: str) -> None:
    """Where a user's --output points: `-` is stdout; our own fd (`/dev/stdout`,
    `/proc/self/fd/N`), a character device or a FIFO is written through, never replaced; a
    regular file is replaced atomically, keeping its mode (and owner, as root). A symlink is
    followed only when root or the caller owns it, as the kernel's protected_symlinks does: a
    link planted by someone else could point a root-run kcheck at any file. Anything else (a
    directory, a socket, a dangling link) is bad input."""
    import stat

    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if (fd_number := _own_fd(path)) is not None:  # a dup, not a reopen: sockets cannot be reopened
        _write_fd(path, os.dup(fd_number), text)
        return
    try:
        link = os.lstat(path)
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
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, os.geteuid()):
        raise KcheckError(
            f"--output {path} is a symlink owned by uid {link.st_uid}; kcheck does not follow "
            "other users' links: pass the target's own path"
        )
    if stat.S_ISREG(found.st_mode):
        write_atomic(os.path.realpath(path), text, stat.S_IMODE(found.st_mode), (found.st_uid, found.st_gid))
    elif stat.S_ISCHR(found.st_mode) or stat.S_ISFIFO(found.st_mode):
        try:  # O_NONBLOCK: a FIFO with no reader is ENXIO at once, not a hang
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            why = "a FIFO with no reader" if exc.errno == errno.ENXIO else exc.strerror
            raise KcheckError(f"--output {path}: cannot open it ({why}); pass another path") from None
        opened = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(opened) or stat.S_ISFIFO(opened)):  # swapped since the stat above
            os.close(fd)
            raise KcheckError(f"--output {path} changed while kcheck opened it; pass it again")
        _write_fd(path, fd, text)
    else:
        from kcheck.core.files import file_kind

        raise KcheckError(f"--output {path} is {file_kind(found.st_mode)}; pass a file path")


def _own_fd(path: FilePath) -> int | None:
    """N when path leads, through symlinks, to this process's /proc/PID/fd/N (as /dev/stdout)."""
    import re

    current = os.path.abspath(path)
    own = re.compile(rf"/proc/(?:self|{os.getpid()})/fd/(\d+)")
    for _ in range(40):  # the kernel's own symlink limit
        current = os.path.join(os.path.realpath(os.path.dirname(current)), os.path.basename(current))
        if match := own.fullmatch(current):
            return int(match.group(1))
        if not os.path.islink(current):
            return None
        current = os.path.join(os.path.dirname(current), os.readlink(current))
    return None


def _write_fd(path: FilePath, fd: int, text: str) -> None:
    """Write all of text to fd (blocking), then close it."""
    try:
        os.set_blocking(fd, True)
        data = text.encode(errors="replace")
        while data:
            data = data[os.write(fd, data) :]
    except OSError as exc:
        raise KcheckError(f"--output {path}: cannot write ({exc.strerror})") from None
    finally:
        os.close(fd)


def append_text(path: FilePath, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as exc:
        raise KcheckError(f"cannot append to {path}: {exc.strerror}") from None
