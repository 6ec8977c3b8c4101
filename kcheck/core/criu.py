"""Reading what criu prints: its version, and the first error line that matters.

Pure functions on text, shared by the probe (`criu check`, `criu.trial`), `kcheck cr`
(dump/restore logs) and `kcheck build-criu` (the new binary's `criu check`).
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from pathlib import Path

# Patterns compile on first use (re's cache), not when the probe imports this.
_CRIU_VERSION = r"Version:\s*(\d+(?:\.\d+)+)"
# Lines criu logs as errors that are not the cause of a failure:
# - a helper child's exit, logged before the error that caused it;
# - RLIMIT_NOFILE it may not raise in a sandbox (harmless: it goes on with the old limit).
_NOISE = (
    r"exited, status=\d+\s*$",
    r"rlimit: Can't setup RLIMIT_NOFILE for self",
)
_ERROR = r"(?i)\berror\b"
_LOG_TIMESTAMP = r"^\(\d+\.\d+\)\s*"  # "(00.038095) " before each -o log line
LOG_READ_LIMIT = 32 * 1024 * 1024  # a -v4 log of a big tree stays far below this


def criu_version(text: str) -> str | None:
    """The version from `criu --version` output ("Version: 4.2")."""
    match = re.search(_CRIU_VERSION, text)
    return match.group(1) if match else None


def criu_first_error(output: str) -> str:
    """criu's own first error line, verbatim: the line an admin will search for."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [
        line
        for line in lines
        if re.search(_ERROR, line) and not any(re.search(noise, line) for noise in _NOISE)
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
    return re.sub(_LOG_TIMESTAMP, "", first) if re.search(_ERROR, first) else None
