"""The probe report's model (checks, statuses, evidence) and the verdict/exit-code rules."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable
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


# The model is plain classes and named tuples, not dataclasses: every probe builds it, and
# importing dataclasses (with inspect) costs the probe's start-up ~20 ms on a small VM.


class Fix(namedtuple("Fix", ("patchset", "min_version"), defaults=(None, None))):
    """What fixes a failing check: a patchset in the catalog (patchset: str | None), or a
    kernel at least this new (min_version: str | None)."""

    __slots__ = ()


class CheckResult:
    """One check's outcome in a report."""

    def __init__(
        self,
        id: str,
        title: str,
        required: bool,
        status: Status,
        evidence: Evidence,
        detail: str,
        fix: Fix | None = None,
        remedy: str | None = None,
    ) -> None:
        self.id = id
        self.title = title
        self.required = required
        self.status = status
        self.evidence = evidence
        self.detail = detail
        self.fix = fix
        self.remedy = remedy

    def __eq__(self, other: object) -> bool:
        return type(other) is CheckResult and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"CheckResult({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Report:
    """The probe's report: the kernel judged, every check's result, and the tools seen."""

    def __init__(
        self,
        kernel: dict[str, object],
        checks: list[CheckResult],
        mode: str = "live",
        tools: dict[str, str | None] | None = None,
        name: str | None = None,  # the operator's label for this host (--name), e.g. its inventory name
    ) -> None:
        self.kernel = kernel
        self.checks = checks
        self.mode = mode
        self.tools = {} if tools is None else tools
        self.name = name

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
