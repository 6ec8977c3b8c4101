"""Command line entry point: `kcheck <job> ...`. Each job registers its own subcommand."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from kcheck import __version__
from kcheck.core.result import ExitCode
from kcheck.errors import KcheckError, StdoutFailed, printable


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, with kcheck's bad-input exit code (3, not 2)."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("kcheck").strip()
        where = f"{command}: " if command else ""
        line = printable(f"{where}{message}", keep_newlines=False)
        self.exit(int(ExitCode.BAD_INPUT), f"kcheck: error: {line}; see `{self.prog} --help`\n")


# Each subcommand and the function that registers its parser: (module, function). Only the
# one being run is imported and built; `kcheck --help` and completion build them all.
SUBCOMMANDS = {
    "probe": ("kcheck.probe.cli", "register"),
    "patchsets": ("kcheck.patchsets.cli", "register"),
    "audit": ("kcheck.patchsets.cli", "register"),
    "cr": ("kcheck.cr.cli", "register"),
    "fleet": ("kcheck.fleet.cli", "register"),
    "build-kernel": ("kcheck.builder.cli", "register"),
    "build-criu": ("kcheck.builder.cli", "register_criu"),
    "completion": ("kcheck.completion", "register"),
}


def build_parser(only: str | None = None) -> ArgumentParser:
    """kcheck's parser; with `only`, just that subcommand's (what a run needs, and fast)."""
    import importlib

    parser = ArgumentParser(
        prog="kcheck",
        description="Make Linux hosts ready for CRIU checkpoint/restore of containers.",
    )
    parser.add_argument("--version", action="version", version=f"kcheck {__version__}")
    jobs = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=ArgumentParser
    )
    wanted = [SUBCOMMANDS[only]] if only in SUBCOMMANDS else SUBCOMMANDS.values()
    for module, function in dict.fromkeys(wanted):
        getattr(importlib.import_module(module), function)(jobs)
    return parser


def subcommand(argv: list[str]) -> str | None:
    """The subcommand argv runs: its first word that is not an option (kcheck's own options
    take no values), when that names one."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return first if first in SUBCOMMANDS else None


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None:  # started with fd 1 closed: keep the fd from being reused, and refuse
        _discard(1)
        print(
            "kcheck: error: stdout is closed; run kcheck with stdout open (e.g. >/dev/null)", file=sys.stderr
        )
        return int(ExitCode.BAD_INPUT)
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(subcommand(words)).parse_args(words)
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # here, not at exit: a full or failing stdout is reported below
        return code
    except StdoutFailed as exc:
        # Drop what is still buffered, so that the exit does not fail on it again.
        _discard(stdout.fileno())
        print(f"kcheck: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KcheckError as exc:
        print(f"kcheck: error: {printable(str(exc), exc.exit_code != ExitCode.BAD_INPUT)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("kcheck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`kcheck probe | head -1`): say nothing more, like other tools.
        _discard(stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        sys.stdout = stdout


def _discard(fd: int) -> None:
    """Point fd at /dev/null: nothing more is written there, and the fd number stays taken."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)


class _GuardedStdout:
    """sys.stdout whose write errors (other than a closed pipe) end kcheck with one line."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _guard(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutFailed(
                f"cannot write to stdout ({exc.strerror}); free space or redirect it"
            ) from None

    def write(self, text: str) -> int:
        return self._guard(self._stream.write, text)

    def flush(self) -> None:
        self._guard(self._stream.flush)
