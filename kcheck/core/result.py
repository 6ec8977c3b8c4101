"""The probe report's model (checks, statuses, evidence) and the verdict/exit-code rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

SCHEMA = "kcheck.probe/1"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"
    SKIP = "skip"


class Evidence(StrEnum):
    """Where a result came from, strongest first: only `live` observed the running kernel."""

    LIVE = "live"
    CONFIG = "config"
    VERSION = "version"
    TREE = "tree"
    TOOL = "tool"


class Verdict(StrEnum):
    READY = "ready"
    NOT_READY = "not-ready"
    UNDECIDED = "undecided"


class ExitCode(IntEnum):
    READY = 0
    NOT_READY = 1
    UNDECIDED = 2
    BAD_INPUT = 3


VERDICT_EXIT = {
    Verdict.READY: ExitCode.READY,
    Verdict.NOT_READY: ExitCode.NOT_READY,
    Verdict.UNDECIDED: ExitCode.UNDECIDED,
}


@dataclass(frozen=True)
class Fix:
    """What fixes a failing check: a patchset in the catalog, or a kernel at least this new."""

    patchset: str | None = None
    min_version: str | None = None


@dataclass
class CheckResult:
    id: str
    title: str
    required: bool
    status: Status
    evidence: Evidence
    detail: str
    fix: Fix | None = None
    remedy: str | None = None


@dataclass
class Report:
    kernel: dict[str, object]
    checks: list[CheckResult]
    mode: str = "live"
    tools: dict[str, str | None] = field(default_factory=dict)
    name: str | None = None  # the operator's label for this host (--name), e.g. its inventory name

    @property
    def verdict(self) -> Verdict:
        return decide(c.status for c in self.checks if c.required)

    @property
    def exit_code(self) -> ExitCode:
        return VERDICT_EXIT[self.verdict]


def decide(required: Iterable[str]) -> Verdict:
    """The verdict from the required checks' statuses (Status, or the strings of a report
    document): ready only when every one passes; a failure outranks an unknown."""
    statuses = set(required)
    if Status.FAIL in statuses:
        return Verdict.NOT_READY
    if statuses - {Status.PASS}:
        return Verdict.UNDECIDED
    return Verdict.READY
