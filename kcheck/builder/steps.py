"""Declared stages, and the one loop body that runs them, for build-kernel and build-criu alike.

A stage declares its name, its inputs, whether a previous run's result still stands, what it
shows, its work and the outputs it records. `run_stage` does the rest: skip a stage the ledger
says a previous run finished with the same inputs, show progress, record start, outputs and
duration, and on failure let the ledger record it and show the log's last lines.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from kcheck.builder.progress import Progress
from kcheck.errors import StageFailed


class Ledger(Protocol):
    """Where a command keeps its stages' results between runs."""

    def done_with(self, name: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The outputs of `name` when a previous run finished it with these inputs."""

    def start(self, name: str, inputs: dict[str, Any]) -> None: ...

    def finish(self, name: str, outputs: dict[str, Any]) -> None: ...

    def failed(self, name: str) -> None:
        """Record the failure and show what to do."""


class FreshLedger:
    """A command that starts afresh each run: nothing is skipped, and a failure is shown by the
    command itself with its log's tail."""

    def done_with(self, name: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def start(self, name: str, inputs: dict[str, Any]) -> None:
        pass

    def finish(self, name: str, outputs: dict[str, Any]) -> None:
        pass

    def failed(self, name: str) -> None:
        pass


class StageStep:
    """One stage, declared; `run_stage` runs it."""

    name: ClassVar[str]

    def before(self) -> None:
        """Work that happens whether or not the stage is skipped."""

    def inputs(self) -> dict[str, Any]:
        return {}

    def still_done(self, outputs: dict[str, Any]) -> bool:
        """A previous run's result with the same inputs stands unless the tree lost it."""
        return True

    def previous(self, outputs: dict[str, Any]) -> str:
        """What a previous run's result was, for the line that says the stage is skipped."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Refusals that come before the stage starts (StageFailed, not recorded as a failure)."""

    def label(self) -> str:
        raise NotImplementedError

    def work(self) -> dict[str, Any]:
        """Run the stage's commands; return the outputs to record."""
        raise NotImplementedError

    def failed(self) -> None:
        """After a failure was recorded and shown."""

    def announce(self, outputs: dict[str, Any]) -> None:
        """After the stage finished."""


def run_stage(step: StageStep, ledger: Ledger, progress: Progress) -> dict[str, Any]:
    """Run one declared stage (or skip it); its outputs, a previous run's when skipped."""
    step.before()
    inputs = step.inputs()
    done = ledger.done_with(step.name, inputs)
    if done is not None and step.still_done(done):
        progress.say(f"[{step.name}] done in a previous run: {step.previous(done)}")
        return done
    step.prepare()
    with progress.stage(step.name, step.label()):
        ledger.start(step.name, inputs)
        try:
            outputs = step.work()
        except StageFailed:
            ledger.failed(step.name)
            step.failed()
            raise
        ledger.finish(step.name, outputs)
    step.announce(outputs)
    return outputs
