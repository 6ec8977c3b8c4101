"""The options of one `kcheck build-kernel` run, validated, and kept in the state file.

Bad input becomes a KcheckError naming the option and the fix, before any work starts. The
defaults read the environment (the euid, KCHECK_STATE_DIR, XDG_CACHE_HOME).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kcheck.builder.distcc import parse_hosts
from kcheck.core.files import user_cache_dir
from kcheck.core.release import MAX_RELEASE
from kcheck.errors import KcheckError

GIB = 1 << 30
DEFAULT_MIN_FREE = 20 * GIB
DEFAULT_LOCALVERSION = "-kcheck"
DEFAULT_VERIFY_TIMEOUT = 300.0  # seconds to boot the new kernel and probe it
DEFAULT_UPSTREAM = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
CC_WRAPPERS = ("ccache", "distcc")
_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(y|m|n|-?\d+|0x[0-9a-fA-F]+|\".*\")$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_PLAIN_ARG = re.compile(r"^[^\s-][^\s]*$")
# --localversion ends up unquoted in make's commands, some run as root (rm -rf $(MODLIB)/kernel).
_LOCALVERSION = re.compile(r"[A-Za-z0-9._+~-]*")
# A --set string goes into .config and from there into make and generated files: no quotes,
# no shell or make metacharacters, no newlines.
_SET_STRING = re.compile(r'^"[A-Za-z0-9._+~,:/=@ -]{0,256}"$')


def check_localversion(value: str, flag: str) -> None:
    """The release suffix: safe unquoted in make's commands, and no longer than a whole release
    may be (the version comes on top of it, and make refuses a release that is too long)."""
    if not _LOCALVERSION.fullmatch(value):
        raise KcheckError(
            f"{flag} {value!r}: use only letters, digits and . _ + ~ - "
            "(no spaces, quotes or shell characters)"
        )
    if len(value) > MAX_RELEASE:
        raise KcheckError(
            f"{flag} {value[:20]!r}...: {len(value)} characters; a kernel release holds {MAX_RELEASE}"
        )


@dataclass(frozen=True)
class ConfigSetting:
    """One `--set CONFIG_X=VALUE`, and the scripts/config command that applies it."""

    name: str  # without the CONFIG_ prefix, as scripts/config takes it
    value: str

    def scripts_config_args(self) -> list[str]:
        if self.value == "y":
            return ["--enable", self.name]
        if self.value == "m":
            return ["--module", self.name]
        if self.value == "n":
            return ["--disable", self.name]
        if self.value.startswith('"'):
            return ["--set-str", self.name, self.value[1:-1]]
        return ["--set-val", self.name, self.value]

    def config_line(self) -> str:
        """The line olddefconfig keeps in .config when the setting sticks."""
        if self.value == "n":
            return f"# CONFIG_{self.name} is not set"
        return f"CONFIG_{self.name}={self.value}"


def parse_setting(text: str) -> ConfigSetting:
    match = _SET.match(text.strip())
    if not match:
        raise KcheckError(
            f'--set {text}: expected CONFIG_NAME=y|m|n|NUMBER|"string", '
            "e.g. --set CONFIG_CHECKPOINT_RESTORE=y"
        )
    name, value = match.group(1), match.group(2)
    if name == "CONFIG_LOCALVERSION":
        if not (len(value) >= 2 and value[0] == value[-1] == '"'):
            raise KcheckError(f'--set {name}: give it as a quoted string, e.g. {name}="-lab"')
        check_localversion(value[1:-1], f"--set {name}")
    elif value.startswith('"') and not _SET_STRING.match(value):
        raise KcheckError(
            f"--set {name}: a string may hold only letters, digits, spaces and . _ + ~ , : / = @ - "
            "(no quotes, $, `, ;, backslashes or newlines), at most 256 characters"
        )
    return ConfigSetting(name.removeprefix("CONFIG_"), value)


def parse_size(text: str) -> int:
    """Bytes from '20G', '512M', '1.5GiB' or a plain byte count."""
    match = _SIZE.match(text.strip())
    if not match:
        raise KcheckError(f"--min-free {text}: not a size; pass e.g. 20G, 512M or 0")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


def default_targets(machine: str | None = None) -> tuple[str, ...]:
    """The machine's kernel image (arch.toml), and modules."""
    from kcheck.builder.arch import arch_facts

    return (arch_facts(machine).image, "modules")


def default_workdir(job: str = "build") -> Path:
    """/var/tmp for root (lab hosts build as root), else the user's cache directory."""
    if os.geteuid() == 0:
        return Path(f"/var/tmp/kcheck-{job}")
    return Path(user_cache_dir(), job)


@dataclass(frozen=True)
class BuildOptions:
    """One run's choices; saved in the state file so --continue replays them exactly."""

    workdir: Path
    tree: Path | None = None
    repo: str | None = None
    branch: str | None = None
    reference: Path | None = None
    blob_filter: bool = True
    upstream: str | None = None
    catalog: Path | None = None
    patchsets: tuple[str, ...] = ()
    config: str = "running"
    localmodconfig: bool = False
    settings: tuple[ConfigSetting, ...] = ()
    localversion: str = DEFAULT_LOCALVERSION
    jobs: int = 1
    targets: tuple[str, ...] = ()
    cc_wrapper: str | None = None
    distcc: str | None = None  # --distcc HOSTS, as given (DISTCC_HOSTS syntax)
    distcc_degraded: bool = False
    install: bool = False
    install_root: Path | None = None  # install into this node image instead of the host
    reboot: bool = False
    yes: bool = False
    min_free: int = DEFAULT_MIN_FREE
    verify: bool = False
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT
    force: bool = False

    @property
    def installs(self) -> bool:
        """--install (this host) or --install-root (a node image)."""
        return self.install or self.install_root is not None

    def __post_init__(self) -> None:
        if self.tree is not None and self.repo is not None:
            raise KcheckError("--tree and --repo both given; pass one source")
        if self.branch is not None and self.repo is None:
            raise KcheckError(
                f"--branch {self.branch}: only used with --repo; check out the branch in --tree"
            )
        if self.reference is not None and self.repo is None:
            raise KcheckError(f"--reference {self.reference}: only used with --repo, to clone; drop it")
        if not self.blob_filter and self.repo is None:
            raise KcheckError("--no-filter: only used with --repo, to clone; drop it")
        for option, value in (
            ("--repo", self.repo),
            ("--branch", self.branch),
            ("--upstream", self.upstream),
        ):
            if value is not None and not _PLAIN_ARG.match(value):
                raise KcheckError(f"{option} {value!r}: must not start with '-' or contain spaces")
        if self.install and self.install_root is not None:
            raise KcheckError(
                f"--install and --install-root {self.install_root}: pick one (this host, or the image)"
            )
        if self.force and not (self.verify and self.installs):
            raise KcheckError("--force only overrides --install's refusal after --verify; drop it")
        if self.reboot and not self.install:
            raise KcheckError("--reboot needs --install: kcheck reboots only into a kernel it installed")
        if self.jobs < 1:
            raise KcheckError(f"--jobs {self.jobs}: must be 1 or more")
        if not self.targets:
            raise KcheckError("--targets: give at least one make target, e.g. --targets bzImage")
        for target in self.targets:
            if not _PLAIN_ARG.match(target) or "=" in target:
                raise KcheckError(f"--targets {target!r}: not a make target name")
        if self.cc_wrapper is not None:
            words = self.cc_wrapper.split()
            if not words or any(w not in CC_WRAPPERS for w in words) or len(set(words)) != len(words):
                raise KcheckError(f'--cc-wrapper {self.cc_wrapper!r}: use ccache, distcc or "ccache distcc"')
        if self.distcc is not None:
            parse_hosts(self.distcc)
            if "distcc" in (self.cc_wrapper or "").split():
                raise KcheckError(
                    f"--cc-wrapper {self.cc_wrapper!r} with --distcc: --distcc puts distcc in itself; "
                    "pass --cc-wrapper ccache, or no --cc-wrapper"
                )
        elif self.distcc_degraded:
            raise KcheckError("--distcc-degraded: only with --distcc HOSTS; drop it, or pass --distcc")
        check_localversion(self.localversion, "--localversion")

    @property
    def cc(self) -> str | None:
        """The CC= make variable for --cc-wrapper: the wrappers, then the compiler. --distcc comes
        last: after ccache it is ccache's CCACHE_PREFIX (the make environment), so cache hits
        never leave this machine."""
        if self.cc_wrapper:
            return f"{self.cc_wrapper} gcc"
        return "distcc gcc" if self.distcc is not None else None

    @property
    def wrapper_tools(self) -> str | None:
        """The compiler wrappers that must be installed: --cc-wrapper's, and distcc for --distcc."""
        words = (self.cc_wrapper or "").split() + (["distcc"] if self.distcc is not None else [])
        return " ".join(words) or None

    def to_json(self) -> dict:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        data["settings"] = [f"CONFIG_{s.name}={s.value}" for s in self.settings]
        return data

    @classmethod
    def from_json(cls, data: dict) -> BuildOptions:
        paths = {"workdir", "tree", "reference", "catalog", "install_root"}
        values = {}
        for field in fields(cls):
            value = data.get(field.name, field.default)  # state files from before a field existed
            if field.name in paths and value is not None:
                value = Path(value)
            elif field.name == "settings":
                value = tuple(parse_setting(text) for text in value)
            elif isinstance(value, list):
                value = tuple(value)
            values[field.name] = value
        return cls(**values)
