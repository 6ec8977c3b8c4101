"""Reading what criu prints: its version, and the first error line that matters.

Pure functions on text, shared by the probe (`criu check`, `criu.trial`), `kcheck cr`
(dump/restore logs) and `kcheck build-criu` (the new binary's `criu check`).
"""

from __future__ import annotations

import re
from pathlib import Path

_CRIU_VERSION = re.compile(r"Version:\s*(\d+(?:\.\d+)+)")
# Lines criu logs as errors that are not the cause of a failure:
# - a helper child's exit, logged before the error that caused it;
# - RLIMIT_NOFILE it may not raise in a sandbox (harmless: it goes on with the old limit).
_NOISE = (
    re.compile(r"exited, status=\d+\s*$"),
    re.compile(r"rlimit: Can't setup RLIMIT_NOFILE for self"),
)
_ERROR = re.compile(r"\berror\b", re.IGNORECASE)
_LOG_TIMESTAMP = re.compile(r"^\(\d+\.\d+\)\s*")  # "(00.038095) " before each -o log line
LOG_READ_LIMIT = 32 * 1024 * 1024  # a -v4 log of a big tree stays far below this


def criu_version(text: str) -> str | None:
    """The version from `criu --version` output ("Version: 4.2")."""
    match = _CRIU_VERSION.search(text)
    return match.group(1) if match else None


def criu_first_error(output: str) -> str:
    """criu's own first error line, verbatim: the line an admin will search for."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [
        line for line in lines if _ERROR.search(line) and not any(noise.search(line) for noise in _NOISE)
    ]
    return (errors or lines or ["(no output)"])[0]


def log_first_error(log: Path) -> str | None:
    """The first real error in a criu log file (-o), or None when there is none to read."""
    try:
        with open(log, encoding="utf-8", errors="replace") as stream:
            text = stream.read(LOG_READ_LIMIT)
    except OSError:
        return None
    first = criu_first_error(text)
    return _LOG_TIMESTAMP.sub("", first) if _ERROR.search(first) else None
