"""Real distccd daemons on 127.0.0.1 for the --distcc tests: Debian's distccd on a free port,
with its own log and pid files, stopped (or killed, as a host that dies) by its pid.

As root distccd drops to its own user, so its directory is one that user can write. A daemon
can run another `gcc` (DISTCCD_PATH, as a host with another compiler would), or see an empty
/usr/lib/distcc (a mount namespace of its own) so that it refuses every compiler as Debian's
whitelist does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from gitrepos import catalog_commit, patchset, write_catalog
from kbuild_fixtures import cached_linux_source_repo, clone_linux_source, linux_tinyconfig

HAVE_DISTCC = bool(shutil.which("distcc") and shutil.which("distccd"))
requires_distcc = pytest.mark.skipif(
    not HAVE_DISTCC, reason="Debian's distcc is missing (scripts/test installs it)"
)
LOOPBACK = "127.0.0.1"
PROBE_FILE = "probe.c"  # build-kernel's preflight compiles this through each host
_JOB = re.compile(r"COMPILE_OK exit:0 .* (\S+)$", re.MULTILINE)
_STARTED = 10.0  # seconds for a daemon to write its pid file and listen

# A gcc that compiles as the real one does but names another version in its objects' .comment,
# as a host with another compiler would.
OTHER_GCC = """#!/bin/sh
/usr/bin/gcc -fno-ident "$@" || exit
out=a.out
prev=
for arg in "$@"; do [ "$prev" = -o ] && out=$arg; prev=$arg; done
printf 'GCC: (kcheck test) 99.1.0\\0' > "$out.ident"
objcopy --add-section .comment="$out.ident" --set-section-flags .comment=contents,readonly "$out"
status=$?
rm -f "$out.ident"
exit $status
"""
OTHER_GCC_IDENT = "GCC: (kcheck test) 99.1.0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def dead_port() -> int:
    """A loopback port nothing listens on (taken free just now): a host that is down."""
    return free_port()


def alive(pid: int) -> bool:
    """Running, not a zombie: the machine's init may not reap a killed daemon."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class Daemon:
    name: str
    port: int
    log: Path
    pidfile: Path
    pid: int = 0  # read from the pid file once it listens (distccd removes the file when it ends)

    def spec(self, slots: int = 2) -> str:
        return f"{LOOPBACK}:{self.port}/{slots}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def jobs(self) -> Counter[str]:
        """The files of the build this daemon compiled, from its own log (a COMPILE_OK line each);
        the preflight's test compiles (probe.c) aside."""
        jobs = Counter(_JOB.findall(self.log_text()))
        del jobs[PROBE_FILE]
        return jobs

    def build_jobs(self) -> int:
        return sum(self.jobs().values())

    def cpu_seconds(self) -> float:
        """CPU time of the daemon and its compilers so far: every process of its group, with
        the children each has reaped. Read it before the daemon stops."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.pid:  # pgrp
                total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    def probes(self) -> int:
        """The preflight's test compiles this daemon ran."""
        return Counter(_JOB.findall(self.log_text()))[PROBE_FILE]

    def kill(self) -> None:
        """SIGKILL the daemon's process group, jobs in flight and all: a host that dies."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to the parent, as distccd's manual says; SIGKILL to what is left."""
        if not self.pid:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill()


def start_distccd(
    directory: Path, name: str, *, compilers: Path | None = None, empty_whitelist: Path | None = None
) -> Daemon:
    """distccd --daemon on a free loopback port, serving 127.0.0.1 only; waits until it listens."""
    for _ in range(5):  # another process may take the free port first
        port = free_port()
        daemon = Daemon(name, port, directory / f"{name}-{port}.log", directory / f"{name}-{port}.pid")
        argv = [
            "distccd",
            "--daemon",
            "--listen",
            LOOPBACK,
            "--allow",
            f"{LOOPBACK}/32",
            "--port",
            str(port),
            "--jobs",
            "2",
            "--log-file",
            str(daemon.log),
            "--log-level",
            "info",
            "--pid-file",
            str(daemon.pidfile),
        ]
        env = dict(os.environ)
        if compilers is not None:
            env["DISTCCD_PATH"] = f"{compilers}:/usr/bin:/bin"
        if empty_whitelist is not None:
            mount = 'mount --bind "$0" /usr/lib/distcc && exec "$@"'
            argv = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                mount,
                str(empty_whitelist),
                *argv,
            ]
        subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _STARTED
        while time.monotonic() < deadline:
            text = daemon.log_text()
            if daemon.pidfile.is_file() and f"listening on {LOOPBACK}:{port}" in text:
                daemon.pid = int(daemon.pidfile.read_text())
                return daemon
            if "Address already in use" in text:
                break
            time.sleep(0.05)
        else:
            if daemon.pidfile.is_file():
                daemon.pid = int(daemon.pidfile.read_text())
                daemon.stop()
            raise AssertionError(f"distccd {name} did not start on port {port}:\n{daemon.log_text()}")
    raise AssertionError("distccd found no free port in 5 tries")


class Daemons:
    """The daemons one test starts, in a directory distccd's user can write."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="kcheck-distccd-"))
        self.directory.chmod(0o777)
        self.started: list[Daemon] = []

    def start(self, name: str | None = None, **kwargs) -> Daemon:
        daemon = start_distccd(self.directory, name or f"d{len(self.started)}", **kwargs)
        self.started.append(daemon)
        return daemon

    def other_compiler(self) -> Path:
        """A directory whose `gcc` names GCC 99.1.0 in its objects (the daemon's PATH)."""
        compilers = self.directory / "other-gcc"
        compilers.mkdir(exist_ok=True)
        compilers.chmod(0o755)
        script = compilers / "gcc"
        script.write_text(OTHER_GCC)
        script.chmod(0o755)
        return compilers

    def empty_directory(self) -> Path:
        empty = self.directory / "empty-whitelist"
        empty.mkdir(exist_ok=True)
        return empty

    def close(self) -> None:
        for daemon in self.started:
            daemon.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- tinyconfig builds of Debian's 6.1, here or through daemons --------------------------------

UNNEEDED_FIX = "a fix 6.1 already has"


def tinyconfig_args(root: Path, *extra: str) -> list[str]:
    """build-kernel of the cached 6.1 source with tinyconfig in root/linux (cloned on first use),
    with a catalog whose one patchset 6.1 does not need: the tree is built as it is."""
    tree, catalog = root / "linux", root / "catalog"
    if not tree.exists():
        clone_linux_source(tree).close()
    if not catalog.exists():
        unneeded = catalog_commit("a" * 40, UNNEEDED_FIX, tag="v4.0")
        upstream = str(cached_linux_source_repo())
        write_catalog(
            catalog, patchset("kcheck-test-unneeded", [unneeded], needed_below="4.0", upstream=upstream)
        )
    return [
        "build-kernel",
        "--tree",
        str(tree),
        "--catalog",
        str(catalog),
        "--config",
        str(linux_tinyconfig()),
        "--targets",
        "bzImage",
        "--workdir",
        str(root / "work"),
        "--min-free",
        "2G",
        *extra,
    ]


@dataclass(frozen=True)
class Built:
    """What a tinyconfig build left: its vmlinux, how long make took, and its metadata."""

    vmlinux: bytes
    seconds: float  # the build stage's duration
    metadata: dict


def built(root: Path) -> Built:
    meta = json.loads((root / "work/metadata.json").read_text())
    return Built((root / "linux/vmlinux").read_bytes(), meta["stages"]["build"]["duration"], meta)
