"""kcheck cr checkpoint/restore/list: check the input, pick the engine, pre-flight, run.

Order matters: bad input (exit 3) is found before anything runs; the engine's own
pre-checks and the kernel pre-flight (exit 1) before any command that changes state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kcheck.core import channel
from kcheck.cr import engines, external
from kcheck.cr.preflight import run_preflight, warn_skipped
from kcheck.cr.runner import Runner
from kcheck.errors import KcheckError, Refused

DEFAULT_NAME = "kcheck"


@dataclass(frozen=True)
class Request:
    """One `kcheck cr checkpoint|restore|list` invocation, as parsed."""

    action: str
    container: str | None
    engine: str = "auto"
    name: str | None = None
    directory: Path | None = None
    tcp_established: bool = False
    dry_run: bool = False
    skip_preflight: bool = False
    config: Path | None = None
    catalog: Path | None = None
    leave_running: bool = False
    export: Path | None = None
    import_file: Path | None = None
    new_name: str | None = None

    @property
    def checkpoint_name(self) -> str:
        return self.name or DEFAULT_NAME

    @property
    def checkpoint_dir(self) -> Path | None:
        """Absolute: the docker daemon would read a relative path from its own directory."""
        return self.directory.absolute() if self.directory else None


def choose_engine(req: Request) -> str:
    """Validate the input and pick the engine: podman when it knows the container, else docker."""
    if req.container is not None:
        engines.validate_name(req.container, "container")
    elif not req.import_file:
        raise KcheckError(f"{req.action} needs CONTAINER (or, with podman, --import FILE)")
    for flag, value in (("--name", req.name), ("--new-name", req.new_name)):
        if value is not None:
            engines.validate_name(value, flag)
    engine = req.engine
    if engine == "auto":
        wants_podman = (
            req.export
            or req.import_file
            or (req.container is not None and engines.podman_knows(req.container))
        )
        engine = "podman" if wants_podman else "docker"
    if engine == "podman":
        _check_podman_options(req)
    else:
        for flag, value in (
            ("--export", req.export),
            ("--import", req.import_file),
            ("--new-name", req.new_name),
        ):
            if value is not None:
                raise KcheckError(
                    f"{flag} works with podman only; {engine} checkpoints move as their --dir directory"
                )
    return engine


def _check_podman_options(req: Request) -> None:
    """podman's own rules, checked before anything runs (so they are exit 3, not a failure)."""
    for flag, value in (("--name", req.name), ("--dir", req.directory)):
        if value is not None:
            raise KcheckError(
                f"{flag}: podman keeps one unnamed checkpoint per container; "
                "move it with --export FILE and --import FILE"
            )
    if req.import_file:
        if req.container:
            raise KcheckError(
                f"--import {req.import_file}: the container comes from the archive; "
                "drop CONTAINER (or rename it with --new-name)"
            )
        if not req.import_file.is_file():
            raise KcheckError(f"--import {req.import_file}: no such file; copy the exported archive here")
    elif req.new_name:
        raise KcheckError("--new-name names a container restored with --import FILE; add --import")
    if req.new_name and req.tcp_established:
        raise KcheckError("podman cannot restore established TCP connections under --new-name; drop one")
    if req.export and not req.export.absolute().parent.is_dir():
        raise KcheckError(f"--export {req.export}: its directory does not exist; create it first")


def _preflight(req: Request, external_cr: bool) -> None:
    if req.skip_preflight:
        warn_skipped(req.action)
    else:
        run_preflight(req.action, external_cr, req.config, req.catalog)


def _docker_ready(req: Request, runner: Runner) -> None:
    """docker passes criu options only through runc's criu configuration file, /etc/criu/runc.conf."""
    engines.docker_precheck(need_criu=True)
    if not req.tcp_established:
        return
    conf, line = engines.RUNC_CONF, engines.TCP_ESTABLISHED
    if req.dry_run:
        present = "it has it" if engines.runc_conf_has_tcp_established() else "add it before a real run"
        runner.note(f"--tcp-established: docker takes it from the line '{line}' in {conf} ({present})")
    elif not engines.runc_conf_has_tcp_established():
        raise Refused(
            f"--tcp-established: docker passes criu options only through {conf}, which lacks it; "
            f"add the line '{line}' to {conf}"
        )


def _warn_stale(container: str, consequence: str, runner: Runner) -> None:
    """External C/R goes behind docker's back: say so, every time."""
    if runner.dry_run:
        runner.note(f"docker's view of container {container} is then stale: {consequence}")
    else:
        channel.warn(f"docker's view of container {container} is now stale: {consequence}")


def checkpoint(req: Request) -> int:
    engine = choose_engine(req)
    runner = Runner(req.dry_run)
    container = str(req.container)
    info = engines.inspect("docker" if engine == "external" else engine, container)
    engines.require_running(info, "docker" if engine == "external" else engine, container)
    if engine == "docker":
        engines.refuse_custom_dir(req.checkpoint_dir)
        _docker_ready(req, runner)
        _preflight(req, external_cr=False)
        runner.run(
            engines.docker_checkpoint_argv(
                container, req.checkpoint_name, req.checkpoint_dir, req.leave_running
            )
        )
    elif engine == "podman":
        _preflight(req, external_cr=False)
        runner.run(
            engines.podman_checkpoint_argv(
                container, req.leave_running, req.tcp_established, req.export and req.export.absolute()
            )
        )
    else:
        manifest = external.manifest_from_inspect(info, req.tcp_established)
        images = external.image_dir(req.directory, container, req.checkpoint_name)
        external.refuse_existing(images)
        engines.require_tool("criu")
        external.check_image_dir(images)
        _preflight(req, external_cr=True)
        external.dump(manifest, images, req.leave_running, runner)
        if not req.leave_running:
            _warn_stale(
                container,
                "it believes the container exited; restore it with `kcheck cr restore --engine external`, "
                "not `docker start`",
                runner,
            )
    return 0


def _confirm_running(engine: str, container: str) -> None:
    """The engine said done: check that the container really runs (docker exits 0 for a
    `start --checkpoint` that did nothing)."""
    if not container or not engines.is_running(engines.inspect(engine, container)):
        raise Refused(
            f"{engine} reported the restore done, but container {container or '(no id printed)'} "
            f"is not running; see `{engine} ps -a` and `{engine} logs`"
        )


def restore(req: Request) -> int:
    engine = choose_engine(req)
    runner = Runner(req.dry_run)
    container = str(req.container)
    if engine == "docker":
        engines.refuse_running(engines.inspect("docker", container), "docker", container)
        engines.refuse_custom_dir(req.checkpoint_dir)
        _docker_ready(req, runner)
        _preflight(req, external_cr=False)
        argv = engines.docker_restore_argv(container, req.checkpoint_name, req.checkpoint_dir)
        try:
            runner.run(argv)
        except Refused as exc:
            if not engines.is_docker_upload_race(str(exc)):
                raise
            channel.warn(
                "docker hit its checkpoint upload race (moby#42900: content already exists); trying once more"
            )
            runner.run(argv)
        if not req.dry_run:
            _confirm_running("docker", container)
    elif engine == "podman":
        if req.import_file:
            engines.require_tool("podman")
        else:
            engines.refuse_running(engines.inspect("podman", container), "podman", container)
        _preflight(req, external_cr=False)
        output = runner.run(
            engines.podman_restore_argv(
                req.container,
                req.import_file and req.import_file.absolute(),
                req.new_name,
                req.tcp_established,
            )
        )
        if not req.dry_run:
            # An import without --new-name keeps the archive's name: podman prints the new id.
            restored = container if not req.import_file else req.new_name or (output.split() or [""])[-1]
            _confirm_running("podman", restored)
    else:
        images = external.image_dir(req.directory, container, req.checkpoint_name)
        manifest = external.load_manifest(images, container)
        external.check_layers(manifest)
        engines.require_tool("criu")
        _preflight(req, external_cr=True)
        pid = external.restore(manifest, images, runner)
        if not req.dry_run:
            channel.say(f"restored container {manifest.container_name}: process tree pid {pid}")
        _warn_stale(
            manifest.container_name,
            f"the restored processes{f' (pid {pid})' if pid else ''} run outside docker, "
            "so docker ps/stop/kill/logs do not see them",
            runner,
        )
    return 0


def list_checkpoints(req: Request) -> int:
    """Only docker names its checkpoints: podman keeps one per container."""
    container = engines.validate_name(str(req.container), "container")
    engines.inspect("docker", container)
    engines.docker_precheck(need_criu=False)
    Runner(req.dry_run).run(engines.docker_list_argv(container, req.checkpoint_dir))
    return 0
