"""`kcheck cr` on the real stack: a private dockerd and podman store, CRIU 4.2 built by
`kcheck build-criu`, and the Docker C/R HOWTO's counter as the workload. A container
survives only if its counter goes on from where it stopped: never from 0, never frozen."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import requires_root, run_kcheck
from realstack import Engine, built_criu, search_path, start_dockerd, start_podman, wait_for

from kcheck.probe.checks import CONFIG_OPTIONS

pytestmark = [requires_root, pytest.mark.slow]

TICK = 1.0  # the counter's period


@pytest.fixture(scope="session")
def criu_bin() -> Path:
    return built_criu()


@pytest.fixture(scope="session")
def docker(criu_bin):
    yield from start_dockerd(criu_bin)


@pytest.fixture(scope="session")
def podman(criu_bin):
    yield from start_podman(criu_bin)


@pytest.fixture
def counter(request, docker) -> str:
    """A docker container running the counter, removed afterwards."""
    name = f"c{abs(hash(request.node.name)) % 10**8}"
    docker.start_counter(name)
    yield name
    docker("rm", "-f", name, check=False)


def cr(engine: Engine, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run_kcheck("cr", *args, env=engine.env_with(**env), timeout=300)


def assert_frozen(engine: Engine, name: str) -> list[int]:
    """Stopped: the engine says so and /foo stops growing."""
    assert not engine.running(name)
    before = engine.counts(name)
    time.sleep(2.5 * TICK)
    assert engine.counts(name) == before, "the counter kept counting after the checkpoint"
    return before


def assert_continues(engine: Engine, name: str, before: list[int]) -> None:
    """Restored: /foo goes on from its last value + 1, with no restart from 0."""
    wait_for(lambda: len(engine.counts(name)) >= len(before) + 2, f"{name} to count again")
    after = engine.counts(name)
    assert after == list(range(len(after))), f"the counter restarted or skipped: {after}"
    assert after[len(before)] == before[-1] + 1


def test_docker_native_checkpoint_and_restore_continue_the_counter(docker, counter):
    done = cr(docker, "checkpoint", counter, "--engine", "docker", "--name", "cp1")
    assert done.returncode == 0, done.stderr
    assert "pre-flight: kernel" in done.stderr
    before = assert_frozen(docker, counter)
    listed = cr(docker, "list", counter)
    assert listed.returncode == 0, listed.stderr
    assert "cp1" in listed.stdout.split()
    done = cr(docker, "restore", counter, "--name", "cp1")
    assert done.returncode == 0, done.stderr
    assert docker.running(counter)
    assert_continues(docker, counter, before)


def test_docker_native_leave_running_keeps_counting(docker, counter):
    done = cr(docker, "checkpoint", counter, "--leave-running", "--name", "live")
    assert done.returncode == 0, done.stderr
    assert docker.running(counter)
    before = docker.counts(counter)
    wait_for(lambda: len(docker.counts(counter)) > len(before) + 1, "the counter to go on")
    assert "live" in docker("checkpoint", "ls", counter).stdout.split()


def test_restore_of_a_running_docker_container_is_refused(docker, counter):
    """docker itself exits 0 for `start --checkpoint` on a running container and does nothing."""
    done = cr(docker, "restore", counter, "--name", "nonexistent")
    assert done.returncode == 3
    assert f"container {counter} is already running" in done.stderr
    assert docker.running(counter)


def test_docker_dir_is_refused_before_the_container_is_stopped(docker, counter, tmp_path):
    """dockerd 20.10 checkpoints into --checkpoint-dir but cannot restore from it (moby#37344)."""
    done = cr(docker, "checkpoint", counter, "--dir", str(tmp_path))
    assert done.returncode == 3
    assert "--engine external" in done.stderr and "podman" in done.stderr
    assert docker.running(counter)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_of_a_stopped_container_is_bad_input_for_every_engine(docker, counter):
    docker("stop", "-t", "0", counter)
    for engine in ("docker", "external"):
        for extra in ([], ["--dry-run"]):
            done = cr(docker, "checkpoint", counter, "--engine", engine, *extra)
            assert done.returncode == 3, (engine, extra, done.stderr)
            assert f"container {counter} is not running" in done.stderr
            assert done.stdout == ""


def test_preflight_refusal_runs_nothing_and_the_container_keeps_counting(docker, counter, tmp_path):
    """A kernel config that has everything but CHECKPOINT_RESTORE."""
    config = tmp_path / "config"
    config.write_text(
        "".join(f"CONFIG_{option}=y\n" for option, *_ in CONFIG_OPTIONS if option != "CHECKPOINT_RESTORE")
        + "# CONFIG_CHECKPOINT_RESTORE is not set\n"
    )
    done = cr(docker, "checkpoint", counter, "--config", str(config))
    assert done.returncode == 1
    assert "pre-flight refused the checkpoint" in done.stderr
    assert "(1 of " in done.stderr and "FAIL config.CHECKPOINT_RESTORE" in done.stderr
    assert docker.running(counter)
    assert docker("checkpoint", "ls", counter).stdout.split() == ["CHECKPOINT", "NAME"]  # none
    before = docker.counts(counter)
    wait_for(lambda: len(docker.counts(counter)) > len(before), "the counter to go on")


def test_external_refused_with_only_debians_criu(docker, counter, tmp_path):
    """Debian's criu 3.17 fails on this kernel (vDSO): the pre-flight must say so and stop."""
    done = cr(
        docker,
        "checkpoint",
        counter,
        "--engine",
        "external",
        "--dir",
        str(tmp_path),
        PATH=search_path(),
    )
    assert done.returncode == 1
    assert "pre-flight refused the checkpoint" in done.stderr
    assert "FAIL criu.check: criu 3.17" in done.stderr and "FAIL criu.trial: criu 3.17" in done.stderr
    assert "vdso: Unexpected rt vDSO area bounds" in done.stderr
    assert "kcheck build-criu" in done.stderr
    assert docker.running(counter)
    assert list(tmp_path.iterdir()) == []


# --- external: criu dump/restore of the container's process tree (docker_cr.sh) ------------------


def restored_pid(images: Path) -> int:
    return int((images / "restore.pid").read_text().split()[0])


def test_external_checkpoint_and_restore_continue_the_counter_in_the_container_root(
    docker, counter, tmp_path
):
    info = docker.inspect(counter)
    upper = Path(info["GraphDriver"]["Data"]["UpperDir"])
    done = cr(docker, "checkpoint", counter, "--engine", "external", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "required checks pass, criu.check and criu.trial among them)" in done.stderr
    images = tmp_path / "kcheck"
    manifest = json.loads((images / "kcheck-manifest.json").read_text())
    assert manifest["schema"] == "kcheck.cr.manifest/2"
    # docker's bind-mounted files and this host's v1 cgroup hierarchies are external to criu
    assert {"/etc/resolv.conf", "/etc/hosts", "/etc/hostname"} <= manifest["external_mounts"].keys()
    assert manifest["external_mounts"]["/etc/hosts"] == info["HostsPath"]
    before = assert_frozen(docker, counter)
    done = cr(docker, "restore", counter, "--engine", "external", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    pid = restored_pid(images)
    try:
        assert f"restored container {counter}: process tree pid {pid}" in done.stdout
        assert "run outside docker" in done.stderr
        wait_for(lambda: len((upper / "foo").read_text().split()) >= len(before) + 2, "the counter")
        after = [int(n) for n in (upper / "foo").read_text().split()]
        assert after == list(range(len(after))) and after[len(before)] == before[-1] + 1
        # the restored tree runs in the container's root: its /foo is the upper layer's
        assert Path(f"/proc/{pid}/root/foo").read_text().split()[: len(before)] == [str(n) for n in before]
        assert Path(f"/proc/{pid}/root/bin/busybox").exists()
    finally:
        os.kill(pid, 9)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {info['GraphDriver']['Data']['MergedDir']} " not in mounts  # kcheck unmounted it


def full_tmpfs(path: Path, size: str = "4m") -> Path:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "kcheck-full", str(path)], check=True)
    return path


def fill(path: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={path / 'filler'}", "bs=64k"], capture_output=True)


def test_external_dump_into_a_full_dir_fails_with_criu_error_and_the_container_goes_on(
    docker, counter, tmp_path
):
    directory = full_tmpfs(tmp_path / "small", "256k")
    try:
        done = cr(docker, "checkpoint", counter, "--engine", "external", "--dir", str(directory))
        assert done.returncode == 1
        # criu may or may not find room to log its error; kcheck says why the dump stopped either way
        assert f"the filesystem holding {directory / 'kcheck'} has only" in done.stderr
        assert "no output on stderr" not in done.stderr
        if "Error (" in (directory / "kcheck" / "dump.log").read_text():
            assert "Error (" in done.stderr  # criu's own first error line, from dump.log
        assert not (directory / "kcheck" / "kcheck-manifest.json").exists()
        assert docker.running(counter)
        before = docker.counts(counter)
        wait_for(lambda: len(docker.counts(counter)) > len(before), "the counter to go on")
        assert (directory / "kcheck" / "dump.log").exists()
        again = cr(docker, "restore", counter, "--engine", "external", "--dir", str(directory))
        assert again.returncode == 3
        assert "failed, so there is nothing to restore" in again.stderr
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_external_restore_that_fails_for_real_undoes_every_mount(docker, counter, tmp_path):
    directory = full_tmpfs(tmp_path / "cp", "64m")
    try:
        merged = docker.inspect(counter)["GraphDriver"]["Data"]["MergedDir"]
        done = cr(docker, "checkpoint", counter, "--engine", "external", "--dir", str(directory))
        assert done.returncode == 0, done.stderr
        fill(directory)  # restore cannot write its log or pidfile now
        done = cr(docker, "restore", counter, "--engine", "external", "--dir", str(directory))
        assert done.returncode == 1
        assert "kcheck: run: mount -t overlay overlay" in done.stderr
        assert f"kcheck: run: umount --recursive {merged}" in done.stderr
        assert f" {merged} " not in Path("/proc/self/mountinfo").read_text()
    finally:
        subprocess.run(["umount", str(directory)], check=True)


# --- podman ----------------------------------------------------------------------------------------


def test_podman_checkpoint_restore_and_move_under_a_new_name(podman, tmp_path):
    podman.start_counter("pc")
    try:
        done = cr(podman, "checkpoint", "pc")
        assert done.returncode == 0, done.stderr
        before = assert_frozen(podman, "pc")
        done = cr(podman, "restore", "pc")
        assert done.returncode == 0, done.stderr
        assert podman.running("pc")
        assert_continues(podman, "pc", before)
        # a move: export, remove, import under a new name (as on another host)
        archive = tmp_path / "pc.tar.gz"
        done = cr(podman, "checkpoint", "pc", "--export", str(archive))
        assert done.returncode == 0, done.stderr
        before = podman.counts("pc")
        podman("rm", "-f", "pc")
        done = cr(podman, "restore", "--import", str(archive), "--new-name", "pc2")
        assert done.returncode == 0, done.stderr
        assert podman.running("pc2")
        assert_continues(podman, "pc2", before)
    finally:
        podman("rm", "-f", "-t", "0", "pc", "pc2", check=False)


def test_podman_leave_running_keeps_counting(podman):
    podman.start_counter("pl")
    try:
        done = cr(podman, "checkpoint", "pl", "--leave-running")
        assert done.returncode == 0, done.stderr
        assert podman.running("pl")
        before = podman.counts("pl")
        wait_for(lambda: len(podman.counts("pl")) > len(before) + 1, "the counter to go on")
    finally:
        podman("rm", "-f", "-t", "0", "pl", check=False)


def test_external_dump_never_overwrites_a_checkpoint_and_a_file_is_no_dir(docker, counter, tmp_path):
    done = cr(
        docker, "checkpoint", counter, "--engine", "external", "--leave-running", "--dir", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    again = cr(
        docker, "checkpoint", counter, "--engine", "external", "--leave-running", "--dir", str(tmp_path)
    )
    assert again.returncode == 3
    assert f"a checkpoint already exists in {tmp_path / 'kcheck'}" in again.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    done = cr(docker, "checkpoint", counter, "--engine", "external", "--dir", str(not_a_dir))
    assert done.returncode == 3
    assert f"--dir: {not_a_dir} is not a directory; pass another --dir" in done.stderr
    assert docker.running(counter)
