"""The one output channel of kcheck's domain code: `say` what happens and what came out
(stdout), `note` what kcheck runs or refuses, and `warn` (stderr, prefixed "kcheck:").

Domain code never prints. The CLI owns the streams: they are looked up at each call, so the
CLI's guarded stdout (and a test's capture) apply to everything said here.
"""

from __future__ import annotations

import sys
from typing import TextIO


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def say(text: str, end: str = "\n") -> None:
    """Progress and results, on stdout."""
    _write(sys.stdout, text + end)


def note(text: str) -> None:
    """What kcheck is doing or refusing (a command it runs, a check that passed, a stage that
    failed), on stderr."""
    _write(sys.stderr, f"kcheck: {text}\n")


def warn(text: str) -> None:
    _write(sys.stderr, f"kcheck: warning: {text}\n")
