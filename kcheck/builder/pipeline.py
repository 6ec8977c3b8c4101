"""The order of the stages of `kcheck build-kernel`, and how a git failure inside them ends the run."""

from __future__ import annotations

from kcheck.builder import distcc
from kcheck.builder.context import Run
from kcheck.builder.gitops import TreeGit
from kcheck.builder.picks import continue_stage, fetch_and_pick, git_failures
from kcheck.builder.report import print_next_steps, reboot
from kcheck.builder.stages import TREE_STAGES, CloneStage, run_kernel_stage
from kcheck.core.repos import open_kernel_repo


def run_stages(run: Run, continuing: bool) -> None:
    """Everything after preflight; StageFailed (exit 1) when a stage fails."""
    if run.cluster is not None:
        for line in distcc.announce(run.cluster):
            run.say(line)
        distcc.fresh_state(run.workdir)
    if CloneStage.wanted(run.options):
        run_kernel_stage(CloneStage(run, None))
    tree = TreeGit(open_kernel_repo(run.tree), run.log)
    with tree.repo, git_failures(run):
        if continuing:
            continue_stage(run, tree)
        else:
            fetch_and_pick(run, tree)
        for stage in TREE_STAGES:
            if stage.wanted(run.options):
                run_kernel_stage(stage(run, tree))
    print_next_steps(run)
    if run.options.reboot:
        reboot(run)
