"""Checks before any work: root for --install, build tools, free disk, a clean tree.

Each refusal is one KcheckError line (exit 3) that names what is wrong and the fix.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from kcheck.builder.options import human_size
from kcheck.core.buildrecord import BUILD_RECORD_DIR
from kcheck.errors import KcheckError


@dataclass(frozen=True)
class Requirement:
    """A tool on PATH, or a header under /usr/include, and the packages that provide it."""

    name: str
    apt: str
    dnf: str
    header: str | None = None  # checked instead of PATH when set

    def present(self) -> bool:
        if self.header is not None:
            return Path("/usr/include", self.header).is_file()
        return shutil.which(self.name) is not None


BUILD_REQUIREMENTS = (
    Requirement("git", "git", "git"),
    Requirement("gcc", "gcc", "gcc"),
    Requirement("make", "make", "make"),
    Requirement("flex", "flex", "flex"),
    Requirement("bison", "bison", "bison"),
    Requirement("bc", "bc", "bc"),
    Requirement("perl", "perl", "perl"),
    Requirement("libelf headers", "libelf-dev", "elfutils-libelf-devel", header="gelf.h"),
    Requirement("openssl headers", "libssl-dev", "openssl-devel", header="openssl/opensslv.h"),
)
WRAPPER_REQUIREMENTS = {
    "ccache": Requirement("ccache", "ccache", "ccache"),
    "distcc": Requirement("distcc", "distcc", "distcc"),
}


def check_root(euid: int) -> None:
    if euid != 0:
        raise KcheckError(
            "--install needs root (it writes /boot and /lib/modules); rerun with sudo, "
            "or drop --install to build only"
        )


# Where --install-root writes in the image; each must stay inside it.
INSTALL_ROOT_PLACES = ("boot", "lib/modules", BUILD_RECORD_DIR)


def check_install_root(root: Path) -> None:
    """An image directory whose install places lead nowhere else: an absolute symlink such as
    boot -> /boot would install into this host."""
    if not root.is_dir():
        raise KcheckError(f"--install-root {root}: not a directory; pass an unpacked node image root")
    real_root = root.resolve()
    for place in INSTALL_ROOT_PLACES:
        real = (root / place).resolve()
        if real != real_root and real_root not in real.parents:
            raise KcheckError(
                f"--install-root {root}: /{place} leads out of the image (to {real}); "
                "make its links relative, or unpack the image so they stay inside"
            )


def missing_requirements(cc_wrapper: str | None) -> list[Requirement]:
    wanted = list(BUILD_REQUIREMENTS)
    wanted += [WRAPPER_REQUIREMENTS[word] for word in (cc_wrapper or "").split()]
    return [req for req in wanted if not req.present()]


def check_tools(cc_wrapper: str | None) -> None:
    refuse_missing(missing_requirements(cc_wrapper))


def refuse_missing(missing: list[Requirement], what: str = "build tools") -> None:
    """One line naming what is missing and the one install command that brings it."""
    if not missing:
        return
    apt = "apt-get install " + " ".join(req.apt for req in missing)
    dnf = "dnf install " + " ".join(req.dnf for req in missing)
    if shutil.which("apt-get"):
        how = apt
    elif shutil.which("dnf"):
        how = dnf
    else:
        how = f"{apt} (or: {dnf})"
    raise KcheckError(f"missing {what}: {', '.join(r.name for r in missing)}; install them: {how}")


def existing_ancestor(path: Path) -> Path:
    """The path itself or its nearest existing parent: where a new directory's bytes will go."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_free_space(places: dict[str, Path], min_free: int) -> None:
    """Each place (`--workdir`, `--tree`) must have `min_free` bytes free."""
    for option, path in places.items():
        free = shutil.disk_usage(existing_ancestor(path)).free
        if free < min_free:
            raise KcheckError(
                f"{option} {path}: {human_size(free)} free, --min-free asks for {human_size(min_free)}; "
                f"free some space, build elsewhere, or lower --min-free"
            )


def in_progress_operation(git_dir: Path) -> str | None:
    """The git operation a tree is in the middle of (its own, or a user's), if any."""
    markers = {
        "CHERRY_PICK_HEAD": "cherry-pick",
        "MERGE_HEAD": "merge",
        "REVERT_HEAD": "revert",
        "rebase-merge": "rebase",
        "rebase-apply": "rebase or am",
        "BISECT_LOG": "bisect",
    }
    for name, operation in markers.items():
        if (git_dir / name).exists():
            return operation
    return None


def check_clean(tree: Path, changed: list[str], operation: str | None) -> None:
    if operation is not None:
        raise KcheckError(
            f"--tree {tree}: a git {operation} is in progress; finish or abort it (git status says how)"
        )
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise KcheckError(
            f"--tree {tree} has uncommitted changes ({shown}); commit or stash them (git stash) first"
        )
