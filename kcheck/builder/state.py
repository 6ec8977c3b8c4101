"""The work dir: the state file that makes stages resumable, and the lock that guards it.

A stage is recorded as running before it starts and done (with its outputs) after, so a run
that was stopped, even by kill -9, resumes at the first stage that is not done with the same
inputs. Every process a run starts carries KCHECK_BUILD_WORKDIR in its environment; the next
run stops the ones a killed run left behind before it touches the tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from kcheck.core.files import read_json
from kcheck.core.output import write_atomic
from kcheck.core.validate import first_problem
from kcheck.errors import KcheckError

STATE_FILE = "state.json"
LOCK_FILE = "lock"
MARKER_ENV = "KCHECK_BUILD_WORKDIR"
SCHEMA = "kcheck.build-state/1"


class Stage(StrEnum):
    CLONE = "clone"
    FETCH = "fetch"
    PICK = "pick"
    CONFIG = "config"
    BUILD = "build"
    VERIFY = "verify"  # --verify: boot the new kernel in a VM and probe it
    INSTALL = "install"


class StageStatus(StrEnum):
    RUNNING = "running"  # started; still so in the file when the run was killed
    DONE = "done"
    FAILED = "failed"
    CONFLICT = "conflict"  # pick stopped mid-cherry-pick, waiting for --continue or --abort


@dataclass
class StageRecord:
    status: StageStatus
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    duration: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "started": self.started,
            "duration": self.duration,
        }


@dataclass
class BuildState:
    """state.json: the run's options and one record per stage, rewritten atomically."""

    path: Path
    options: dict[str, Any]
    stages: dict[Stage, StageRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, workdir: Path) -> BuildState | None:
        path = workdir / STATE_FILE
        try:
            data = read_json(path)
            if problem := first_problem(data, "build-state-1"):
                raise ValueError(f"not a {SCHEMA} state file: {problem}")
            stages = {
                Stage(name): StageRecord(
                    StageStatus(record["status"]),
                    record["inputs"],
                    record["outputs"],
                    record["started"],
                    record["duration"],
                )
                for name, record in data["stages"].items()
            }
            return cls(path, data["options"], stages)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KcheckError(
                f"{path}: unreadable state ({exc}); delete it to start over, or pass another --workdir"
            ) from None

    def save(self) -> None:
        data = {
            "schema": SCHEMA,
            "options": self.options,
            "stages": {stage.value: record.to_json() for stage, record in self.stages.items()},
        }
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")

    def get(self, stage: Stage) -> StageRecord | None:
        return self.stages.get(stage)

    def done_with(self, stage: Stage, inputs: dict[str, Any]) -> StageRecord | None:
        """The record of `stage` when a previous run finished it with these same inputs."""
        record = self.stages.get(stage)
        if record is not None and record.status == StageStatus.DONE and record.inputs == inputs:
            return record
        return None

    def running_stage(self) -> Stage | None:
        """The last stage started and not finished: the one a failure belongs to."""
        running = [
            stage
            for stage in Stage
            if stage in self.stages and self.stages[stage].status == StageStatus.RUNNING
        ]
        return running[-1] if running else None

    def start(
        self, stage: Stage, inputs: dict[str, Any], outputs: dict[str, Any] | None = None
    ) -> StageRecord:
        record = StageRecord(StageStatus.RUNNING, inputs, dict(outputs or {}), time.time())
        self.stages[stage] = record
        # Later stages built on the old result of this one: they must run again.
        for later in list(Stage)[list(Stage).index(stage) + 1 :]:
            self.stages.pop(later, None)
        self.save()
        return record

    def finish(self, stage: Stage, status: StageStatus = StageStatus.DONE, **outputs: Any) -> None:
        record = self.stages[stage]
        record.status = status
        record.outputs.update(outputs)
        record.duration = round(time.time() - record.started, 3)
        self.save()

    def update(self, stage: Stage, **outputs: Any) -> None:
        """Record progress inside a stage (each picked commit) so a kill loses none of it."""
        self.stages[stage].outputs.update(outputs)
        self.save()

    def drop(self, *stages: Stage) -> None:
        for stage in stages:
            self.stages.pop(stage, None)
        self.save()


def unusable_workdir(workdir: Path, exc: OSError) -> KcheckError:
    """The refusal when the work dir or a file in it cannot be created."""
    return KcheckError(
        f"--workdir {workdir}: cannot create {exc.filename or workdir} ({exc.strerror or exc}); "
        "pass a writable directory as --workdir"
    )


class WorkdirLock:
    """An exclusive flock on WORKDIR/lock for the whole run: one run per work dir."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / LOCK_FILE
        self._file = None

    def __enter__(self) -> WorkdirLock:
        try:
            self._file = open(self.path, "a+")  # noqa: SIM115 - held for the whole run
        except OSError as exc:
            raise unusable_workdir(self.path.parent, exc) from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise KcheckError(
                f"--workdir {self.path.parent}: another kcheck build-kernel (pid {holder}) is using it; "
                "wait for it to finish, or pass another --workdir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def stop_leftover_processes(workdir: Path, grace: float = 10.0) -> list[tuple[int, str]]:
    """Stop the processes (git, make, compilers) a killed run on `workdir` left running.

    Call it with the work dir locked: then no live run owns them. Returns (pid, command)
    of each, stopped with SIGTERM (make then kills its children and removes half-written
    targets), SIGKILL after `grace` seconds.
    """
    marker = f"{MARKER_ENV}={workdir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _has_marker(int(entry.name), marker):
            try:
                found.append((int(entry.name), (entry / "comm").read_text().strip()))
            except OSError:
                continue
    for pid, _ in found:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(pid) for pid, _ in found) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, _ in found:
        if _alive(pid) and _has_marker(pid, marker):
            _signal(pid, signal.SIGKILL)
    return found


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
