"""Reading input files that may be gzipped (config.gz, changelog.Debian.gz)."""

from __future__ import annotations

from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


class CorruptGzip(ValueError):
    """The file starts like gzip but does not decompress."""


def read_maybe_gzipped(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip; OSError when unreadable."""
    data = path.read_bytes()
    if data[:2] != GZIP_MAGIC:
        return data
    import gzip
    import zlib

    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptGzip(str(exc)) from None
