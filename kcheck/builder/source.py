"""Where the distro kernel comes from: --tree, --repo, or the distro's git derived from os-release."""

from __future__ import annotations

import shlex
from pathlib import Path

from kcheck.errors import KcheckError

OS_RELEASE_FILES = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
# Ubuntu publishes each series' kernel as a git repository on Launchpad.
UBUNTU_KERNEL_GIT = "https://git.launchpad.net/~ubuntu-kernel/ubuntu/+source/linux/+git/{codename}"


def parse_os_release(text: str) -> dict[str, str]:
    """os-release KEY=value lines (values may be shell-quoted)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            fields[key.strip()] = words[0] if words else ""
    return fields


def distro_kernel_repo(os_release: dict[str, str]) -> str:
    """The git URL of the running distro's kernel; KcheckError asking for --repo without one."""
    distro = os_release.get("ID", "unknown")
    codename = os_release.get("VERSION_CODENAME") or os_release.get("UBUNTU_CODENAME")
    if distro == "ubuntu" and codename:
        return UBUNTU_KERNEL_GIT.format(codename=codename)
    name = os_release.get("PRETTY_NAME") or distro
    raise KcheckError(
        f"no known kernel git repository for {name}; pass --repo URL (and --branch), or --tree PATH"
    )


def read_os_release() -> dict[str, str]:
    for path in OS_RELEASE_FILES:
        try:
            return parse_os_release(path.read_text())
        except OSError:
            continue
    return {}
