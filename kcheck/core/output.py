"""Writing results: atomically to files (textfile collectors read them at any moment)."""

from __future__ import annotations

import os
from pathlib import Path

from kcheck.errors import KcheckError


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and rename, so readers never see half."""
    directory = path.parent if str(path.parent) else Path(".")
    temp = directory / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise KcheckError(
            f"cannot write {path}: {exc.strerror}; pass an --output path in a writable directory"
        ) from None


def append_text(path: Path, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as exc:
        raise KcheckError(f"cannot append to {path}: {exc.strerror}") from None
