"""External C/R: criu dump/restore of a docker container's process tree, as CRIU's
contrib/docker_cr.sh does it. Docker is not told, so its view goes stale."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kcheck.core.criu import log_first_error
from kcheck.core.files import read_json
from kcheck.core.output import write_atomic
from kcheck.core.procparse import mount_at, parse_mountinfo
from kcheck.core.validate import first_problem
from kcheck.cr.runner import Runner
from kcheck.errors import KcheckError, Refused

MANIFEST_NAME = "kcheck-manifest.json"
MANIFEST_SCHEMA = "kcheck.cr.manifest/2"  # /2: external_mounts replaced /1's host_files
DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
DEFAULT_DIR = Path("/var/lib/kcheck/checkpoints")
CRIU_COMMON = ["--manage-cgroups", "--evasive-devices"]


@dataclass(frozen=True)
class Manifest:
    """Everything restore needs, written beside the images at dump time."""

    container_id: str
    container_name: str
    pid: int
    root: str  # overlay2 MergedDir: the container's rootfs
    lowerdir: str
    upperdir: str
    workdir: str
    external_mounts: dict[str, str]  # container mount point -> host path it comes from
    tcp_established: bool
    kernel_release: str
    created_at: str

    @property
    def overlay_options(self) -> str:
        return f"lowerdir={self.lowerdir},upperdir={self.upperdir},workdir={self.workdir}"

    def matches(self, container: str) -> bool:
        return container == self.container_name or self.container_id.startswith(container)


def image_dir(directory: Path | None, container: str, name: str) -> Path:
    """Images go in DIR/NAME, as docker's --checkpoint-dir; DIR defaults per container."""
    return (directory or DEFAULT_DIR / container).absolute() / name


def _within(root: str, prefix: str) -> bool:
    return prefix == "/" or root == prefix or root.startswith(prefix.rstrip("/") + "/")


def external_mounts(container_mountinfo: str, host_mountinfo: str) -> dict[str, str]:
    """The container's mounts that criu must be told are external, each with its host path.

    A mount is external when nothing in the container's own mount tree holds its root:
    a bind of a host file (docker's resolv.conf, hosts, hostname, volumes) or a cgroup
    hierarchy seen below its root. criu refuses to dump those ("doesn't have a proper
    root mount") unless each is named with --ext-mount-map. The host path is where the
    same filesystem and root are reachable from the host: a restore binds it back.
    Raises KcheckError when an external mount has no host path.
    """
    mounts = parse_mountinfo(container_mountinfo)
    host = parse_mountinfo(host_mountinfo)
    found: dict[str, str] = {}
    for mount in mounts[1:]:  # the first is the container's root, which criu restores itself
        has_root = any(
            other is not mount
            and (other.major, other.minor) == (mount.major, mount.minor)
            and other.root != mount.root
            and _within(mount.root, other.root)
            for other in mounts
        )
        if mount.root == "/" or has_root:
            continue
        same_fs = [h for h in host if (h.major, h.minor) == (mount.major, mount.minor)]
        sources = [h for h in same_fs if _within(mount.root, h.root)]
        if not sources:
            raise KcheckError(
                f"the container's mount {mount.mount_point} ({mount.fstype}, {mount.root}) is not "
                "reachable from the host, so criu could not restore it; use --engine docker"
            )
        source = max(sources, key=lambda h: len(h.root))
        rest = mount.root[len(source.root.rstrip("/")) :] if source.root != "/" else mount.root
        found[mount.mount_point] = source.mount_point.rstrip("/") + rest
    return found


def manifest_from_inspect(info: dict[str, Any], tcp_established: bool) -> Manifest:
    """Read what dump and restore need from `docker container inspect` and the container's
    mount table; bad input otherwise."""
    name = str(info.get("Name", "")).lstrip("/")
    pid = (info.get("State") or {}).get("Pid")
    if not (isinstance(pid, int) and pid > 0):
        raise KcheckError(f"container {name} has no process (State.Pid {pid}); start it, then checkpoint")
    driver = info.get("GraphDriver") or {}
    if driver.get("Name") != "overlay2":
        raise KcheckError(
            f"container {name} uses storage driver {driver.get('Name')!r}; external C/R supports "
            "overlay2 only: use --engine docker"
        )
    layers = driver.get("Data") or {}
    missing = [k for k in ("LowerDir", "UpperDir", "WorkDir", "MergedDir") if not layers.get(k)]
    if missing:
        raise KcheckError(
            f"docker inspect {name} lacks {', '.join(missing)}; cannot checkpoint it externally"
        )
    try:
        container_mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        host_mounts = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        raise KcheckError(
            f"container {name}: cannot read the mount table of its process {pid} ({exc.strerror}); "
            "is it still running?"
        ) from None
    return Manifest(
        container_id=str(info.get("Id", "")),
        container_name=name,
        pid=pid,
        root=layers["MergedDir"],
        lowerdir=layers["LowerDir"],
        upperdir=layers["UpperDir"],
        workdir=layers["WorkDir"],
        external_mounts=external_mounts(container_mounts, host_mounts),
        tcp_established=tcp_established,
        kernel_release=os.uname().release,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def load_manifest(images: Path, container: str) -> Manifest:
    """The manifest in `images`; bad input (exit 3) when missing, corrupt or another container's.

    A dump that failed leaves its log but no manifest: that is said as such, with criu's error.
    """
    path = images / MANIFEST_NAME
    fix = f"pass the --dir and --name the checkpoint was taken with (images in {images})"
    try:
        data = read_json(path)
    except FileNotFoundError:
        if (images / DUMP_LOG).is_file():
            why = log_first_error(images / DUMP_LOG) or "criu dump did not finish"
            raise KcheckError(
                f"the checkpoint in {images} failed, so there is nothing to restore ({why}); "
                f"see {images / DUMP_LOG}, then take a new checkpoint"
            ) from None
        raise KcheckError(f"no checkpoint manifest at {path}; {fix}") from None
    except (OSError, ValueError) as exc:
        raise KcheckError(f"checkpoint manifest {path} is corrupt ({exc}); take a new checkpoint") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if isinstance(schema, str) and schema.startswith("kcheck.cr.manifest/") and schema != MANIFEST_SCHEMA:
        raise KcheckError(
            f"checkpoint manifest {path} is {schema}, which this kcheck cannot restore "
            f"(it reads {MANIFEST_SCHEMA}); restore it with the kcheck that took it"
        )
    if schema != MANIFEST_SCHEMA:
        raise KcheckError(f"{path} is not a kcheck {MANIFEST_SCHEMA} manifest; {fix}")
    if problem := first_problem(data, "cr-manifest-2"):
        raise KcheckError(f"checkpoint manifest {path} is corrupt ({problem}); take a new checkpoint")
    # JSON Schema calls 4242.0 an integer too; criu wants "-t 4242".
    manifest = Manifest(**{k: v for k, v in data.items() if k != "schema"} | {"pid": int(data["pid"])})
    if not manifest.matches(container):
        raise KcheckError(
            f"checkpoint in {images} is of container {manifest.container_name}, not {container}; {fix}"
        )
    return manifest


def dump_argv(manifest: Manifest, images: Path, leave_running: bool) -> list[str]:
    """Each external mount is keyed by its container path; restore maps the key to the host."""
    maps = [arg for path in manifest.external_mounts for arg in ("--ext-mount-map", f"{path}:{path}")]
    return [
        "criu",
        "dump",
        "-t",
        str(manifest.pid),
        "-D",
        str(images),
        "-o",
        DUMP_LOG,
        "-v4",
        *CRIU_COMMON,
        *maps,
        *(["--leave-running"] if leave_running else []),
        *(["--tcp-established"] if manifest.tcp_established else []),
    ]


def restore_argv(manifest: Manifest, images: Path) -> list[str]:
    maps = [
        arg
        for path, host in manifest.external_mounts.items()
        for arg in ("--ext-mount-map", f"{path}:{host}")
    ]
    return [
        "criu",
        "restore",
        "-d",
        "--root",
        manifest.root,
        "--pidfile",
        str(images / "restore.pid"),
        "-D",
        str(images),
        "-o",
        RESTORE_LOG,
        "-v4",
        *CRIU_COMMON,
        *maps,
        *(["--tcp-established"] if manifest.tcp_established else []),
    ]


def refuse_existing(images: Path) -> None:
    """Never dump over a checkpoint: criu would mix two dumps' images."""
    if (images / MANIFEST_NAME).exists():
        raise KcheckError(f"a checkpoint already exists in {images}; pick another --name or remove it")


def check_image_dir(images: Path) -> None:
    """Refuse (exit 3) an images directory that cannot be made, before anything runs."""
    existing = next(path for path in (images, *images.parents) if path.exists())
    if not existing.is_dir():
        raise KcheckError(f"--dir: {existing} is not a directory; pass another --dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KcheckError(f"--dir: {existing} is not writable; pass a writable --dir")


def dump(manifest: Manifest, images: Path, leave_running: bool, runner: Runner) -> None:
    """criu dump, with the restore manifest written first: after the dump the container may be
    gone, so nothing that can fail is left for after it (the rename cannot fail on one disk)."""
    pending = images / f".{MANIFEST_NAME}.pending"
    runner.note(f"create {images}")
    runner.note(f"write the restore manifest {images / MANIFEST_NAME}")
    if not runner.dry_run:
        try:
            images.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KcheckError(
                f"--dir: cannot create {images} ({exc.strerror}); pass a writable --dir"
            ) from None
        write_atomic(pending, json.dumps({"schema": MANIFEST_SCHEMA, **asdict(manifest)}, indent=2) + "\n")
    try:
        runner.run(dump_argv(manifest, images, leave_running), log=images / DUMP_LOG)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    if not runner.dry_run:
        os.replace(pending, images / MANIFEST_NAME)


def check_layers(manifest: Manifest) -> None:
    """The overlay layers must still be on this host; checked before anything is mounted."""
    layers = (manifest.upperdir, manifest.workdir, *manifest.lowerdir.split(":"))
    if gone := [layer for layer in layers if not Path(layer).is_dir()]:
        raise KcheckError(
            f"the layers of container {manifest.container_name} are gone ({', '.join(gone)}); "
            "external restore needs the container and its image on this host"
        )


def restore(manifest: Manifest, images: Path, runner: Runner) -> int | None:
    """Mount the rootfs as criu needs it, restore, and undo every mount made here.

    Returns the restored tree's pid (None under --dry-run).
    """
    root = Path(manifest.root)
    pidfile = images / "restore.pid"
    if pidfile.exists():  # criu creates the pidfile exclusively
        runner.note(f"remove {pidfile} left by an earlier restore")
        if not runner.dry_run:
            pidfile.unlink()
    undo: list[list[str]] = []
    try:
        if mount_at(parse_mountinfo(Path("/proc/self/mountinfo").read_text()), str(root)) is None:
            runner.note(f"{root} is not mounted: re-create the overlay rootfs")
            if not runner.dry_run:
                root.mkdir(parents=True, exist_ok=True)
            runner.run(["mount", "-t", "overlay", "overlay", "-o", manifest.overlay_options, str(root)])
            undo.append(["umount", str(root)])
        # criu pivot_roots into --root: it must be a mount point of its own (docker_cr.sh).
        runner.run(["mount", "--rbind", str(root), str(root)])
        undo.append(["umount", "--recursive", str(root)])
        runner.run(restore_argv(manifest, images), log=images / RESTORE_LOG)
    except BaseException as failure:
        if left := _undo_mounts(undo, runner):
            raise Refused(f"{failure}\n{left}") from failure
        raise
    if left := _undo_mounts(undo, runner):
        raise Refused(left)
    if runner.dry_run:
        return None
    return _restored_pid(pidfile)


def _restored_pid(pidfile: Path) -> int:
    """The pid criu wrote; criu said done, so a missing or dead one means the tree died."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError) as exc:
        raise Refused(
            f"criu restore exited 0, but the restored process tree is not running ({pidfile}: {exc}); "
            f"see {pidfile.parent / RESTORE_LOG}"
        ) from None
    return pid


def _undo_mounts(undo: list[list[str]], runner: Runner) -> str:
    """Unmount in reverse, trying every one; what could not be undone, or ''."""
    left = []
    for argv in reversed(undo):
        try:
            runner.run(argv)
        except KcheckError as exc:
            left.append(str(exc))
    return "could not undo every mount kcheck made:\n" + "\n".join(left) if left else ""
