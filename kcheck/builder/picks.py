"""Fetch and pick: the catalog commits the tree lacks, fetched and cherry-picked with -x on a
kcheck branch; resumed after a kill, stopped on a conflict for --continue or --abort.

A previous run's pick is skipped when it had the same patchsets and upstream and the tree is
still at the head it made.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import git

from kcheck.builder import gitops, plan
from kcheck.builder.context import Run
from kcheck.builder.gitops import TreeGit
from kcheck.builder.progress import shell_line
from kcheck.builder.report import failing, print_conflict
from kcheck.builder.stages import FetchStage, run_kernel_stage
from kcheck.builder.state import Stage, StageStatus
from kcheck.core.repos import git_reason, open_repo
from kcheck.errors import KcheckError, StageFailed
from kcheck.patchsets.audit import AuditStatus, Finding
from kcheck.patchsets.catalog import Patchset


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
    release, head, patchsets = plan.selected(tree.repo, run.tree, run.catalog, run.options.patchsets)
    inputs = pick_inputs(run, patchsets)
    done = run.state.done_with(Stage.PICK, inputs)
    if done and done.outputs.get("head") == head:
        where = done.outputs["branch"] or head[:12]
        run.say(f"[fetch, pick] done in a previous run: {len(done.outputs['picked'])} commit(s) on {where}")
        return
    names = ", ".join(p.name for p in patchsets) or "none"
    run.say(f"kernel {release.raw} at {head[:12]}; patchsets: {names}")
    selection = plan.classify(tree.repo, run.tree, patchsets)
    fetch_plan = gitops.plan_fetch([f.commit for f in selection.to_pick], tree.has_commit)
    if fetch_plan:
        run_kernel_stage(FetchStage(run, tree, fetch_plan))
        selection = plan.classify(tree.repo, run.tree, patchsets)  # again, with the fetched objects
    else:
        run.state.start(Stage.FETCH, {"upstream": run.upstream, "refspecs": []})
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
    recipe = plan.pick_plan(
        fetch_plan, None, plan.picks_of(selection.to_pick), head, list(inputs["patchsets"])
    )
    pending = [{"patchset": pick.patchset, "sha": pick.sha, "subject": pick.subject} for pick in recipe.picks]
    if recipe.branch and outputs["branch"] is None:
        branch = gitops.unique_branch(tree, recipe.branch)
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
    name, message = plan.build_tag(run.picked.branch, tree.head(), names)
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
    picked = run.picked
    repo = open_repo(
        run.tree,
        f"--abort: {run.tree} is no longer a git repository; put the tree back to undo the pick, "
        f"or delete {run.state.path} to forget the stopped run",
    )
    tree = TreeGit(repo, run.log)
    with tree.repo, git_failures(run):
        gitops.abort(tree, picked.original_branch, picked.original_commit, picked.branch)
        if picked.tag and picked.tag in [t.name for t in tree.repo.tags]:
            tree.run("tag", "--delete", picked.tag)
    run.state.drop(Stage.PICK, Stage.CONFIG, Stage.BUILD, Stage.VERIFY, Stage.INSTALL)
    where = picked.original_branch or "a detached HEAD"
    dropped = f"; deleted branch {picked.branch}" if picked.branch else ""
    run.say(f"{run.tree} is back on {where} at {picked.original_commit[:12]}{dropped}")
    run.say("The fetched upstream commits stay in the repository; a new run starts from the pick again.")


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
