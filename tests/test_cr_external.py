"""External C/R (`--engine external`): criu dump/restore of a docker container.

FAKE docker answers `docker container inspect` with an overlay2 layout whose layers are
real directories; FAKE criu stands in for a criu that works on this kernel. The restore's
overlay and bind mounts are real, made in a private mount namespace, and the tests read
that namespace's mountinfo after kcheck exits to see that nothing is left mounted.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import kcheck_argv, requires_root, run_kcheck
from fakes.harness import SYSTEM_PATH, FakeHost, docker_container

from kcheck.core.criu import criu_first_error
from kcheck.core.procparse import parse_mountinfo

pytestmark = requires_root  # criu check, and mounts, need root

PREFLIGHT_CRIU = (["--version"], ["check"])
EXT_MOUNT_MAPS = ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]


@pytest.fixture
def host(tmp_path) -> FakeHost:
    """FAKE docker (running container 'web', overlay2) and FAKE criu, first on PATH."""
    fake = FakeHost(tmp_path / "fake", ("docker", "criu"))
    fake.add_container("docker", docker_container("web", tmp_path / "layers"))
    return fake


@pytest.fixture
def web(host) -> dict:
    return host.state["docker"]["containers"][0]


def cr(host: FakeHost, *args: str):
    return run_kcheck("cr", *args, env=host.env)


def criu_runs(host: FakeHost) -> list[dict]:
    """FAKE criu calls other than the pre-flight's `criu --version` and `criu check`."""
    return [call for call in host.calls("criu") if call["argv"] not in PREFLIGHT_CRIU]


def in_private_mount_namespace(
    host: FakeHost, tmp_path: Path, args: list[str], before: list[str] | None = None
):
    """Run `kcheck cr ARGS` in a new private mount namespace (after `before`, if given);
    return its result and the mounts that namespace still has once kcheck has exited."""
    after = tmp_path / "mountinfo-after"
    script = "\n".join(
        [
            *([shlex.join(before) + " || exit 99"] if before else []),
            shlex.join([*kcheck_argv(), "cr", *args]) + "; rc=$?",
            f"cat /proc/self/mountinfo > {shlex.quote(str(after))}",
            "exit $rc",
        ]
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env={**os.environ, "NO_COLOR": "1", **host.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 99, done.stderr
    return done, parse_mountinfo(after.read_text())


def mounted_at(mounts, path: str) -> list[str]:
    return [m.fstype for m in mounts if m.mount_point == path]


def overlay_options(container: dict) -> str:
    data = container["GraphDriver"]["Data"]
    return f"lowerdir={data['LowerDir']},upperdir={data['UpperDir']},workdir={data['WorkDir']}"


def dumped(host: FakeHost, directory: Path) -> Path:
    """A checkpoint of 'web' taken through kcheck (FAKE criu), so restore has its manifest."""
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(directory))
    assert done.returncode == 0, done.stderr
    return directory / "kcheck"


# --- dump -------------------------------------------------------------------------------


def test_dump_runs_criu_with_the_seed_options_and_writes_the_manifest(host, web, tmp_path):
    directory = tmp_path / "checkpoints"
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(directory), "--tcp-established")
    assert done.returncode == 0, done.stderr
    images = directory / "kcheck"
    maps = [arg for path in EXT_MOUNT_MAPS for arg in ("--ext-mount-map", f"{path}:{path}")]
    assert [c["argv"] for c in criu_runs(host)] == [
        [
            "dump",
            "-t",
            "4242",
            "-D",
            str(images),
            "-o",
            "dump.log",
            "-v4",
            "--manage-cgroups",
            "--evasive-devices",
            *maps,
            "--tcp-established",
        ],
    ]
    manifest = json.loads((images / "kcheck-manifest.json").read_text())
    data = web["GraphDriver"]["Data"]
    assert manifest["schema"] == "kcheck.cr.manifest/1"
    assert (manifest["container_id"], manifest["container_name"], manifest["pid"]) == (web["Id"], "web", 4242)
    assert (manifest["root"], manifest["lowerdir"], manifest["upperdir"], manifest["workdir"]) == (
        data["MergedDir"],
        data["LowerDir"],
        data["UpperDir"],
        data["WorkDir"],
    )
    assert manifest["host_files"] == {
        "/etc/resolv.conf": web["ResolvConfPath"],
        "/etc/hosts": web["HostsPath"],
        "/etc/hostname": web["HostnamePath"],
    }
    assert manifest["tcp_established"] is True
    assert "docker's view of container web is now stale: it believes the container exited" in done.stderr


def test_dump_leave_running_and_default_directory_in_dry_run(host):
    done = cr(
        host, "checkpoint", "web", "--engine", "external", "--leave-running", "--name", "cp1", "--dry-run"
    )
    assert done.returncode == 0, done.stderr
    images = "/var/lib/kcheck/checkpoints/web/cp1"
    maps = " ".join(f"--ext-mount-map {path}:{path}" for path in EXT_MOUNT_MAPS)
    assert done.stdout.splitlines() == [
        f"# create {images}",
        # The manifest is written before the dump: afterwards the container may be gone.
        f"# write the restore manifest {images}/kcheck-manifest.json",
        f"criu dump -t 4242 -D {images} -o dump.log -v4 --manage-cgroups --evasive-devices {maps} "
        "--leave-running",
    ]  # left running, the container is still docker's: no stale warning
    assert criu_runs(host) == []
    assert not Path(images).exists()


def test_dump_failure_exits_1_with_criu_stderr_and_writes_no_manifest(host, tmp_path):
    host.fail("criu dump", "Error (criu/cr-dump.c:1234): Dumping FAILED.\n")
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 1
    assert "Error (criu/cr-dump.c:1234): Dumping FAILED." in done.stderr
    assert f"see {tmp_path / 'cp' / 'kcheck' / 'dump.log'}" in done.stderr
    assert sorted(p.name for p in (tmp_path / "cp" / "kcheck").iterdir()) == []  # no manifest, none pending


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"State": {"Running": False, "Pid": 0}}, "container web is not running (State.Pid 0)"),
        (
            {"GraphDriver": {"Name": "btrfs", "Data": {}}},
            "uses storage driver 'btrfs'; external C/R supports overlay2",
        ),
        ({"HostsPath": ""}, "docker inspect web lacks HostsPath"),
    ],
)
def test_dump_of_an_unsuitable_container_is_bad_input(host, web, tmp_path, change, message):
    web.update(change)
    host.save()
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 3
    assert message in done.stderr
    assert host.calls("criu") == []


def test_dump_never_overwrites_a_checkpoint(host, tmp_path):
    dumped(host, tmp_path / "cp")
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 3
    assert "a checkpoint already exists in" in done.stderr
    assert len([c for c in criu_runs(host) if c["argv"][0] == "dump"]) == 1


def test_failing_criu_check_refuses_external_cr(host, tmp_path):
    """criu.check is optional for the probe but required before external C/R."""
    host.state["criu"] = {"check_output": "Error (criu/cr-check.c:1): Looks bad.", "check_returncode": 1}
    host.save()
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 1
    assert (
        "FAIL criu.check: criu 4.1: criu check exit 1: Error (criu/cr-check.c:1): Looks bad." in done.stderr
    )
    assert "fix: install a criu release that supports this kernel" in done.stderr
    assert criu_runs(host) == []


REAL_CRIU = shutil.which("criu", path=os.pathsep.join(SYSTEM_PATH))


@pytest.mark.skipif(
    REAL_CRIU is None, reason="the real criu is not installed (scripts/test installs it as root)"
)
def test_real_criu_that_cannot_run_on_this_kernel_refuses_with_its_first_error_line(tmp_path):
    """Debian's criu 3.17 on kernel 6.x fails before any check ("vdso: Unexpected rt vDSO
    area bounds"): a real external checkpoint must be refused with criu's own first error."""
    check = subprocess.run([REAL_CRIU, "check"], capture_output=True, text=True, timeout=60)
    if check.returncode == 0:
        pytest.skip("the installed criu works on this kernel")
    output = check.stderr + check.stdout
    first_error = criu_first_error(output)
    assert "vdso: Unexpected rt vDSO area bounds" in first_error  # measured here (REFERENCE §3)
    host = FakeHost(tmp_path / "fake", ("docker",))  # the real criu, from SYSTEM_PATH
    host.add_container("docker", docker_container("web", tmp_path / "layers"))
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 1
    assert "pre-flight refused the checkpoint" in done.stderr
    assert f"criu check exit {check.returncode}, before any check" in done.stderr
    assert first_error in done.stderr
    assert not (tmp_path / "cp").exists()


# --- restore ----------------------------------------------------------------------------


def test_restore_recreates_the_overlay_binds_it_restores_and_unmounts(host, web, tmp_path):
    images = dumped(host, tmp_path / "cp")
    root = web["GraphDriver"]["Data"]["MergedDir"]
    done, mounts = in_private_mount_namespace(
        host, tmp_path, ["restore", "web", "--engine", "external", "--dir", str(tmp_path / "cp")]
    )
    assert done.returncode == 0, done.stderr
    restore = criu_runs(host)[-1]
    files = [web["ResolvConfPath"], web["HostsPath"], web["HostnamePath"]]
    maps = [
        arg
        for path, file in zip(EXT_MOUNT_MAPS, files, strict=True)
        for arg in ("--ext-mount-map", f"{path}:{file}")
    ]
    assert restore["argv"] == [
        "restore",
        "-d",
        "--root",
        root,
        "--pidfile",
        str(images / "restore.pid"),
        "-D",
        str(images),
        "-o",
        "restore.log",
        "-v4",
        "--manage-cgroups",
        "--evasive-devices",
        *maps,
    ]
    assert restore["mounts_at_root"] == ["overlay", "overlay"]  # the overlay, and its rbind
    assert "hello" in restore["root_listing"]  # the image's lower layer shows through
    assert mounted_at(mounts, root) == []
    assert "restored container web: process tree pid 4242" in done.stdout
    assert f"kcheck: run: mount -t overlay overlay -o {overlay_options(web)} {root}" in done.stderr
    assert "now stale: the restored processes (pid 4242) run outside docker" in done.stderr


def test_restore_leaves_an_overlay_it_did_not_mount(host, web, tmp_path):
    dumped(host, tmp_path / "cp")
    root = web["GraphDriver"]["Data"]["MergedDir"]
    docker_mount = ["mount", "-t", "overlay", "overlay", "-o", overlay_options(web), root]
    done, mounts = in_private_mount_namespace(
        host,
        tmp_path,
        ["restore", "web", "--engine", "external", "--dir", str(tmp_path / "cp")],
        docker_mount,
    )
    assert done.returncode == 0, done.stderr
    assert criu_runs(host)[-1]["mounts_at_root"] == ["overlay", "overlay"]
    assert mounted_at(mounts, root) == ["overlay"]  # docker's own mount stays
    assert "mount -t overlay" not in done.stderr


def test_restore_failure_exits_1_with_criu_stderr_and_undoes_every_mount(host, web, tmp_path):
    dumped(host, tmp_path / "cp")
    host.fail(
        "criu restore",
        "".join(f"({n:05}) restore step {n}\n" for n in range(9)) + "Error: Restoring FAILED.\n",
    )
    root = web["GraphDriver"]["Data"]["MergedDir"]
    done, mounts = in_private_mount_namespace(
        host, tmp_path, ["restore", "web", "--engine", "external", "--dir", str(tmp_path / "cp")]
    )
    assert done.returncode == 1
    assert "Error: Restoring FAILED." in done.stderr
    assert "restore step 5" in done.stderr and "restore step 4" not in done.stderr
    assert criu_runs(host)[-1]["mounts_at_root"] == ["overlay", "overlay"]
    assert mounted_at(mounts, root) == []
    assert f"kcheck: run: umount --recursive {root}" in done.stderr
    assert f"kcheck: run: umount {root}" in done.stderr


def test_restore_dry_run_prints_the_mounts_and_mounts_nothing(host, web, tmp_path):
    images = dumped(host, tmp_path / "cp")
    root = web["GraphDriver"]["Data"]["MergedDir"]
    done, mounts = in_private_mount_namespace(
        host, tmp_path, ["restore", "web", "--engine", "external", "--dir", str(tmp_path / "cp"), "--dry-run"]
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        f"# {root} is not mounted: re-create the overlay rootfs",
        f"mount -t overlay overlay -o {overlay_options(web)} {root}",
        f"mount --rbind {root} {root}",
    ]
    assert lines[3].startswith(f"criu restore -d --root {root} --pidfile {images}/restore.pid ")
    assert lines[4:6] == [f"umount --recursive {root}", f"umount {root}"]
    assert lines[6].startswith("# docker's view of container web is then stale")
    assert len(lines) == 7
    assert [c for c in criu_runs(host) if c["argv"][0] == "restore"] == []
    assert mounted_at(mounts, root) == []


def write_manifest(images: Path, text: str) -> None:
    images.mkdir(parents=True, exist_ok=True)
    (images / "kcheck-manifest.json").write_text(text)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, "no checkpoint manifest at"),
        ("{not json", "is corrupt"),
        (json.dumps({"schema": "other/1"}), "is not a kcheck kcheck.cr.manifest/1 manifest"),
    ],
)
def test_restore_with_a_missing_or_corrupt_manifest_is_bad_input_and_mounts_nothing(
    host, web, tmp_path, manifest, message
):
    if manifest is not None:
        write_manifest(tmp_path / "cp" / "kcheck", manifest)
    done, mounts = in_private_mount_namespace(
        host, tmp_path, ["restore", "web", "--engine", "external", "--dir", str(tmp_path / "cp")]
    )
    assert done.returncode == 3
    assert message in done.stderr
    assert "kcheck: run:" not in done.stderr
    assert host.calls("criu") == []
    assert mounted_at(mounts, web["GraphDriver"]["Data"]["MergedDir"]) == []


def test_restore_with_a_manifest_field_of_the_wrong_type_is_bad_input(host, tmp_path):
    images = dumped(host, tmp_path / "cp")
    manifest = json.loads((images / "kcheck-manifest.json").read_text())
    manifest["pid"] = "4242"
    del manifest["root"]
    write_manifest(images, json.dumps(manifest))
    done = cr(host, "restore", "web", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 3
    assert "is corrupt (bad or missing pid, root)" in done.stderr
    assert [c for c in criu_runs(host) if c["argv"][0] == "restore"] == []


def test_restore_of_another_containers_checkpoint_is_bad_input(host, tmp_path):
    dumped(host, tmp_path / "cp")
    done = cr(host, "restore", "db", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 3
    assert "is of container web, not db" in done.stderr


def test_restore_when_the_layers_are_gone_is_bad_input(host, web, tmp_path):
    dumped(host, tmp_path / "cp")
    shutil.rmtree(web["GraphDriver"]["Data"]["UpperDir"])
    done = cr(host, "restore", "web", "--engine", "external", "--dir", str(tmp_path / "cp"))
    assert done.returncode == 3
    assert f"the layers of container web are gone ({web['GraphDriver']['Data']['UpperDir']})" in done.stderr
    assert "kcheck: run:" not in done.stderr


def test_dir_that_is_a_file_is_bad_input_before_anything_runs(host, web, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    done = cr(host, "checkpoint", "web", "--engine", "external", "--dir", str(not_a_dir))
    assert done.returncode == 3
    assert f"--dir: {not_a_dir} is not a directory; pass another --dir" in done.stderr
    assert criu_runs(host) == []
