"""The stages of `kcheck build-kernel`, in order: clone, fetch, pick, config, build, install.

Each stage is skipped when the state file says a previous run finished it with the same
inputs (and the tree still shows its result); otherwise it runs and is recorded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from kcheck import __version__
from kcheck.builder import gitops, kbuild, plan
from kcheck.builder.gitops import TreeGit
from kcheck.builder.options import BuildOptions, records_dir
from kcheck.builder.progress import BuildLog, Progress, shell_line
from kcheck.builder.state import BuildState, Stage, StageStatus
from kcheck.core.output import write_atomic
from kcheck.errors import KcheckError, StageFailed
from kcheck.patchsets.audit import AuditStatus, Finding, git_reason
from kcheck.patchsets.catalog import Patchset
from kcheck.probe.image import BUILD_RECORD_DIR

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
        return tool_versions(self)

    def outputs(self, stage: Stage) -> dict[str, Any]:
        record = self.state.get(stage)
        return record.outputs if record else {}


# --- stages ------------------------------------------------------------------------------


def run_stages(run: Run, continuing: bool) -> None:
    """Everything after preflight; StageFailed (exit 1) when a stage fails."""
    if run.options.repo is not None:
        clone_stage(run)
    tree = TreeGit(git.Repo(run.tree), run.log)
    with tree.repo, git_failures(run):
        if continuing:
            continue_stage(run, tree)
        else:
            fetch_and_pick(run, tree)
        config_stage(run, tree)
        build_stage(run, tree)
        if run.options.verify:
            verify_stage(run, tree)
        if run.options.installs:
            install_stage(run, tree)
    print_next_steps(run)
    if run.options.reboot:
        reboot(run)


@contextmanager
def git_failures(run: Run) -> Iterator[None]:
    """A git command in the tree that failed: StageFailed with git's reason, never a traceback.

    The stage that was running is recorded failed; a stopped pick (conflict) stays as it was,
    so the same --continue or --abort can be rerun once the cause is fixed.
    """
    try:
        yield
    except git.GitCommandError as exc:
        command = shell_line(exc.command) if isinstance(exc.command, list) else str(exc.command)
        failing(run, run.state.running_stage() or Stage.PICK)
        raise StageFailed(f"{command} failed: {git_reason(exc.stderr)}") from None


def failing(run: Run, stage: Stage) -> None:
    """Record a failed stage (unless it is not running), show the log's last lines and what to do."""
    record = run.state.get(stage)
    if record is not None and record.status == StageStatus.RUNNING:
        run.state.finish(stage, StageStatus.FAILED)
    tail = run.log.tail()
    print(
        f"kcheck: stage {stage.value} failed; the last {len(tail)} lines of {run.log.path}:", file=sys.stderr
    )
    for line in tail:
        print(f"  {line}", file=sys.stderr)
    run.say("Next steps:")
    run.say(f"  read {run.log.path}, fix the cause, then rerun the same command: finished stages are skipped")


def clone_stage(run: Run) -> None:
    options = run.options
    assert options.repo is not None
    inputs = {"repo": options.repo, "branch": options.branch, "reference": str(options.reference or "")}
    inputs["filter"] = options.blob_filter
    done = run.state.done_with(Stage.CLONE, inputs)
    if done and (run.tree / ".git").is_dir():
        run.say(f"[clone] done in a previous run: {run.tree}")
        return
    argv = gitops.clone_options(options.branch, options.reference, options.blob_filter)
    with run.progress.stage("clone", f"git clone {options.repo}"):
        run.state.start(Stage.CLONE, inputs)
        shutil.rmtree(run.tree, ignore_errors=True)  # a clone a killed run left half-done
        try:
            repo, partial = gitops.clone(options.repo, run.tree, argv, run.log)
        except StageFailed:
            failing(run, Stage.CLONE)
            raise
        with repo:
            run.state.finish(Stage.CLONE, commit=repo.head.commit.hexsha, partial=partial)


def pick_inputs(run: Run, patchsets: list[Patchset]) -> dict[str, Any]:
    return {"patchsets": {p.name: [c.sha for c in p.commits] for p in patchsets}, "upstream": run.upstream}


def fetch_and_pick(run: Run, tree: TreeGit) -> None:
    interrupted = run.state.get(Stage.PICK)
    if interrupted is not None and interrupted.status == StageStatus.RUNNING:
        if tree.picking():
            tree.run("cherry-pick", "--abort")  # a killed run's pick in flight; it is redone below
        if interrupted.outputs.get("branch") != tree.current_branch():
            interrupted = None  # killed before its branch was checked out: start afresh
    else:
        interrupted = None
    release, head, patchsets = plan.selected(run.tree, run.catalog, run.options.patchsets)
    inputs = pick_inputs(run, patchsets)
    done = run.state.done_with(Stage.PICK, inputs)
    if done and done.outputs.get("head") == head:
        where = done.outputs["branch"] or head[:12]
        run.say(f"[fetch, pick] done in a previous run: {len(done.outputs['picked'])} commit(s) on {where}")
        return
    names = ", ".join(p.name for p in patchsets) or "none"
    run.say(f"kernel {release.raw} at {head[:12]}; patchsets: {names}")
    selection = plan.classify(run.tree, patchsets)
    fetch_plan = gitops.plan_fetch(tree, [f.commit for f in selection.to_pick])
    run.state.start(Stage.FETCH, {"upstream": run.upstream, "refspecs": fetch_plan.refspecs})
    if fetch_plan:
        with run.progress.stage("fetch", shell_line(fetch_plan.argv())):
            try:
                gitops.fetch(tree, run.upstream, fetch_plan)
            except StageFailed:
                failing(run, Stage.FETCH)
                raise
        run.state.finish(Stage.FETCH)
        selection = plan.classify(run.tree, patchsets)  # again, with the fetched objects
    else:
        run.say("[fetch] nothing to fetch: the tree has every commit it needs to decide and pick")
        run.state.finish(Stage.FETCH)
    unknown = [f for f in selection.findings if f.status == AuditStatus.UNKNOWN]
    if unknown:
        missing = unknown[0].commit
        raise StageFailed(
            f"catalog commit {missing.sha} ({missing.subject!r}) is not in {run.upstream} "
            f"(looked by SHA, or under tag {missing.tag}); pass the right --upstream or fix the catalog"
        )
    if interrupted is not None:  # go on where the killed run was, on its branch
        outputs = {
            key: interrupted.outputs[key]
            for key in ("original_branch", "original_commit", "branch", "picked")
        }
        run.say(f"[pick] resuming on {outputs['branch']}: {len(outputs['picked'])} commit(s) picked before")
    else:
        outputs = {
            "original_branch": tree.current_branch(),
            "original_commit": head,
            "branch": None,
            "picked": [],
        }
    done_shas = {item["sha"] for item in outputs["picked"]}
    already = [f for f in selection.present if f.upstream_sha not in done_shas]
    run.state.start(Stage.PICK, inputs, {**outputs, "present": present(already)})
    for finding in already:
        run.say(f"[pick] skip {finding.commit.sha[:12]} {finding.commit.subject!r}: {finding.status.value}")
    pending = [
        {"patchset": f.patchset, "sha": f.upstream_sha, "subject": f.commit.subject}
        for f in selection.to_pick
    ]
    if pending and outputs["branch"] is None:
        with_picks = list(dict.fromkeys(item["patchset"] for item in pending))
        branch = gitops.unique_branch(tree, plan.branch_name(with_picks))
        run.state.update(Stage.PICK, branch=branch)  # first, so --abort knows it even after a kill
        tree.run("checkout", "-b", branch)
    pick_commits(run, tree, pending)


def present(findings: list[Finding]) -> list[dict[str, Any]]:
    return [
        {
            "patchset": f.patchset,
            "sha": f.upstream_sha or f.commit.sha,
            "subject": f.commit.subject,
            "status": f.status.value,
            "commit": f.match,
            "evidence": f.evidence,
        }
        for f in findings
    ]


def pick_commits(run: Run, tree: TreeGit, pending: list[dict[str, Any]]) -> None:
    """Cherry-pick with -x in order; on a conflict stop with the tree mid-cherry-pick."""
    with run.progress.stage("pick", f"{len(pending)} commit(s) to cherry-pick"):
        for index, item in enumerate(pending):
            try:
                outcome = gitops.cherry_pick(tree, item["sha"])
            except StageFailed:
                failing(run, Stage.PICK)
                raise
            if outcome.conflicts:
                run.state.finish(
                    Stage.PICK,
                    StageStatus.CONFLICT,
                    pending=pending[index:],
                    conflicts=list(outcome.conflicts),
                    head_before_conflict=tree.head(),  # --continue tells a commit by hand from an abort
                )
                print_conflict(run, item, outcome.conflicts)
                raise StageFailed(
                    f"cherry-pick of {item['sha'][:12]} stopped on a conflict in "
                    f"{len(outcome.conflicts)} file(s); resolve, then --continue (or --abort)"
                )
            record_pick(run, item, outcome.new_sha, "picked")
        tag_build(run, tree)


def record_pick(run: Run, item: dict[str, Any], new_sha: str | None, how: str) -> None:
    how = how if new_sha else "empty"  # the tree had the change already: nothing to commit
    run.outputs(Stage.PICK)["picked"].append({**item, "commit": new_sha, "how": how})
    run.state.save()
    shown = new_sha[:12] if new_sha else "nothing (already in the tree)"
    run.say(f"[pick] {item['sha'][:12]} {item['subject']!r} -> {shown}")


def tag_build(run: Run, tree: TreeGit) -> None:
    names = list(run.state.get(Stage.PICK).inputs["patchsets"])
    name, message = plan.build_tag(run.outputs(Stage.PICK)["branch"], tree.head(), names)
    tree.run(*gitops.tag_argv(name, message)[1:])
    run.state.finish(Stage.PICK, head=tree.head(), tag=name)


def print_conflict(run: Run, item: dict[str, Any], conflicts: tuple[str, ...]) -> None:
    run.say(
        f"[pick] conflict: git cherry-pick -x {item['sha'][:12]} ({item['subject']!r}) stopped in {run.tree}:"
    )
    for name in conflicts:
        run.say(f"  {name}")
    outputs = run.outputs(Stage.PICK)
    back = outputs["original_branch"] or outputs["original_commit"][:12]
    workdir = ["--workdir", str(run.workdir)]
    run.say("Next steps:")
    run.say(
        f"  cd {run.tree}, edit the files above to resolve the conflict, then: git add {' '.join(conflicts)}"
    )
    run.say(f"  {shell_line(['kcheck', 'build-kernel', '--continue', *workdir])}   (commits it and goes on)")
    run.say(f"  or: {shell_line(['kcheck', 'build-kernel', '--abort', *workdir])}   (back to {back})")


def continue_stage(run: Run, tree: TreeGit) -> None:
    pick = run.state.get(Stage.PICK)
    if pick is None or pick.status != StageStatus.CONFLICT:
        raise KcheckError(
            f"--continue: no cherry-pick stopped on a conflict in {run.workdir}; run without --continue"
        )
    pending = pick.outputs["pending"]
    new_sha = gitops.continue_pick(tree, pending[0]["sha"], pick.outputs.get("head_before_conflict"))
    pick.status = StageStatus.RUNNING
    record_pick(run, pending[0], new_sha, "resolved")
    pick_commits(run, tree, pending[1:])


def abort(run: Run) -> None:
    """--abort: the tree back on the branch and commit it started from; kcheck's branch and tag gone."""
    pick = run.state.get(Stage.PICK)
    if pick is None:
        raise KcheckError(f"--abort: {run.workdir} records no cherry-picks to undo; nothing to abort")
    outputs = pick.outputs
    try:
        repo = git.Repo(run.tree)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        raise KcheckError(
            f"--abort: {run.tree} is no longer a git repository; put the tree back to undo the pick, "
            f"or delete {run.state.path} to forget the stopped run"
        ) from None
    tree = TreeGit(repo, run.log)
    with tree.repo, git_failures(run):
        gitops.abort(tree, outputs["original_branch"], outputs["original_commit"], outputs["branch"])
        tag = outputs.get("tag")
        if tag and tag in [t.name for t in tree.repo.tags]:
            tree.run("tag", "--delete", tag)
    run.state.drop(Stage.PICK, Stage.CONFIG, Stage.BUILD, Stage.VERIFY, Stage.INSTALL)
    where = outputs["original_branch"] or "a detached HEAD"
    dropped = f"; deleted branch {outputs['branch']}" if outputs["branch"] else ""
    run.say(f"{run.tree} is back on {where} at {outputs['original_commit'][:12]}{dropped}")
    run.say("The fetched upstream commits stay in the repository; a new run starts from the pick again.")


def config_stage(run: Run, tree: TreeGit) -> None:
    options = run.options
    base_text = kbuild.base_config_text(run.config_path)
    stale = kbuild.stale_key_settings(base_text, run.tree)
    variables = make_variables(run, tree)
    inputs = {
        "head": tree.head(),
        "base_sha256": sha256(base_text),
        "localversion": options.localversion,
        "settings": options.to_json()["settings"],
        "localmodconfig": options.localmodconfig,
        "variables": list(variables),
    }
    done = run.state.done_with(Stage.CONFIG, inputs)
    if done and current_config_sha(run) == done.outputs["config_sha256"]:
        run.say(f"[config] done in a previous run: {done.outputs['release']}")
        return
    base = run.workdir / kbuild.BASE_CONFIG
    with run.progress.stage("config", f"{run.config_path} + olddefconfig"):
        run.state.start(Stage.CONFIG, inputs)
        write_atomic(base, base_text)
        try:
            for command in kbuild.config_commands(options, base, stale, variables):
                kbuild.run_command(command, run.tree, run.log)
            release = kbuild.run_command(kbuild.release_command(variables), run.tree, run.log, capture=True)
        except StageFailed:
            failing(run, Stage.CONFIG)
            raise
        config_text = (run.tree / ".config").read_text(errors="replace")
        lost = kbuild.lost_settings(options.settings, config_text)
        for setting in lost:
            run.say(
                f"[config] warning: olddefconfig did not keep {setting.config_line()} (unmet dependencies)"
            )
        run.state.finish(
            Stage.CONFIG,
            config_sha256=sha256(config_text),
            release=release.strip(),
            cleared=[f"CONFIG_{s.name}" for s in stale],
            lost=[s.config_line() for s in lost],
        )
    run.say(f"[config] release {release.strip()}")


def current_config_sha(run: Run) -> str | None:
    try:
        return sha256((run.tree / ".config").read_text(errors="replace"))
    except OSError:
        return None


def make_variables(run: Run, tree: TreeGit) -> tuple[str, ...]:
    """The timestamp is the original commit's date: fixed across reruns, and known to --dry-run."""
    return kbuild.make_variables(run.options, tree.commit_date(run.outputs(Stage.PICK)["original_commit"]))


def build_stage(run: Run, tree: TreeGit) -> None:
    options = run.options
    config = run.outputs(Stage.CONFIG)
    variables = make_variables(run, tree)
    inputs = {"head": tree.head(), "config_sha256": config["config_sha256"], "targets": list(options.targets)}
    inputs["cc"] = options.cc
    write_records(run, tree, variables)
    if run.state.done_with(Stage.BUILD, inputs):
        run.say(f"[build] done in a previous run: {' '.join(options.targets)}")
        return
    command = kbuild.build_command(options, variables)
    with run.progress.stage("build", f"{command.shell()}  (log: {run.log.path})"):
        run.state.start(Stage.BUILD, inputs)
        write_records(run, tree, variables)
        try:
            kbuild.run_command(command, run.tree, run.log)
        except StageFailed:
            failing(run, Stage.BUILD)
            write_records(run, tree, variables)
            raise
        run.state.finish(Stage.BUILD)
    write_records(run, tree, variables)


def built_image(run: Run) -> Path | None:
    """The kernel image the build made (arch/*/boot/<image target>), if any."""
    for target in run.options.targets:
        found = sorted(run.tree.glob(f"arch/*/boot/{target}"))
        if found:
            return found[0]
    return None


def verify_stage(run: Run, tree: TreeGit) -> None:
    """Boot the new kernel under QEMU and probe it live inside, before it is installed."""
    from kcheck.core.render import render_json
    from kcheck.probe.vm import BootPlan, probe_in_vm

    image = built_image(run)
    config = run.outputs(Stage.CONFIG)
    inputs = {"head": tree.head(), "config_sha256": config["config_sha256"], "image": str(image)}
    if done := run.state.done_with(Stage.VERIFY, inputs):
        run.say(f"[verify] done in a previous run: {done.outputs['verdict']}")
        return
    with run.progress.stage("verify", f"kcheck probe --boot {image}"):
        run.state.start(Stage.VERIFY, inputs)
        (run.workdir / VERIFY_REPORT).unlink(missing_ok=True)  # never show an older kernel's report
        if image is None:
            verdict, detail = "undecided", f"no kernel image among --targets {' '.join(run.options.targets)}"
        else:
            plan = BootPlan(image, run.tree / ".config", run.options.verify_timeout, (), ())
            try:
                report = probe_in_vm(plan)
            except KcheckError as exc:  # cannot boot it, or it never reached the probe
                verdict, detail = "undecided", str(exc)
            else:
                write_atomic(run.workdir / VERIFY_REPORT, render_json(report))
                failing_ids = [c.id for c in report.checks if c.required and c.status != "pass"]
                verdict = str(report.verdict)
                detail = f"kernel {report.kernel.get('release')} booted; " + (
                    f"not passing: {', '.join(failing_ids)}" if failing_ids else "every required check passes"
                )
        run.log.command(f"# verify: {verdict}: {detail}")
        run.state.finish(Stage.VERIFY, verdict=verdict, detail=detail.splitlines()[0])
    write_records(run, tree, make_variables(run, tree))
    run.say(f"[verify] {verdict}: {detail}")


def refuse_unverified(run: Run) -> None:
    """--install after --verify installs only a kernel whose report is ready, unless --force."""
    verified = run.outputs(Stage.VERIFY)
    if not run.options.verify or verified.get("verdict") == "ready":
        return
    if run.options.force:
        run.say(f"[install] WARNING: --force: installing a kernel verified {verified.get('verdict')}")
        return
    print(
        f"kcheck: [install] refused: the verified kernel is {verified.get('verdict')} "
        f"({verified.get('detail')}); fix it, or pass --force to install it anyway",
        file=sys.stderr,
    )
    raise StageFailed("install refused: the verified kernel is not ready")


def install_stage(run: Run, tree: TreeGit) -> None:
    refuse_unverified(run)
    config = run.outputs(Stage.CONFIG)
    root = run.options.install_root
    inputs = {"head": tree.head(), "config_sha256": config["config_sha256"], "release": config["release"]}
    if root is not None:
        inputs["install_root"] = str(root)
    if run.state.done_with(Stage.INSTALL, inputs):
        run.say(f"[install] done in a previous run: {config['release']}")
        return
    variables = make_variables(run, tree)
    modules = kbuild.installs_modules(run.options, (run.tree / ".config").read_text(errors="replace"))
    if root is None:
        what, commands = "make modules_install install", kbuild.install_commands(variables, modules)
    else:
        image = built_image(run)
        if image is None:
            raise StageFailed(f"no kernel image among --targets {' '.join(run.options.targets)} to install")
        what = f"into {root}"
        commands = kbuild.install_root_commands(
            variables, modules, root, str(image.relative_to(run.tree)), config["release"]
        )
    with run.progress.stage("install", f"{what} ({config['release']})"):
        run.state.start(Stage.INSTALL, inputs)
        try:
            for command in commands:
                kbuild.run_command(command, run.tree, run.log)
        except StageFailed:
            failing(run, Stage.INSTALL)
            raise
        record = write_build_record(run, tree)
        run.state.finish(Stage.INSTALL, record=str(record))
    write_records(run, tree, variables)
    run.say(f"[install] recorded {record}")


# --- records: metadata.json, reproducer.sh, the install record ---------------------------------


def patches(run: Run) -> list[dict[str, Any]]:
    outputs = run.outputs(Stage.PICK)
    return [
        {
            "patchset": p["patchset"],
            "upstream_sha": p["sha"],
            "subject": p["subject"],
            "status": p["status"],
            "commit": p["commit"],
        }
        for p in outputs.get("present", [])
    ] + [
        {
            "patchset": p["patchset"],
            "upstream_sha": p["sha"],
            "subject": p["subject"],
            "status": p["how"],
            "commit": p["commit"],
        }
        for p in outputs.get("picked", [])
    ]


def tool_versions(run: Run) -> dict[str, str | None]:
    tools = {"kcheck": __version__, "python": sys.version.split()[0]}
    compilers = ["gcc", *(run.options.cc_wrapper or "").split()]
    for tool in ["git", "make", *compilers]:
        try:
            done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
            tools[tool] = done.stdout.splitlines()[0] if done.stdout else None
        except (OSError, subprocess.TimeoutExpired):
            tools[tool] = None
    return tools


def metadata(run: Run, tree: TreeGit, variables: tuple[str, ...]) -> dict[str, Any]:
    options = run.options
    pick = run.outputs(Stage.PICK)
    config = run.outputs(Stage.CONFIG)
    command = kbuild.build_command(options, variables)
    return {
        "schema": METADATA_SCHEMA,
        "source": {
            "tree": str(run.tree),
            "url": options.repo or tree.origin_url(),
            "branch": pick["original_branch"],
            "commit": pick["original_commit"],
            "partial_clone": run.outputs(Stage.CLONE).get("partial"),
        },
        "upstream": run.upstream,
        "patchsets": list(run.state.get(Stage.PICK).inputs["patchsets"]),
        "patches": patches(run),
        "branch": pick["branch"],
        "tag": pick["tag"],
        "commit": pick["head"],
        "config": {
            "source": str(run.config_path),
            "base": str(run.workdir / kbuild.BASE_CONFIG),
            "sha256": config["config_sha256"],
            "localversion": options.localversion,
            "settings": options.to_json()["settings"],
            "cleared": config["cleared"],
            "not_kept": config["lost"],
            "localmodconfig": options.localmodconfig,
        },
        "release": config["release"],
        "build": {
            "command": command.shell(),
            "targets": list(options.targets),
            "jobs": options.jobs,
            "variables": list(variables),
            "env": command.env,
        },
        "stages": {
            stage.value: {"status": record.status.value, "duration": record.duration}
            for stage, record in run.state.stages.items()
        },
        "verify": run.outputs(Stage.VERIFY) or None,
        "tools": run.tools,
        "log": str(run.log.path),
        "reproducer": str(run.workdir / REPRODUCER),
    }


def reproducer(run: Run, variables: tuple[str, ...]) -> str:
    """Plain sh that redoes the build in a fresh clone: same commit, same picks, config and make."""
    options = run.options
    pick = run.outputs(Stage.PICK)
    config = run.outputs(Stage.CONFIG)
    lines = [
        "#!/bin/sh",
        f"# Redo the build of {config['release']} by kcheck build-kernel {__version__}.",
        "# Run it in an empty directory: it clones the source again, applies the same commits,",
        "# and builds with the same config and make variables.",
        "set -eu",
        shell_line(["git", "clone", options.repo or str(run.tree), "linux"]),
        "cd linux",
        shell_line(["git", "checkout", "--quiet", "--detach", pick["original_commit"]]),
    ]
    picked = [p for p in pick["picked"] if p["commit"]]
    if picked:
        lines += [
            shell_line(["git", "remote", "add", gitops.REMOTE, run.upstream]),
            shell_line(["git", "fetch", "--no-tags", gitops.REMOTE, *[p["sha"] for p in picked]]),
        ]
        for item in picked:
            if item["how"] == "resolved":
                lines.append(f"# {item['sha'][:12]} conflicted in the original run and was resolved by hand")
            lines.append(shell_line(["git", "cherry-pick", "-x", item["sha"]]))
    lines.append(shell_line(gitops.tag_argv(pick["tag"], "kcheck build-kernel reproducer")))
    stale = [kbuild.ConfigSetting(name.removeprefix("CONFIG_"), '""') for name in config["cleared"]]
    base = run.workdir / kbuild.BASE_CONFIG
    commands = kbuild.config_commands(options, base, stale, variables)
    commands += [kbuild.release_command(variables), kbuild.build_command(options, variables)]
    lines += [command.shell() for command in commands]
    return "\n".join(lines) + "\n"


def write_records(run: Run, tree: TreeGit, variables: tuple[str, ...]) -> None:
    """metadata.json and reproducer.sh, rewritten as the build's stages progress."""
    write_atomic(run.workdir / METADATA, json.dumps(metadata(run, tree, variables), indent=2) + "\n")
    script = run.workdir / REPRODUCER
    write_atomic(script, reproducer(run, variables))
    script.chmod(0o755)


def write_build_record(run: Run, tree: TreeGit) -> Path:
    """RECORDS/<release>.json (in the image with --install-root): which fixes the installed
    kernel carries, for offline probes."""
    config = run.outputs(Stage.CONFIG)
    pick = run.outputs(Stage.PICK)
    carried = patches(run)
    record = {
        "schema": RECORD_SCHEMA,
        "release": config["release"],
        "commit": pick["head"],
        "source": run.options.repo or tree.origin_url() or str(run.tree),
        "patchsets": [
            {"name": name, "commits": [p for p in carried if p["patchset"] == name]}
            for name in run.state.get(Stage.PICK).inputs["patchsets"]
        ],
        "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metadata": str(run.workdir / METADATA),
    }
    root = run.options.install_root
    directory = records_dir() if root is None else root / BUILD_RECORD_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageFailed(f"cannot create {directory}: {exc.strerror}") from None
    path = directory / f"{config['release']}.json"
    write_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def print_next_steps(run: Run) -> None:
    release = run.outputs(Stage.CONFIG)["release"]
    pick = run.outputs(Stage.PICK)
    run.say(f"Built {release} from {run.tree} ({pick['branch'] or pick['head'][:12]}).")
    run.say(
        f"  metadata: {run.workdir / METADATA}; reproducer: {run.workdir / REPRODUCER}; log: {run.log.path}"
    )
    if verified := run.outputs(Stage.VERIFY):
        run.say(f"  verified in a VM: {verified['verdict']}; report: {run.workdir / VERIFY_REPORT}")
    run.say("Next steps:")
    if (root := run.options.install_root) is not None:
        run.say(f"  gate the image offline: kcheck probe --root {root} --release {release}")
        run.say(f"  or boot it and probe it live: kcheck probe --boot --root {root} --release {release}")
    elif not run.options.install:
        run.say("  install it as root: rerun this command with --install (finished stages are skipped)")
        run.say(f"  then reboot into {release} and check it: kcheck probe")
    elif not run.options.reboot:
        run.say(
            f"  reboot into {release} (make sure the boot loader's default entry is it), then: kcheck probe"
        )
    else:
        run.say(f"  after the reboot into {release}, check it: kcheck probe")


def reboot_argv() -> list[str]:
    return ["systemctl", "reboot"] if shutil.which("systemctl") else ["reboot"]


def reboot(run: Run) -> None:
    """Only after a yes on the terminal, or --yes."""
    release = run.outputs(Stage.CONFIG)["release"]
    if not run.options.yes:
        if not sys.stdin.isatty():
            run.say("Not rebooting: no terminal to confirm on. Pass --yes, or reboot when you are ready.")
            return
        if input(f"Reboot now into {release}? [y/N] ").strip().lower() not in ("y", "yes"):
            run.say("Not rebooting; reboot when you are ready.")
            return
    argv = reboot_argv()
    run.log.command(shell_line(argv))
    run.say(f"Rebooting into {release}: {shell_line(argv)}")
    subprocess.run(argv, check=False)


# --- dry run ---------------------------------------------------------------------------------


def dry_run(options: BuildOptions, catalog: dict[str, Patchset], upstream: str, config_path: Path) -> str:
    """The whole plan as the commands a run would execute; reads the tree, changes nothing."""
    lines = ["# kcheck build-kernel --dry-run: the commands a run would execute; nothing was changed."]
    tree = tree_path(options)
    base = options.workdir / kbuild.BASE_CONFIG
    lines.append(f"# work dir {options.workdir}: state.json, {METADATA}, {REPRODUCER}, build.log")
    if options.repo is not None:
        clone = gitops.clone_options(options.branch, options.reference, options.blob_filter)
        lines += [
            shell_line(["git", "clone", *clone, options.repo, str(tree)]),
            shell_line(["cd", str(tree)]),
            "# then: kcheck audit decides which commits the clone's version needs and lacks; they are",
            f"# fetched from {upstream} and cherry-picked with -x on a new kcheck/<date>-<patchsets> branch",
        ]
        variables = kbuild.make_variables(options, "<committer date of the cloned commit>")
        stale: list[kbuild.ConfigSetting] = []
    else:
        lines += dry_run_picks(options, catalog, upstream, tree)
        with git.Repo(tree) as repo:
            variables = kbuild.make_variables(options, TreeGit(repo, None).commit_date("HEAD"))
        stale = kbuild.stale_key_settings(kbuild.base_config_text(config_path), tree)
    lines.append(f"# {base}: the options of {config_path}")
    commands = kbuild.config_commands(options, base, stale, variables)
    commands += [kbuild.release_command(variables), kbuild.build_command(options, variables)]
    if options.installs:
        modules = kbuild.installs_modules(options, kbuild.base_config_text(config_path))
    if options.install:
        commands += kbuild.install_commands(variables, modules)
    lines += [command.shell() for command in commands]
    image = f"arch/*/boot/{options.targets[0]}"
    if options.verify:
        lines.append(
            f"# verify: boot the new kernel and probe it inside, as: kcheck probe --boot {tree}/{image}"
        )
        if options.installs:
            lines.append(
                "# --install then refuses it unless its report is ready"
                + (" (--force)" if options.force else "")
            )
    if options.install_root is not None:
        root = options.install_root
        lines.append(f"# install into {root}: <image> is {image}, <release> what kernelrelease printed")
        commands = kbuild.install_root_commands(variables, modules, root, "<image>", "<release>")
        lines += [command.shell() for command in commands]
        lines.append(f"# then record the build in {root / BUILD_RECORD_DIR}/<release>.json")
    if options.install:
        lines.append(f"# then record the build in {records_dir()}/<release>.json")
        if os.geteuid() != 0:
            lines.append("# --install needs root: run the command itself as root")
    if options.reboot:
        confirm = "" if options.yes else "   # after a yes on the terminal"
        lines.append(shell_line(reboot_argv()) + confirm)
    return "\n".join(lines) + "\n"


def dry_run_picks(
    options: BuildOptions, catalog: dict[str, Patchset], upstream: str, tree: Path
) -> list[str]:
    from contextlib import nullcontext

    from kcheck.patchsets.audit import open_upstream

    release, head, patchsets = plan.selected(tree, catalog, options.patchsets)
    lines = [f"# tree {tree}: kernel {release.raw} at {head[:12]}"]
    lines.append(f"# patchsets: {', '.join(p.name for p in patchsets) or 'none needed for this version'}")
    local = plan.classify(tree, patchsets)
    with git.Repo(tree) as repo:
        fetch_plan = gitops.plan_fetch(TreeGit(repo, None), [f.commit for f in local.to_pick])
        remote = gitops.remote_argv(TreeGit(repo, None), upstream) if fetch_plan else None
    # A local upstream clone is read now, so the picks are exact; a URL is only read by the run.
    tags = {c.tag for p in patchsets for c in p.commits}
    with open_upstream(upstream, tags) if Path(upstream).is_dir() else nullcontext() as upstream_repo:
        selection = plan.classify(tree, patchsets, upstream_repo) if upstream_repo else local
    for finding in selection.present:
        lines.append(f"# skip {finding.commit.sha[:12]} {finding.commit.subject!r}: {finding.status.value}")
    lines.append(shell_line(["cd", str(tree)]))
    if remote:
        lines.append(shell_line(remote))
    if fetch_plan:
        lines.append(shell_line(fetch_plan.argv()))
    with_picks = list(dict.fromkeys(f.patchset for f in selection.to_pick))
    branch = plan.branch_name(with_picks) if with_picks else None
    if branch:
        lines.append(shell_line(["git", "checkout", "-b", branch]))
    for finding in selection.to_pick:
        sha = finding.upstream_sha or finding.commit.sha
        note = "" if finding.upstream_sha else "   # unless the fetched commit shows the tree has it"
        lines.append(shell_line(["git", "cherry-pick", "-x", sha]) + note)
    tag, message = plan.build_tag(branch, head, [p.name for p in patchsets])
    lines.append(shell_line(gitops.tag_argv(tag, message)))
    return lines
