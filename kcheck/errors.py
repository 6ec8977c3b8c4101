"""Errors that end a command with a one-line message instead of a traceback."""

from kcheck.core.result import ExitCode


class KcheckError(Exception):
    """Bad usage or bad input: the message names the input and the fix."""

    exit_code = ExitCode.BAD_INPUT
