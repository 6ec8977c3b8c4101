"""Writing results: atomically to files (textfile collectors read them at any moment)."""

from __future__ import annotations

import os
from pathlib import Path

from kcheck.errors import KcheckError


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write via an unpredictable temp file in the same directory, then rename: readers never
    see half a file, and a planted symlink cannot redirect a root-run kcheck's write."""
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
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise KcheckError(f"cannot write {path}: {exc.strerror}") from None


def append_text(path: Path, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as exc:
        raise KcheckError(f"cannot append to {path}: {exc.strerror}") from None
