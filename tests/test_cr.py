"""`kcheck cr checkpoint/restore/list` with docker and podman, as users run it.

The docker and podman engines here are FAKEs (tests/fakes/fake_tool.py) that record their
argv; the pre-flight is the real probe of this kernel. The real engines run the real C/R in
test_cr_real.py. The fakes remain for what the real stack here cannot be made to show: a
docker older than 17.12 (which restores from --checkpoint-dir), a daemon without experimental
features, a daemon without criu, an engine command that fails on demand, and every option
combination's exact command line, checked in milliseconds instead of a container's lifetime.
"""

from __future__ import annotations

import shlex

import pytest
from conftest import run_kcheck
from fakes.harness import FakeHost, docker_container, podman_container

QUERIES = (["container", "inspect"], ["container", "exists"], ["info", "--format"], ["version", "--format"])
OLD_DOCKER = "17.03.0-ce"  # the last docker that restored from a custom --checkpoint-dir


def prepare(host: FakeHost, engine: str, args: list[str]) -> None:
    """A restore needs a stopped container; --dir needs a docker that can restore from it."""
    if args[0] == "restore" and len(args) > 1 and not args[1].startswith("-"):
        host.set_running(engine, args[1], False)
    if "--dir" in args:
        host.state["docker"]["version"] = OLD_DOCKER
        host.save()


@pytest.fixture
def host(tmp_path) -> FakeHost:
    """FAKE docker, podman and criu first on PATH: docker runs 'web', podman runs 'pod1'."""
    fake = FakeHost(tmp_path / "fake", ("docker", "podman", "criu"))
    fake.add_container("docker", docker_container("web"))
    fake.add_container("podman", podman_container("pod1"))
    return fake


def cr(host: FakeHost, *args: str):
    return run_kcheck("cr", *args, env=host.env)


def changes(host: FakeHost, tool: str) -> list[list[str]]:
    """The argv of every call that was not a read-only query (inspect, exists, info)."""
    return [argv for argv in host.argvs(tool) if argv[:2] not in QUERIES]


def error_line(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["checkpoint", "web"], ["checkpoint", "create", "web", "kcheck"]),
        (
            ["checkpoint", "web", "--leave-running", "--name", "cp1", "--dir", "/srv/cp"],
            ["checkpoint", "create", "--leave-running", "--checkpoint-dir", "/srv/cp", "web", "cp1"],
        ),
        (["restore", "web"], ["start", "--checkpoint", "kcheck", "web"]),
        (
            ["restore", "web", "--name", "cp1", "--dir", "/srv/cp"],
            ["start", "--checkpoint", "cp1", "--checkpoint-dir", "/srv/cp", "web"],
        ),
        (["list", "web"], ["checkpoint", "ls", "web"]),
        (["list", "web", "--dir", "/srv/cp"], ["checkpoint", "ls", "--checkpoint-dir", "/srv/cp", "web"]),
    ],
)
def test_docker_runs_the_native_command(host, args, expected):
    prepare(host, "docker", args)
    done = cr(host, *args)
    assert done.returncode == 0, done.stderr
    assert changes(host, "docker") == [expected]
    assert f"kcheck: run: docker {shlex.join(expected)}" in done.stderr


def test_docker_is_auto_detected_when_podman_does_not_know_the_container(host):
    done = cr(host, "checkpoint", "web")
    assert done.returncode == 0, done.stderr
    assert host.argvs("podman") == [["container", "exists", "web"]]
    assert changes(host, "docker") == [["checkpoint", "create", "web", "kcheck"]]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["checkpoint", "pod1"], ["container", "checkpoint", "pod1"]),
        (
            ["checkpoint", "pod1", "--leave-running", "--tcp-established", "--export", "/srv/pod1.tar.gz"],
            ["container", "checkpoint", "-R", "--tcp-established", "-e", "/srv/pod1.tar.gz", "pod1"],
        ),
        (["restore", "pod1"], ["container", "restore", "pod1"]),
        (["restore", "pod1", "--tcp-established"], ["container", "restore", "--tcp-established", "pod1"]),
    ],
)
def test_podman_runs_its_command_when_it_knows_the_container(host, args, expected):
    prepare(host, "podman", args)
    done = cr(host, *args)
    assert done.returncode == 0, done.stderr
    assert changes(host, "podman") == [expected]
    assert host.argvs("docker") == []


@pytest.mark.parametrize(
    ("extra", "expected_tail"),
    [
        (["--new-name", "web2"], ["-n", "web2"]),
        (["--tcp-established"], ["--tcp-established"]),
    ],
)
def test_podman_import_restores_from_the_archive_without_a_container_argument(
    host, tmp_path, extra, expected_tail
):
    archive = tmp_path / "pod1.tar.gz"
    archive.write_bytes(b"exported")
    done = cr(host, "restore", "--import", str(archive), *extra)
    assert done.returncode == 0, done.stderr
    assert changes(host, "podman") == [["container", "restore", "-i", str(archive), *expected_tail]]
    assert host.argvs("docker") == []
    # then it checks that the restored container runs: by --new-name, else by the id podman printed
    restored = "web2" if "--new-name" in extra else (b"imported".hex() * 64)[:64]
    assert host.argvs("podman")[-1] == ["container", "inspect", restored]


def test_dry_run_prints_shell_lines_and_runs_nothing(host):
    prepare(host, "docker", ["checkpoint", "--dir"])
    done = cr(host, "checkpoint", "web", "--dry-run", "--name", "cp1", "--dir", "/srv/my checkpoints")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "docker checkpoint create --checkpoint-dir '/srv/my checkpoints' web cp1\n"
    assert changes(host, "docker") == []
    assert "kcheck: run:" not in done.stderr


def test_dry_run_of_podman_export(host):
    done = cr(host, "checkpoint", "pod1", "--dry-run", "--export", "/srv/pod1.tar.gz")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "podman container checkpoint -e /srv/pod1.tar.gz pod1\n"
    assert changes(host, "podman") == []


def test_docker_tcp_established_goes_through_runc_conf(host):
    dry = cr(host, "checkpoint", "web", "--tcp-established", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    note, command = dry.stdout.splitlines()
    assert note.startswith(
        "# --tcp-established: docker takes it from the line 'tcp-established' in /etc/criu/runc.conf"
    )
    assert command == "docker checkpoint create web kcheck"


def test_docker_tcp_established_refused_unless_runc_conf_has_it(host, tmp_path, monkeypatch, capsys):
    """In-process, to point kcheck at a runc.conf of the test's own."""
    from kcheck.cli import main
    from kcheck.cr import engines

    conf = tmp_path / "runc.conf"
    conf.write_text("# criu options for runc\nmanage-cgroups\n")
    monkeypatch.setattr(engines, "RUNC_CONF", conf)
    for key, value in host.env.items():
        monkeypatch.setenv(key, value)

    assert main(["cr", "checkpoint", "web", "--tcp-established"]) == 1
    assert f"add the line 'tcp-established' to {conf}" in capsys.readouterr().err
    assert changes(host, "docker") == []

    conf.write_text("manage-cgroups\ntcp-established  # for the database\n")
    assert main(["cr", "checkpoint", "web", "--tcp-established"]) == 0
    assert changes(host, "docker") == [["checkpoint", "create", "web", "kcheck"]]


def test_docker_without_experimental_daemon_is_refused_with_the_daemon_json_line(host):
    host.state["docker"]["experimental"] = False
    host.save()
    done = cr(host, "checkpoint", "web")
    assert done.returncode == 1
    assert 'add {"experimental": true} to /etc/docker/daemon.json' in error_line(done)
    assert changes(host, "docker") == []


def test_docker_without_criu_is_refused(tmp_path):
    host = FakeHost(tmp_path / "fake", ("docker",), system_tools=False)
    host.add_container("docker", docker_container("web"))
    host.set_running("docker", "web", False)
    done = cr(host, "restore", "web")
    assert done.returncode == 1
    assert "criu is not installed" in error_line(done)
    assert changes(host, "docker") == []


def test_engine_failure_exits_1_with_the_last_lines_of_its_stderr(host):
    stderr = "".join(f"daemon line {n}\n" for n in range(1, 8))
    host.fail("docker checkpoint create", stderr + "Error response from daemon: criu failed\n")
    done = cr(host, "checkpoint", "web")
    assert done.returncode == 1
    assert "docker checkpoint create web kcheck failed (exit 1)" in done.stderr
    assert "Error response from daemon: criu failed" in done.stderr
    assert "daemon line 4" in done.stderr
    assert "daemon line 3" not in done.stderr  # only the last 5 lines


# FAKE docker failing on demand: dockerd's checkpoint upload race (moby#42900) shows only now
# and then on the real stack, so a fake makes it happen when the test needs it.
UPLOAD_RACE = (
    "Error response from daemon: failed to upload checkpoint to containerd: commit failed: "
    "content sha256:52c05e0e1b26eb19819331714c95c238050ebfd8e89518846259f5d2d8f8291b: already exists\n"
)


@pytest.mark.parametrize(("times", "code"), [(1, 0), (2, 1)])
def test_docker_restore_tries_once_more_after_the_upload_race(host, times, code):
    host.set_running("docker", "web", False)
    host.fail("docker start --checkpoint", UPLOAD_RACE, times=times)
    done = cr(host, "restore", "web")
    assert done.returncode == code, done.stderr
    assert "checkpoint upload race (moby#42900" in done.stderr
    starts = [c for c in host.calls("docker") if c["argv"][:2] == ["start", "--checkpoint"]]
    assert len(starts) == 2  # one more try, never a loop
    if code:
        assert "already exists" in done.stderr


def test_other_docker_restore_failures_are_not_retried(host):
    host.set_running("docker", "web", False)
    host.fail("docker start --checkpoint", "Error response from daemon: criu failed\n")
    done = cr(host, "restore", "web")
    assert done.returncode == 1 and "upload race" not in done.stderr
    assert len([c for c in host.calls("docker") if c["argv"][:2] == ["start", "--checkpoint"]]) == 1


@pytest.mark.parametrize("container", ["-rf", "a/b", "web;reboot", "", "_web"])
def test_invalid_container_name_is_bad_input_and_nothing_runs(host, container):
    done = cr(host, "checkpoint", "--", container)
    assert done.returncode == 3
    assert "is not a valid container name or id" in error_line(done)
    assert host.calls() == []


def test_invalid_checkpoint_name_is_bad_input(host):
    done = cr(host, "checkpoint", "web", "--name", "--rm")
    assert done.returncode == 3
    assert host.calls() == []


@pytest.mark.parametrize("engine", ["auto", "docker"])
def test_unknown_container_is_bad_input(host, engine):
    done = cr(host, "checkpoint", "nosuch", "--engine", engine)
    assert done.returncode == 3
    assert error_line(done) == (
        "kcheck: error: container nosuch: docker container inspect failed "
        "(Error: No such container: nosuch); check the name with `docker ps -a`"
    )
    assert changes(host, "docker") == []


def test_engine_not_installed_is_bad_input(tmp_path):
    """Its own PATH: FAKE docker and criu, no system directories, so no real podman."""
    host = FakeHost(tmp_path / "fake", ("docker", "criu"), system_tools=False)
    done = cr(host, "checkpoint", "web", "--engine", "podman")
    assert done.returncode == 3
    assert error_line(done) == (
        "kcheck: error: podman is not installed (not on PATH); install it or pick another --engine"
    )
    assert host.calls() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["checkpoint", "pod1", "--name", "cp1"],
            "--name: podman keeps one unnamed checkpoint per container",
        ),
        (["checkpoint", "pod1", "--dir", "/srv"], "--dir: podman keeps one unnamed checkpoint per container"),
        (["restore", "pod1", "--new-name", "x"], "--new-name names a container restored with --import FILE"),
        (["restore", "--import", "/nonexistent.tar.gz"], "--import /nonexistent.tar.gz: no such file"),
        (
            ["checkpoint", "web", "--engine", "docker", "--export", "/srv/x.tgz"],
            "--export works with podman only",
        ),
        (["checkpoint", "pod1", "--export", "/no/such/dir/x.tgz"], "its directory does not exist"),
        (["restore"], "restore needs CONTAINER (or, with podman, --import FILE)"),
        (["restore", "web", "--leave-running"], "unrecognized arguments: --leave-running"),
    ],
)
def test_option_misuse_is_bad_input_and_nothing_runs(host, args, message):
    done = cr(host, *args)
    assert done.returncode == 3
    assert message in error_line(done)
    assert changes(host, "docker") == changes(host, "podman") == []


def test_import_with_container_argument_is_bad_input(host, tmp_path):
    archive = tmp_path / "pod1.tar.gz"
    archive.write_bytes(b"exported")
    done = cr(host, "restore", "pod1", "--import", str(archive))
    assert done.returncode == 3
    assert "drop CONTAINER" in error_line(done)


def test_new_name_with_tcp_established_is_bad_input(host, tmp_path):
    archive = tmp_path / "pod1.tar.gz"
    archive.write_bytes(b"exported")
    done = cr(host, "restore", "--import", str(archive), "--new-name", "x", "--tcp-established")
    assert done.returncode == 3
    assert "podman cannot restore established TCP connections under --new-name" in error_line(done)


# --- pre-flight -------------------------------------------------------------------------


def test_preflight_refuses_on_a_kernel_that_fails_a_required_check(host, tmp_path):
    """A kernel config without CONFIG_CHECKPOINT_RESTORE: the real probe fails it."""
    config = tmp_path / "config"
    config.write_text("CONFIG_NAMESPACES=y\n# CONFIG_CHECKPOINT_RESTORE is not set\n")
    done = cr(host, "checkpoint", "web", "--config", str(config))
    assert done.returncode == 1
    assert "kcheck: error: pre-flight refused the checkpoint: kernel" in done.stderr
    assert f"FAIL config.CHECKPOINT_RESTORE: CONFIG_CHECKPOINT_RESTORE is not set in {config}" in done.stderr
    assert "fix: rebuild the kernel with CONFIG_CHECKPOINT_RESTORE=y" in done.stderr
    assert "config.NAMESPACES" not in done.stderr  # it passes
    assert changes(host, "docker") == []


def test_preflight_also_refuses_a_dry_run(host, tmp_path):
    config = tmp_path / "config"
    config.write_text("CONFIG_NAMESPACES=y\n")
    host.set_running("podman", "pod1", False)
    done = cr(host, "restore", "pod1", "--dry-run", "--config", str(config))
    assert done.returncode == 1
    assert done.stdout == ""


def test_skip_preflight_runs_anyway_and_says_so_loudly(host, tmp_path):
    config = tmp_path / "config"
    config.write_text("CONFIG_NAMESPACES=y\n")
    done = cr(host, "checkpoint", "web", "--config", str(config), "--skip-preflight")
    assert done.returncode == 0, done.stderr
    assert (
        "kcheck: warning: --skip-preflight: the kernel was NOT checked before this checkpoint" in done.stderr
    )
    assert changes(host, "docker") == [["checkpoint", "create", "web", "kcheck"]]


def test_preflight_pass_is_reported(host):
    done = cr(host, "checkpoint", "web")
    assert done.returncode == 0, done.stderr
    assert "kcheck: pre-flight: kernel " in done.stderr
    assert "required checks pass" in done.stderr


def test_refusal_lists_only_required_checks_not_passing_with_their_remedy():
    from kcheck.core.result import CheckResult, Evidence, Report, Status
    from kcheck.cr.preflight import refusal

    def check(check_id: str, required: bool, status: Status, remedy: str | None = None) -> CheckResult:
        return CheckResult(
            check_id, check_id, required, status, Evidence.LIVE, f"{check_id} detail", remedy=remedy
        )

    report = Report(
        kernel={"release": "4.1.0-demo"},
        checks=[
            check(
                "overlayfs.mnt_id",
                True,
                Status.FAIL,
                "apply patchset overlayfs-mnt-id or run a kernel >= 4.2",
            ),
            check("aio.reopen_enxio", True, Status.UNKNOWN, "needs root"),
            check("overlayfs.maps", False, Status.FAIL, "optional"),
            check("fdinfo.mnt_id_field", True, Status.PASS),
        ],
    )
    lines = refusal("restore", report).splitlines()
    assert lines[0] == (
        "pre-flight refused the restore: kernel 4.1.0-demo is not-ready (2 of 3 required checks not passing)"
    )
    assert lines[1:5] == [
        "  FAIL overlayfs.mnt_id: overlayfs.mnt_id detail",
        "      fix: apply patchset overlayfs-mnt-id or run a kernel >= 4.2",
        "  UNKNOWN aio.reopen_enxio: aio.reopen_enxio detail",
        "      fix: needs root",
    ]
    assert "--skip-preflight" in lines[5]
    assert len(lines) == 6


def test_preflight_reads_the_catalog_given(host, tmp_path):
    """--catalog reaches the pre-flight: a broken one is bad input before any engine runs."""
    done = cr(host, "checkpoint", "web", "--dry-run", "--catalog", str(tmp_path / "no-catalog"))
    assert done.returncode == 3
    assert f"{tmp_path / 'no-catalog'}: catalog directory not found; pass --catalog DIR" in done.stderr
    assert changes(host, "docker") == []


def test_a_very_long_container_name_is_said_to_be_too_long(host):
    done = cr(host, "checkpoint", "w" * 5000)
    assert done.returncode == 3
    assert error_line(done).endswith("is 5000 characters long; names hold at most 255")


def test_options_after_a_double_dash_are_one_line_bad_input(host):
    done = cr(host, "checkpoint", "--", "--privileged", "--dry-run")
    assert done.returncode == 3
    assert error_line(done) == "kcheck: error: unrecognized arguments: --dry-run; see `kcheck --help`"
    assert done.stderr.count("\n") == 1
    assert changes(host, "docker") == []
