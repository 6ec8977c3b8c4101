"""What a run shows and keeps: the build log file, and stage progress on the terminal.

On a tty, rich shows a spinner per stage with the log's latest line; otherwise (or with
NO_COLOR set, colour off) each stage is a plain line. The log always gets everything.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from kcheck.core import channel

TAIL_LINES = 30


def shell_line(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """The command as a user would type it in sh."""
    prefix = [f"{key}={shlex.quote(value)}" for key, value in (env or {}).items()]
    return " ".join([*prefix, shlex.join(argv)])


class BuildLog:
    """WORKDIR/build.log: every command of every run and its full output, appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def header(self, text: str) -> None:
        self.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def command(self, line: str, cwd: Path | None = None) -> None:
        self.write(f"$ {line}" + (f"    # in {cwd}" if cwd else "") + "\n")

    def write(self, text: str) -> None:
        self.file.write(text if not text or text.endswith("\n") else text + "\n")
        self.file.flush()

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        with open(self.path, encoding="utf-8", errors="replace") as stream:
            return [line.rstrip("\n") for line in deque(stream, maxlen=lines)]

    def last_line(self) -> str:
        tail = self.tail(1)
        return tail[0] if tail else ""

    def close(self) -> None:
        self.file.close()


class Progress:
    """Stage lines for a pipe or file; a rich spinner with the log's last line on a tty."""

    def __init__(self, log: BuildLog) -> None:
        self.log = log
        self.console = None
        if sys.stdout.isatty():
            from rich.console import Console

            self.console = Console(file=sys.stdout, no_color=bool(os.environ.get("NO_COLOR")))

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False)
        else:
            channel.say(text)

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        """Show `name: what` while the block runs, then how long it took."""
        self.log.header(f"stage {name}: {what}")
        started = time.monotonic()
        if self.console is None:
            self.say(f"[{name}] {what}")
            yield
        else:
            with self.console.status(f"{name}: {what}") as status:
                from threading import Event, Thread

                stop = Event()

                def follow() -> None:
                    while not stop.wait(0.5):
                        elapsed = time.monotonic() - started
                        latest = self.log.last_line()[:100]
                        status.update(f"{name}: {what} ({elapsed:.0f}s)  {latest}")

                follower = Thread(target=follow, daemon=True)
                follower.start()
                try:
                    yield
                finally:
                    stop.set()
                    follower.join()
        self.say(f"[{name}] done in {time.monotonic() - started:.1f}s")
