"""`build-kernel --dry-run`: the commands a run would execute, read from the tree; nothing changes."""

from __future__ import annotations

import os
from pathlib import Path

import git

from kcheck.builder import distcc, gitops, kbuild, plan
from kcheck.builder.arch import arch_facts
from kcheck.builder.context import METADATA, REPRODUCER, tree_path
from kcheck.builder.gitops import TreeGit
from kcheck.builder.options import BuildOptions
from kcheck.builder.progress import shell_line
from kcheck.builder.report import reboot_argv
from kcheck.core.buildrecord import BUILD_RECORD_DIR, host_records_dir
from kcheck.core.repos import open_kernel_repo
from kcheck.patchsets.catalog import Patchset


def dry_run_plan(
    options: BuildOptions, catalog: dict[str, Patchset], upstream: str, config_path: Path
) -> str:
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
        with open_kernel_repo(tree) as repo:
            lines += dry_run_picks(options, catalog, upstream, tree, repo)
            variables = kbuild.make_variables(options, TreeGit(repo, None).commit_date("HEAD"))
        stale = kbuild.stale_key_settings(kbuild.base_config_text(config_path), tree)
    if options.distcc is not None:
        lines += distcc_preflight(options)
    lines.append(f"# {base}: the options of {config_path}")
    commands = kbuild.config_and_build_commands(options, base, stale, variables)
    if options.installs:
        modules = kbuild.installs_modules(options, kbuild.base_config_text(config_path))
    env = kbuild.distcc_env(options)
    if options.install:
        commands += kbuild.install_commands(variables, modules, env)
    lines += [command.shell() for command in commands]
    image = (
        arch_facts().boot_image(options.targets) or f"<the image of --targets {' '.join(options.targets)}>"
    )
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
        commands = kbuild.install_root_commands(variables, modules, root, "<image>", "<release>", env)
        lines += [command.shell() for command in commands]
        lines.append(f"# then record the build in {root / BUILD_RECORD_DIR}/<release>.json")
    if options.install:
        lines.append(f"# then record the build in {host_records_dir()}/<release>.json")
        if os.geteuid() != 0:
            lines.append("# --install needs root: run the command itself as root")
    if options.reboot:
        confirm = "" if options.yes else "   # after a yes on the terminal"
        lines.append(shell_line(reboot_argv()) + confirm)
    return "\n".join(lines) + "\n"


def distcc_preflight(options: BuildOptions) -> list[str]:
    """What a run checks before its first make: the dry run contacts no host."""
    hosts = distcc.parse_hosts(options.distcc or "")
    remote = " ".join(host.spec for host in hosts.remote) or "none but localhost"
    unless = (
        "hosts that do not answer are left out (--distcc-degraded)"
        if options.distcc_degraded
        else "refused unless every host answers"
    )
    return [
        f"# distcc preflight: a test compile through each host ({remote}), before any work; {unless},",
        "# and refused if a host's gcc differs from this machine's. Each make gets distcc's environment.",
    ]


def dry_run_picks(
    options: BuildOptions, catalog: dict[str, Patchset], upstream: str, tree: Path, repo: git.Repo
) -> list[str]:
    from contextlib import nullcontext

    from kcheck.core.repos import open_upstream

    release, head, patchsets = plan.selected(repo, tree, catalog, options.patchsets)
    lines = [f"# tree {tree}: kernel {release.raw} at {head[:12]}"]
    lines.append(f"# patchsets: {', '.join(p.name for p in patchsets) or 'none needed for this version'}")
    local = plan.classify(repo, tree, patchsets)
    fetch = gitops.plan_fetch([f.commit for f in local.to_pick], TreeGit(repo, None).has_commit)
    remote = gitops.remote_argv(TreeGit(repo, None), upstream) if fetch else None
    # A local upstream clone is read now, so the picks are exact; a URL is only read by the run.
    tags = {c.tag for p in patchsets for c in p.commits}
    with open_upstream(upstream, tags) if Path(upstream).is_dir() else nullcontext() as upstream_repo:
        selection = plan.classify(repo, tree, patchsets, upstream_repo) if upstream_repo else local
    recipe = plan.pick_plan(
        fetch, remote, plan.picks_of(selection.to_pick), head, [p.name for p in patchsets]
    )
    for finding in selection.present:
        lines.append(f"# skip {finding.commit.sha[:12]} {finding.commit.subject!r}: {finding.status.value}")
    lines.append(shell_line(["cd", str(tree)]))
    lines += [shell_line(argv) for argv in recipe.setup_commands()]
    for pick in recipe.picks:
        note = "" if pick.resolved else "   # unless the fetched commit shows the tree has it"
        lines.append(shell_line(pick.argv()) + note)
    lines.append(shell_line(recipe.tag_command()))
    return lines
