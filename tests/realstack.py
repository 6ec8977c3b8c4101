"""The real C/R stack for tests: CRIU 4.2 built by `kcheck build-criu` (cached), a private
dockerd, a private podman store, an image made offline from busybox-static, and the Docker
C/R HOWTO's counter loop as the workload. Everything started here is stopped here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import run_kcheck
from fakes.harness import SYSTEM_PATH
from kbuild_fixtures import KERNEL_TEST_CACHE

# Test data beside the checkout (every developer and CI have ../shared); the product never reads it.
SHARED_CRIU = Path(__file__).resolve().parents[2] / "shared" / "criu"
CRIU_TARBALL = SHARED_CRIU / "criu-4.2.tar.xz"
CRIU_PREFIX = KERNEL_TEST_CACHE / "criu-4.2"
CRIU_STATE = CRIU_PREFIX / "state"  # KCHECK_STATE_DIR of the cached build: its record is here
BUSYBOX = Path("/bin/busybox")
IMAGE = "kcheck-busybox:test"
# The Docker C/R HOWTO's workload (criu.org/Docker): it counts into /foo once a second.
COUNTER = "i=0; while true; do echo $i >> /foo; i=$((i+1)); sleep 1; done"
# podman asks for more nproc/nofile than this sandbox allows (measured: runc "error setting rlimit").
PODMAN_ULIMITS = ("nproc=1000:1000", "nofile=1024:1024")


def tarball_sha256_ok() -> bool:
    expected = (SHARED_CRIU / "SHA256SUMS").read_text().split()[0]
    return hashlib.sha256(CRIU_TARBALL.read_bytes()).hexdigest() == expected


def built_criu() -> Path:
    """The sbin directory of CRIU 4.2, built once per machine with `kcheck build-criu`."""
    binary = CRIU_PREFIX / "sbin" / "criu"
    if binary.is_file():
        return binary.parent
    assert tarball_sha256_ok(), f"{CRIU_TARBALL} does not match its SHA256SUMS"
    with tempfile.TemporaryDirectory(prefix="kcheck-criu-build-") as workdir:
        done = run_kcheck(
            "build-criu",
            "--source",
            str(CRIU_TARBALL),
            "--prefix",
            str(CRIU_PREFIX),
            "--workdir",
            workdir,
            env={"KCHECK_STATE_DIR": str(CRIU_STATE)},
            timeout=1200,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    return binary.parent


def search_path(*first: Path) -> str:
    """PATH with `first` ahead of the venv (kcheck) and the system; never /usr/local/bin,
    where this machine has a docker client newer than the daemon."""
    venv = Path(shutil.which("kcheck") or shutil.which("python3") or "/usr/bin/python3").parent
    return os.pathsep.join([*map(str, first), str(venv), *SYSTEM_PATH])


def busybox_rootfs_tar(path: Path) -> Path:
    """A root filesystem of Debian's busybox-static: /bin/busybox and its applets as links."""
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    with tarfile.open(path, "w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for name in applets.stdout.split():
            if name != "busybox":
                link = tarfile.TarInfo(f"bin/{name}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for directory in ("tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
    return path


def unmount_under(top: Path) -> None:
    """Lazily unmount whatever an engine left mounted under top, deepest first."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{top}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


@dataclass
class Engine:
    """One private engine (docker or podman) and the environment that reaches it."""

    tool: str
    env: dict[str, str]
    top: Path

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [self.tool, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert done.returncode == 0, f"{self.tool} {' '.join(args)}: {done.stderr}"
        return done

    def inspect(self, container: str) -> dict:
        return json.loads(self("container", "inspect", container).stdout)[0]

    def running(self, container: str) -> bool:
        return self.inspect(container)["State"]["Running"] is True

    def start_counter(self, name: str) -> None:
        limits = (
            [arg for limit in PODMAN_ULIMITS for arg in ("--ulimit", limit)] if self.tool == "podman" else []
        )
        self("run", "-d", "--network", "none", *limits, "--name", name, IMAGE, "sh", "-c", COUNTER)
        wait_for(lambda: len(self.counts(name)) >= 2, f"{name} to start counting")

    def counts(self, name: str) -> list[int]:
        """The numbers in the container's /foo, read from its upper layer (also when stopped)."""
        upper = Path(self.inspect(name)["GraphDriver"]["Data"]["UpperDir"])
        foo = upper / "foo"
        return [int(n) for n in foo.read_text().split()] if foo.exists() else []

    def env_with(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def start_dockerd(criu_bin: Path) -> Iterator[Engine]:
    """A dockerd of its own (data root, exec root, pidfile, socket, experimental config),
    with criu 4.2 first on its PATH; stopped, with its containerd, on exit."""
    top = Path(tempfile.mkdtemp(prefix="kd-", dir="/tmp"))  # short: the socket path has a limit
    (top / "daemon.json").write_text(json.dumps({"experimental": True}))
    path = search_path(criu_bin)
    env = {"PATH": path, "DOCKER_HOST": f"unix://{top}/docker.sock", "HOME": str(top)}
    log = (top / "dockerd.log").open("w")
    daemon = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(top / "data"),
            "--exec-root",
            str(top / "exec"),
            "--pidfile",
            str(top / "dockerd.pid"),
            "-H",
            env["DOCKER_HOST"],
            "--config-file",
            str(top / "daemon.json"),
            "--iptables=false",
            "--bridge=none",
        ],
        env={"PATH": path},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    docker = Engine("docker", env, top)
    try:
        wait_for(lambda: docker("info", check=False).returncode == 0, "dockerd to answer", timeout=60)
        docker("import", str(busybox_rootfs_tar(top / "rootfs.tar")), IMAGE)
        yield docker
    finally:
        docker("rm", "-f", *docker("ps", "-aq", check=False).stdout.split(), check=False)
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log.close()
        unmount_under(top)
        shutil.rmtree(top, ignore_errors=True)


def start_podman(criu_bin: Path) -> Iterator[Engine]:
    """podman with its own storage and run roots and cgroupfs, criu 4.2 first on PATH."""
    top = Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))
    (top / "containers.conf").write_text(
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{top}/events.log"\n'
        f'tmp_dir = "{top}/tmp"\n'
    )
    (top / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{top}/storage"\nrunroot = "{top}/run"\n'
    )
    env = {
        "PATH": search_path(criu_bin),
        "HOME": str(top),
        "CONTAINERS_CONF": str(top / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(top / "storage.conf"),
    }
    podman = Engine("podman", env, top)
    try:
        podman("import", str(busybox_rootfs_tar(top / "rootfs.tar")), IMAGE)
        yield podman
    finally:
        podman("rm", "-af", "-t", "0", check=False)
        podman("system", "reset", "-f", check=False)
        unmount_under(top)
        shutil.rmtree(top, ignore_errors=True)
