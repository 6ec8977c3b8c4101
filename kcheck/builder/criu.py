"""`kcheck build-criu`: a CRIU that works on this kernel, built from source, checked with its
own `criu check`, installed beside (never over) the distro's criu, and recorded.

A distro criu older than its kernel is the most common way C/R breaks (Debian 12's criu 3.17
on a 6.x kernel fails at once on the vDSO). The releases kcheck knows are data, in
`criu-releases.toml` beside this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import tomllib
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kcheck.builder.kbuild import Command, run_command
from kcheck.builder.preflight import Requirement, existing_ancestor, refuse_missing
from kcheck.builder.progress import BuildLog, Progress, shell_line
from kcheck.builder.steps import FreshLedger, StageStep, run_stage
from kcheck.core import channel
from kcheck.core.buildrecord import state_dir
from kcheck.core.criu import criu_first_error, criu_version
from kcheck.core.output import write_atomic
from kcheck.core.release import parse_release, parse_version
from kcheck.errors import KcheckError, StageFailed

RECORD_SCHEMA = "kcheck.criu-build/1"
DEFAULT_PREFIX = Path("/usr/local")
# The distro's own criu: never overwritten, whatever --prefix says.
DISTRO_CRIU = (Path("/usr/sbin/criu"), Path("/sbin/criu"))
VERSIONS_FILE = "Makefile.versions"
TREE_MARKERS = (VERSIONS_FILE, "criu/Makefile", "Makefile.install")
CHECK_TIMEOUT = 60.0
# What `make criu` needs (../criu/README.md of the test data lists the same).
CRIU_REQUIREMENTS = (
    Requirement("gcc", "gcc", "gcc"),
    Requirement("make", "make", "make"),
    Requirement("pkg-config", "pkg-config", "pkgconf-pkg-config"),
    Requirement("protoc", "protobuf-compiler", "protobuf-compiler"),
    Requirement("protoc-c", "protobuf-c-compiler", "protobuf-c-compiler"),
    Requirement(
        "protobuf headers", "libprotobuf-dev", "protobuf-devel", header="google/protobuf/descriptor.proto"
    ),
    Requirement(
        "protobuf-c headers", "libprotobuf-c-dev", "protobuf-c-devel", header="protobuf-c/protobuf-c.h"
    ),
    Requirement("libnl-3 headers", "libnl-3-dev", "libnl3-devel", header="libnl3/netlink/netlink.h"),
    Requirement("libnet headers", "libnet1-dev", "libnet-devel", header="libnet.h"),
    Requirement("libcap headers", "libcap-dev", "libcap-devel", header="sys/capability.h"),
)

GIT = Requirement("git", "git", "git")


@dataclass(frozen=True)
class CriuRelease:
    version: str
    tag: str
    commit: str
    released: str
    min_kernel: str
    seen_working_on: str


def known_releases() -> tuple[str, list[CriuRelease]]:
    """The upstream repository and the releases kcheck knows, newest first."""
    data = tomllib.loads(resources.files("kcheck.builder").joinpath("criu-releases.toml").read_text())
    return data["upstream"], [CriuRelease(**entry) for entry in data["releases"]]


def default_release(kernel_release: str) -> CriuRelease:
    """The newest known release that supports this kernel."""
    _, releases = known_releases()
    parsed = parse_release(kernel_release)
    for release in releases:
        if parsed is None or parsed.version >= parse_version(release.min_kernel):
            return release
    raise KcheckError(
        f"no CRIU release kcheck knows supports kernel {kernel_release} "
        f"(the oldest needs {releases[-1].min_kernel}); pass --source with a CRIU tree that does"
    )


@dataclass(frozen=True)
class Source:
    """Where the CRIU tree comes from: a tarball, a local tree, or an upstream tag."""

    kind: str  # "tarball", "tree" or "git"
    location: str  # a path, or the repository URL
    tag: str | None = None
    commit: str | None = None  # expected for a known git tag

    def describe(self) -> str:
        return f"{self.location} at {self.tag}" if self.kind == "git" else self.location


@dataclass(frozen=True)
class CriuOptions:
    source: Source
    prefix: Path
    workdir: Path
    jobs: int
    force: bool

    @property
    def installed_binary(self) -> Path:
        return self.prefix / "sbin" / "criu"

    @property
    def tree(self) -> Path:
        return self.workdir / "src"


def choose_source(source: Path | None, repo: str | None, tag: str | None) -> Source:
    """Validate --source/--repo/--tag (bad input raises) and say where the tree comes from."""
    if source is not None:
        if repo or tag:
            raise KcheckError("--source takes a local tree or tarball; drop --repo/--tag, or drop --source")
        return _local_source(source.absolute())
    upstream, releases = known_releases()
    if tag is None:
        if repo is not None:
            raise KcheckError(f"--repo {repo}: name the release with --tag (e.g. --tag {releases[0].tag})")
        release = default_release(os.uname().release)
        return Source("git", upstream, release.tag, release.commit)
    if repo is not None:
        from kcheck.core.repos import check_url

        check_url("--repo", repo)  # before any work, not at the clone
    known = next((r for r in releases if r.tag == tag and (repo in (None, upstream))), None)
    return Source("git", repo or upstream, tag, known.commit if known else None)


def _local_source(path: Path) -> Source:
    try:
        is_tree = path.is_dir()
        missing = [m for m in TREE_MARKERS if not (path / m).is_file()] if is_tree else []
    except OSError as exc:
        raise KcheckError(f"--source {path} is unreadable ({exc.strerror}); check its permissions") from None
    if is_tree:
        if missing:
            raise KcheckError(
                f"--source {path} is not a CRIU source tree (no {', '.join(missing)}); "
                "pass the top of a criu checkout or a release tarball"
            )
        return Source("tree", str(path))
    try:
        with tarfile.open(path) as archive:
            names = archive.getnames()
    except FileNotFoundError:
        raise KcheckError(f"--source {path}: no such file or directory") from None
    except (tarfile.TarError, EOFError):
        raise KcheckError(
            f"--source {path} is not a tar archive (plain, gzip, bzip2 or xz); "
            "pass a criu release tarball or tree"
        ) from None
    except OSError as exc:
        raise KcheckError(f"--source {path} is unreadable ({exc.strerror}); check its permissions") from None
    if _tarball_top(names) is None:
        raise KcheckError(
            f"--source {path} does not hold a CRIU source tree (no */{VERSIONS_FILE}); "
            "pass a criu release tarball, e.g. criu-4.2.tar.xz"
        )
    return Source("tarball", str(path))


def _tarball_top(names: list[str]) -> str | None:
    """The archive's top directory when it is a criu tree, e.g. criu-4.2."""
    members = {name.removeprefix("./") for name in names}
    for name in members:
        top, _, rest = name.partition("/")
        if rest == VERSIONS_FILE and all(f"{top}/{marker}" in members for marker in TREE_MARKERS):
            return top
    return None


def tree_version(tree: Path) -> str:
    """CRIU_VERSION as Makefile.versions builds it (major.minor[.sublevel][.extra])."""
    values: dict[str, str] = {}
    for line in (tree / VERSIONS_FILE).read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":=")
        if sep:
            values[key.strip()] = value.strip()
    parts = [values.get(f"CRIU_VERSION_{part}", "") for part in ("MAJOR", "MINOR", "SUBLEVEL", "EXTRA")]
    return ".".join(part for part in parts if part) or "unknown"


def check_prefix(prefix: Path) -> None:
    """Bad input when the install would overwrite the distro's criu or cannot be written."""
    binary = prefix / "sbin" / "criu"
    for distro in DISTRO_CRIU:
        if binary.resolve() == distro.resolve():
            raise KcheckError(
                f"--prefix {prefix} would overwrite the distro's {distro}; "
                f"install beside it (default {DEFAULT_PREFIX}), then put {DEFAULT_PREFIX}/sbin first on PATH"
            )
    require_writable(prefix, f"--prefix {prefix}", "run as root or pass a --prefix you own")


def require_writable(path: Path, what: str, fix: str) -> None:
    """Bad input when the directory (or the parent it would be made in) cannot be written."""
    existing = existing_ancestor(path)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise KcheckError(f"{what}: {existing} is not a writable directory; {fix}")


def preflight(options: CriuOptions) -> None:
    """Every refusal of a plan before anything is written (exit 3)."""
    wanted = [*CRIU_REQUIREMENTS, *([GIT] if options.source.kind == "git" else [])]
    refuse_missing([req for req in wanted if not req.present()], "CRIU build dependencies")
    check_prefix(options.prefix)
    require_writable(options.workdir, f"--workdir {options.workdir}", "pass another --workdir")


def preflight_run(options: CriuOptions) -> None:
    """What only a real run needs: root for `criu check`, and a place for the record."""
    if os.geteuid() != 0 and not options.force:
        raise KcheckError(
            "build-criu verifies the new binary with `criu check`, which needs root: run it as root "
            "(--force installs without a passing check)"
        )
    require_writable(records_dir(), f"the record dir {records_dir()}", "set KCHECK_STATE_DIR to one")


def build_command(options: CriuOptions) -> Command:
    return Command(("make", f"-j{options.jobs}", "criu"))


def install_command(options: CriuOptions, stage: Path) -> Command:
    """install-criu, not install: the latter also wants asciidoc (man pages), libcriu and crit."""
    return Command(("make", "install-criu", f"PREFIX={options.prefix}", f"DESTDIR={stage}"))


def plan(options: CriuOptions) -> list[str]:
    """The run as shell lines: what --dry-run prints."""
    source = options.source
    tree = options.tree
    if source.kind == "git":
        fetch = shell_line(_clone_argv(source, tree))
    elif source.kind == "tarball":
        fetch = (
            shell_line(["mkdir", "-p", str(tree)])
            + " && "
            + shell_line(["tar", "-xf", source.location, "-C", str(tree), "--strip-components", "1"])
        )
    else:
        fetch = shell_line(["cp", "-a", f"{source.location}/.", str(tree)])
    stage = options.workdir / "stage"
    return [
        f"# build CRIU from {source.describe()} in {options.workdir}",
        fetch,
        shell_line(["cd", str(tree)]),
        build_command(options).shell(),
        "./criu/criu check    # must say 'Looks good.'; --force installs anyway",
        install_command(options, stage).shell(),
        f"# then copy {stage}{options.prefix}/... into {options.prefix}, each file renamed into place",
        f"# record: {records_dir() / '<version>.json'}",
    ]


def records_dir() -> Path:
    return state_dir() / "criu"


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
        top = _tarball_top(archive.getnames())
        members = []
        for member in archive.getmembers():
            name = member.name.removeprefix("./")
            if name.startswith(f"{top}/"):
                member.name = name.removeprefix(f"{top}/")
                members.append(member)
        tree.mkdir(parents=True)
        archive.extractall(tree, members=members, filter="data")
    return hasher.hexdigest()


def _clone_argv(source: Source, tree: Path) -> list[str]:
    """What GitPython's clone_from below runs."""
    return ["git", "clone", "--depth=1", f"--branch={source.tag}", source.location, str(tree)]


def _clone(source: Source, tree: Path, log: BuildLog) -> str:
    import git  # not on the probe path

    from kcheck.core import repos

    log.command(shell_line(_clone_argv(source, tree)))
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
