"""Collectors: with the children of aio.py and overlay.py and the tools of criu_check.py and
trial.py, the only probe code that makes syscalls or runs tools.

Each returns raw observations (mostly /proc text) for the pure verdicts in
`kcheck.probe.verdicts`, or raises `Unavailable` when this process cannot observe.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping

from kcheck.core.kconfig import RUNNING_CONFIG, config_locations, read_config_file, running_config_candidates
from kcheck.errors import KcheckError
from kcheck.probe import DEFAULT_TIMEOUT
from kcheck.probe.aio import start_aio
from kcheck.probe.children import Finisher, Unavailable, reap_lingering
from kcheck.probe.image import observe_image
from kcheck.probe.overlay import start_overlay

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from pathlib import Path  # --config and --root give Paths; the live probe needs no pathlib
    from typing import Any

    from kcheck.patchsets.catalog import Patchset


class Background(namedtuple("Background", ("start", "order"), defaults=(0,))):
    """A collector that starts work (a child, a tool) and finishes it later, so several
    can wait at the same time: `start(ctx)` returns the Finisher. Called directly, it starts
    and finishes at once. The slowest start first (lower `order`), so everything else hides
    behind them."""

    __slots__ = ()

    def __call__(self, ctx: ProbeContext) -> Any:
        return self.start(ctx)()


class _Started(namedtuple("_Started", ("finish",))):
    """A collector's Finisher, in the cache until its result is wanted."""

    __slots__ = ()


def _collect(produce: Callable[[], Any]) -> Any:
    try:
        return produce()
    except Unavailable as exc:
        return exc


class ProbeContext:
    """Inputs shared by the collectors, and a cache so each collector runs once."""

    def __init__(
        self,
        release: str,
        catalog: Mapping[str, Patchset] | None = None,
        config_path: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        mode: str = "live",  # or "offline": judge an image's kernel from files, not syscalls
        root: Path | None = None,  # the image root, offline
        other_releases: tuple[str, ...] = (),  # kernels in the image that were not judged
        # Collectors by source name; tests swap in captured observations here.
        sources: Mapping[str, Callable[[ProbeContext], Any]] | None = None,
        # Children that reported and still finish their own cleanup (the AIO ring's io_destroy,
        # the overlay's unmounts), reaped last so that it overlaps the rest of the probe: by
        # close() when the context made this list, else by the list's owner (EarlyStart, after
        # the report is written).
        lingering: list[int] | None = None,
        # Collectors started before this context existed (kcheck.probe.early), by source name.
        started: Mapping[str, Finisher | Unavailable] | None = None,
    ) -> None:
        self.release = release
        self.catalog = {} if catalog is None else catalog
        self.config_path = config_path
        self.timeout = timeout
        self.mode = mode
        self.root = root
        self.other_releases = other_releases
        self.sources = SOURCES if sources is None else sources
        self.lingering = [] if lingering is None else lingering
        self._reaps_lingering = lingering is None
        self._cache: dict[str, Any] = {
            source: value if isinstance(value, Unavailable) else _Started(value)
            for source, value in (started or {}).items()
        }

    def prefetch(self, sources: Iterable[str]) -> None:
        """Start the background collectors among `sources` now, slowest first, so their waits overlap."""
        started = [s for s in sources if isinstance(self.sources[s], Background) and s not in self._cache]
        for source in sorted(started, key=lambda s: self.sources[s].order):
            self._cache[source] = _collect(lambda c=self.sources[source]: _Started(c.start(self)))

    def close(self) -> None:
        """Finish what was started and never collected, and reap every child (the lingering
        ones when this context owns their list): nothing this probe started outlives it,
        whatever the exit path."""
        for source, value in list(self._cache.items()):
            if isinstance(value, _Started):
                self._cache[source] = _collect(value.finish)
        if self._reaps_lingering:
            reap_lingering(self.lingering, self.timeout)

    def observe(self, source: str) -> Any:
        if source not in self._cache:
            self._cache[source] = _collect(lambda: self.sources[source](self))
        value = self._cache[source]
        if isinstance(value, _Started):
            value = self._cache[source] = _collect(value.finish)
        if isinstance(value, Unavailable):
            raise value
        return value

    def cached(self, source: str) -> Any:
        """What a collector returned, if it already ran and could observe; else None."""
        value = self._cache.get(source)
        return None if isinstance(value, Unavailable) else value


def observe_release(ctx: ProbeContext) -> dict[str, Any]:
    return {"release": ctx.release, "patchsets": list(ctx.catalog.values())}


def observe_fdinfo(ctx: ProbeContext) -> str:
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as file:
            return file.read()
    finally:
        os.close(fd)


# --- kernel config -----------------------------------------------------------------


def config_candidates(release: str, root: Path | None = None) -> list[str | Path]:
    """Where distros keep a kernel's config, in CRIU/lxc-checkconfig order.

    /proc/config.gz describes only the running kernel, so an image root skips it.
    """
    if root is None:
        return running_config_candidates(release)
    from kcheck.probe.image import image_path

    return [image_path(root, path) for path in config_locations(release)]  # links resolve inside the image


def observe_config(ctx: ProbeContext) -> dict[str, Any]:
    if ctx.config_path is not None:
        return {"path": str(ctx.config_path), "options": read_config_file(ctx.config_path)}
    candidates = config_candidates(ctx.release, ctx.root)
    if ctx.mode == "offline":  # /proc/config.gz is the running kernel's, not the one judged
        candidates = [path for path in candidates if path != RUNNING_CONFIG]
    problems = []
    for path in candidates:
        if not os.path.exists(path):
            continue
        try:
            return {"path": str(path), "options": read_config_file(path)}
        except KcheckError as exc:
            if ctx.mode == "offline":
                raise  # a broken config in an image is bad input for the gate
            problems.append(str(exc))
    where = ", ".join(str(p) for p in candidates)
    raise Unavailable("; ".join(problems) or f"no kernel config found in {where}; pass --config FILE")


def start_criu_check(ctx: ProbeContext) -> Finisher:
    """Imported when run: subprocess and the rest stay off the probe's path without criu."""
    from kcheck.probe.criu_check import start_criu

    return start_criu(ctx.timeout)


def start_criu_trial(ctx: ProbeContext) -> Finisher:
    """Imported only when criu.trial is selected (`--check`, `--require`, the external C/R
    pre-flight): it is never on the default path."""
    from kcheck.probe.trial import start_criu_trial as start

    return start(ctx)


SOURCES: dict[str, Callable[[ProbeContext], Any]] = {
    "release": observe_release,
    "fdinfo": observe_fdinfo,
    "config": observe_config,
    "criu": Background(start_criu_check, order=0),  # criu check: the longest wait
    "trial": Background(start_criu_trial, order=1),
    "aio": Background(lambda ctx: start_aio(ctx.timeout, ctx.lingering), order=2),
    "overlay": Background(lambda ctx: start_overlay(ctx.timeout, ctx.lingering), order=3),
    "image": observe_image,
}
