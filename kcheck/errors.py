"""Every error that ends a command, each with its exit code: a message instead of a traceback.

3 bad input (the message names the input and the fix); 1 refused or failed (not ready, a
build stage, an engine command); 2 undecided (a kernel that never reached the probe).
"""

from kcheck.core.result import ExitCode


class KcheckError(Exception):
    """Bad usage or bad input: the message names the input and the fix."""

    exit_code = ExitCode.BAD_INPUT


class StageFailed(KcheckError):
    """A build stage could not finish (git or make failed): exit 1, the log says why."""

    exit_code = ExitCode.NOT_READY


class CatalogError(KcheckError):
    """A catalog file is malformed; the message names the file and the key."""


class StdoutFailed(KcheckError):
    """stdout itself cannot be written (a full disk, /dev/full, an I/O error)."""


class Refused(KcheckError):
    """The host, the pre-flight or an engine command said no: exit 1, not bad input."""

    exit_code = ExitCode.NOT_READY


class BootFailed(KcheckError):
    """The kernel never reached the probe (panic, hang, no report): undecided, exit 2."""

    exit_code = ExitCode.UNDECIDED


def printable(text: str, keep_newlines: bool) -> str:
    """Input echoed in a message, escaped: bad input stays one line, and no control character
    reaches the terminal. Refusals (exit 1) keep their lines (the failing checks)."""
    return "".join(
        char if char.isprintable() or (keep_newlines and char == "\n") else repr(char)[1:-1] for char in text
    )
