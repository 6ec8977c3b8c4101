"""The stages of `kcheck build-kernel`: clone, fetch and pick, config, build, verify, install.

Each stage is skipped when the state file says a previous run finished it with the same
inputs (and the tree still shows its result); otherwise it runs and is recorded.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import git

from kcheck.builder import gitops, kbuild, plan
from kcheck.builder.context import VERIFY_REPORT, Run, built_image, make_variables, sha256
from kcheck.builder.gitops import TreeGit
from kcheck.builder.progress import shell_line
from kcheck.builder.records import write_build_record, write_records
from kcheck.builder.report import failing, print_conflict
from kcheck.builder.state import Stage, StageStatus
from kcheck.core.output import write_atomic
from kcheck.errors import KcheckError, StageFailed
from kcheck.patchsets.audit import AuditStatus, Finding, git_reason
from kcheck.patchsets.catalog import Patchset


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
