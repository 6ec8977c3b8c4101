"""`kcheck probe --boot`: boot a kernel under QEMU with virtme-ng and probe it live inside.

The guest sees the host's filesystem read-only, so it runs this very kcheck; its JSON
report comes back through the exchange directory both share (exchange/report.json), and is
returned with mode "vm".
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kcheck.core import channel
from kcheck.core.report import parse_report
from kcheck.core.result import Report
from kcheck.errors import BootFailed, KcheckError

CONSOLE_TAIL = 25
BOOT_HEADER_OFFSET, BOOT_HEADER_MAGIC = 0x202, b"HdrS"
# The boot header's kernel_version field: a pointer, less 0x200, to "RELEASE (builder) #1 ...".
KERNEL_VERSION_POINTER, KERNEL_VERSION_BASE = 0x20E, 0x200
# A KVM that cannot run here aborts within seconds ("failed to set MSR 0x10a") or hangs;
# either way it gets this long before software emulation takes over.
KVM_TRIAL_SECONDS = 45
# What virtme-ng needs from the kernel config: any one of each group's alternatives, built
# in; as modules only when the kernel has a module directory (virtme-ng puts them in an initramfs).
VM_CONFIG_NEEDS = (
    ("virtio transport", (("VIRTIO_PCI",), ("VIRTIO_MMIO",))),
    ("host filesystem export", (("NET_9P", "NET_9P_VIRTIO", "9P_FS"), ("FUSE_FS", "VIRTIO_FS"))),
    ("serial console", (("SERIAL_8250", "SERIAL_8250_CONSOLE"),)),
    ("devtmpfs and tmpfs", (("DEVTMPFS", "TMPFS"),)),
)


@dataclass(frozen=True)
class BootPlan:
    kernel: Path
    config: Path | None
    timeout: float
    append: tuple[str, ...]
    probe_args: tuple[str, ...]
    catalog: Path | None = None
    accel: str = "auto"  # auto: KVM when /dev/kvm is usable, then software emulation; kvm; tcg
    modules: Path | None = None  # the kernel's lib/modules/RELEASE (a distro kernel's, in its image)


def missing_vm_support(options: dict[str, str], modular: bool = False) -> list[str]:
    """The VM needs this kernel config lacks, e.g. 'host filesystem export: CONFIG_9P_FS or ...'.

    With `modular` (the kernel's modules are at hand), =m serves as well as =y."""
    accepted = ("y", "m") if modular else ("y",)
    shown = "y/m" if modular else "y"
    missing = []
    for need, alternatives in VM_CONFIG_NEEDS:
        if not any(all(options.get(f"CONFIG_{o}") in accepted for o in group) for group in alternatives):
            choices = " or ".join("+".join(f"CONFIG_{o}={shown}" for o in group) for group in alternatives)
            missing.append(f"{need} ({choices})")
    return missing


def module_directory(root: Path, release: str) -> Path | None:
    """ROOT's lib/modules/RELEASE (or usr/lib/...), resolved inside ROOT; None when it has none."""
    from kcheck.probe.image import MODULE_DIRS, image_path

    for modules in MODULE_DIRS:
        directory = image_path(root, f"{modules}/{release}")
        if directory.is_dir():
            return directory
    return None


def embedded_release(kernel: Path) -> str | None:
    """The release an x86 kernel image names in its boot header (what `uname -r` will print)."""
    try:
        with open(kernel, "rb") as image:
            image.seek(KERNEL_VERSION_POINTER)
            pointer = int.from_bytes(image.read(2), "little")
            if pointer == 0:
                return None
            image.seek(pointer + KERNEL_VERSION_BASE)
            text = image.read(256).split(b"\0", 1)[0].decode("ascii", errors="replace")
    except OSError:
        return None
    return text.split(" ", 1)[0] or None


def find_kernel_config(kernel: Path, explicit: Path | None) -> Path | None:
    """--config, else the build tree's .config (arch/*/boot/bzImage), else config-R beside vmlinuz-R."""
    if explicit is not None:
        return explicit
    candidates = [kernel.parent / ".config"]
    if len(kernel.parents) > 3 and kernel.parent.name == "boot" and kernel.parents[2].name == "arch":
        candidates.insert(0, kernel.parents[3] / ".config")
    if kernel.name.startswith("vmlinuz-"):
        candidates.append(kernel.parent / f"config-{kernel.name.removeprefix('vmlinuz-')}")
    return next((path for path in candidates if path.is_file()), None)


def has_boot_header(kernel: Path) -> bool:
    """x86 bzImage/vmlinuz carry "HdrS" at 0x202 (Documentation/arch/x86/boot.rst)."""
    try:
        with open(kernel, "rb") as image:
            image.seek(BOOT_HEADER_OFFSET)
            return image.read(4) == BOOT_HEADER_MAGIC
    except OSError:
        return False


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def _vng() -> str:
    beside = Path(sys.executable).parent / "vng"
    found = str(beside) if beside.exists() else shutil.which("vng")
    if not found:
        raise KcheckError(
            "--boot needs virtme-ng (vng); install kcheck with its vm extra: scripts/install, "
            "or pip install '.[vm]' from the source"
        )
    if not shutil.which("qemu-system-x86_64"):
        raise KcheckError("--boot needs QEMU; install it: apt-get install qemu-system-x86")
    return found


REPORT_NAME = "report.json"
BOOT_IMAGE_NAME = "vmlinuz"


def guest_command(plan: BootPlan, exchange: Path) -> str:
    """The shell line run inside the guest: this kcheck's JSON probe, written into `exchange`.

    The guest sees the host's files, except fresh tmpfs on /var/tmp, /var/cache, /run and
    others: so the config and catalog travel in `exchange` too (see `stage_inputs`).
    """
    # -P: the guest starts in the caller's directory; a kcheck/ there must not shadow this one.
    probe = [sys.executable, "-P", "-m", "kcheck", "probe", "--format", "json"]
    probe += ["--output", str(exchange / REPORT_NAME), *plan.probe_args]
    if plan.config is not None:
        probe += ["--config", str(exchange / "config")]
    if plan.catalog is not None:
        probe += ["--catalog", str(exchange / "catalog")]
    return shlex.join(probe)


MODULES_ROOT = "root"  # in the exchange: a root holding only the kernel and a link to its modules


def staged_kernel(plan: BootPlan, exchange: Path) -> Path:
    """Where the kernel boots from in the exchange directory."""
    if plan.modules is None:
        return exchange / BOOT_IMAGE_NAME
    return exchange / MODULES_ROOT / "boot" / f"{BOOT_IMAGE_NAME}-{plan.modules.name}"


def stage_inputs(plan: BootPlan, exchange: Path) -> None:
    """Copy the kernel and what the guest probe reads into the shared exchange directory.

    Booted from beside a build tree, virtme-ng would pick up (and depmod) that tree's
    modules; the copy boots alone, and the tree stays untouched. A modular kernel boots from
    a small root whose lib/modules/RELEASE links to its own modules: virtme-ng finds them
    there, puts what the boot needs into an initramfs, and links the rest in the guest.
    """
    kernel = staged_kernel(plan, exchange)
    kernel.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plan.kernel, kernel)
    if plan.modules is not None:
        links = exchange / MODULES_ROOT / "lib" / "modules"
        links.mkdir(parents=True)
        (links / plan.modules.name).symlink_to(plan.modules.resolve())
    if plan.config is not None:
        shutil.copyfile(plan.config, exchange / "config")
    if plan.catalog is not None:
        shutil.copytree(plan.catalog, exchange / "catalog")


def vng_argv(vng: str, plan: BootPlan, kvm: bool, exchange: Path) -> list[str]:
    """virtme-ng, verbose so the console tells what happened when no report comes back."""
    kernel = staged_kernel(plan, exchange)
    argv = [vng, "--verbose", "--run", str(kernel), "--memory", "1G", "--cpus", "2", "--disable-microvm"]
    argv += ["--rwdir", str(exchange)]
    if plan.modules is not None:
        # The guest sees the host's root, but with fresh tmpfs on /var/tmp and others that
        # may hide the image: its modules are exported where the link points.
        real = plan.modules.resolve()
        argv += [f"--rodir={real}={real}"]
    if not kvm:
        argv.append("--disable-kvm")
    if plan.append:
        argv += ["--append", " ".join(plan.append)]
    return [*argv, "--exec", guest_command(plan, exchange)]


def console_summary(output: str) -> str:
    """The console's last lines, led by the panic line when it scrolled out of them."""
    lines = output.rstrip().splitlines()
    tail = lines[-CONSOLE_TAIL:]
    panic = next((line for line in lines if "Kernel panic" in line), None)
    if panic is not None and panic not in tail:
        tail = [panic, "...", *tail]
    return "\n".join(tail)


def read_guest_report(exchange: Path) -> dict | None:
    """The guest's JSON report, None when the probe never wrote one."""
    try:
        data = json.loads((exchange / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _run(argv: list[str], timeout: float) -> tuple[str, bool]:
    """Console output and whether it timed out; the whole QEMU process group dies either way."""
    env = {**os.environ, "PATH": f"{Path(argv[0]).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        return output, False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return output, True
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def check_modules(kernel: Path, modules: Path) -> None:
    """Refuse modules the boot cannot use as they are; virtme-ng would depmod an unindexed
    directory in place, and a node image must not change."""
    release = embedded_release(kernel)
    if release is not None and release != modules.name:
        raise KcheckError(
            f"--boot {kernel}: the kernel is release {release} but its modules are {modules}; "
            "pass the kernel whose modules those are"
        )
    if not (modules / "modules.dep").is_file():
        raise KcheckError(
            f"--boot {kernel}: {modules} has no modules.dep, so its modules cannot be loaded; "
            f"index them on a copy of the image first (depmod -b ROOT {modules.name})"
        )


def probe_in_vm(plan: BootPlan) -> Report:
    if not plan.kernel.is_file():
        raise KcheckError(f"--boot {plan.kernel}: no such kernel image; pass a bzImage or vmlinuz")
    if not has_boot_header(plan.kernel):
        raise KcheckError(
            f"--boot {plan.kernel}: not a bootable x86 kernel image (no boot header); "
            "pass arch/x86/boot/bzImage or /boot/vmlinuz-RELEASE"
        )
    if plan.config is None:
        channel.warn(f"no config found for {plan.kernel}; cannot check it can boot in a VM (pass --config)")
    else:
        from kcheck.core.kconfig import read_config_file

        missing = missing_vm_support(read_config_file(plan.config), modular=plan.modules is not None)
        if missing:
            raise KcheckError(
                f"--boot {plan.kernel}: its config {plan.config} lacks what the VM needs: "
                f"{'; '.join(missing)}; rebuild with those options (vng --kconfig sets them)"
            )
    if plan.modules is not None:
        check_modules(plan.kernel, plan.modules)
    vng = _vng()
    attempts = {"kvm": [(True, plan.timeout)], "tcg": [(False, plan.timeout)]}.get(plan.accel) or (
        [(True, min(plan.timeout, KVM_TRIAL_SECONDS)), (False, plan.timeout)]
        if kvm_usable()
        else [(False, plan.timeout)]
    )
    tried = []
    with tempfile.TemporaryDirectory(prefix="kcheck-vm-") as scratch:
        exchange = Path(scratch)  # shared read-write with the guest (--rwdir)
        stage_inputs(plan, exchange)
        for kvm, timeout in attempts:
            started = time.monotonic()
            output, timed_out = _run(vng_argv(vng, plan, kvm, exchange), timeout)
            seconds = time.monotonic() - started
            data = read_guest_report(exchange)
            if data is not None:
                break
            why = f"timed out after {timeout:g}s" if timed_out else "exited without a report"
            tried.append(f"{'KVM' if kvm else 'software emulation'}: {why}")
        else:
            raise BootFailed(
                f"--boot {plan.kernel}: the kernel never reached the probe ({'; '.join(tried)}); "
                f"last console lines:\n{console_summary(output)}"
            )
    try:
        report = parse_report(data)
    except ValueError as exc:
        raise BootFailed(f"--boot {plan.kernel}: the guest's report is malformed ({exc})") from None
    report.mode = "vm"
    if plan.config is not None:  # name the host's config, not the guest's staged copy
        for check in report.checks:
            check.detail = check.detail.replace(str(exchange / "config"), str(plan.config))
    report.kernel["boot"] = {
        "kernel": str(plan.kernel),
        "modules": str(plan.modules) if plan.modules is not None else None,
        "accelerator": "kvm" if kvm else "tcg",
        "seconds": round(seconds, 1),
        "fallback": tried,
    }
    return report
