"""The stages of `kcheck build-criu` (fetch, build, check, install), declared on the shared
stage machinery (steps.py) with a fresh ledger, and the build record they end with."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kcheck.builder.criu import (
    CHECK_TIMEOUT,
    RECORD_SCHEMA,
    TREE_MARKERS,
    CriuOptions,
    Source,
    build_command,
    clone_argv,
    install_command,
    records_dir,
    tarball_top,
    tree_version,
)
from kcheck.builder.kbuild import run_command
from kcheck.builder.progress import BuildLog, Progress, shell_line
from kcheck.builder.steps import FreshLedger, StageStep, run_stage
from kcheck.core import channel
from kcheck.core.criu import criu_first_error, criu_version
from kcheck.core.output import write_atomic
from kcheck.errors import KcheckError, StageFailed


class CriuStep(StageStep):
    """A build-criu stage: every run starts afresh in the work dir (FreshLedger)."""

    def __init__(self, options: CriuOptions, log: BuildLog, outputs: dict[str, Any]) -> None:
        self.options = options
        self.log = log
        self.outputs = outputs  # what the stages before this one found


class FetchStage(CriuStep):
    """A fresh tree in WORKDIR/src, and what identifies it (checksum or commit)."""

    name = "fetch"

    def label(self) -> str:
        return f"CRIU source from {self.options.source.describe()}"

    def work(self) -> dict[str, Any]:
        source, tree = self.options.source, self.options.tree
        shutil.rmtree(tree, ignore_errors=True)
        try:
            if source.kind == "tarball":
                self.log.command(f"extract {source.location} into {tree}")
                found = {**asdict(source), "sha256": _extract(Path(source.location), tree)}
            elif source.kind == "tree":
                self.log.command(f"copy {source.location} into {tree}")
                shutil.copytree(source.location, tree, symlinks=True)
                found = asdict(source)
            else:
                found = {**asdict(source), "commit": _clone(source, tree, self.log)}
        except (OSError, shutil.Error, tarfile.TarError) as exc:
            raise StageFailed(f"cannot fetch the CRIU source from {source.describe()}: {exc}") from None
        if missing := [marker for marker in TREE_MARKERS if not (tree / marker).is_file()]:
            raise StageFailed(
                f"{source.describe()} is not a CRIU source tree (no {', '.join(missing)}); "
                "pass a criu repository and release tag"
            )
        return {"source": found, "version": tree_version(tree)}


class MakeStage(CriuStep):
    name = "build"

    def label(self) -> str:
        return f"make criu {self.outputs['version']} (-j{self.options.jobs})"

    def work(self) -> dict[str, Any]:
        run_command(build_command(self.options), self.options.tree, self.log)
        return {}


class CheckStage(CriuStep):
    """`criu check` with the new binary: it installs only when that passes (or --force)."""

    name = "check"

    def label(self) -> str:
        return "criu check with the new binary"

    def work(self) -> dict[str, Any]:
        return {"check": _check(self.options.tree / "criu" / "criu", self.log)}

    def announce(self, outputs: dict[str, Any]) -> None:
        check, version = outputs["check"], self.outputs["version"]
        if check["passed"]:
            return
        if not self.options.force:
            raise StageFailed(
                f"the new criu {version} fails `criu check`, so it was not installed: {check['summary']}; "
                "--force installs it anyway"
            )
        channel.warn(f"--force: installing criu {version} although criu check failed")


class InstallStage(CriuStep):
    name = "install"

    def label(self) -> str:
        return f"make install-criu into {self.options.prefix}"

    def work(self) -> dict[str, Any]:
        return {"installed": _install(self.options, self.log)}


CRIU_STAGES: tuple[type[CriuStep], ...] = (FetchStage, MakeStage, CheckStage, InstallStage)


def build(options: CriuOptions, progress: Progress, log: BuildLog) -> dict[str, Any]:
    """Fetch, build, check, install, record. StageFailed (exit 1) when a step fails; the work
    dir keeps the log, and nothing is installed unless the check passed (or --force)."""
    found: dict[str, Any] = {}
    for stage in CRIU_STAGES:
        found.update(run_stage(stage(options, log, found), FreshLedger(), progress))
    record = {
        "schema": RECORD_SCHEMA,
        "version": found["version"],
        "source": found["source"],
        "prefix": str(options.prefix),
        "binary": str(options.installed_binary),
        "installed": found["installed"],
        "check": found["check"],
        "kernel": os.uname().release,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = records_dir() / f"{found['version']}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KcheckError(f"cannot write the record {path}: {exc.strerror}; set KCHECK_STATE_DIR") from None
    write_atomic(path, json.dumps(record, indent=2) + "\n")
    record["record_path"] = str(path)
    return record


def _extract(tarball: Path, tree: Path) -> str:
    hasher = hashlib.sha256()
    with open(tarball, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(block)
    with tarfile.open(tarball) as archive:
        top = tarball_top(archive.getnames())
        members = []
        for member in archive.getmembers():
            name = member.name.removeprefix("./")
            if name.startswith(f"{top}/"):
                member.name = name.removeprefix(f"{top}/")
                members.append(member)
        tree.mkdir(parents=True)
        archive.extractall(tree, members=members, filter="data")
    return hasher.hexdigest()


def _clone(source: Source, tree: Path, log: BuildLog) -> str:
    import git  # not on the probe path

    from kcheck.core import repos

    log.command(shell_line(clone_argv(source, tree)))
    try:
        repo = repos.clone("--repo", source.location, tree, ["--depth=1", f"--branch={source.tag}"])
    except git.GitCommandError as exc:
        raise StageFailed(f"cannot clone {source.location} at {source.tag}: {exc.stderr.strip()}") from None
    commit = repo.head.commit.hexsha
    if source.commit and commit != source.commit:
        raise StageFailed(
            f"{source.location} tag {source.tag} is {commit}, not the {source.commit} kcheck knows; "
            "the tag moved: check it, then pass --repo and --tag explicitly"
        )
    return commit


def _check(binary: Path, log: BuildLog) -> dict[str, Any]:
    log.command(shell_line([str(binary), "check"]))
    try:
        done = subprocess.run(
            [str(binary), "check"], capture_output=True, text=True, errors="replace", timeout=CHECK_TIMEOUT
        )
        version = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=CHECK_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StageFailed(f"cannot run {binary} check: {exc}") from None
    output = done.stderr + done.stdout
    log.write(output)
    return {
        "passed": done.returncode == 0,
        "returncode": done.returncode,
        "version": criu_version(version.stdout),
        # criu's verdict line ("Looks good.") on a pass; its first error on a failure.
        "summary": criu_first_error(output) if done.returncode else _last_line(done.stdout),
    }


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def _install(options: CriuOptions, log: BuildLog) -> list[str]:
    """make install-criu into a staging dir, then each file renamed into place (the old one
    stays reachable until the rename). A failure puts back what was replaced and removes the
    directories it made, so nothing is left half-installed."""
    stage = options.workdir / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    run_command(install_command(options, stage), options.tree, log)
    staged_prefix = stage / options.prefix.relative_to("/")
    files = sorted(p for p in staged_prefix.rglob("*") if p.is_file() or p.is_symlink())
    done: list[tuple[Path, Path | None]] = []
    made: list[Path] = []
    temp: Path | None = None
    try:
        for staged in files:
            target = options.prefix / staged.relative_to(staged_prefix)
            missing = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            made.extend(reversed(missing))
            temp = target.with_name(f".{target.name}.kcheck-new")
            shutil.copy2(staged, temp, follow_symlinks=False)
            backup = None
            if target.exists() or target.is_symlink():
                backup = target.with_name(f".{target.name}.kcheck-old")
                backup.unlink(missing_ok=True)
                os.link(target, backup, follow_symlinks=False)
            done.append((target, backup))  # before the rename: a failed one is undone too
            os.replace(temp, target)
            temp = None
            log.write(f"installed {target}")
    except OSError as exc:
        if temp is not None:
            temp.unlink(missing_ok=True)
        for target, backup in reversed(done):
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise StageFailed(f"install into {options.prefix} failed ({exc}); nothing was left behind") from None
    for _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)
    shutil.rmtree(stage, ignore_errors=True)
    return [str(target) for target, _ in done]
