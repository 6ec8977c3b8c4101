"""`kcheck build-kernel` on a fake kernel tree: real git repos, real make rules, real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import git
import jsonschema
import pytest
from conftest import run_kcheck
from gitrepos import tree_state
from kbuild_fixtures import (
    FakeKernel,
    build,
    build_fake_kernel,
    change_line,
    kcheck_refs,
    kernelrelease,
    picked_commits,
    start_build,
    workdir_json,
)

from kcheck.core.validate import first_problem, schema

BUILD_BANNER = "Linux version 3.19.0-kcheck (kcheck@kcheck) Mon, 5 Jan 2015 04:26:40 +0000"


def picked(kernel: FakeKernel) -> list[tuple[str, str]]:
    return picked_commits(kernel.distro, kernel.base)


@pytest.fixture
def kernel(tmp_path) -> FakeKernel:
    return build_fake_kernel(tmp_path)


# --- a full run -------------------------------------------------------------------------------


def test_full_run_picks_builds_and_records(kernel):
    done = build(kernel)
    assert done.returncode == 0, done.stdout + done.stderr
    shas = kernel.shas
    # catalog order: aio-fix (enxio, remap), then overlay-fix, whose abbreviated SHA was resolved
    assert picked(kernel) == [
        (kernel.subjects["aio_enxio"], shas["aio_enxio"]),
        (kernel.subjects["aio_remap"], shas["aio_remap"]),
        (kernel.subjects["ovl_path"], shas["ovl_path"]),
    ]
    with kernel.repo() as repo:
        branch = repo.active_branch.name
        assert branch.startswith("kcheck/") and branch.endswith("-aio-fix+overlay-fix")
        assert repo.heads.main.commit.hexsha == kernel.base  # the original branch is untouched
    image = kernel.tree("arch/x86/boot/bzImage").read_bytes()
    assert BUILD_BANNER.encode() in image  # fixed timestamp, user and host
    assert kernelrelease(kernel) == "3.19.0-kcheck"
    config = kernel.tree(".config").read_text()
    assert 'CONFIG_LOCALVERSION="-kcheck"' in config
    assert 'CONFIG_SYSTEM_TRUSTED_KEYS=""' in config and 'CONFIG_SYSTEM_REVOCATION_KEYS=""' in config
    assert "Next steps:" in done.stdout and "--install" in done.stdout


def test_fetches_only_the_fix_commits_and_the_tag_of_the_abbreviated_one(kernel):
    assert build(kernel).returncode == 0
    refs = kcheck_refs(kernel)
    assert [r for r in refs if r.startswith("refs/kcheck/")] == sorted(
        f"refs/kcheck/upstream/{kernel.shas[role]}" for role in ("aio_enxio", "aio_remap")
    )
    assert "refs/tags/v4.0-rc1" in refs and "refs/tags/v3.19" not in refs
    with kernel.repo() as repo, git.Repo(kernel.upstream) as upstream:
        later = upstream.head.commit.hexsha  # "Linux 4.0-rc1", after the tag: never fetched
        with pytest.raises(git.GitCommandError):
            repo.git.cat_file("-e", later)
        assert not [r for r in refs if r.startswith("refs/remotes/")]


def test_metadata_and_reproducer_are_complete_and_the_reproducer_rebuilds_the_same_image(kernel, tmp_path):
    assert build(kernel).returncode == 0
    meta = workdir_json(kernel, "metadata.json")
    assert meta["schema"] == "kcheck.build/1"
    jsonschema.validate(meta, schema("build-1"))
    assert first_problem(meta, "build-1") is None
    assert meta["source"]["tree"] == str(kernel.distro) and meta["source"]["commit"] == kernel.base
    assert meta["source"]["branch"] == "main"
    assert meta["upstream"] == str(kernel.upstream)
    assert meta["patchsets"] == ["aio-fix", "overlay-fix"]
    assert [(p["upstream_sha"], p["status"]) for p in meta["patches"]] == [
        (kernel.shas[role], "picked") for role in ("aio_enxio", "aio_remap", "ovl_path")
    ]
    with kernel.repo() as repo:
        assert meta["commit"] == repo.head.commit.hexsha
        assert meta["patches"][-1]["commit"] == repo.head.commit.hexsha
    assert meta["release"] == "3.19.0-kcheck"
    import hashlib

    assert meta["config"]["sha256"] == hashlib.sha256(kernel.tree(".config").read_bytes()).hexdigest()
    assert meta["config"]["cleared"] == ["CONFIG_SYSTEM_TRUSTED_KEYS", "CONFIG_SYSTEM_REVOCATION_KEYS"]
    assert {name: s["status"] for name, s in meta["stages"].items()} == {
        "fetch": "done",
        "pick": "done",
        "config": "done",
        "build": "done",
    }
    assert all(isinstance(s["duration"], float) for s in meta["stages"].values())
    assert meta["tools"]["git"].startswith("git version") and meta["tools"]["gcc"]
    assert meta["tools"]["make"].startswith("GNU Make")
    assert meta["build"]["variables"] == [
        "KBUILD_BUILD_TIMESTAMP=Mon, 5 Jan 2015 04:26:40 +0000",
        "KBUILD_BUILD_USER=kcheck",
        "KBUILD_BUILD_HOST=kcheck",
    ]
    log = Path(meta["log"]).read_text()
    assert "gcc -c -o fs/aio.o fs/aio.c" in log  # the full build output is in the log

    script = Path(meta["reproducer"])
    assert os.access(script, os.X_OK)
    again = tmp_path / "again"
    again.mkdir()
    env = {**os.environ, "GIT_COMMITTER_NAME": "r", "GIT_COMMITTER_EMAIL": "r@example.org"}
    done = subprocess.run(["sh", str(script)], cwd=again, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rebuilt = (again / "linux/arch/x86/boot/bzImage").read_bytes()
    assert rebuilt == kernel.tree("arch/x86/boot/bzImage").read_bytes()


def test_rerun_skips_every_finished_stage_and_changes_nothing(kernel):
    assert build(kernel).returncode == 0
    image = kernel.tree("arch/x86/boot/bzImage")
    before = (tree_state(kernel.distro), image.stat().st_mtime_ns)
    again = build(kernel)
    assert again.returncode == 0, again.stderr
    for stage in ("fetch, pick", "config", "build"):
        assert f"[{stage}] done in a previous run" in again.stdout
    assert (tree_state(kernel.distro), image.stat().st_mtime_ns) == before


def test_a_changed_option_redoes_only_the_stages_that_use_it(kernel):
    assert build(kernel).returncode == 0
    again = build(kernel, "--set", "CONFIG_CHECKPOINT_RESTORE=y")
    assert again.returncode == 0, again.stderr
    assert "[fetch, pick] done in a previous run" in again.stdout
    assert "[config] done in" in again.stdout and "[build] done in" in again.stdout
    assert "done in a previous run: 3.19.0" not in again.stdout
    assert "[config] done in a previous run" not in again.stdout
    assert "[build] done in a previous run" not in again.stdout
    assert "CONFIG_CHECKPOINT_RESTORE=y" in kernel.tree(".config").read_text()


def test_already_applied_commit_is_skipped_and_not_fetched(tmp_path):
    kernel = build_fake_kernel(tmp_path, applied=True)
    done = build(kernel)
    assert done.returncode == 0, done.stdout + done.stderr
    remap = kernel.shas["aio_remap"]
    assert f"[pick] skip {remap[:12]} 'aio: Make it possible to remap aio ring': backported" in done.stdout
    assert [sha for _, sha in picked(kernel)] == [kernel.shas["aio_enxio"], kernel.shas["ovl_path"]]
    assert f"refs/kcheck/upstream/{remap}" not in kcheck_refs(kernel)
    statuses = {p["upstream_sha"]: p["status"] for p in workdir_json(kernel, "metadata.json")["patches"]}
    assert statuses[remap] == "backported"


def test_a_tree_that_has_every_fix_is_built_as_is(kernel):
    with kernel.repo() as repo:
        repo.git.fetch("--quiet", str(kernel.upstream), kernel.shas["ovl_path"])
        repo.git.merge("--quiet", "--no-edit", "FETCH_HEAD")  # all three fixes are now ancestors
        head = repo.head.commit.hexsha
    done = build(kernel)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": ancestor") == 3
    assert "[fetch] nothing to fetch" in done.stdout
    with kernel.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == head
        assert [t.name for t in repo.tags if t.commit.hexsha == head][0].endswith(f"-as-is-{head[:12]}")
    assert kernelrelease(kernel) == "3.19.0-kcheck"
    assert kernel.tree("arch/x86/boot/bzImage").exists()


def test_patchset_option_forces_one_the_version_does_not_need(kernel):
    toml = kernel.catalog / "aio-fix.toml"
    toml.write_text(toml.read_text().replace('needed_below = "4.0"', 'needed_below = "3.19"'))
    default = build(kernel, "--dry-run")
    assert "# patchsets: overlay-fix\n" in default.stdout and kernel.shas["aio_remap"] not in default.stdout
    forced = build(kernel, "--patchset", "aio-fix")
    assert forced.returncode == 0, forced.stderr
    assert [sha for _, sha in picked(kernel)] == [kernel.shas["aio_enxio"], kernel.shas["aio_remap"]]


# --- conflicts ---------------------------------------------------------------------------------


def test_conflict_stops_mid_cherry_pick_then_abort_restores_the_original_branch(tmp_path):
    kernel = build_fake_kernel(tmp_path, conflict=True)
    done = build(kernel)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "fs/overlayfs/inode.c" in done.stdout
    assert "kcheck build-kernel --continue --workdir" in done.stdout
    assert "kcheck build-kernel --abort --workdir" in done.stdout
    assert "conflict" in done.stderr and done.stderr.count("\n") == 1
    with kernel.repo() as repo:
        assert (Path(repo.git_dir) / "CHERRY_PICK_HEAD").exists()
        assert repo.git.diff("--name-only", "--diff-filter=U").split() == ["fs/overlayfs/inode.c"]
    assert not kernel.tree("arch/x86/boot/bzImage").exists()

    plain = build(kernel)
    assert plain.returncode == 3 and "--continue" in plain.stderr and "--abort" in plain.stderr

    aborted = run_kcheck("build-kernel", "--abort", "--workdir", str(kernel.root / "work"))
    assert aborted.returncode == 0, aborted.stderr
    with kernel.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == kernel.base
        assert [h.name for h in repo.heads] == ["main"]
        assert not [t for t in repo.tags if t.name.startswith("kcheck-built/")]
        assert repo.git.status("--porcelain", "--untracked-files=no") == ""
        assert not (Path(repo.git_dir) / "CHERRY_PICK_HEAD").exists()


def test_continue_after_resolving_commits_with_the_trailer_and_finishes(tmp_path):
    kernel = build_fake_kernel(tmp_path, conflict=True)
    assert build(kernel).returncode == 1
    workdir = ["--workdir", str(kernel.root / "work")]

    unresolved = run_kcheck("build-kernel", "--continue", *workdir)
    assert unresolved.returncode == 3 and "fs/overlayfs/inode.c" in unresolved.stderr
    extra = run_kcheck("build-kernel", "--continue", *workdir, "--jobs", "4")
    assert extra.returncode == 3 and "drop --jobs" in extra.stderr

    source = kernel.tree("fs/overlayfs/inode.c")
    resolved = change_line(kernel.tree("fs/aio.c").read_text(), 0, "int merged = 1;")  # any valid C
    source.write_text(resolved)
    with kernel.repo() as repo:
        repo.git.add("fs/overlayfs/inode.c")
    done = run_kcheck("build-kernel", "--continue", *workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [sha for _, sha in picked(kernel)] == [
        kernel.shas[role] for role in ("aio_enxio", "aio_remap", "ovl_path")
    ]
    assert kernel.tree("arch/x86/boot/bzImage").exists()
    statuses = [p["status"] for p in workdir_json(kernel, "metadata.json")["patches"]]
    assert statuses == ["picked", "picked", "resolved"]
    assert "resolved by hand" in (kernel.root / "work/reproducer.sh").read_text()


def test_continue_after_the_pick_was_aborted_by_hand_is_refused_not_recorded_as_present(tmp_path):
    kernel = build_fake_kernel(tmp_path, conflict=True)
    assert build(kernel).returncode == 1
    workdir = ["--workdir", str(kernel.root / "work")]
    with kernel.repo() as repo:
        repo.git.cherry_pick("--abort")
    before = workdir_json(kernel, "state.json")

    done = run_kcheck("build-kernel", "--continue", *workdir)
    assert done.returncode == 3, done.stdout + done.stderr
    ovl = kernel.shas["ovl_path"]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("kcheck: error: ")
    assert f"the pick of {ovl} was abandoned" in done.stderr
    assert f"git cherry-pick -x {ovl}" in done.stderr and "--abort" in done.stderr
    assert workdir_json(kernel, "state.json") == before
    assert not kernel.tree("arch/x86/boot/bzImage").exists()
    assert not (kernel.root / "work/metadata.json").exists()


def test_another_tree_on_a_workdir_with_a_stopped_conflict_is_refused(tmp_path):
    kernel = build_fake_kernel(tmp_path / "a", conflict=True)
    assert build(kernel).returncode == 1
    other = build_fake_kernel(tmp_path / "b")
    before = workdir_json(kernel, "state.json")

    done = build(other, workdir=kernel.root / "work")
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("kcheck: error: ")
    assert f"holds a cherry-pick stopped on a conflict in {kernel.distro}" in done.stderr
    assert "--continue or --abort it first" in done.stderr
    assert workdir_json(kernel, "state.json") == before
    with other.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == other.base


def test_continue_after_the_pick_was_committed_by_hand_records_that_commit(tmp_path):
    kernel = build_fake_kernel(tmp_path, conflict=True)
    assert build(kernel).returncode == 1
    kernel.tree("fs/overlayfs/inode.c").write_text(
        change_line(kernel.tree("fs/aio.c").read_text(), 0, "int merged = 1;")
    )
    with kernel.repo() as repo:
        repo.git.add("fs/overlayfs/inode.c")
        with repo.git.custom_environment(GIT_EDITOR="true"):
            repo.git.cherry_pick("--continue")
        by_hand = repo.head.commit.hexsha

    done = run_kcheck("build-kernel", "--continue", "--workdir", str(kernel.root / "work"))
    assert done.returncode == 0, done.stdout + done.stderr
    patches = workdir_json(kernel, "metadata.json")["patches"]
    assert [(p["upstream_sha"], p["status"]) for p in patches][-1] == (kernel.shas["ovl_path"], "resolved")
    assert patches[-1]["commit"] == by_hand
    assert kernel.tree("arch/x86/boot/bzImage").exists()


# --- interrupted runs ---------------------------------------------------------------------------


def marked_processes(workdir: Path) -> dict[int, str]:
    """pid -> command line of the processes a run on `workdir` started (they carry its marker)."""
    marker = f"KCHECK_BUILD_WORKDIR={workdir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def kill_run(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def test_kill_9_during_fetch_then_rerun_converges(tmp_path):
    kernel = build_fake_kernel(tmp_path, payload_bytes=20_000_000)  # a fetch that takes a while
    run = start_build(kernel)
    fetching = wait_for(
        lambda: [cmd for cmd in marked_processes(kernel.root / "work").values() if " fetch " in cmd],
        what="git fetch to start",
    )
    kill_run(run)
    state = workdir_json(kernel, "state.json")
    assert state["stages"]["fetch"]["status"] == "running", fetching
    assert "pick" not in state["stages"]

    again = build(kernel)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [sha for _, sha in picked(kernel)] == [
        kernel.shas[role] for role in ("aio_enxio", "aio_remap", "ovl_path")
    ]
    with kernel.repo() as repo:
        assert len([h for h in repo.heads if h.name.startswith("kcheck/")]) == 1
    assert BUILD_BANNER.encode() in kernel.tree("arch/x86/boot/bzImage").read_bytes()
    assert not marked_processes(kernel.root / "work")


def test_kill_9_between_two_picks_then_rerun_goes_on_on_the_same_branch(kernel):
    hooks = kernel.tree(".git/hooks")
    # A real post-commit hook (cherry-pick runs it) that stalls after the second pick.
    (hooks / "post-commit").write_text(
        "#!/bin/sh\n"
        f"echo x >> {kernel.root}/commits\n"
        f"if [ $(wc -l < {kernel.root}/commits) = 2 ]; then touch {kernel.root}/stalled; sleep 60; fi\n"
    )
    (hooks / "post-commit").chmod(0o755)
    run = start_build(kernel)
    wait_for(lambda: (kernel.root / "stalled").exists(), what="the second pick's hook")
    kill_run(run)
    assert len(picked(kernel)) == 2  # committed, though the state file only knows the first

    again = build(kernel)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[pick] resuming on kcheck/" in again.stdout
    assert [sha for _, sha in picked(kernel)] == [
        kernel.shas[role] for role in ("aio_enxio", "aio_remap", "ovl_path")
    ]
    with kernel.repo() as repo:
        assert len([h for h in repo.heads if h.name.startswith("kcheck/")]) == 1
    meta = workdir_json(kernel, "metadata.json")
    assert (meta["source"]["branch"], meta["source"]["commit"]) == ("main", kernel.base)
    aborted = run_kcheck("build-kernel", "--abort", "--workdir", str(kernel.root / "work"))
    assert aborted.returncode == 0, aborted.stderr
    with kernel.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == kernel.base


def test_kill_9_during_build_then_rerun_stops_the_leftover_make_and_converges(kernel):
    run = start_build(kernel, env={"FAKE_BUILD_SECONDS": "60"})
    wait_for(lambda: kernel.tree("arch/x86/boot/.building").exists(), what="the image rule to start")
    kill_run(run)
    leftovers = marked_processes(kernel.root / "work")
    assert any(cmd.startswith("make ") for cmd in leftovers.values()), leftovers  # orphaned, still building
    state = workdir_json(kernel, "state.json")
    assert state["stages"]["build"]["status"] == "running"
    assert not kernel.tree("arch/x86/boot/bzImage").exists()

    again = build(kernel)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[resume] stopped make" in again.stdout
    assert "[fetch, pick] done in a previous run" in again.stdout
    assert "[config] done in a previous run" in again.stdout
    assert "[build] done in" in again.stdout
    assert "[build] done in a previous run" not in again.stdout  # the killed build was redone
    assert not marked_processes(kernel.root / "work")
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in leftovers)
    assert BUILD_BANNER.encode() in kernel.tree("arch/x86/boot/bzImage").read_bytes()
    assert workdir_json(kernel, "state.json")["stages"]["build"]["status"] == "done"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_a_second_run_on_the_same_workdir_is_refused_while_one_runs(kernel):
    run = start_build(kernel, env={"FAKE_BUILD_SECONDS": "60"})
    try:
        wait_for(lambda: kernel.tree("arch/x86/boot/.building").exists(), what="the image rule to start")
        second = build(kernel)
        assert second.returncode == 3
        assert f"another kcheck build-kernel (pid {run.pid}) is using it" in second.stderr
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: the whole job, make included
        _, stderr = run.communicate()
    assert run.returncode == 130 and "kcheck: interrupted" in stderr
    wait_for(lambda: not marked_processes(kernel.root / "work"), what="make to exit after Ctrl-C")
    assert workdir_json(kernel, "state.json")["stages"]["build"]["status"] == "running"  # redone next run


# --- failures -----------------------------------------------------------------------------------


def test_a_git_command_failing_mid_pick_is_a_failed_stage_not_a_traceback(kernel):
    with kernel.repo() as repo:
        repo.create_head("kcheck")  # so `git checkout -b kcheck/...` cannot create its ref
    done = build(kernel)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "kcheck: stage pick failed" in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("kcheck: error: git checkout -b kcheck/") and "failed: fatal:" in last
    assert workdir_json(kernel, "state.json")["stages"]["pick"]["status"] == "failed"


def test_abort_that_git_refuses_is_a_failed_stage_and_can_be_rerun(tmp_path):
    kernel = build_fake_kernel(tmp_path, conflict=True)
    assert build(kernel).returncode == 1
    workdir = ["--workdir", str(kernel.root / "work")]
    aio = kernel.tree("fs/aio.c")  # its fix is on kcheck's branch, not on main
    with kernel.repo() as repo:
        repo.git.cherry_pick("--abort")
        aio.write_text(change_line(aio.read_text(), 0, "int local_edit = 1;"))

    done = run_kcheck("build-kernel", "--abort", *workdir)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("kcheck: error: git checkout --quiet main failed: error: Your local changes")
    assert workdir_json(kernel, "state.json")["stages"]["pick"]["status"] == "conflict"

    with kernel.repo() as repo:
        repo.git.checkout("--", "fs/aio.c")
    again = run_kcheck("build-kernel", "--abort", *workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    with kernel.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == kernel.base


def test_abort_after_the_tree_was_removed_is_one_line_bad_input(tmp_path):
    kernel = build_fake_kernel(tmp_path, conflict=True)
    assert build(kernel).returncode == 1
    shutil.rmtree(kernel.distro)
    before = workdir_json(kernel, "state.json")

    done = run_kcheck("build-kernel", "--abort", "--workdir", str(kernel.root / "work"))
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"kcheck: error: --abort: {kernel.distro} is no longer a git repository")
    assert workdir_json(kernel, "state.json") == before


def test_build_failure_exits_1_with_the_log_tail_then_a_fixed_rerun_finishes(kernel):
    done = build(kernel, "--targets", "bzImage,no-such-target")
    assert done.returncode == 1
    assert "No rule to make target 'no-such-target'" in done.stderr
    assert f"the last 30 lines of {kernel.root / 'work/build.log'}" in done.stderr
    assert "rerun the same command" in done.stdout
    assert workdir_json(kernel, "state.json")["stages"]["build"]["status"] == "failed"
    assert workdir_json(kernel, "metadata.json")["stages"]["build"]["status"] == "failed"
    fixed = build(kernel, "--targets", "bzImage")
    assert fixed.returncode == 0, fixed.stderr
    assert "[fetch, pick] done in a previous run" in fixed.stdout
