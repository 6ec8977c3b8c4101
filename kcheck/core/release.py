"""Kernel release and version parsing.

Kernel versions are not PEP 440 (``4.2.0-rc2``, ``3.19.0-15-generic``), so they get
their own small, total parser: anything it cannot read is ``None`` or ``ValueError``,
never a wrong version.
"""

from __future__ import annotations

import re
from collections import namedtuple

# Patterns are strings, compiled by re's cache on first use: the probe compiles only what it uses.
_RELEASE = r"^(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?(?:-rc(\d{1,3}))?(.*)$"
MAX_RELEASE = 64  # the kernel's __NEW_UTS_LEN: `uname -r` holds at most this many characters
# A release as `uname -r` prints it; it names files (boot/config-R), so no '/' and no whitespace.
_RELEASE_NAME = rf"[A-Za-z0-9][A-Za-z0-9._+~-]{{0,{MAX_RELEASE - 1}}}"
FINAL = 1 << 30  # rc_order of a final release: it sorts after every release candidate


def is_release(text: str) -> bool:
    """Whether `text` is a kernel release as `uname -r` prints it."""
    return re.fullmatch(_RELEASE_NAME, text) is not None


class KernelVersion(
    namedtuple("KernelVersion", ("major", "minor", "patch", "rc_order"), defaults=(0, FINAL))
):
    """major.minor.patch (ints), with an optional -rcN (rc_order) that sorts before the final
    release: a named tuple, so versions order as their fields do."""

    __slots__ = ()

    @property
    def rc(self) -> int | None:
        return None if self.rc_order == FINAL else self.rc_order

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return text if self.rc is None else f"{text}-rc{self.rc}"


class KernelRelease(namedtuple("KernelRelease", ("raw", "version", "local"))):
    """A parsed `uname -r` string (raw): its KernelVersion plus the distro/local suffix."""

    __slots__ = ()


def parse_version(text: str) -> KernelVersion:
    """Parse '4.2', '3.19.0' or '4.2-rc2'; raise ValueError on anything else."""
    match = re.match(_RELEASE, text.strip())
    if not match or match.group(5):
        raise ValueError(f"not a kernel version: {text!r} (expected e.g. 4.2 or 3.19.0)")
    return _version_from(match)


def parse_release(text: str) -> KernelRelease | None:
    """Parse a release such as '6.1.0-28-amd64'; None when it does not start with a version."""
    raw = text.strip()
    match = re.match(_RELEASE, raw)
    if not match:
        return None
    return KernelRelease(raw=raw, version=_version_from(match), local=match.group(5))


def _version_from(match: re.Match[str]) -> KernelVersion:
    major, minor, patch, rc = match.group(1, 2, 3, 4)
    version = KernelVersion(int(major), int(minor), int(patch or 0))
    if rc is not None:
        version = KernelVersion(version.major, version.minor, version.patch, int(rc))
    return version


_MAKEFILE_VAR = r"(?m)^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=[ \t]*(\S*)"


def version_from_makefile(text: str) -> KernelRelease:
    """The version a kernel tree's top-level Makefile declares; ValueError if it declares none."""
    fields = dict(re.findall(_MAKEFILE_VAR, text))
    if not fields.get("VERSION", "").isdigit() or not fields.get("PATCHLEVEL", "").isdigit():
        raise ValueError("Makefile has no numeric VERSION and PATCHLEVEL: not a kernel tree")
    sublevel = fields.get("SUBLEVEL") or "0"
    raw = f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{sublevel}{fields.get('EXTRAVERSION', '')}"
    release = parse_release(raw)
    if release is None:
        raise ValueError(f"Makefile declares an unreadable version {raw!r}")
    return release
