"""build-kernel --verify: the new kernel is booted under QEMU and probed before --install."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import requires_root
from kbuild_fixtures import VM_BUILD, build, build_fake_kernel, cached_vm_kernel, workdir_json


@pytest.fixture
def install_env(tmp_path) -> dict[str, str]:
    return {
        "INSTALL_PATH": str(tmp_path / "boot"),
        "INSTALL_MOD_PATH": str(tmp_path / "root"),
        "KCHECK_STATE_DIR": str(tmp_path / "state"),
    }


@requires_root  # --install
def test_install_refuses_a_kernel_that_did_not_verify_unless_forced(tmp_path, install_env):
    # The fake tree's bzImage is not a kernel: the VM cannot boot it, so it is not verified ready.
    kernel = build_fake_kernel(tmp_path / "fake")
    done = build(kernel, "--verify", "--install", env=install_env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[install] refused: the verified kernel is undecided" in done.stderr
    assert "not a bootable x86 kernel image" in done.stderr
    assert "pass --force to install it anyway" in done.stderr
    assert not (tmp_path / "boot").exists() and not (tmp_path / "state").exists()
    stages = workdir_json(kernel, "metadata.json")["stages"]
    assert stages["verify"]["status"] == "done"

    forced = build(kernel, "--verify", "--install", "--force", env=install_env, stdin=subprocess.DEVNULL)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "[verify] done in a previous run: undecided" in forced.stdout
    assert "[install] warning: --force: installing a kernel verified undecided" in forced.stdout
    assert (tmp_path / "boot/vmlinuz-3.19.0-kcheck").is_file()


def test_force_without_verify_is_bad_input(tmp_path):
    kernel = build_fake_kernel(tmp_path / "fake")
    done = build(kernel, "--install", "--force")
    assert done.returncode == 3
    assert "--force only overrides --install's refusal after --verify" in done.stderr


def test_dry_run_shows_the_verification(tmp_path):
    kernel = build_fake_kernel(tmp_path / "fake")
    done = build(kernel, "--verify", "--install", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"kcheck probe --boot {kernel.distro}/arch/x86/boot/bzImage" in done.stdout
    assert "--install then refuses it unless its report is ready" in done.stdout


@requires_root  # --install
@pytest.mark.slow
def test_a_kernel_that_boots_ready_is_verified_then_installed(tmp_path, install_env):
    """The fake tree's `make bzImage` hands over the real 6.1 kernel of the VM tests, with its
    config: a real boot, a real probe inside, and then the install goes ahead."""
    image = cached_vm_kernel()
    kernel = build_fake_kernel(tmp_path / "fake")
    env = {**install_env, "FAKE_BOOTABLE_IMAGE": str(image)}
    done = build(
        kernel,
        "--verify",
        "--install",
        "--config",
        str(VM_BUILD / ".config"),
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[verify] ready: kernel 6.1." in done.stdout
    report = json.loads((kernel.root / "work" / "verify.json").read_text())
    assert report["mode"] == "vm" and report["verdict"] == "ready"
    assert (tmp_path / "boot/vmlinuz-3.19.0-kcheck").read_bytes() == image.read_bytes()
    assert os.path.isfile(tmp_path / "state/builds/3.19.0-kcheck.json")
