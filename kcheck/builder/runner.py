"""The order of the stages of `kcheck build-kernel`, and how a git failure inside them ends the run."""

from __future__ import annotations

import git

from kcheck.builder.context import Run
from kcheck.builder.gitops import TreeGit
from kcheck.builder.report import print_next_steps, reboot
from kcheck.builder.stages import (
    build_stage,
    clone_stage,
    config_stage,
    continue_stage,
    fetch_and_pick,
    git_failures,
    install_stage,
    verify_stage,
)


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
