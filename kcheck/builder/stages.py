"""The declared stages of `kcheck build-kernel` after the pick: clone before it; config, build,
verify and install after it.

A stage declares its inputs, whether a previous run's result still stands, what it shows, its
work and the outputs it records. `run_stage` is the one loop body: it skips a stage a previous
run finished with the same inputs, shows progress, records start, outputs and duration in the
state file, and on failure records it and shows the log's last lines. Fetch and pick, with
their resume and conflict handling, are in picks.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

from kcheck.builder import gitops, kbuild
from kcheck.builder.context import VERIFY_REPORT, Run, built_image, make_variables, sha256
from kcheck.builder.gitops import TreeGit
from kcheck.builder.options import BuildOptions
from kcheck.builder.records import write_build_record, write_records
from kcheck.builder.report import failing
from kcheck.builder.state import Stage, StageRecord
from kcheck.core import channel
from kcheck.core.output import write_atomic
from kcheck.errors import KcheckError, StageFailed


class StageStep:
    """One stage, declared; `run_stage` runs it. `tree` is None only before the clone."""

    stage: ClassVar[Stage]

    def __init__(self, run: Run, tree: TreeGit | None) -> None:
        self.run = run
        self.tree = tree

    @classmethod
    def wanted(cls, options: BuildOptions) -> bool:
        return True

    def before(self) -> None:
        """Work that happens whether or not the stage is skipped."""

    def inputs(self) -> dict[str, Any]:
        raise NotImplementedError

    def still_done(self, record: StageRecord) -> bool:
        """A previous run's result with the same inputs stands unless the tree lost it."""
        return True

    def previous(self, record: StageRecord) -> str:
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


def run_stage(step: StageStep) -> None:
    run, stage = step.run, step.stage
    step.before()
    inputs = step.inputs()
    done = run.state.done_with(stage, inputs)
    if done and step.still_done(done):
        run.say(f"[{stage.value}] done in a previous run: {step.previous(done)}")
        return
    step.prepare()
    with run.progress.stage(stage.value, step.label()):
        run.state.start(stage, inputs)
        try:
            outputs = step.work()
        except StageFailed:
            failing(run, stage)
            step.failed()
            raise
        run.state.finish(stage, **outputs)
    step.announce(outputs)


class CloneStage(StageStep):
    """--repo: clone the distro kernel into the work dir."""

    stage = Stage.CLONE

    @classmethod
    def wanted(cls, options: BuildOptions) -> bool:
        return options.repo is not None

    def inputs(self) -> dict[str, Any]:
        options = self.run.options
        return {
            "repo": options.repo,
            "branch": options.branch,
            "reference": str(options.reference or ""),
            "filter": options.blob_filter,
        }

    def still_done(self, record: StageRecord) -> bool:
        return (self.run.tree / ".git").is_dir()

    def previous(self, record: StageRecord) -> str:
        return str(self.run.tree)

    def label(self) -> str:
        return f"git clone {self.run.options.repo}"

    def work(self) -> dict[str, Any]:
        options, tree = self.run.options, self.run.tree
        assert options.repo is not None
        argv = gitops.clone_options(options.branch, options.reference, options.blob_filter)
        shutil.rmtree(tree, ignore_errors=True)  # a clone a killed run left half-done
        repo, partial = gitops.clone(options.repo, tree, argv, self.run.log)
        with repo:
            return {"commit": repo.head.commit.hexsha, "partial": partial}


class TreeStage(StageStep):
    """A stage that works in the picked tree."""

    tree: TreeGit

    @property
    def variables(self) -> tuple[str, ...]:
        return make_variables(self.run, self.tree)


class ConfigStage(TreeStage):
    """The base config, trimmed and set, then olddefconfig; records the release it makes."""

    stage = Stage.CONFIG

    def before(self) -> None:
        self.base_text = kbuild.base_config_text(self.run.config_path)
        self.stale = kbuild.stale_key_settings(self.base_text, self.run.tree)

    def inputs(self) -> dict[str, Any]:
        options = self.run.options
        return {
            "head": self.tree.head(),
            "base_sha256": sha256(self.base_text),
            "localversion": options.localversion,
            "settings": options.to_json()["settings"],
            "localmodconfig": options.localmodconfig,
            "variables": list(self.variables),
        }

    def still_done(self, record: StageRecord) -> bool:
        try:
            current = sha256((self.run.tree / ".config").read_text(errors="replace"))
        except OSError:
            return False
        return current == record.outputs["config_sha256"]

    def previous(self, record: StageRecord) -> str:
        return record.outputs["release"]

    def label(self) -> str:
        return f"{self.run.config_path} + olddefconfig"

    def work(self) -> dict[str, Any]:
        run, variables = self.run, self.variables
        base = run.workdir / kbuild.BASE_CONFIG
        write_atomic(base, self.base_text)
        for command in kbuild.config_commands(run.options, base, self.stale, variables):
            kbuild.run_command(command, run.tree, run.log)
        release = kbuild.run_command(kbuild.release_command(variables), run.tree, run.log, capture=True)
        config_text = (run.tree / ".config").read_text(errors="replace")
        lost = kbuild.lost_settings(run.options.settings, config_text)
        for setting in lost:
            run.say(
                f"[config] warning: olddefconfig did not keep {setting.config_line()} (unmet dependencies)"
            )
        return {
            "config_sha256": sha256(config_text),
            "release": release.strip(),
            "cleared": [f"CONFIG_{s.name}" for s in self.stale],
            "lost": [s.config_line() for s in lost],
        }

    def announce(self, outputs: dict[str, Any]) -> None:
        self.run.say(f"[config] release {outputs['release']}")


class BuildStage(TreeStage):
    """make -jN of the targets; metadata.json and reproducer.sh are written before and after."""

    stage = Stage.BUILD

    def before(self) -> None:
        write_records(self.run, self.tree, self.variables)

    def inputs(self) -> dict[str, Any]:
        options = self.run.options
        return {
            "head": self.tree.head(),
            "config_sha256": self.run.configured.config_sha256,
            "targets": list(options.targets),
            "cc": options.cc,
        }

    def previous(self, record: StageRecord) -> str:
        return " ".join(self.run.options.targets)

    def label(self) -> str:
        return f"{kbuild.build_command(self.run.options, self.variables).shell()}  (log: {self.run.log.path})"

    def work(self) -> dict[str, Any]:
        write_records(self.run, self.tree, self.variables)
        kbuild.run_command(
            kbuild.build_command(self.run.options, self.variables), self.run.tree, self.run.log
        )
        return {}

    def failed(self) -> None:
        write_records(self.run, self.tree, self.variables)

    def announce(self, outputs: dict[str, Any]) -> None:
        write_records(self.run, self.tree, self.variables)


class VerifyStage(TreeStage):
    """Boot the new kernel under QEMU and probe it live inside, before it is installed."""

    stage = Stage.VERIFY

    @classmethod
    def wanted(cls, options: BuildOptions) -> bool:
        return options.verify

    def before(self) -> None:
        self.image = built_image(self.run)

    def inputs(self) -> dict[str, Any]:
        config_sha256 = self.run.configured.config_sha256
        return {"head": self.tree.head(), "config_sha256": config_sha256, "image": str(self.image)}

    def previous(self, record: StageRecord) -> str:
        return record.outputs["verdict"]

    def label(self) -> str:
        return f"kcheck probe --boot {self.image}"

    def work(self) -> dict[str, Any]:
        run = self.run
        (run.workdir / VERIFY_REPORT).unlink(missing_ok=True)  # never show an older kernel's report
        if self.image is None:
            verdict, detail = "undecided", f"no kernel image among --targets {' '.join(run.options.targets)}"
        else:
            verdict, detail = self.boot(self.image)
        run.log.command(f"# verify: {verdict}: {detail}")
        self.detail = detail
        return {"verdict": verdict, "detail": detail.splitlines()[0]}

    def boot(self, image: Path) -> tuple[str, str]:
        from kcheck.core.render import render_json
        from kcheck.probe.vm import BootPlan, probe_in_vm

        run = self.run
        try:
            report = probe_in_vm(BootPlan(image, run.tree / ".config", run.options.verify_timeout, (), ()))
        except KcheckError as exc:  # cannot boot it, or it never reached the probe
            return "undecided", str(exc)
        write_atomic(run.workdir / VERIFY_REPORT, render_json(report))
        failing_ids = [c.id for c in report.checks if c.required and c.status != "pass"]
        return str(report.verdict), f"kernel {report.kernel.get('release')} booted; " + (
            f"not passing: {', '.join(failing_ids)}" if failing_ids else "every required check passes"
        )

    def announce(self, outputs: dict[str, Any]) -> None:
        write_records(self.run, self.tree, self.variables)
        self.run.say(f"[verify] {outputs['verdict']}: {self.detail}")


class InstallStage(TreeStage):
    """--install (make modules_install install, on this host) or --install-root (into an image),
    then the build record; after --verify, only a kernel whose report is ready."""

    stage = Stage.INSTALL

    @classmethod
    def wanted(cls, options: BuildOptions) -> bool:
        return options.installs

    def before(self) -> None:
        refuse_unverified(self.run)

    def inputs(self) -> dict[str, Any]:
        configured = self.run.configured
        inputs = {
            "head": self.tree.head(),
            "config_sha256": configured.config_sha256,
            "release": configured.release,
        }
        if self.run.options.install_root is not None:
            inputs["install_root"] = str(self.run.options.install_root)
        return inputs

    def previous(self, record: StageRecord) -> str:
        return self.run.configured.release

    def prepare(self) -> None:
        run, variables = self.run, self.variables
        root = run.options.install_root
        modules = kbuild.installs_modules(run.options, (run.tree / ".config").read_text(errors="replace"))
        if root is None:
            self.what, self.commands = (
                "make modules_install install",
                kbuild.install_commands(variables, modules),
            )
            return
        image = built_image(run)
        if image is None:
            raise StageFailed(f"no kernel image among --targets {' '.join(run.options.targets)} to install")
        self.what = f"into {root}"
        self.commands = kbuild.install_root_commands(
            variables, modules, root, str(image.relative_to(run.tree)), run.configured.release
        )

    def label(self) -> str:
        return f"{self.what} ({self.run.configured.release})"

    def work(self) -> dict[str, Any]:
        for command in self.commands:
            kbuild.run_command(command, self.run.tree, self.run.log)
        return {"record": str(write_build_record(self.run, self.tree))}

    def announce(self, outputs: dict[str, Any]) -> None:
        write_records(self.run, self.tree, self.variables)
        self.run.say(f"[install] recorded {outputs['record']}")


def refuse_unverified(run: Run) -> None:
    """--install after --verify installs only a kernel whose report is ready, unless --force."""
    verified = run.verified
    if not run.options.verify or (verified is not None and verified.verdict == "ready"):
        return
    verdict, detail = (verified.verdict, verified.detail) if verified else (None, None)
    if run.options.force:
        run.say(f"[install] warning: --force: installing a kernel verified {verdict}")
        return
    channel.error(
        f"[install] refused: the verified kernel is {verdict} ({detail}); "
        "fix it, or pass --force to install it anyway"
    )
    raise StageFailed("install refused: the verified kernel is not ready")


# After the pick, in order.
TREE_STAGES: tuple[type[TreeStage], ...] = (ConfigStage, BuildStage, VerifyStage, InstallStage)
