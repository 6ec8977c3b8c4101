"""The declared stages of `kcheck build-kernel` after the pick: clone before it; config, build,
verify and install after it.

Each is declared (steps.py) and run by the one loop body there, with the state file in the work
dir as its ledger, so a rerun skips what a previous run finished. Fetch and pick, with their
resume and conflict handling, are in picks.py.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import Any

from kcheck.builder import distcc, gitops, kbuild
from kcheck.builder.context import VERIFY_REPORT, Run, built_image, make_variables, sha256
from kcheck.builder.gitops import TreeGit
from kcheck.builder.options import BuildOptions
from kcheck.builder.progress import shell_line
from kcheck.builder.records import write_build_record, write_records
from kcheck.builder.report import failing
from kcheck.builder.state import Stage
from kcheck.builder.steps import StageStep, run_stage
from kcheck.core import channel
from kcheck.core.output import write_atomic
from kcheck.errors import KcheckError, StageFailed


class RunLedger:
    """build-kernel's ledger: the state file in the work dir, so a rerun skips finished stages."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def done_with(self, name: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        record = self.run.state.done_with(Stage(name), inputs)
        return record.outputs if record is not None else None

    def start(self, name: str, inputs: dict[str, Any]) -> None:
        self.run.state.start(Stage(name), inputs)

    def finish(self, name: str, outputs: dict[str, Any]) -> None:
        self.run.state.finish(Stage(name), **outputs)

    def failed(self, name: str) -> None:
        failing(self.run, Stage(name))


class KernelStep(StageStep):
    """A build-kernel stage. `tree` is None only before the clone."""

    def __init__(self, run: Run, tree: TreeGit | None) -> None:
        self.run = run
        self.tree = tree

    @classmethod
    def wanted(cls, options: BuildOptions) -> bool:
        return True


def run_kernel_stage(step: KernelStep) -> None:
    run_stage(step, RunLedger(step.run), step.run.progress)


class CloneStage(KernelStep):
    """--repo: clone the distro kernel into the work dir."""

    name = Stage.CLONE.value

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

    def still_done(self, outputs: dict[str, Any]) -> bool:
        return (self.run.tree / ".git").is_dir()

    def previous(self, outputs: dict[str, Any]) -> str:
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


class FetchStage(KernelStep):
    """Fetch from the upstream only the commits the tree lacks (never a full remote update).
    Never skipped: what a previous run fetched is in the tree, so the plan asks for nothing."""

    name = Stage.FETCH.value

    def __init__(self, run: Run, tree: TreeGit, fetch: gitops.FetchPlan) -> None:
        super().__init__(run, tree)
        self.fetch = fetch

    def inputs(self) -> dict[str, Any]:
        return {"upstream": self.run.upstream, "refspecs": self.fetch.refspecs}

    def still_done(self, outputs: dict[str, Any]) -> bool:
        return False

    def label(self) -> str:
        return shell_line(self.fetch.argv())

    def work(self) -> dict[str, Any]:
        assert self.tree is not None
        gitops.fetch(self.tree, self.run.upstream, self.fetch)
        return {}


class TreeStage(KernelStep):
    """A stage that works in the picked tree."""

    tree: TreeGit

    @functools.cached_property
    def variables(self) -> tuple[str, ...]:
        """Once per stage: each computation asks git for the original commit's date."""
        return make_variables(self.run, self.tree)


class ConfigStage(TreeStage):
    """The base config, trimmed and set, then olddefconfig; records the release it makes."""

    name = Stage.CONFIG.value

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

    def still_done(self, outputs: dict[str, Any]) -> bool:
        try:
            current = sha256((self.run.tree / ".config").read_text(errors="replace"))
        except OSError:
            return False
        return current == outputs["config_sha256"]

    def previous(self, outputs: dict[str, Any]) -> str:
        return outputs["release"]

    def label(self) -> str:
        return f"{self.run.config_path} + olddefconfig"

    def work(self) -> dict[str, Any]:
        run, variables = self.run, self.variables
        base = run.workdir / kbuild.BASE_CONFIG
        write_atomic(base, self.base_text)
        for command in kbuild.config_commands(run.options, base, self.stale, variables, run.distcc_hosts):
            kbuild.run_command(command, run.tree, run.log)
        env = kbuild.distcc_env(run.options, run.distcc_hosts)
        release = kbuild.run_command(kbuild.release_command(variables, env), run.tree, run.log, capture=True)
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

    name = Stage.BUILD.value

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

    def previous(self, outputs: dict[str, Any]) -> str:
        return " ".join(self.run.options.targets)

    def prepare(self) -> None:
        run = self.run
        if run.cluster is not None:
            last = run.state.get(Stage.BUILD)
            distcc.start_log(run.workdir, resuming=last is not None and last.inputs == self.inputs())

    def label(self) -> str:
        command = kbuild.build_command(self.run.options, self.variables, self.run.distcc_hosts)
        return f"{command.shell()}  (log: {self.run.log.path})"

    def work(self) -> dict[str, Any]:
        run = self.run
        write_records(run, self.tree, self.variables)
        kbuild.run_command(
            kbuild.build_command(run.options, self.variables, run.distcc_hosts), run.tree, run.log
        )
        # The hosts that built it, for metadata.json after later runs (whose preflight may differ).
        return {"distcc": run.cluster.to_json()} if run.cluster is not None else {}

    def failed(self) -> None:
        write_records(self.run, self.tree, self.variables)

    def announce(self, outputs: dict[str, Any]) -> None:
        write_records(self.run, self.tree, self.variables)


class VerifyStage(TreeStage):
    """Boot the new kernel under QEMU and probe it live inside, before it is installed."""

    name = Stage.VERIFY.value

    @classmethod
    def wanted(cls, options: BuildOptions) -> bool:
        return options.verify

    def before(self) -> None:
        self.image = built_image(self.run)

    def inputs(self) -> dict[str, Any]:
        config_sha256 = self.run.configured.config_sha256
        return {"head": self.tree.head(), "config_sha256": config_sha256, "image": str(self.image)}

    def previous(self, outputs: dict[str, Any]) -> str:
        return outputs["verdict"]

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

    name = Stage.INSTALL.value

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

    def previous(self, outputs: dict[str, Any]) -> str:
        return self.run.configured.release

    def prepare(self) -> None:
        run, variables = self.run, self.variables
        root = run.options.install_root
        env = kbuild.distcc_env(run.options, run.distcc_hosts)
        modules = kbuild.installs_modules(run.options, (run.tree / ".config").read_text(errors="replace"))
        if root is None:
            self.what, self.commands = (
                "make modules_install install",
                kbuild.install_commands(variables, modules, env),
            )
            return
        image = built_image(run)
        if image is None:
            raise StageFailed(f"no kernel image among --targets {' '.join(run.options.targets)} to install")
        self.what = f"into {root}"
        self.commands = kbuild.install_root_commands(
            variables, modules, root, str(image.relative_to(run.tree)), run.configured.release, env
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
    channel.note(
        f"[install] refused: the verified kernel is {verdict} ({detail}); "
        "fix it, or pass --force to install it anyway"
    )
    raise StageFailed("install refused: the verified kernel is not ready")


# After the pick, in order.
TREE_STAGES: tuple[type[TreeStage], ...] = (ConfigStage, BuildStage, VerifyStage, InstallStage)
