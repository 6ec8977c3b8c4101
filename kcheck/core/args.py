"""kcheck's argparse: its parser class, and the types shared by every subcommand. Bad values
become usage errors (exit 3)."""

from __future__ import annotations

import argparse
import math
import os
import sys

from kcheck.core.result import ExitCode
from kcheck.errors import printable

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from pathlib import Path


class HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, with the terminal's width found without shutil, as shutil finds it:
    argparse makes a formatter at every add_argument, and shutil's import (bz2, lzma) costs
    the probe's start-up more than building its parser."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width=None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _columns() - 2)


def _columns() -> int:
    """$COLUMNS, else stdout's terminal width, else 80."""
    try:
        if (columns := int(os.environ.get("COLUMNS", ""))) > 0:
            return columns
    except ValueError:
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, with kcheck's bad-input exit code (3, not 2)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("kcheck").strip()
        where = f"{command}: " if command else ""
        line = printable(f"{where}{message}", keep_newlines=False)
        self.exit(int(ExitCode.BAD_INPUT), f"kcheck: error: {line}; see `{self.prog} --help`\n")


MAX_JOBS = 4096  # more make jobs than any build machine has CPUs for
MAX_SECONDS = 24 * 3600.0


def path_arg(text: str) -> Path:
    """A path: never empty (Path('') would silently mean the current directory), never NUL."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a file or directory")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} contains a NUL byte; no path can")
    from pathlib import Path  # here: the plain probe takes no path, and pathlib costs its start-up

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
