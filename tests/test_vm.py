"""`kcheck probe --boot`: a real kernel booted under QEMU with virtme-ng, probed inside.

The kernel is Debian's linux-source-6.1 built with the config `vng --kconfig` writes (plus the
options CRIU needs), out of the tree cached by the build-kernel tests, and cached itself, so
later runs of the suite reuse it. The first build takes about 12 minutes here.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import run_kcheck
from kbuild_fixtures import STOCK_VM_LIVE_RESULTS, cached_vm_kernel, live_results

from kcheck.core.kconfig import parse_kconfig
from kcheck.core.report import report_dict, report_from_dict
from kcheck.probe.vm import (
    BootPlan,
    console_summary,
    embedded_release,
    find_kernel_config,
    guest_command,
    missing_vm_support,
    read_guest_report,
    stage_inputs,
    vng_argv,
)


@pytest.fixture(scope="session")
def vm_kernel() -> Path:
    return cached_vm_kernel()


# --- pure parts ---------------------------------------------------------------------------


def test_vm_support_names_what_is_missing():
    options = parse_kconfig("CONFIG_VIRTIO_PCI=y\nCONFIG_DEVTMPFS=y\nCONFIG_TMPFS=y\n")
    missing = missing_vm_support(options)
    assert missing == [
        "host filesystem export (CONFIG_NET_9P=y+CONFIG_NET_9P_VIRTIO=y+CONFIG_9P_FS=y or "
        "CONFIG_FUSE_FS=y+CONFIG_VIRTIO_FS=y)",
        "serial console (CONFIG_SERIAL_8250=y+CONFIG_SERIAL_8250_CONSOLE=y)",
    ]
    options.update(
        {
            "CONFIG_FUSE_FS": "y",
            "CONFIG_VIRTIO_FS": "y",
            "CONFIG_SERIAL_8250": "y",
            "CONFIG_SERIAL_8250_CONSOLE": "y",
        }
    )
    assert missing_vm_support(options) == []


# What a distro kernel has as modules (Debian 6.1's config): enough only with its modules at hand.
DISTRO_VM_CONFIG = (
    "CONFIG_VIRTIO_PCI=m\nCONFIG_NET_9P=m\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_9P_FS=m\n"
    "CONFIG_SERIAL_8250=y\nCONFIG_SERIAL_8250_CONSOLE=y\nCONFIG_DEVTMPFS=y\nCONFIG_TMPFS=y\n"
)


def test_modules_serve_the_vm_only_when_the_kernel_has_its_module_directory():
    options = parse_kconfig(DISTRO_VM_CONFIG)
    assert missing_vm_support(options, modular=True) == []
    assert [need.split(" (")[0] for need in missing_vm_support(options)] == [
        "virtio transport",
        "host filesystem export",
    ]
    del options["CONFIG_9P_FS"]
    assert missing_vm_support(options, modular=True) == [
        "host filesystem export (CONFIG_NET_9P=y/m+CONFIG_NET_9P_VIRTIO=y/m+CONFIG_9P_FS=y/m or "
        "CONFIG_FUSE_FS=y/m+CONFIG_VIRTIO_FS=y/m)"
    ]


def x86_kernel(path: Path, release: str | None) -> Path:
    """A file with an x86 boot header whose kernel_version field points at `release`'s banner."""
    image = bytearray(0x400)
    image[0x202:0x206] = b"HdrS"
    if release is not None:
        image[0x20E:0x210] = (0x300 - 0x200).to_bytes(2, "little")
        banner = f"{release} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\0".encode()
        image[0x300 : 0x300 + len(banner)] = banner
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(image))
    return path


def test_the_release_is_read_from_the_kernels_boot_header(tmp_path):
    assert embedded_release(x86_kernel(tmp_path / "a", "6.1.0-50-amd64")) == "6.1.0-50-amd64"
    assert embedded_release(x86_kernel(tmp_path / "b", None)) is None  # no kernel_version field
    assert embedded_release(tmp_path / "missing") is None


def test_a_modular_kernel_boots_from_a_root_linking_its_own_modules(tmp_path):
    modules = tmp_path / "image/usr/lib/modules/6.1.0-50-amd64"
    modules.mkdir(parents=True)
    kernel = x86_kernel(tmp_path / "image/boot/vmlinuz-6.1.0-50-amd64", "6.1.0-50-amd64")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    plan = BootPlan(kernel, None, 60, (), (), modules=modules)
    stage_inputs(plan, exchange)
    staged = exchange / "root/boot/vmlinuz-6.1.0-50-amd64"
    assert staged.read_bytes() == kernel.read_bytes()
    # virtme-ng looks for lib/modules/RELEASE in the root above the kernel it runs
    assert (exchange / "root/lib/modules/6.1.0-50-amd64").readlink() == modules.resolve()
    argv = vng_argv("vng", plan, kvm=False, exchange=exchange)
    assert argv[argv.index("--run") + 1] == str(staged)
    # /var/tmp is a fresh tmpfs in the guest: the modules are exported where the link points
    assert f"--rodir={modules.resolve()}={modules.resolve()}" in argv
    assert not any(
        arg.startswith("--rodir")
        for arg in vng_argv("vng", BootPlan(kernel, None, 60, (), ()), False, exchange)
    )


def test_guest_report_is_read_from_the_exchange_directory(tmp_path):
    assert read_guest_report(tmp_path) is None  # the probe never ran
    (tmp_path / "report.json").write_text('{"schema": "kcheck.probe/1"')
    assert read_guest_report(tmp_path) is None  # cut short
    (tmp_path / "report.json").write_text('{"schema": "kcheck.probe/1", "checks": []}')
    assert read_guest_report(tmp_path) == {"schema": "kcheck.probe/1", "checks": []}


def test_guest_command_writes_the_report_where_the_host_reads_it(tmp_path):
    config, catalog = tmp_path / "host.config", tmp_path / "site-catalog"
    config.write_text("CONFIG_AIO=y\n")
    catalog.mkdir()
    (catalog / "site.toml").write_text("name = 'site'\n")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel image")
    plan = BootPlan(kernel, config, 60, (), ("--check=aio.*",), catalog=catalog)
    stage_inputs(plan, exchange)
    command = shlex.split(guest_command(plan, exchange))
    assert command[1:7] == ["-P", "-m", "kcheck", "probe", "--format", "json"]  # never ./kcheck
    assert command[command.index("--output") + 1] == str(exchange / "report.json")
    # /var/tmp and /run are fresh tmpfs in the guest: inputs travel in the exchange dir.
    assert command[command.index("--config") + 1] == str(exchange / "config")
    assert (exchange / "config").read_text() == "CONFIG_AIO=y\n"
    assert (exchange / "catalog/site.toml").is_file()
    assert (exchange / "vmlinuz").read_bytes() == b"kernel image"  # booted away from its tree
    assert "--check=aio.*" in command


def test_config_is_found_beside_the_build_or_the_vmlinuz(tmp_path):
    build = tmp_path / "linux"
    (build / "arch/x86/boot").mkdir(parents=True)
    (build / ".config").write_text("CONFIG_X=y\n")
    assert find_kernel_config(build / "arch/x86/boot/bzImage", None) == build / ".config"
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/config-6.1.0-kc").write_text("CONFIG_X=y\n")
    assert find_kernel_config(tmp_path / "boot/vmlinuz-6.1.0-kc", None) == tmp_path / "boot/config-6.1.0-kc"
    assert find_kernel_config(tmp_path / "boot/vmlinuz-other", None) is None


def test_report_round_trips_through_json():
    from test_render import not_ready_report

    report = not_ready_report()
    again = report_from_dict(json.loads(json.dumps(report_dict(report))))
    assert again.checks == report.checks and again.verdict == report.verdict


# --- bad input, before any boot -------------------------------------------------------------


def test_missing_kernel_is_bad_input(tmp_path):
    done = run_kcheck("probe", "--boot", str(tmp_path / "bzImage"))
    assert done.returncode == 3
    assert done.stderr.strip().endswith("no such kernel image; pass a bzImage or vmlinuz")


def test_kernel_without_vm_support_is_refused_naming_it(tmp_path):
    kernel = tmp_path / "boot/vmlinuz-6.1.0-tiny"
    kernel.parent.mkdir()
    kernel.write_bytes(b"\0" * 0x202 + b"HdrS" + b"\0" * 64)  # an x86 boot header, enough to pass
    (tmp_path / "boot/config-6.1.0-tiny").write_text(
        "CONFIG_VIRTIO_PCI=y\nCONFIG_DEVTMPFS=y\nCONFIG_TMPFS=y\n"
    )
    done = run_kcheck("probe", "--boot", str(kernel))
    assert done.returncode == 3
    assert "lacks what the VM needs: host filesystem export" in done.stderr


def modular_image(root: Path, kernel_release: str = "6.1.0-50-amd64", indexed: bool = True) -> Path:
    """An image root with a distro-style modular kernel 6.1.0-50-amd64 (only what the pre-check reads)."""
    x86_kernel(root / "boot/vmlinuz-6.1.0-50-amd64", kernel_release)
    (root / "boot/config-6.1.0-50-amd64").write_text(DISTRO_VM_CONFIG)
    modules = root / "lib/modules/6.1.0-50-amd64"
    modules.mkdir(parents=True)
    if indexed:
        (modules / "modules.dep").write_text("")
    return root


@pytest.mark.parametrize(
    ("image", "message"),
    [
        pytest.param(
            {"indexed": False},
            "lib/modules/6.1.0-50-amd64 has no modules.dep, so its modules cannot be loaded; index them "
            "on a copy of the image first (depmod -b ROOT 6.1.0-50-amd64)",
            id="unindexed-modules",
        ),
        pytest.param(
            {"kernel_release": "6.1.0-49-amd64"},
            "the kernel is release 6.1.0-49-amd64 but its modules are",
            id="another-kernels-modules",
        ),
    ],
)
def test_modules_the_boot_cannot_use_unchanged_are_refused(tmp_path, image, message):
    root = modular_image(tmp_path / "image", **image)
    before = sorted(path.name for path in (root / "lib/modules/6.1.0-50-amd64").iterdir())
    done = run_kcheck("probe", "--boot", "--root", str(root))
    assert done.returncode == 3, done.stderr
    assert message in done.stderr
    assert sorted(path.name for path in (root / "lib/modules/6.1.0-50-amd64").iterdir()) == before


def test_an_installed_kernel_named_directly_uses_its_roots_modules(tmp_path):
    """--boot ROOT/boot/vmlinuz-R (installed, not running): ROOT/lib/modules/R is its modules."""
    root = modular_image(tmp_path / "image", indexed=False)
    done = run_kcheck("probe", "--boot", str(root / "boot/vmlinuz-6.1.0-50-amd64"))
    assert done.returncode == 3
    assert "lib/modules/6.1.0-50-amd64 has no modules.dep" in done.stderr  # they were found


def test_a_modular_kernel_without_its_modules_needs_the_vm_essentials_built_in(tmp_path):
    root = modular_image(tmp_path / "image")
    shutil.rmtree(root / "lib/modules")
    done = run_kcheck("probe", "--boot", "--root", str(root))
    assert done.returncode == 3
    assert "lacks what the VM needs: virtio transport (CONFIG_VIRTIO_PCI=y or" in done.stderr


def test_a_file_that_is_not_a_kernel_is_refused_before_booting(tmp_path):
    not_kernel = tmp_path / "passwd"
    not_kernel.write_text("root:x:0:0:root:/root:/bin/bash\n")
    done = run_kcheck("probe", "--boot", str(not_kernel))
    assert done.returncode == 3
    assert "not a bootable x86 kernel image (no boot header)" in done.stderr


def test_boot_kernel_with_root_is_ambiguous(tmp_path):
    done = run_kcheck("probe", "--boot", str(tmp_path / "bzImage"), "--root", str(tmp_path))
    assert done.returncode == 3 and "pass either a KERNEL or --boot --root DIR" in done.stderr


def test_boot_without_kernel_needs_an_image():
    done = run_kcheck("probe", "--boot")
    assert done.returncode == 3
    assert "pass --root DIR or a KERNEL" in done.stderr


def test_boot_options_need_boot():
    done = run_kcheck("probe", "--boot-append", "quiet")
    assert done.returncode == 3 and "only with --boot" in done.stderr


# --- real boots -----------------------------------------------------------------------------


@pytest.mark.slow
def test_booted_debian_61_is_ready_and_shows_its_maps_bug_live(vm_kernel):
    done = run_kcheck("probe", "--boot", str(vm_kernel), "--format", "json", timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["mode"] == "vm"
    assert report["kernel"]["release"].startswith("6.1.")
    assert report["kernel"]["boot"]["kernel"] == str(vm_kernel)
    checks = {c["id"]: c for c in report["checks"]}
    # Debian's 6.1 has the maps bug: that one check fails live, and it is optional.
    assert live_results(report) == STOCK_VM_LIVE_RESULTS
    required = {check_id for check_id in STOCK_VM_LIVE_RESULTS if checks[check_id]["required"]}
    assert required == set(STOCK_VM_LIVE_RESULTS) - {"overlayfs.maps"}
    maps = checks["overlayfs.maps"]
    assert (maps["status"], maps["evidence"], maps["required"]) == ("fail", "live", False), maps
    assert "maps shows" in maps["detail"]


@pytest.mark.slow
def test_guest_without_aio_capacity_is_not_ready(vm_kernel):
    done = run_kcheck(
        "probe",
        "--boot",
        str(vm_kernel),
        "--boot-append",
        "sysctl.fs.aio-max-nr=0",
        "--format",
        "json",
        timeout=900,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    ring = {c["id"]: c for c in json.loads(done.stdout)["checks"]}["aio.ring_remap"]
    assert ring["status"] == "fail" and "fs.aio-max-nr=0" in ring["detail"]


@pytest.mark.slow
def test_kernel_that_never_reaches_the_probe_is_undecided_with_console_lines(vm_kernel):
    # 24 MiB is too little memory for this kernel: a real boot that panics instead of probing.
    done = run_kcheck(
        "probe",
        "--boot",
        str(vm_kernel),
        "--boot-accel",
        "tcg",
        "--boot-append",
        "mem=24M",
        "--boot-append",
        "panic=-1",
        "--boot-timeout",
        "120",
        timeout=900,
    )
    assert done.returncode == 2
    assert "never reached the probe (software emulation: exited without a report)" in done.stderr
    assert "Kernel panic" in done.stderr.split("last console lines:", 1)[1]
    assert done.stdout == ""


def test_console_summary_keeps_the_panic_line():
    console = ["[ 0.1] Kernel panic - not syncing: Out of memory"] + [f"[ 0.{i}] trace" for i in range(2, 60)]
    summary = console_summary("\n".join(console)).splitlines()
    assert summary[0] == console[0] and summary[1] == "..."
    assert summary[-1] == console[-1] and len(summary) == 27


@pytest.mark.slow
def test_boot_the_images_own_kernel(vm_kernel, tmp_path):
    """--boot --root: the image's default kernel and its config-R, booted and probed live."""
    from kbuild_fixtures import VM_BUILD

    boot = tmp_path / "image/boot"
    boot.mkdir(parents=True)
    shutil.copyfile(vm_kernel, boot / "vmlinuz-6.1.192-node")
    shutil.copyfile(VM_BUILD / ".config", boot / "config-6.1.192-node")
    (boot / "vmlinuz").symlink_to("vmlinuz-6.1.192-node")
    done = run_kcheck("probe", "--boot", "--root", str(tmp_path / "image"), "--format", "json", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["mode"] == "vm"
    assert report["kernel"]["boot"]["kernel"] == str(boot / "vmlinuz-6.1.192-node")
    config = {c["id"]: c for c in report["checks"]}["config.CHECKPOINT_RESTORE"]
    assert config["detail"].endswith(str(boot / "config-6.1.192-node"))  # the image's, not the guest copy
