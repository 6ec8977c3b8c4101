"""One build-kernel run: its options, catalog, state, log and terminal, and what the stages share."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kcheck.builder import kbuild
from kcheck.builder.arch import arch_facts
from kcheck.builder.distcc import Cluster
from kcheck.builder.gitops import TreeGit
from kcheck.builder.options import BuildOptions
from kcheck.builder.progress import BuildLog, Progress
from kcheck.builder.state import BuildState, Stage
from kcheck.patchsets.catalog import Patchset

CLONE_DIR = "linux"
METADATA = "metadata.json"
REPRODUCER = "reproducer.sh"
METADATA_SCHEMA = "kcheck.build/1"
VERIFY_REPORT = "verify.json"  # the probe report from inside the booted kernel


def tree_path(options: BuildOptions) -> Path:
    return options.tree if options.tree is not None else options.workdir / CLONE_DIR


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Picked:
    """What the pick stage left: where the tree started, the branch and tag kcheck made, and
    the commits picked (or found present)."""

    original_branch: str | None
    original_commit: str
    branch: str | None
    picked: tuple[dict[str, Any], ...]
    present: tuple[dict[str, Any], ...]
    head: str | None
    tag: str | None

    @classmethod
    def from_outputs(cls, outputs: dict[str, Any]) -> Picked:
        return cls(
            original_branch=outputs.get("original_branch"),
            original_commit=outputs["original_commit"],
            branch=outputs.get("branch"),
            picked=tuple(outputs.get("picked", ())),
            present=tuple(outputs.get("present", ())),
            head=outputs.get("head"),
            tag=outputs.get("tag"),
        )


@dataclass(frozen=True)
class Configured:
    """What the config stage made: the final config's hash, the release it names, the stale
    keys it cleared and the --set options olddefconfig did not keep."""

    config_sha256: str
    release: str
    cleared: tuple[str, ...]
    lost: tuple[str, ...]

    @classmethod
    def from_outputs(cls, outputs: dict[str, Any]) -> Configured:
        return cls(
            outputs["config_sha256"], outputs["release"], tuple(outputs["cleared"]), tuple(outputs["lost"])
        )


@dataclass(frozen=True)
class Verified:
    """The verify stage's verdict on the booted kernel, and why."""

    verdict: str
    detail: str


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
    cluster: Cluster | None = None  # --distcc: what this run's preflight found

    @property
    def distcc_hosts(self) -> str | None:
        """DISTCC_HOSTS of this run's make: the hosts that answered the preflight."""
        return self.cluster.hosts if self.cluster is not None else None

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

    @property
    def picked(self) -> Picked:
        return Picked.from_outputs(self.outputs(Stage.PICK))

    @property
    def configured(self) -> Configured:
        return Configured.from_outputs(self.outputs(Stage.CONFIG))

    @property
    def verified(self) -> Verified | None:
        """None when --verify did not run (or not yet)."""
        outputs = self.outputs(Stage.VERIFY)
        return Verified(outputs["verdict"], outputs["detail"]) if "verdict" in outputs else None


def make_variables(run: Run, tree: TreeGit) -> tuple[str, ...]:
    """The timestamp is the original commit's date: fixed across reruns, and known to --dry-run."""
    return kbuild.make_variables(run.options, tree.commit_date(run.picked.original_commit))


def built_image(run: Run) -> Path | None:
    """The bootable kernel image the build made (arch.toml says where), if any."""
    path = arch_facts().boot_image(run.options.targets)
    return run.tree / path if path is not None and (run.tree / path).is_file() else None
