"""Reading a node image (an unpacked or mounted root) for the offline probe."""

from __future__ import annotations

import os

from kcheck.core.files import CHANGELOG_LIMIT, CorruptGzip, read_maybe_gzipped
from kcheck.core.release import is_release, parse_release
from kcheck.errors import KcheckError

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from pathlib import Path  # --root DIR is a Path (kcheck.core.args); the live probe needs none
    from typing import Any

    from kcheck.probe.observe import ProbeContext

MODULE_DIRS = ("lib/modules", "usr/lib/modules")
# Debian and Ubuntu ship the kernel package's changelog here (Ubuntu often under linux-modules).
CHANGELOG_PATTERNS = (
    "usr/share/doc/linux-image-{release}/changelog.Debian.gz",
    "usr/share/doc/linux-modules-{release}/changelog.Debian.gz",
    "usr/share/doc/linux-image-{release}/changelog.gz",
)


SYMLINK_HOPS = 40  # the kernel's own limit


def image_path(root: Path, relative: str) -> Path:
    """Where RELATIVE is inside the image, resolved as if root were "/": an absolute symlink
    points into the image, and ".." stops at its root. Nothing is read from the host."""
    pending = [part for part in relative.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            is_link = candidate.is_symlink()
        except OSError as exc:
            raise KcheckError(
                f"--root {root}: cannot read /{relative} in the image ({exc.strerror})"
            ) from None
        if not is_link:
            resolved.append(part)
            continue
        hops += 1
        if hops > SYMLINK_HOPS:
            raise KcheckError(f"--root {root}: /{relative} is a symlink loop in the image; fix the image")
        target = str(candidate.readlink())
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return root.joinpath(*resolved)


def _is_kernel(root: Path, relative: str) -> bool:
    try:
        return image_path(root, relative).is_file()
    except KcheckError:
        return False  # a vmlinuz link loop is no kernel


def image_releases(root: Path) -> list[str]:
    """Kernel releases the image holds: boot/vmlinuz-R and module trees, newest first."""
    if not root.is_dir():
        raise KcheckError(f"--root {root}: not a directory; pass an unpacked or mounted image root")
    try:
        boot = image_path(root, "boot")
        releases = {
            path.name.removeprefix("vmlinuz-")
            for path in boot.glob("vmlinuz-*")
            if _is_kernel(root, f"boot/{path.name}")
        }
        for modules in MODULE_DIRS:
            directory = image_path(root, modules)
            if directory.is_dir():
                releases.update(
                    path.name
                    for path in directory.iterdir()
                    if image_path(root, f"{modules}/{path.name}").is_dir()
                )
    except OSError as exc:
        raise KcheckError(f"--root {root}: cannot read the image's kernels ({exc.strerror})") from None
    releases = {release for release in releases if is_release(release)}  # names, not junk
    if not releases:
        raise KcheckError(
            f"--root {root}: no kernel found (no boot/vmlinuz-*, lib/modules/* or usr/lib/modules/*); "
            "pass the root of an image that has a kernel"
        )

    def newest_first(release: str) -> tuple:
        parsed = parse_release(release)
        return (parsed is not None, parsed.version if parsed else None, release)

    return sorted(releases, key=newest_first, reverse=True)


def default_release(root: Path, releases: list[str]) -> str:
    """The kernel the image boots by default: the vmlinuz link's target, else the newest."""
    for link in (image_path(root, "boot") / "vmlinuz", root / "vmlinuz"):
        if link.is_symlink():
            target = os.path.basename(link.readlink()).removeprefix("vmlinuz-")
            if target in releases:
                return target
    return releases[0]


def select_release(root: Path, release: str | None) -> tuple[str, tuple[str, ...]]:
    """The image kernel to judge (--release, else the default) and the others it holds."""
    releases = image_releases(root)
    if release is not None and release not in releases:
        raise KcheckError(f"--release {release}: not in {root}; the image has {', '.join(releases)}")
    chosen = release or default_release(root, releases)
    return chosen, tuple(r for r in releases if r != chosen)


def observe_image(ctx: ProbeContext) -> dict[str, Any]:
    """The evidence about a kernel that is not running: its kcheck build record (in the image
    with --root, else in this host's state directory) and the image's kernel changelog."""
    from kcheck.core.buildrecord import BUILD_RECORD_DIR, host_records_dir, load_record, record_file

    found: dict[str, Any] = {}
    if ctx.root is None:
        record_path = record_file(host_records_dir(), ctx.release)
    else:
        record_path = image_path(ctx.root, f"{BUILD_RECORD_DIR}/{ctx.release}.json")
    if record_path.is_file():
        found["record_path"] = str(record_path)
        record, error = load_record(record_path)
        if error is not None:
            found["record_error"] = error
        else:
            found["record"] = record
    if ctx.root is None:
        return found
    for pattern in CHANGELOG_PATTERNS:
        path = image_path(ctx.root, pattern.format(release=ctx.release))
        if path.is_file():
            try:
                text = read_maybe_gzipped(path, CHANGELOG_LIMIT).decode("utf-8", errors="replace")
            except (OSError, CorruptGzip) as exc:
                found["changelog_error"] = f"{path}: {exc}"
                continue
            found.update(changelog_path=str(path), changelog=text)
            break
    return found
