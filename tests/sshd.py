"""A real OpenSSH server on loopback for tests that reach "remote" hosts over SSH (Ansible).

Its own host key, user key, config and pid file live in a temp dir; nothing of the machine's
sshd setup is read or changed, except /run/sshd (the privilege separation dir sshd insists on),
created when missing and removed again."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")  # sshd re-executes itself, so it must be started by absolute path
PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user_key: Path  # the private key root logs in with


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _wait_listening(server: subprocess.Popen, port: int, log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sshd exited with {server.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout}s: {log.read_text()}")


@contextlib.contextmanager
def running_sshd(directory: Path) -> Iterator[SshServer]:
    """sshd in the foreground on a free loopback port, accepting root with a generated key only."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key = _keygen(directory / "host_ed25519")
    user_key = _keygen(directory / "user_ed25519")
    (directory / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nPidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        # No PAM (no login session setup); tmp dirs may be group-writable, which StrictModes refuses.
        "UsePAM no\nStrictModes no\n"
        # Ansible copies files over SFTP; the in-process server needs no sftp-server binary.
        "Subsystem sftp internal-sftp\n"
    )
    made_privsep = not PRIVSEP_DIR.exists()
    if made_privsep:
        PRIVSEP_DIR.mkdir(mode=0o755)
    log = directory / "sshd.log"
    try:
        with open(log, "w") as log_file:
            server = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log_file, stderr=subprocess.STDOUT
            )
        try:
            _wait_listening(server, port, log)
            yield SshServer("127.0.0.1", port, user_key)
        finally:
            server.terminate()
            server.wait(timeout=10)
    finally:
        if made_privsep:
            PRIVSEP_DIR.rmdir()
