"""Running engine commands: always argv lists, never a shell; printed instead under --dry-run."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kcheck.core import channel
from kcheck.core.criu import log_first_error
from kcheck.errors import KcheckError, Refused

STDERR_TAIL_LINES = 5
QUERY_TIMEOUT = 60.0
LOW_SPACE_BYTES = 1 << 20  # below this, a failed dump most likely ran out of room


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) or "(no output on stderr)"


def low_space_note(directory: Path) -> str | None:
    """Why a log may say nothing: its filesystem is (nearly) full, so criu could not write its error."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    if free >= LOW_SPACE_BYTES:
        return None
    fix = "free space there or pick another --dir"
    return f"the filesystem holding {directory} has only {free // 1024} KiB free; {fix}"


def query(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """A read-only question to an engine (inspect, info): it runs even under --dry-run."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise KcheckError(f"{shlex.join(argv)} did not answer in {QUERY_TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise KcheckError(f"cannot run {argv[0]}: {exc.strerror}; is it installed?") from None


@dataclass
class Runner:
    """Runs the commands that change something, or under --dry-run prints them as shell lines."""

    dry_run: bool

    def run(self, argv: list[str], log: Path | None = None) -> str:
        """Run argv and pass its output on; return its stdout ('' under --dry-run). On failure
        raise Refused with its stderr's last lines (and its log file's first error)."""
        line = shlex.join(argv)
        if self.dry_run:
            channel.say(line)
            return ""
        channel.note(f"run: {line}")
        # Output goes to files, not pipes: `criu restore -d` leaves daemons behind,
        # and a pipe they inherited would never reach EOF.
        with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
            try:
                code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr).returncode
            except OSError as exc:
                raise KcheckError(f"cannot run {argv[0]}: {exc.strerror}; is it installed?") from None
            stdout.seek(0)
            stderr.seek(0)
            output, errors = stdout.read(), stderr.read()
        sys.stdout.write(output)
        sys.stdout.flush()
        if code != 0:
            # criu writes its errors to its -o log, not to stderr: show the first that matters.
            logged = log_first_error(log) if log else None
            space = low_space_note(log.parent) if log else None
            shown = "\n".join(filter(None, [tail(errors) if errors.strip() else None, logged, space]))
            where = f"\nsee {log}" if log else ""
            raise Refused(f"{line} failed (exit {code}):\n{shown or tail(errors)}{where}")
        sys.stderr.write(errors)
        return output

    def note(self, text: str) -> None:
        """Something kcheck does itself (no command): a comment in the dry-run script."""
        if self.dry_run:
            channel.say(f"# {text}")
