"""Errors that end a command with a one-line message instead of a traceback."""

from kcheck.core.result import ExitCode


class KcheckError(Exception):
    """Bad usage or bad input: the message names the input and the fix."""

    exit_code = ExitCode.BAD_INPUT


class StageFailed(KcheckError):
    """A build stage could not finish (git or make failed): exit 1, the log says why."""

    exit_code = ExitCode.NOT_READY
