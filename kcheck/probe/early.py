"""Start the live probe's slowest evidence before the rest of kcheck is imported.

`criu check` takes 40-60 ms, the AIO child's io_destroy waits for an RCU grace period (30-50
ms measured here), and the overlay child mounts and unmounts. Started first, they overlap the
imports and checks that follow instead of adding to them. Only light modules are imported here."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from kcheck.probe import DEFAULT_TIMEOUT
from kcheck.probe.aio import start_aio
from kcheck.probe.children import Finisher, Unavailable, reap_lingering
from kcheck.probe.criu_check import start_criu
from kcheck.probe.overlay import start_overlay

# Sources the default selection reads that finish slowest, and how to start each, in the
# order started. With a criu on PATH, `criu check` is the probe's last wait, so it starts
# first; without one that costs a PATH lookup, and the AIO child's io_destroy (an RCU grace
# period) is the last wait. The overlay child's mounts and unmounts overlap the imports too.
EARLY: dict[str, Callable[[float, list[int]], Finisher]] = {
    "criu": lambda timeout, _: start_criu(timeout),
    "aio": start_aio,
    "overlay": start_overlay,
}


class EarlyStart:
    """Collectors started at once; probe_setup hands them to the ProbeContext. close(), once
    the report is written, reaps the children still in their own cleanup (the AIO ring's
    io_destroy), and finishes and reaps whatever was never handed over, so nothing outlives
    a run that fails before that."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.lingering: list[int] = []
        self.started: dict[str, Finisher | Unavailable] = {}
        for source, start in EARLY.items():
            try:
                self.started[source] = start(timeout, self.lingering)
            except Unavailable as exc:
                self.started[source] = exc

    def hand_over(self) -> dict[str, Finisher | Unavailable]:
        started, self.started = self.started, {}
        return started

    def close(self) -> None:
        for value in self.hand_over().values():
            if not isinstance(value, Unavailable):
                with contextlib.suppress(Unavailable):
                    value()
        reap_lingering(self.lingering, self.timeout)


# Options after which `kcheck probe` is still live, of the default selection, with the default
# timeout, and each takes one value: with only these, kcheck starts the slow evidence before it
# even builds its argument parser (start_before_parsing). Anything else (another option, an
# abbreviation, --help) waits for argparse.
_LIVE_DEFAULT_OPTIONS = ("--format", "--output", "--name", "--config", "--catalog")


def start_before_parsing(argv: list[str]) -> EarlyStart | None:
    """For a plain live probe run by root, the started EarlyStart (the caller closes it, also
    when parsing then fails); else None."""
    return EarlyStart(DEFAULT_TIMEOUT) if os.geteuid() == 0 and plain_live_probe(argv) else None


def plain_live_probe(argv: list[str]) -> bool:
    """Whether argv is `probe` with only _LIVE_DEFAULT_OPTIONS, each with its value."""
    if argv[:1] != ["probe"]:
        return False
    words = iter(argv[1:])
    for word in words:
        option, given, _ = word.partition("=")
        if option not in _LIVE_DEFAULT_OPTIONS or (not given and next(words, None) is None):
            return False
    return True
