"""`kcheck build-kernel` from parsed arguments: preflight, then a dry run or the stages.

Preflight refuses bad input before anything is written (not even the work dir), so a
refusal leaves the host as it was.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from kcheck.builder import distcc, pipeline, plan, preflight
from kcheck.builder.context import Run, tree_path
from kcheck.builder.dryrun import dry_run_plan
from kcheck.builder.gitops import TreeGit
from kcheck.builder.kbuild import base_config_text, config_source
from kcheck.builder.options import (
    DEFAULT_LOCALVERSION,
    DEFAULT_UPSTREAM,
    BuildOptions,
    default_targets,
    default_workdir,
    parse_setting,
    parse_size,
)
from kcheck.builder.picks import abort
from kcheck.builder.progress import BuildLog, Progress
from kcheck.builder.source import distro_kernel_repo, read_os_release
from kcheck.builder.state import (
    MARKER_ENV,
    BuildState,
    Stage,
    StageStatus,
    WorkdirLock,
    stop_leftover_processes,
    unusable_workdir,
)
from kcheck.core import channel
from kcheck.core.repos import check_url, open_tree
from kcheck.errors import KcheckError
from kcheck.patchsets.catalog import Patchset, load_catalog

# With --continue/--abort the saved options are replayed; only these may be given too.
RESUME_OPTIONS = {"resume", "workdir", "yes"}
LOG_FILE = "build.log"


def execute(given: dict[str, Any]) -> int:
    resume = given.get("resume")
    options = saved_options(given) if resume is not None else options_from(given)
    if resume == "abort":
        return run_locked(options, None, abort)
    dry_run = bool(given.get("dry_run"))
    catalog, upstream, config_path = check_before_work(options, dry_run, resume is not None)
    if dry_run:
        channel.say(dry_run_plan(options, catalog, upstream, config_path), end="")
        return 0
    # Last, as the slowest: a test compile through each --distcc host.
    cluster = None if options.distcc is None else distcc.check_hosts(options.distcc, options.distcc_degraded)
    return run_locked(
        options,
        (catalog, upstream, config_path, cluster),
        lambda run: pipeline.run_stages(run, continuing=resume == "continue"),
    )


def options_from(given: dict[str, Any]) -> BuildOptions:
    """BuildOptions from the command line, with kcheck's defaults; paths made absolute."""
    targets = tuple(t for text in given.get("targets", []) for t in re.split(r"[\s,]+", text) if t)
    if "targets" in given and not targets:
        raise KcheckError("--targets names no make target; give at least one, e.g. --targets bzImage")
    repo = given.get("repo")
    if given.get("tree") is None and repo is None:
        repo = distro_kernel_repo(read_os_release())
    absolute = {
        key: Path(given[key]).absolute()
        for key in ("tree", "reference", "catalog", "install_root")
        if given.get(key)
    }
    return BuildOptions(
        workdir=Path(given.get("workdir") or default_workdir()).absolute(),
        tree=absolute.get("tree"),
        repo=repo,
        branch=given.get("branch"),
        reference=absolute.get("reference"),
        blob_filter=given.get("blob_filter", True),
        upstream=given.get("upstream"),
        catalog=absolute.get("catalog"),
        patchsets=tuple(given.get("patchsets", ())),
        config=config_option(given.get("config", "running")),
        localmodconfig=given.get("localmodconfig", False),
        settings=tuple(parse_setting(text) for text in given.get("settings", ())),
        localversion=given.get("localversion", DEFAULT_LOCALVERSION),
        jobs=default_jobs(given) if given.get("jobs") is None else given["jobs"],
        targets=targets or default_targets(),
        cc_wrapper=given.get("cc_wrapper"),
        distcc=given.get("distcc"),
        distcc_degraded=given.get("distcc_degraded", False),
        install=given.get("install", False),
        install_root=absolute.get("install_root"),
        reboot=given.get("reboot", False),
        yes=given.get("yes", False),
        min_free=parse_size(given["min_free"]) if "min_free" in given else BuildOptions.min_free,
        verify=given.get("verify", False),
        verify_timeout=given.get("verify_timeout", BuildOptions.verify_timeout),
        force=given.get("force", False),
    )


def default_jobs(given: dict[str, Any]) -> int:
    """nproc; with --distcc, the slots of the hosts given."""
    if given.get("distcc") is not None:
        return distcc.parse_hosts(given["distcc"]).jobs()
    return len(os.sched_getaffinity(0))


def config_option(value: str) -> str:
    return value if value == "running" else str(Path(value).absolute())


def saved_options(given: dict[str, Any]) -> BuildOptions:
    """--continue/--abort: the options of the run that stopped, from its state file."""
    flag = f"--{given['resume']}"
    extra = sorted(set(given) - RESUME_OPTIONS)
    if extra:
        shown = ", ".join("--" + key.replace("_", "-") for key in extra)
        raise KcheckError(f"{flag} replays the stopped run's saved options; drop {shown} (only --workdir)")
    workdir = Path(given.get("workdir") or default_workdir()).absolute()
    state = BuildState.load(workdir)
    if state is None:
        raise KcheckError(f"{flag}: no build state in {workdir}; pass the --workdir of the stopped run")
    return BuildOptions.from_json({**state.options, "yes": True} if "yes" in given else state.options)


def load_build_catalog(options: BuildOptions) -> dict[str, Patchset]:

    catalog = load_catalog(options.catalog)
    plan.check_patchset_names(catalog, options.patchsets)
    return catalog


def check_before_work(options: BuildOptions, dry_run: bool, resuming: bool) -> tuple[dict, str, Path]:
    """Every refusal before any work: root, catalog, tools, source, config, clean tree, disk."""
    if options.install and not dry_run:
        preflight.check_root(os.geteuid())
    if options.install_root is not None:
        preflight.check_install_root(options.install_root)
    catalog = load_build_catalog(options)
    upstream = options.upstream or common_upstream(catalog, options)
    check_url("--upstream", upstream)
    preflight.check_tools(options.wrapper_tools)
    if options.repo is not None:
        check_url("--repo", options.repo)
    reference = options.reference
    if reference is not None and not ((reference / ".git").exists() or (reference / "objects").is_dir()):
        raise KcheckError(f"--reference {reference}: not a git repository; pass a local kernel clone")
    tree = tree_path(options)
    state = BuildState.load(options.workdir)
    if state is not None and not same_source(state, options):
        pick = state.get(Stage.PICK)
        if pick is not None and pick.status == StageStatus.CONFLICT:
            raise KcheckError(
                f"--workdir {options.workdir} holds a cherry-pick stopped on a conflict in "
                f"{state.options.get('tree') or 'its clone'}; --continue or --abort it first, "
                "or pass another --workdir"
            )
        state = None  # another tree's run: this one starts afresh
    if options.tree is not None or (tree / ".git").exists():
        check_tree(tree, state, resuming)
    config_path = config_source(options.config, os.uname().release)
    base_config_text(config_path)
    places = {"--workdir": options.workdir}
    if options.tree is not None:
        places["--tree"] = options.tree
    preflight.check_free_space(places, options.min_free)
    return catalog, upstream, config_path


def common_upstream(catalog: dict[str, Patchset], options: BuildOptions) -> str:
    """The catalog's upstream for the patchsets in play; they must agree, else --upstream decides."""
    wanted = [catalog[name] for name in options.patchsets] or list(catalog.values())
    urls = sorted({p.upstream for p in wanted})
    if len(urls) > 1:
        raise KcheckError(
            f"the catalog's patchsets name {len(urls)} upstreams ({', '.join(urls)}); pass --upstream"
        )
    return urls[0] if urls else DEFAULT_UPSTREAM


def same_source(state: BuildState, options: BuildOptions) -> bool:
    saved = state.options
    current = options.to_json()
    return all(saved.get(key) == current[key] for key in ("tree", "repo", "branch"))


def check_tree(tree: Path, state: BuildState | None, resuming: bool) -> None:
    """A kernel git work tree, clean, and not mid-operation (unless it is this run's own pick)."""
    kernel = open_tree(tree, "HEAD")
    with kernel.repo as repo:
        if repo.bare:
            raise KcheckError(f"--tree {tree}: a bare repository; pass a checkout (a work tree)")
        pick = state.get(Stage.PICK) if state is not None else None
        ours = pick is not None and pick.status in (StageStatus.CONFLICT, StageStatus.RUNNING)
        if pick is not None and pick.status == StageStatus.CONFLICT and not resuming:
            raise KcheckError(
                f"--tree {tree}: the last run stopped on a cherry-pick conflict; "
                "resolve it and pass --continue, or pass --abort"
            )
        if ours:
            return
        tree_git = TreeGit(repo, None)
        preflight.check_clean(
            tree, tree_git.changed_files(), preflight.in_progress_operation(tree_git.git_dir)
        )


def run_locked(options: BuildOptions, checked: tuple | None, work) -> int:
    """Create and lock the work dir, stop what a killed run left, then do `work` with a Run."""
    try:
        options.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unusable_workdir(options.workdir, exc) from None
    with WorkdirLock(options.workdir):
        os.environ[MARKER_ENV] = str(options.workdir)
        for pid, command in stop_leftover_processes(options.workdir):
            channel.say(f"[resume] stopped {command} (pid {pid}) left running by an interrupted run")
        state = BuildState.load(options.workdir)
        if state is None or not same_source(state, options):
            state = BuildState(options.workdir / "state.json", options.to_json())
        state.options = options.to_json()
        try:
            log = BuildLog(options.workdir / LOG_FILE)
        except OSError as exc:
            raise unusable_workdir(options.workdir, exc) from None
        try:
            if checked is None:  # --abort: no catalog or config needed
                catalog, upstream, config_path, cluster = {}, "", Path(), None
            else:
                catalog, upstream, config_path, cluster = checked
            run = Run(options, catalog, upstream, config_path, state, log, Progress(log), cluster)
            log.header("kcheck build-kernel " + " ".join(f"{k}={v}" for k, v in options.to_json().items()))
            work(run)
        finally:
            log.close()
    return 0
