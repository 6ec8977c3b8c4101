"""One build-kernel run: its options, catalog, state, log and terminal, and what the stages share."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kcheck.builder import kbuild
from kcheck.builder.gitops import TreeGit
from kcheck.builder.options import BuildOptions
from kcheck.builder.progress import BuildLog, Progress
from kcheck.builder.state import BuildState, Stage
from kcheck.patchsets.catalog import Patchset

CLONE_DIR = "linux"
METADATA = "metadata.json"
REPRODUCER = "reproducer.sh"
METADATA_SCHEMA = "kcheck.build/1"
RECORD_SCHEMA = "kcheck.build-record/1"
VERIFY_REPORT = "verify.json"  # the probe report from inside the booted kernel


def tree_path(options: BuildOptions) -> Path:
    return options.tree if options.tree is not None else options.workdir / CLONE_DIR


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Run:
    """One invocation: its options, catalog, state, log and terminal."""

    options: BuildOptions
    catalog: dict[str, Patchset]
    upstream: str
    config_path: Path
    state: BuildState
    log: BuildLog
    progress: Progress

    @property
    def tree(self) -> Path:
        return tree_path(self.options)

    @property
    def workdir(self) -> Path:
        return self.options.workdir

    def say(self, text: str) -> None:
        self.progress.say(text)

    @functools.cached_property
    def tools(self) -> dict[str, str | None]:
        from kcheck.builder.records import tool_versions

        return tool_versions(self)

    def outputs(self, stage: Stage) -> dict[str, Any]:
        record = self.state.get(stage)
        return record.outputs if record else {}


def make_variables(run: Run, tree: TreeGit) -> tuple[str, ...]:
    """The timestamp is the original commit's date: fixed across reruns, and known to --dry-run."""
    return kbuild.make_variables(run.options, tree.commit_date(run.outputs(Stage.PICK)["original_commit"]))


def built_image(run: Run) -> Path | None:
    """The kernel image the build made (arch/*/boot/<image target>), if any."""
    for target in run.options.targets:
        found = sorted(run.tree.glob(f"arch/*/boot/{target}"))
        if found:
            return found[0]
    return None
