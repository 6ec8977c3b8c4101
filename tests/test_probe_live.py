"""The real probe on this machine: real mounts, real AIO, real cleanup on every exit path."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NOBODY, kcheck_argv, requires_root, run_kcheck

from kcheck.probe import DEFAULT_TIMEOUT
from kcheck.probe.overlay import SCRATCH_DIR_NAME

LIVE_IDS = {
    "overlayfs.mnt_id",
    "overlayfs.fd_path",
    "overlayfs.maps",
    "aio.ring_remap",
    "aio.reopen_enxio",
    "fdinfo.mnt_id_field",
}

pytestmark = requires_root


def host_state() -> tuple[list[str], list[str]]:
    """The host's mount table (ids included) and what kcheck could have left in /tmp.

    Other processes (pip, the test runner, a VM test's exchange dir) may add to /tmp
    meanwhile, so /tmp is compared on what the probe would leave: its scratch directory.
    """
    leftovers = sorted(name for name in os.listdir("/tmp") if name == SCRATCH_DIR_NAME)
    return Path("/proc/self/mountinfo").read_text().splitlines(), leftovers


def checks_of(stdout: str) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(stdout)["checks"]}


def test_live_probe_is_ready_with_every_live_check_passing_live():
    done = run_kcheck("probe", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = checks_of(done.stdout)
    for check_id in LIVE_IDS:
        assert (checks[check_id]["status"], checks[check_id]["evidence"]) == ("pass", "live"), checks[
            check_id
        ]


def test_two_hundred_runs_leave_mounts_and_tmp_unchanged():
    before = host_state()
    for _ in range(200):
        done = subprocess.run(
            [*kcheck_argv(), "probe", "--check", "overlayfs.*", "--check", "aio.*", "--format", "npd"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert host_state() == before


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _forked_children(pid: int) -> list[int]:
    """Its children that are not criu: the AIO and overlay children, forks of kcheck. (criu
    is spawned with vfork semantics, so it is exec'd before kcheck forks anything else.)"""
    found = []
    for child in _children(pid):
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{child}/comm").read_text().strip() != "criu":
                found.append(child)
    return found


def _start_held_probe(*extra: str) -> tuple[subprocess.Popen, int]:
    """Start a probe whose overlay child holds its mounts; return it and the child's pid."""
    env = {**os.environ, "KCHECK_OVERLAY_HOLD": "60"}
    probe = subprocess.Popen(
        [*kcheck_argv(), "probe", "--check", "overlayfs.*", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for child in _children(probe.pid):
            try:
                if "/tmp/kcheck/merged" in Path(f"/proc/{child}/mountinfo").read_text():
                    return probe, child
            except FileNotFoundError:
                continue
        time.sleep(0.01)
    probe.kill()
    raise AssertionError("overlay child never mounted its overlay")


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_mid_run_leaves_nothing(sig):
    before = host_state()
    probe, child = _start_held_probe()
    # The overlay exists, but only in the child's private namespace.
    assert "/tmp/kcheck/merged" not in Path("/proc/self/mountinfo").read_text()
    os.kill(probe.pid, sig)
    probe.communicate(timeout=20)
    assert _gone(child), "overlay child outlived the probe"
    assert host_state() == before


def test_timeout_kills_the_child_and_reports_unknown():
    before = host_state()
    probe, child = _start_held_probe("--timeout", "1", "--format", "json")
    stdout, _ = probe.communicate(timeout=30)
    check = checks_of(stdout)["overlayfs.mnt_id"]
    # This kernel is >= 4.2, so the version decides in place of the timed-out probe.
    assert check["evidence"] == "version" and "did not finish within 1s; raise --timeout" in check["detail"]
    assert checks_of(stdout)["overlayfs.maps"]["status"] == "unknown"
    assert probe.returncode == 0  # required checks decided by version; maps is optional
    assert _gone(child)
    assert host_state() == before


def process_group(pgid: int) -> list[str]:
    """Every process still in process group `pgid`: 'pid state command'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        command, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            found.append(f"{stat.parent.name} {fields[0]} {command}")
    return found


@requires_root
@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="every-check"),
        pytest.param(["--timeout", "0.001"], id="timeout"),  # children still working then are killed
        pytest.param(["--check", "aio.*"], id="aio-only"),  # the child left to finish io_destroy
        # bad input found after the early AIO child was forked (kcheck.probe.early)
        pytest.param(["--catalog", "BROKEN"], id="bad-catalog"),
        # a usage error found by argparse, after kcheck.cli started criu and the AIO child
        pytest.param(["--format", "xml"], id="usage-error-after-prestart"),
    ],
)
def test_nothing_is_left_in_the_process_group_once_the_probe_exits(args, tmp_path):
    """kcheck reaps every child itself: no zombie, no orphan reparented to init, which a CI
    step or a pod whose PID 1 does not reap would keep."""
    broken = "BROKEN" in args
    (tmp_path / "broken.toml").write_text("name = [\n")
    args = [str(tmp_path) if arg == "BROKEN" else arg for arg in args]
    probe = subprocess.Popen(
        [*kcheck_argv(), "probe", "--format", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, to look into afterwards
    )
    stdout, stderr = probe.communicate(timeout=120)
    if broken:
        assert probe.returncode == 3 and b"broken.toml" in stderr, stderr
    elif "xml" in args:
        assert probe.returncode == 3 and b"invalid choice: 'xml'" in stderr, stderr
    else:
        assert json.loads(stdout)["schema"] == "kcheck.probe/1", stderr
    assert process_group(probe.pid) == []


@requires_root
def test_a_probe_held_up_past_its_timeout_still_uses_what_its_children_reported():
    """The early start forks the AIO and overlay children before kcheck imports the rest; a
    probe slower than --timeout to come back for their reports (an emulated guest under load:
    CI saw it) must still judge by them, not fall back to the version. SIGSTOP stands in
    for the slow imports."""
    for _attempt in range(5):  # the children live for tens of ms; a busy machine may miss them
        probe = subprocess.Popen(
            [*kcheck_argv(), "probe", "--format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        forked: list[int] = []
        while probe.poll() is None and len(forked := _forked_children(probe.pid)) < 2:
            time.sleep(0.001)
        if len(forked) == 2:
            break
        probe.communicate(timeout=60)
    else:
        raise AssertionError("the probe's AIO and overlay children were never seen in 5 runs")
    os.kill(probe.pid, signal.SIGSTOP)
    time.sleep(DEFAULT_TIMEOUT + 1)
    os.kill(probe.pid, signal.SIGCONT)
    stdout, stderr = probe.communicate(timeout=60)
    checks = checks_of(stdout)
    for check_id in ("aio.ring_remap", "aio.reopen_enxio", "overlayfs.mnt_id", "overlayfs.maps"):
        check = checks[check_id]
        assert (check["status"], check["evidence"]) == ("pass", "live"), check
    assert process_group(probe.pid) == []


@requires_root
def test_criu_check_is_judged_when_kcheck_starts_with_sigchld_ignored():
    """An ignored SIGCHLD is inherited across exec, and would have the kernel reap criu before
    kcheck reads its exit status."""
    assert shutil.which("criu"), "CRIU 4.2 is first on PATH in CI"
    start = (
        "import os, signal, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    argv = [*kcheck_argv(), "probe", "--format", "json"]
    probe = subprocess.Popen(
        [sys.executable, "-c", start, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    stdout, stderr = probe.communicate(timeout=120)
    assert checks_of(stdout.decode())["criu.check"]["status"] == "pass", stderr
    assert process_group(probe.pid) == []


def test_unprivileged_user_uses_a_user_namespace():
    done = subprocess.run(
        [*NOBODY, *kcheck_argv(), "probe", "--format", "json", "--check", "overlayfs.*", "--check", "aio.*"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    checks = checks_of(done.stdout)
    assert checks["overlayfs.mnt_id"]["evidence"] == "live"
    assert "unprivileged user namespace" in checks["overlayfs.mnt_id"]["detail"]
    # map_files needs CAP_SYS_ADMIN in the initial namespace: decided by version, never live.
    assert checks["aio.reopen_enxio"]["evidence"] == "version"
    assert checks["aio.ring_remap"]["evidence"] == "live"
    assert done.returncode == 0


def test_unprivileged_without_user_namespaces_decides_by_version_only(tmp_path):
    # The kernel refuses CLONE_NEWUSER inside a chroot, so a chroot onto a bind of / is a
    # host where the unprivileged user has no user namespaces (the sysctl is read-only here).
    root = tmp_path / "root"
    root.mkdir()
    inner = shlex.join([*NOBODY, *kcheck_argv(), "probe", "--format", "json", "--check", "overlayfs.*"])
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --rbind / "$1" && exec chroot "$1" {inner}',
            "sh",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    checks = checks_of(done.stdout)
    assert checks["overlayfs.mnt_id"]["evidence"] == "version"
    assert "user namespace was refused" in checks["overlayfs.mnt_id"]["detail"]
    assert checks["overlayfs.maps"]["status"] == "unknown"
    assert done.returncode == 0  # maps is optional; the required overlay checks pass by version


def processes_marked(marker: str) -> list[str]:
    """Every process whose environment holds `marker` (a test's own, inherited by its children)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(f"{environ.parent.name} {(environ.parent / 'cmdline').read_bytes()!r}")
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found


@requires_root
@pytest.mark.parametrize("hangs", [False, True], ids=["leaves-an-orphan", "hangs-past-timeout"])
def test_what_criu_starts_is_killed_and_reaped_with_it(tmp_path, hangs):
    """A criu (a stub on PATH) whose check orphans a child, and with `hangs` never returns:
    kcheck kills criu's whole process group and reaps the orphans itself (a subreaper)."""
    marker = f"KCHECK_TEST_MARK={tmp_path.name}"
    stub = tmp_path / "criu"
    stub.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "Version: 4.2"; exit 0; fi\n'
        "(sleep 300 >/dev/null 2>&1 &)\n"  # double fork: an orphan at once, off our pipes
        f"{'sleep 300' if hangs else 'echo Looks good.'}\n"
    )
    stub.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        marker.split("=")[0]: tmp_path.name,
    }
    done = subprocess.run(
        [*kcheck_argv(), "probe", "--format", "json", "--timeout", "1", "--check", "criu.check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    detail = checks_of(done.stdout)["criu.check"]["detail"]
    assert ("did not finish within 3s" in detail) if hangs else ("criu 4.2" in detail), detail
    assert processes_marked(marker) == []
