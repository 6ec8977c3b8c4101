"""argparse types shared by every subcommand: bad values become usage errors (exit 3)."""

from __future__ import annotations

import argparse
from pathlib import Path

MAX_JOBS = 4096  # more make jobs than any build machine has CPUs for


def path_arg(text: str) -> Path:
    """A path: never empty (Path('') would silently mean the current directory), never NUL."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a file or directory")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} contains a NUL byte; no path can")
    return Path(text)


def jobs_arg(text: str) -> int:
    """Parallel make jobs: 1 to MAX_JOBS."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number of jobs") from None
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"{text[:40]} jobs: give 1 to {MAX_JOBS}")
    return value
