"""argparse types shared by every subcommand: bad values become usage errors (exit 3)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

MAX_JOBS = 4096  # more make jobs than any build machine has CPUs for
MAX_SECONDS = 24 * 3600.0


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


def seconds(text: str) -> float:
    """argparse type: a finite, positive number of seconds (at most a day)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 and at most {MAX_SECONDS:g} seconds")
    return value
