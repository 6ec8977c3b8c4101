"""Reading input files safely: regular files only (a FIFO would block forever, a device never
ends), never more than a limit (a config is a few MB; a gzip bomb is not), and gzip (config.gz,
changelog.Debian.gz) decompressed as a stream, under the same limit."""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
MiB = 1 << 20
CONFIG_LIMIT = 16 * MiB  # a distro kernel config is about 0.3 MB
CHANGELOG_LIMIT = 64 * MiB  # a decompressed kernel changelog is tens of MB at most
# A path as str or Path: str where thousands of files are read (a Path costs more to make and
# pickle) and on the probe's path (pathlib's import costs its start-up).
FilePath = str | os.PathLike[str]
DOCUMENT_LIMIT = 16 * MiB  # JSON and TOML documents: reports, records, manifests, patchsets


class CorruptGzip(ValueError):
    """The file starts like gzip but does not decompress."""


class InputRefused(OSError):
    """Not a regular file, or larger than kcheck reads: refused before it is read whole."""

    def __str__(self) -> str:
        return str(self.strerror)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (for messages)."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_capped(path: FilePath, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; InputRefused or OSError otherwise."""
    # Refused before it is opened: opening some devices does something (a watchdog arms).
    if not stat.S_ISREG(mode := os.stat(path).st_mode):
        raise InputRefused(0, f"is {file_kind(mode)}, not a regular file")
    # O_NONBLOCK: should it have become a FIFO since, opening it must not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputRefused(0, f"is {file_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit:  # /proc files say size 0: count what is really read
            chunk = os.read(fd, min(MiB, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise InputRefused(0, f"is larger than {limit // MiB} MB, more than kcheck reads")
    return b"".join(chunks)


def read_maybe_gzipped(path: FilePath, limit: int) -> bytes:
    """The file's bytes, decompressed as a stream when it is gzip; at most `limit` either way."""
    data = read_capped(path, limit)
    if data[:2] != GZIP_MAGIC:
        return data
    import re
    import zlib  # not gzip: that module costs the probe's start-up more than the whole config read

    chunks, size, offset, view = [], 0, 0, memoryview(data)
    try:
        while offset < len(data) and size <= limit:  # members, as `cat a.gz b.gz` makes
            member = zlib.decompressobj(wbits=31)
            # The input in slices that start small and grow: a member copies back only what it
            # did not use of its last slice, so millions of tiny members cost no more than one.
            step = 256
            while not member.eof and size <= limit:
                piece = view[offset : offset + step]
                if not piece:
                    raise CorruptGzip("compressed file ended before the end-of-stream marker was reached")
                offset, step = offset + len(piece), min(2 * step, MiB)
                # at most one byte over the limit: then it is refused, and the rest never read
                chunks.append(member.decompress(piece, limit + 1 - size))
                size += len(chunks[-1])
            offset -= len(member.unused_data)
            offset = re.compile(rb"\0*").match(data, offset).end()  # zero padding may follow a member
    except zlib.error as exc:
        raise CorruptGzip(str(exc)) from None
    if size > limit:
        raise InputRefused(0, f"decompresses to more than {limit // MiB} MB, more than kcheck reads")
    return b"".join(chunks)


def user_cache_dir() -> str:
    """kcheck's directory in the user's cache ($XDG_CACHE_HOME, else ~/.cache)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kcheck")


def read_json(path: FilePath, limit: int = DOCUMENT_LIMIT) -> Any:
    """A JSON document; ValueError when it is not JSON (or nested past the parser's depth)."""
    import json

    data = read_capped(path, limit)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
