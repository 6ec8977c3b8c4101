"""Kernel release and version parsing.

Kernel versions are not PEP 440 (``4.2.0-rc2``, ``3.19.0-15-generic``), so they get
their own small, total parser: anything it cannot read is ``None`` or ``ValueError``,
never a wrong version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RELEASE = re.compile(r"^(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?(?:-rc(\d{1,3}))?(.*)$")
MAX_RELEASE = 64  # the kernel's __NEW_UTS_LEN: `uname -r` holds at most this many characters
# A release as `uname -r` prints it; it names files (boot/config-R), so no '/' and no whitespace.
RELEASE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+~-]{{0,{MAX_RELEASE - 1}}}")


@dataclass(frozen=True, order=True)
class KernelVersion:
    """major.minor.patch, with an optional -rcN that sorts before the final release."""

    major: int
    minor: int
    patch: int = 0
    # Sort key for the release candidate: a final release is "infinitely" late.
    rc_order: int = 1 << 30

    @property
    def rc(self) -> int | None:
        return None if self.rc_order == 1 << 30 else self.rc_order

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return text if self.rc is None else f"{text}-rc{self.rc}"


@dataclass(frozen=True)
class KernelRelease:
    """A parsed `uname -r` string: its version plus the distro/local suffix."""

    raw: str
    version: KernelVersion
    local: str


def parse_version(text: str) -> KernelVersion:
    """Parse '4.2', '3.19.0' or '4.2-rc2'; raise ValueError on anything else."""
    match = _RELEASE.match(text.strip())
    if not match or match.group(5):
        raise ValueError(f"not a kernel version: {text!r} (expected e.g. 4.2 or 3.19.0)")
    return _version_from(match)


def parse_release(text: str) -> KernelRelease | None:
    """Parse a release such as '6.1.0-28-amd64'; None when it does not start with a version."""
    raw = text.strip()
    match = _RELEASE.match(raw)
    if not match:
        return None
    return KernelRelease(raw=raw, version=_version_from(match), local=match.group(5))


def _version_from(match: re.Match[str]) -> KernelVersion:
    major, minor, patch, rc = match.group(1, 2, 3, 4)
    version = KernelVersion(int(major), int(minor), int(patch or 0))
    if rc is not None:
        version = KernelVersion(version.major, version.minor, version.patch, int(rc))
    return version


_MAKEFILE_VAR = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=[ \t]*(\S*)", re.M)


def version_from_makefile(text: str) -> KernelRelease:
    """The version a kernel tree's top-level Makefile declares; ValueError if it declares none."""
    fields = dict(_MAKEFILE_VAR.findall(text))
    if not fields.get("VERSION", "").isdigit() or not fields.get("PATCHLEVEL", "").isdigit():
        raise ValueError("Makefile has no numeric VERSION and PATCHLEVEL: not a kernel tree")
    sublevel = fields.get("SUBLEVEL") or "0"
    raw = f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{sublevel}{fields.get('EXTRAVERSION', '')}"
    release = parse_release(raw)
    if release is None:
        raise ValueError(f"Makefile declares an unreadable version {raw!r}")
    return release
