"""A real Debian 12 node image for the CI-gate tests.

`debootstrap --variant=minbase` of bookworm with Debian's `linux-image-amd64`, from the mirror
this machine's apt sources name, built once as root and cached beside the test kernels. The
kernel version is not pinned: it moves with Debian's point releases, and the tests read the
release the image got.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
from pathlib import Path

from kbuild_fixtures import KERNEL_TEST_CACHE

SUITE = "bookworm"
PACKAGES = ("linux-image-amd64",)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
IMAGE_CACHE = KERNEL_TEST_CACHE / f"debian-{SUITE}-image"
_BUILT_FROM = "kcheck-image-built-from"  # beside the root, written last
_LOCK = KERNEL_TEST_CACHE / ".debian-image.lock"
APT_SOURCES = Path("/etc/apt")


def apt_mirror(sources: Path = APT_SOURCES, suite: str = SUITE) -> str:
    """The first mirror the apt sources name for `suite` (deb822 .sources or one-line .list),
    else deb.debian.org."""
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
            wanted = "deb" in fields.get("Types", "").split() and suite in fields.get("Suites", "").split()
            if wanted and fields.get("Enabled", "yes").strip().lower() != "no" and fields.get("URIs"):
                return fields["URIs"].split()[0]
    lists = [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()  # drop [signed-by=...] options
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    return DEFAULT_MIRROR


def cached_debian_image() -> Path:
    """The image root, debootstrapped once (about a minute here), then reused by later runs."""
    root = IMAGE_CACHE / "root"
    marker = IMAGE_CACHE / _BUILT_FROM
    key = f"{SUITE} minbase {' '.join(PACKAGES)}\n"
    if marker.is_file() and marker.read_text() == key:
        return root
    KERNEL_TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == key:
            return root
        shutil.rmtree(IMAGE_CACHE, ignore_errors=True)
        IMAGE_CACHE.mkdir(parents=True)
        log = IMAGE_CACHE / "debootstrap.log"
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root)]
        with open(log, "w") as output:
            done = subprocess.run([*argv, apt_mirror()], stdout=output, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{' '.join(argv)} failed (exit {done.returncode}):\n{tail}")
        marker.write_text(key)
    return root


def image_release(root: Path) -> str:
    """The release the image boots by default (Debian's /vmlinuz link)."""
    return (root / "vmlinuz").readlink().name.removeprefix("vmlinuz-")


def linked_copy(root: Path, dest: Path) -> Path:
    """A copy of the image whose files are hard links: seconds, not a 750 MB copy. Change a
    file in it only by replacing it (unlink, then write), never in place."""
    subprocess.run(["cp", "-al", str(root), str(dest)], check=True)
    return dest


def replace_file(path: Path, text: str | None) -> None:
    """Replace (or with None remove) a file of a linked copy without touching the cached image."""
    path.unlink()
    if text is not None:
        path.write_text(text)
