"""External C/R (`--engine external`): which mounts criu must be told about, the criu command
lines, and every bad input a restore can meet. No fakes: the parts here are pure, or fail
before any engine runs. The real dump and restore of a docker container are in test_cr_real.py."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from conftest import load_capture, run_kcheck

from kcheck.cr.external import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    Manifest,
    _restored_pid,
    dump_argv,
    external_mounts,
    load_manifest,
    manifest_from_inspect,
    restore_argv,
)
from kcheck.cr.runner import Runner
from kcheck.errors import KcheckError, Refused

CAPTURE = load_capture("docker-container-mounts.json")
CONTAINER_ID = Path(CAPTURE["inspect"]["HostsPath"]).parent.name
CGROUPS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd")


def test_a_real_docker_containers_external_mounts_are_its_file_binds_and_cgroup_hierarchies():
    """cgroup v1 with cgroupfs: each hierarchy is seen below its root, which criu cannot dump
    without a map ("doesn't have a proper root mount"); /proc/bus and the like are not external,
    because the container's own /proc holds their root."""
    found = external_mounts(CAPTURE["container_mountinfo"], CAPTURE["host_mountinfo"])
    files = {
        "/etc/resolv.conf": CAPTURE["inspect"]["ResolvConfPath"],
        "/etc/hosts": CAPTURE["inspect"]["HostsPath"],
        "/etc/hostname": CAPTURE["inspect"]["HostnamePath"],
    }
    cgroups = {f"/sys/fs/cgroup/{c}": f"/sys/fs/cgroup/{c}/docker/{CONTAINER_ID}" for c in CGROUPS}
    assert found == files | cgroups


HOST = """\
27 1 254:0 / / rw - ext4 /dev/vda rw
60 27 254:0 /srv/export /mnt/export rw - ext4 /dev/vda rw
61 27 0:70 / /var/lib/vols rw - tmpfs tmpfs rw
"""
ROOT = "100 90 0:40 / / rw - overlay overlay rw\n"


@pytest.mark.parametrize(
    ("mount", "host_path"),
    [
        ("101 100 254:0 /srv/data /data rw - ext4 /dev/vda rw", "/srv/data"),  # a volume from /
        # the longest host root wins: the host sees it under the bind at /mnt/export
        ("101 100 254:0 /srv/export/db /db rw - ext4 /dev/vda rw", "/mnt/export/db"),
        ("101 100 0:70 /v1 /v rw - tmpfs tmpfs rw", "/var/lib/vols/v1"),
    ],
)
def test_an_external_mount_maps_to_where_the_host_reaches_it(mount, host_path):
    assert external_mounts(ROOT + mount + "\n", HOST) == {mount.split()[4]: host_path}


def test_a_mount_held_by_another_container_mount_is_not_external():
    table = ROOT + "101 100 0:70 / /vols rw - tmpfs tmpfs rw\n102 100 0:70 /a /a rw - tmpfs tmpfs rw\n"
    assert external_mounts(table, HOST) == {}


def test_a_mount_the_host_cannot_reach_is_bad_input():
    with pytest.raises(KcheckError, match=r"mount /x \(tmpfs, /y\) is not reachable from the host"):
        external_mounts(ROOT + "101 100 0:99 /y /x rw - tmpfs tmpfs rw\n", HOST)


def inspect(**changes) -> dict:
    info = {
        "Id": "ab" * 32,
        "Name": "/web",
        "State": {"Running": True, "Pid": 4242},
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {"LowerDir": "/l", "UpperDir": "/u", "WorkDir": "/w", "MergedDir": "/m"},
        },
    }
    return info | changes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"State": {"Running": False, "Pid": 0}}, "container web has no process (State.Pid 0)"),
        ({"GraphDriver": {"Name": "btrfs", "Data": {}}}, "uses storage driver 'btrfs'; external C/R"),
        (
            {"GraphDriver": {"Name": "overlay2", "Data": {"LowerDir": "/l"}}},
            "lacks UpperDir, WorkDir, MergedDir",
        ),
        ({"State": {"Pid": 2**22 + 1}}, "cannot read the mount table of its process 4194305"),
    ],
)
def test_an_unsuitable_container_is_bad_input(change, message):
    with pytest.raises(KcheckError, match=message.replace("(", r"\(").replace(")", r"\)")):
        manifest_from_inspect(inspect(**change), tcp_established=False)


def manifest(tmp_path: Path) -> Manifest:
    """A manifest whose overlay layers are real (empty) directories."""
    layers = {name: tmp_path / "layers" / name for name in ("lower", "upper", "work", "merged")}
    for path in layers.values():
        path.mkdir(parents=True, exist_ok=True)
    return Manifest(
        container_id="ab" * 32,
        container_name="web",
        pid=4242,
        root=str(layers["merged"]),
        lowerdir=str(layers["lower"]),
        upperdir=str(layers["upper"]),
        workdir=str(layers["work"]),
        external_mounts={
            "/etc/hosts": "/var/lib/docker/containers/ab/hosts",
            "/sys/fs/cgroup/cpu": "/cg/cpu/x",
        },
        tcp_established=True,
        kernel_release="6.1.0",
        created_at="2026-12-02T10:00:00Z",
    )


def test_dump_keys_each_external_mount_by_its_path_and_restore_maps_it_to_the_host(tmp_path):
    m = manifest(tmp_path)
    images = tmp_path / "cp"
    dump = dump_argv(m, images, leave_running=True)
    assert dump[:8] == ["criu", "dump", "-t", "4242", "-D", str(images), "-o", "dump.log"]
    assert dump[dump.index("--ext-mount-map") :] == [
        "--ext-mount-map",
        "/etc/hosts:/etc/hosts",
        "--ext-mount-map",
        "/sys/fs/cgroup/cpu:/sys/fs/cgroup/cpu",
        "--leave-running",
        "--tcp-established",
    ]
    restore = restore_argv(m, images)
    assert restore[:6] == ["criu", "restore", "-d", "--root", m.root, "--pidfile"]
    assert restore[restore.index("--ext-mount-map") :] == [
        "--ext-mount-map",
        "/etc/hosts:/var/lib/docker/containers/ab/hosts",
        "--ext-mount-map",
        "/sys/fs/cgroup/cpu:/cg/cpu/x",
        "--tcp-established",
    ]
    assert "--leave-running" not in dump_argv(replace(m, tcp_established=False), images, False)


# --- restore: bad input, found before anything is mounted or run ----------------------------------


def write(images: Path, data) -> None:
    images.mkdir(parents=True, exist_ok=True)
    (images / MANIFEST_NAME).write_text(data if isinstance(data, str) else json.dumps(data))


def manifest_data(m: Manifest, **changes) -> dict:
    return {"schema": MANIFEST_SCHEMA, **asdict(m), **changes}


def restore(tmp_path: Path, *args: str, container: str = "web"):
    return run_kcheck(
        "cr", "restore", container, "--engine", "external", "--dir", str(tmp_path / "cp"), *args
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no checkpoint manifest at"),
        ("{not json", "is corrupt"),
        ({"schema": "other/1"}, f"is not a kcheck {MANIFEST_SCHEMA} manifest"),
        (
            {"schema": "kcheck.cr.manifest/1", "pid": 1},
            f"is kcheck.cr.manifest/1, which this kcheck cannot restore (it reads {MANIFEST_SCHEMA})",
        ),
    ],
)
def test_a_missing_corrupt_or_foreign_manifest_is_bad_input(tmp_path, content, message):
    if content is not None:
        write(tmp_path / "cp" / "kcheck", content)
    else:
        (tmp_path / "cp" / "kcheck").mkdir(parents=True)
    done = restore(tmp_path)
    assert done.returncode == 3
    assert message in done.stderr
    assert "kcheck: run:" not in done.stderr


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"pid": "4242"}, "$.pid is str, not integer"),
        ({"external_mounts": ["/etc/hosts"]}, "$.external_mounts is list, not object"),
        ({"external_mounts": {"/etc/hosts": 5}}, "$.external_mounts./etc/hosts is int, not string"),
        ({"root": None}, "$.root is NoneType, not string"),
        ({"surprise": 1}, "$ has an unknown field 'surprise'"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_bad_input(tmp_path, change, problem):
    write(tmp_path / "cp" / "kcheck", manifest_data(manifest(tmp_path), **change))
    done = restore(tmp_path)
    assert done.returncode == 3
    assert f"is corrupt ({problem}); take a new checkpoint" in done.stderr


def test_a_manifest_without_a_field_is_bad_input(tmp_path):
    data = manifest_data(manifest(tmp_path))
    del data["root"]
    write(tmp_path / "cp" / "kcheck", data)
    done = restore(tmp_path)
    assert done.returncode == 3
    assert "is corrupt ($ lacks root)" in done.stderr


def test_another_containers_checkpoint_is_bad_input(tmp_path):
    write(tmp_path / "cp" / "kcheck", manifest_data(manifest(tmp_path)))
    done = restore(tmp_path, container="db")
    assert done.returncode == 3
    assert "is of container web, not db" in done.stderr


def test_a_failed_checkpoint_is_named_as_such_with_criu_error(tmp_path):
    """criu dump failed: its log is there, the manifest never got written."""
    images = tmp_path / "cp" / "kcheck"
    images.mkdir(parents=True)
    (images / "dump.log").write_text(
        "(00.000312) Version: 4.2\n"
        "(00.038095) Error (criu/mount.c:753): mnt: 104:./sys/fs/cgroup/systemd doesn't have "
        "a proper root mount\n"
    )
    done = restore(tmp_path)
    assert done.returncode == 3
    assert f"the checkpoint in {images} failed, so there is nothing to restore" in done.stderr
    assert "(Error (criu/mount.c:753): mnt: 104:./sys/fs/cgroup/systemd doesn't have" in done.stderr
    assert "(00.038095)" not in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_failed_command_whose_log_directory_is_full_says_so(tmp_path):
    """A dump that filled its --dir cannot log its own error: the failure names the full filesystem."""
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    with pytest.raises(Refused) as roomy_failure:
        Runner(dry_run=False).run(["sh", "-c", "exit 2"], log=roomy / "dump.log")
    assert "KiB free" not in str(roomy_failure.value)
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "kcheck-full", str(full)], check=True)
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={full / 'filler'}", "bs=4k"], capture_output=True)
        with pytest.raises(Refused, match=rf"the filesystem holding {full} has only 0 KiB free; free space"):
            Runner(dry_run=False).run(["sh", "-c", "exit 2"], log=full / "dump.log")
    finally:
        subprocess.run(["umount", str(full)], check=True)


def test_restore_when_the_layers_are_gone_is_bad_input(tmp_path):
    m = manifest(tmp_path)
    write(tmp_path / "cp" / "kcheck", manifest_data(m))
    Path(m.upperdir).rmdir()
    done = restore(tmp_path)
    assert done.returncode == 3
    assert f"the layers of container web are gone ({m.upperdir})" in done.stderr


def test_restore_dry_run_prints_the_mounts_and_mounts_nothing(tmp_path):
    m = manifest(tmp_path)
    images = tmp_path / "cp" / "kcheck"
    write(images, manifest_data(m))
    done = restore(tmp_path, "--dry-run", "--skip-preflight")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        f"# {m.root} is not mounted: re-create the overlay rootfs",
        f"mount -t overlay overlay -o {m.overlay_options} {m.root}",
        f"mount --rbind {m.root} {m.root}",
    ]
    assert lines[3].startswith(f"criu restore -d --root {m.root} --pidfile {images}/restore.pid ")
    assert lines[4:6] == [f"umount --recursive {m.root}", f"umount {m.root}"]
    assert lines[6].startswith("# docker's view of container web is then stale")
    assert f" {m.root} " not in Path("/proc/self/mountinfo").read_text()


def test_a_float_pid_in_a_manifest_becomes_an_integer_for_criu(tmp_path):
    """JSON Schema calls 4242.0 an integer; criu must still get "-t 4242"."""
    images = tmp_path / "cp" / "kcheck"
    write(images, manifest_data(manifest(tmp_path), pid=4242.0))
    loaded = load_manifest(images, "web")
    assert dump_argv(loaded, images, leave_running=False)[2:4] == ["-t", "4242"]


def test_the_restored_pid_is_the_one_criu_wrote_and_must_be_alive(tmp_path):
    """The pid criu wrote, never the manifest's (the dumped tree's, 4242 in these tests)."""
    pidfile = tmp_path / "restore.pid"
    with subprocess.Popen(["sleep", "60"]) as restored:
        pidfile.write_text(f"{restored.pid}\n")
        assert restored.pid != manifest(tmp_path).pid
        assert _restored_pid(pidfile) == restored.pid
        restored.kill()
    with pytest.raises(Refused, match=r"restored process tree is not running \(.*No such process"):
        _restored_pid(pidfile)  # reaped: that pid is gone
    pidfile.write_text("")
    with pytest.raises(Refused, match="restored process tree is not running"):
        _restored_pid(pidfile)
