"""Errors that end a command with a one-line message instead of a traceback."""

from kcheck.core.result import ExitCode


class KcheckError(Exception):
    """Bad usage or bad input: the message names the input and the fix."""

    exit_code = ExitCode.BAD_INPUT


class StageFailed(KcheckError):
    """A build stage could not finish (git or make failed): exit 1, the log says why."""

    exit_code = ExitCode.NOT_READY


def printable(text: str, keep_newlines: bool) -> str:
    """Input echoed in a message, escaped: bad input stays one line, and no control character
    reaches the terminal. Refusals (exit 1) keep their lines (the failing checks)."""
    return "".join(
        char if char.isprintable() or (keep_newlines and char == "\n") else repr(char)[1:-1] for char in text
    )
