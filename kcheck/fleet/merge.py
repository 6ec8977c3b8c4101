"""Merge many hosts' probe reports into one fleet: who is ready, why the others are not, and
which hosts a checkpoint can move between.

Hosts are grouped into classes of identical (arch, kernel, criu, verdict, passing checks); the
migration matrix compares classes, not hosts, by the rules of `kcheck cr compare`."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from kcheck.core.files import FilePath
from kcheck.core.report import read_report_document
from kcheck.core.result import ExitCode, Status, Verdict
from kcheck.cr.compare import HostReport, Problem, compare, host_report
from kcheck.errors import KcheckError

REPORTS_PER_WORKER = 1000  # below this, a process pool costs more than it saves
T = TypeVar("T")
VERDICT_ORDER = (Verdict.NOT_READY, Verdict.UNDECIDED, Verdict.READY)  # what an operator reads first


@dataclass(frozen=True)
class Finding:
    """A required check that does not pass on a host, and what fixes it."""

    id: str
    status: str
    detail: str
    remedy: str | None


@dataclass(frozen=True)
class FleetHost:
    key: str  # the --name label, else the hostname; not live: plus :IMAGE-ROOT (or :MODE) and :RELEASE
    name: str | None
    image: str | None
    mode: str
    generated_at: str
    report: HostReport  # what the compare rules read: path, hostname, verdict, kernel, criu, statuses
    failing: tuple[Finding, ...]

    @cached_property  # classes, check counts and the HTML grid each look it up
    def status_pairs(self) -> tuple[tuple[str, str], ...]:
        """(check, status) pairs, hashable: a fleet has a few kinds, so what depends only on
        them is worked out once per kind, not once per host."""
        return tuple(self.report.statuses.items())


@dataclass(frozen=True)
class Replaced:
    """Two reports for one host key: the newer is kept."""

    key: str
    kept: str
    dropped: str


@dataclass
class HostClass:
    id: str
    hosts: list[FleetHost]

    @property
    def example(self) -> HostReport:
        return self.hosts[0].report

    @property
    def passing(self) -> list[str]:
        return sorted(check for check, status in self.example.statuses.items() if status == Status.PASS)


@dataclass
class Fleet:
    hosts: list[FleetHost]  # not-ready first, then undecided, then ready; by key within each
    classes: list[HostClass]
    matrix: dict[tuple[str, str], list[Problem]]  # (source class id, target class id) -> problems
    replaced: list[Replaced] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(host.report.verdict for host in self.hosts)
        return {str(verdict): found.get(verdict, 0) for verdict in Verdict}

    @property
    def exit_code(self) -> ExitCode:
        counts = self.counts
        if counts[Verdict.NOT_READY]:
            return ExitCode.NOT_READY
        return ExitCode.UNDECIDED if counts[Verdict.UNDECIDED] else ExitCode.READY

    def check_counts(self) -> dict[str, dict[str, int]]:
        """Per check id, how many hosts have each status."""
        pairs: Counter[tuple[str, str]] = Counter()
        alike = Counter(host.status_pairs for host in self.hosts)
        for statuses, hosts in alike.items():
            for pair in statuses:
                pairs[pair] += hosts
        checks = dict.fromkeys(check for check, _ in pairs)
        return {check: {str(s): pairs.get((check, s), 0) for s in Status} for check in checks}


def report_paths(paths: Sequence[Path]) -> list[str]:
    """The report files: each file given, and every *.json in each directory given."""
    found: list[str] = []
    for path in paths:
        if path.is_dir():
            # As glob("*.json") would, 10x faster on 10,000 files: no stat each, and str, not Path.
            try:
                with os.scandir(path) as entries:
                    inside = sorted(e.path for e in entries if e.name.endswith(".json") and e.is_file())
            except OSError as exc:
                raise KcheckError(
                    f"{path}: cannot list this directory ({exc.strerror}); check its permissions"
                ) from None
            if not inside:
                raise KcheckError(
                    f"{path}: no *.json probe reports in this directory; pass reports or a dir of them"
                )
            found += inside
        elif path.exists():
            found.append(str(path))
        else:
            raise KcheckError(f"{path}: no such file or directory; pass probe reports or their directory")
    return found


def read_host(path: FilePath, seen: dict[Any, Any] | None = None) -> FleetHost:
    """One probe report as a fleet host; bad input (exit 3) naming the file when it is not one.

    Parts equal to ones in `seen` (statuses, details, findings) are taken from it, else added:
    a fleet's hosts repeat a few kinds, so those read together share one copy, in memory and in
    the pickle that carries them from a pool's reader. Shared parts are read-only."""
    seen = {} if seen is None else seen
    document = read_report_document(path, whole_schema=False)
    image = document["kernel"].get("image")
    root = image["root"] if image else None
    compared = host_report(path, document)
    compared = replace(
        compared, statuses=_shared(compared.statuses, seen), details=_shared(compared.details, seen)
    )
    name = document.get("name")
    key = name or compared.hostname
    if document["mode"] != "live":  # a host's candidate kernels and images are not the host
        key += f":{root or document['mode']}:{compared.release}"
    return FleetHost(
        key=key,
        name=name,
        image=root,
        mode=document["mode"],
        generated_at=document.get("generated_at", ""),
        report=compared,
        failing=_shared(
            tuple(
                Finding(c["id"], c["status"], c["detail"], c["remedy"])
                for c in document["checks"]
                if c["required"] and c["status"] != Status.PASS
            ),
            seen,
        ),
    )


def _shared(part: T, seen: dict[Any, Any]) -> T:
    """The first part read that equals `part`, of its type: no check's {} stands for a finding's ()."""
    return seen.setdefault((type(part), tuple(part.items()) if isinstance(part, dict) else part), part)


def merge(hosts: Iterable[FleetHost]) -> Fleet:
    """The fleet: one host per key (the newer report wins), its classes and their matrix."""
    by_key: dict[str, FleetHost] = {}
    replaced = []
    for host in hosts:
        other = by_key.get(host.key)
        if other is not None:
            kept, dropped = (host, other) if host.generated_at >= other.generated_at else (other, host)
            replaced.append(Replaced(host.key, kept.report.path, dropped.report.path))
            host = kept
        by_key[host.key] = host
    rank = {str(verdict): place for place, verdict in enumerate(VERDICT_ORDER)}
    ordered = sorted(by_key.values(), key=lambda h: (rank[h.report.verdict], h.key))
    classes = _classes(ordered)
    matrix = {
        (source.id, target.id): compare(source.example, target.example)
        for source in classes
        for target in classes
    }
    return Fleet(hosts=ordered, classes=classes, matrix=matrix, replaced=replaced)


def _classes(hosts: Iterable[FleetHost]) -> list[HostClass]:
    """Hosts of identical arch, kernel, criu, verdict and passing checks: compare them once."""
    groups: dict[tuple, list[FleetHost]] = {}
    passing_of: dict[tuple, frozenset[str]] = {}
    for host in hosts:
        report, pairs = host.report, host.status_pairs
        passing = passing_of.get(pairs)
        if passing is None:
            passing = passing_of[pairs] = frozenset(c for c, status in pairs if status == Status.PASS)
        groups.setdefault((report.machine, report.release, report.criu, report.verdict, passing), []).append(
            host
        )
    biggest_first = sorted(groups.values(), key=lambda members: (-len(members), members[0].key))
    return [HostClass(f"C{number}", members) for number, members in enumerate(biggest_first, 1)]


def read_hosts(paths: list[str]) -> list[FleetHost]:
    """Every report, on every core for a big fleet: decoding JSON is most of the time."""
    workers = min(len(os.sched_getaffinity(0)), len(paths) // REPORTS_PER_WORKER)
    if workers < 2:
        return read_together(paths)
    from concurrent.futures import ProcessPoolExecutor

    step = REPORTS_PER_WORKER // 4
    with ProcessPoolExecutor(workers) as pool:
        chunks = pool.map(
            read_together, [paths[start : start + step] for start in range(0, len(paths), step)]
        )
        return [host for chunk in chunks for host in chunk]


def read_together(paths: Sequence[FilePath]) -> list[FleetHost]:
    """Hosts that share their equal parts (read_host)."""
    seen: dict[Any, Any] = {}
    return [read_host(path, seen) for path in paths]


def load_fleet(paths: Sequence[Path]) -> Fleet:
    return merge(read_hosts(report_paths(paths)))
