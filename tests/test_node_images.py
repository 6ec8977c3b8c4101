"""The CI gate on a real node image: Debian 12 debootstrapped with Debian's own
linux-image-amd64 (node_images.py), gated offline, and booted with its own modular kernel.

The image is built once as root (debootstrap) and cached; copies are hard-linked, so each
test changes only the files it replaces, never the cached image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import run_kcheck
from gitrepos import catalog_commit, patchset, write_catalog
from kbuild_fixtures import STOCK_VM_LIVE_RESULTS, live_results
from node_images import apt_mirror, cached_debian_image, image_release, linked_copy, replace_file

LIVE_ONLY_FIXES = ("overlayfs.mnt_id", "overlayfs.fd_path", "aio.ring_remap", "aio.reopen_enxio")
# A real upstream fix that Debian backported to 6.1 through a stable update, and so names in the
# kernel package's changelog; it was merged for v6.8, so a 6.1 release alone does not imply it.
AIO_CANCEL_FIX = catalog_commit(
    "b820de741ae48ccf50dd95e297889c286ff4f760",
    "fs/aio: Restrict kiocb_set_cancel_fn() to I/O submitted via libaio",
    tag="v6.8-rc6",
)


@pytest.fixture(scope="module")
def image() -> Path:
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root (CI runs as root)")
    return cached_debian_image()


def probe(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    done = run_kcheck("probe", *args, "--format", "json", timeout=timeout)
    return done, json.loads(done.stdout)


def checks(report: dict) -> dict[str, dict]:
    return {check["id"]: check for check in report["checks"]}


# --- the mirror (pure) --------------------------------------------------------------------


def test_the_mirror_is_the_one_the_apt_sources_name(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    assert apt_mirror(tmp_path) == "http://deb.debian.org/debian"  # nothing named: Debian's own
    (tmp_path / "sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example/debian bookworm main\n"
    )
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://deb822.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert apt_mirror(tmp_path) == "http://deb822.example/debian"  # deb822 first, the exact suite


# --- offline ------------------------------------------------------------------------------


def test_a_debian_image_is_ready_offline_and_the_version_decides_its_fixes(image):
    release = image_release(image)
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", release), release
    done, report = probe("--root", str(image))
    assert done.returncode == 0 and report["verdict"] == "ready", done.stdout
    assert (report["mode"], report["kernel"]["release"]) == ("offline", release)
    by_id = checks(report)
    # The changelog names these commits too, but 6.1.0 holds them all: the version decided.
    for check_id in LIVE_ONLY_FIXES:
        check = by_id[check_id]
        assert (check["status"], check["evidence"]) == ("pass", "version"), check
        assert check["detail"].startswith("not observed live (judged offline); kernel 6.1.0 >= ")
    config = by_id["config.CHECKPOINT_RESTORE"]
    assert (config["status"], config["evidence"]) == ("pass", "config")
    assert config["detail"] == f"CONFIG_CHECKPOINT_RESTORE=y in {image}/boot/config-{release}"
    assert by_id["criu.check"]["status"] == "skip"


def test_a_copy_without_checkpoint_restore_is_not_ready(image, tmp_path):
    release = image_release(image)
    copy = linked_copy(image, tmp_path / "image")
    config = copy / f"boot/config-{release}"
    text = config.read_text()
    assert "\nCONFIG_CHECKPOINT_RESTORE=y\n" in text
    replace_file(
        config, text.replace("\nCONFIG_CHECKPOINT_RESTORE=y\n", "\n# CONFIG_CHECKPOINT_RESTORE is not set\n")
    )
    done, report = probe("--root", str(copy))
    assert done.returncode == 1 and report["verdict"] == "not-ready"
    failing = [c["id"] for c in report["checks"] if c["required"] and c["status"] == "fail"]
    assert failing == ["config.CHECKPOINT_RESTORE"]
    assert "\nCONFIG_CHECKPOINT_RESTORE=y\n" in (image / f"boot/config-{release}").read_text()  # cache intact


def test_a_copy_without_a_config_is_undecided(image, tmp_path):
    release = image_release(image)
    copy = linked_copy(image, tmp_path / "image")
    replace_file(copy / f"boot/config-{release}", None)
    done, report = probe("--root", str(copy))
    assert done.returncode == 2 and report["verdict"] == "undecided"
    assert checks(report)["config.CHECKPOINT_RESTORE"]["status"] == "unknown"
    assert all(
        checks(report)[i]["status"] == "pass" for i in LIVE_ONLY_FIXES
    )  # the version still decides those
    assert (image / f"boot/config-{release}").is_file()


def test_the_debian_changelog_decides_a_fix_the_version_lacks(image, tmp_path):
    release = image_release(image)
    changelog = image / f"usr/share/doc/linux-image-{release}/changelog.gz"
    aio = ["--check", "aio.ring_remap", "--check", "aio.reopen_enxio"]
    fixes = ["aio.ring_remap", "aio.reopen_enxio"]
    named = write_catalog(
        tmp_path / "named",
        patchset(
            "kcheck-test-aio-cancel", [AIO_CANCEL_FIX], fixes=fixes, needed_from="4.18", needed_below="6.8"
        ),
    )
    done, report = probe("--root", str(image), "--catalog", str(named), *aio)
    assert done.returncode == 0, done.stdout
    for check in report["checks"]:
        assert (check["status"], check["evidence"]) == ("pass", "tree"), check
        assert check["detail"] == (
            f"changelog {changelog} names every kcheck-test-aio-cancel commit the 6.1.0 release lacks"
        )
    unnamed = catalog_commit(
        "0123456789abcdef0123456789abcdef01234567", "aio: a fix Debian never shipped", tag="v6.8-rc6"
    )
    lacking = write_catalog(
        tmp_path / "lacking",
        patchset(
            "kcheck-test-aio-cancel",
            [AIO_CANCEL_FIX, unnamed],
            fixes=fixes,
            needed_from="4.18",
            needed_below="6.8",
        ),
    )
    done, report = probe("--root", str(image), "--catalog", str(lacking), *aio)
    assert done.returncode == 2 and report["verdict"] == "undecided"
    for check in report["checks"]:
        assert check["status"] == "unknown"
        assert "changelog lacks 0123456789 'aio: a fix Debian never shipped'" in check["detail"]
        assert "b820de741a" not in check["detail"]  # the one it names is not reported missing


# --- booted ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_images_own_modular_kernel_boots_and_is_probed_live(image):
    """virtme-ng boots Debian's kernel with the image's modules; the image is not changed."""
    release = image_release(image)
    modules = (image / "lib/modules" / release).resolve()
    index = modules / "modules.dep"
    before = index.stat().st_mtime_ns
    done, report = probe("--boot", "--root", str(image), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (report["mode"], report["kernel"]["release"], report["verdict"]) == ("vm", release, "ready")
    boot = report["kernel"]["boot"]
    assert (boot["kernel"], boot["modules"]) == (str(image / f"boot/vmlinuz-{release}"), str(modules))
    print(f"boot and probe of {release}: {boot['seconds']} s ({boot['accelerator']})")
    assert live_results(report) == STOCK_VM_LIVE_RESULTS  # 6.1: every required live check passes
    # criu check needs the socket-diag modules (=m here, and not among those virtme-ng puts in
    # its initramfs): they were loaded from the image's own module directory.
    assert checks(report)["criu.check"]["status"] == "pass", checks(report)["criu.check"]
    assert index.stat().st_mtime_ns == before
