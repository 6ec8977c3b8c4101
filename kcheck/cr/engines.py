"""The container engines: which one knows a container, what it says about it, and the
native checkpoint/restore command lines of docker (`docker checkpoint create`, `docker start
--checkpoint`) and podman (`podman container checkpoint/restore`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from kcheck.cr.runner import query, tail
from kcheck.errors import KcheckError, Refused

# docker's and podman's rule for names, which hex ids also satisfy. No leading '-',
# so a name can never be read as an option by the engine.
MAX_NAME = 255
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RUNC_CONF = Path("/etc/criu/runc.conf")
# dockerd restores only from its own checkpoint dir from 17.12 on (containerd 1.0):
# `docker start --checkpoint-dir` says "custom checkpointdir is not supported" (moby#37344).
DOCKER_CUSTOM_DIR_RESTORE_BELOW = "17.12"
# dockerd's upload of a checkpoint to containerd can race its own earlier upload of the same
# content and fail with "commit failed: content sha256:...: already exists" (moby#42900, fixed
# upstream in 2024; Debian's docker.io 20.10 still has it). The checkpoint is intact: try again.
DOCKER_UPLOAD_RACE = ("failed to upload checkpoint to containerd", "already exists")
TCP_ESTABLISHED = "tcp-established"


def validate_name(value: str, what: str) -> str:
    if len(value) > MAX_NAME:
        raise KcheckError(
            f"{what} {value[:20]!r}... is {len(value)} characters long; names hold at most {MAX_NAME}"
        )
    if not _NAME.fullmatch(value):
        raise KcheckError(
            f"{what} {value!r} is not a valid container name or id: use letters, digits, "
            "'_', '.' and '-', starting with a letter or digit"
        )
    return value


def require_tool(tool: str) -> None:
    """Bad input (exit 3) when the tool is not installed."""
    if shutil.which(tool) is None:
        raise KcheckError(f"{tool} is not installed (not on PATH); install it or pick another --engine")


def podman_knows(container: str) -> bool:
    return shutil.which("podman") is not None and (
        query(["podman", "container", "exists", container]).returncode == 0
    )


def inspect(engine: str, container: str) -> dict[str, Any]:
    """`ENGINE container inspect`; an unknown container is bad input with the engine's words."""
    require_tool(engine)
    done = query([engine, "container", "inspect", container])
    if done.returncode != 0:
        raise KcheckError(
            f"container {container}: {engine} container inspect failed ({tail(done.stderr, 1)}); "
            f"check the name with `{engine} ps -a`"
        )
    try:
        found = json.loads(done.stdout)
    except json.JSONDecodeError:
        found = None
    if not (isinstance(found, list) and found and isinstance(found[0], dict)):
        raise KcheckError(f"{engine} container inspect {container}: unreadable answer")
    return found[0]


def is_running(info: dict[str, Any]) -> bool:
    """Both engines' inspect say it as State.Running."""
    return (info.get("State") or {}).get("Running") is True


def require_running(info: dict[str, Any], engine: str, container: str) -> None:
    """Only a running container can be checkpointed: bad input, found before anything runs."""
    if not is_running(info):
        raise KcheckError(
            f"container {container} is not running, so there is nothing to checkpoint; "
            f"start it (`{engine} start {container}`), or restore it if it was checkpointed"
        )


def refuse_running(info: dict[str, Any], engine: str, container: str) -> None:
    """A restore onto a running container does nothing (docker even exits 0): refuse it."""
    if is_running(info):
        raise KcheckError(
            f"container {container} is already running, so a restore would do nothing; "
            f"checkpoint it first, or stop it (`{engine} stop {container}`) to restore an older checkpoint"
        )


# --- docker (native) ------------------------------------------------------------------


def docker_precheck(need_criu: bool) -> None:
    """docker checkpoint needs an experimental daemon, and criu on the host to C/R."""
    done = query(["docker", "info", "--format", "{{json .ExperimentalBuild}}"])
    if done.returncode != 0:
        raise Refused(f"docker info failed: {tail(done.stderr, 1)}; is dockerd running?")
    if done.stdout.strip() != "true":
        raise Refused(
            "the docker daemon runs without experimental features, which docker checkpoint needs: "
            'add {"experimental": true} to /etc/docker/daemon.json and restart dockerd'
        )
    if need_criu and shutil.which("criu") is None:
        raise Refused("criu is not installed; docker checkpoint needs criu >= 2.0 (apt-get install criu)")


def docker_server_version() -> str:
    done = query(["docker", "version", "--format", "{{.Server.Version}}"])
    if done.returncode != 0 or not done.stdout.strip():
        raise Refused(f"docker version failed: {tail(done.stderr, 1)}; is dockerd running?")
    return done.stdout.strip()


def refuse_custom_dir(directory: Path | None) -> None:
    """--checkpoint-dir: the checkpoint works, then the restore is refused and the container
    stays stopped. Ask the daemon, and refuse before anything runs."""
    if directory is None:
        return
    from packaging.version import InvalidVersion, Version

    server = docker_server_version()
    try:
        restorable = Version(server.split("+")[0].split("-")[0]) < Version(DOCKER_CUSTOM_DIR_RESTORE_BELOW)
    except InvalidVersion:
        restorable = False
    if not restorable:
        raise KcheckError(
            f"--dir {directory}: dockerd {server} cannot restore from a custom checkpoint dir "
            f"(only docker before {DOCKER_CUSTOM_DIR_RESTORE_BELOW} could), so the container would stay "
            "stopped; drop --dir (docker keeps checkpoints itself), or use --engine external, "
            "whose --dir restores, or podman's --export/--import"
        )


def runc_conf_has_tcp_established() -> bool:
    try:
        lines = RUNC_CONF.read_text().splitlines()
    except OSError:
        return False
    return any(line.split("#")[0].strip() == TCP_ESTABLISHED for line in lines)


def _checkpoint_dir(directory: Path | None) -> list[str]:
    return ["--checkpoint-dir", str(directory)] if directory else []


def docker_checkpoint_argv(
    container: str, name: str, directory: Path | None, leave_running: bool
) -> list[str]:
    return [
        "docker",
        "checkpoint",
        "create",
        *(["--leave-running"] if leave_running else []),
        *_checkpoint_dir(directory),
        container,
        name,
    ]


def docker_restore_argv(container: str, name: str, directory: Path | None) -> list[str]:
    return [
        "docker",
        "start",
        "--checkpoint",
        name,
        *_checkpoint_dir(directory),
        container,
    ]


def docker_list_argv(container: str, directory: Path | None) -> list[str]:
    return [
        "docker",
        "checkpoint",
        "ls",
        *_checkpoint_dir(directory),
        container,
    ]


# --- podman ---------------------------------------------------------------------------


def podman_checkpoint_argv(
    container: str, leave_running: bool, tcp_established: bool, export: Path | None
) -> list[str]:
    return [
        "podman",
        "container",
        "checkpoint",
        *(["-R"] if leave_running else []),
        *(["--tcp-established"] if tcp_established else []),
        *(["-e", str(export)] if export else []),
        container,
    ]


def podman_restore_argv(
    container: str | None, import_file: Path | None, new_name: str | None, tcp_established: bool
) -> list[str]:
    """With -i the container comes from the archive: podman refuses a container argument."""
    return [
        "podman",
        "container",
        "restore",
        *(["-i", str(import_file)] if import_file else []),
        *(["-n", new_name] if new_name else []),
        *(["--tcp-established"] if tcp_established else []),
        *([container] if container and not import_file else []),
    ]


def is_docker_upload_race(message: str) -> bool:
    """The failure of `docker start --checkpoint` that a second try gets past (moby#42900)."""
    return all(part in message for part in DOCKER_UPLOAD_RACE)
