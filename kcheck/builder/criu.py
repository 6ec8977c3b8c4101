"""`kcheck build-criu`: a CRIU that works on this kernel, built from source, checked with its
own `criu check`, installed beside (never over) the distro's criu, and recorded.

A distro criu older than its kernel is the most common way C/R breaks (Debian 12's criu 3.17
on a 6.x kernel fails at once on the vDSO). The releases kcheck knows are data, in
`criu-releases.toml` beside this module.
"""

from __future__ import annotations

import os
import tarfile
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kcheck.builder.kbuild import Command
from kcheck.builder.preflight import Requirement, existing_ancestor, refuse_missing
from kcheck.builder.progress import shell_line
from kcheck.core.buildrecord import state_dir
from kcheck.core.release import parse_release, parse_version
from kcheck.errors import KcheckError

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
    if tarball_top(names) is None:
        raise KcheckError(
            f"--source {path} does not hold a CRIU source tree (no */{VERSIONS_FILE}); "
            "pass a criu release tarball, e.g. criu-4.2.tar.xz"
        )
    return Source("tarball", str(path))


def tarball_top(names: list[str]) -> str | None:
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
        fetch = shell_line(clone_argv(source, tree))
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


def clone_argv(source: Source, tree: Path) -> list[str]:
    """What GitPython's clone_from below runs."""
    return ["git", "clone", "--depth=1", f"--branch={source.tag}", source.location, str(tree)]
