"""Command line entry point: `kcheck <job> ...`. Each job registers its own subcommand.

argparse is imported only to build the parser: a probe starts its slowest evidence first."""

from __future__ import annotations

import os
import signal
import sys

from kcheck import __version__
from kcheck.core.result import ExitCode
from kcheck.errors import KcheckError, StdoutFailed, printable

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from kcheck.core.args import ArgumentParser


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


# Work a subcommand starts before its arguments are parsed, (module, function): given argv,
# it returns what it started (handed over as args.prestarted, with a close()) or None.
PRESTART = {"probe": ("kcheck.probe.early", "start_before_parsing")}


def build_parser(only: str | None = None) -> ArgumentParser:
    """kcheck's parser; with `only`, just that subcommand's (what a run needs, and fast)."""
    import importlib

    from kcheck.core.args import ArgumentParser

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


# Subcommands that run without the cycle collector: short, and run every few minutes on every
# node; collections during their imports cost a tenth of their run.
SHORT_LIVED = {"probe"}


def script_main() -> int:
    """The `kcheck` command: main() as a process. At exit, gc.freeze() spares the interpreter
    a last full collection of every object kcheck made (~10 ms here)."""
    import gc

    if subcommand(sys.argv[1:]) in SHORT_LIVED:
        gc.disable()
    code = main()
    gc.freeze()
    return code


def main(argv: list[str] | None = None) -> int:
    if sys.stdout is None:  # started with fd 1 closed: keep the fd from being reused, and refuse
        _discard(1)
        print(
            "kcheck: error: stdout is closed; run kcheck with stdout open (e.g. >/dev/null)", file=sys.stderr
        )
        return int(ExitCode.BAD_INPUT)
    words = sys.argv[1:] if argv is None else argv
    command = subcommand(words)
    prestarted = _prestart(command, words)
    try:
        return _run(command, words, prestarted)
    finally:  # on a usage error (SystemExit) too: nothing started may outlive kcheck
        if prestarted is not None:
            prestarted.close()


def _run(command: str | None, words: list[str], prestarted) -> int:
    args = build_parser(command).parse_args(words)
    if prestarted is not None:  # only for a subcommand that declares it (set_defaults)
        args.prestarted = prestarted
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


def _prestart(command: str | None, words: list[str]):
    if command not in PRESTART:
        return None
    import importlib

    module, function = PRESTART[command]
    return getattr(importlib.import_module(module), function)(words)


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
