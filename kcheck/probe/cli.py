"""`kcheck probe`: its arguments, and the handler that runs the probe and renders the report;
the work is imported when the command runs."""

from __future__ import annotations

import argparse
import os
import sys

from kcheck.core.args import path_arg, seconds
from kcheck.probe import DEFAULT_TIMEOUT

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from kcheck.probe.early import EarlyStart

FORMAT_NAMES = ("text", "json", "junit", "prometheus", "npd", "github")
DEFAULT_BOOT_TIMEOUT = 300.0


def kernel_release(text: str) -> str:
    """argparse type: a kernel release string."""
    from kcheck.core.release import is_release

    if not is_release(text):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a kernel release (as `uname -r` prints it: at most 64 letters, "
            "digits and . _ + ~ -)"
        )
    return text


MAX_LABEL = 253  # a DNS name's limit: inventory and node names fit


def host_label(text: str) -> str:
    """argparse type: --name, a host's label in fleet reports (printable, no spaces)."""
    if not 0 < len(text) <= MAX_LABEL or not text.isprintable() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a host label: give 1 to {MAX_LABEL} printable characters without "
            "spaces, e.g. the inventory or node name"
        )
    return text


IMAGE_KERNEL = "<image kernel>"  # --boot without a value: the --root image's kernel


def register(jobs) -> None:
    parser = jobs.add_parser(
        "probe",
        help="decide from live evidence whether this kernel is ready for CRIU C/R",
        description="Probe the running kernel for the bugs that break CRIU checkpoint/restore. "
        "Exit 0 ready, 1 not ready, 2 undecided, 3 bad input.",
    )
    parser.add_argument("--format", choices=FORMAT_NAMES, default="text", help="output format")
    parser.add_argument(
        "--output", type=path_arg, metavar="FILE", help="write the report here (a regular file atomically)"
    )
    parser.add_argument(
        "--name",
        type=host_label,
        metavar="LABEL",
        help="this host's label in the report (e.g. its inventory or node name); "
        "`kcheck fleet report` keys hosts by it, else by hostname",
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only these checks (repeatable; globs like 'config.*')",
    )
    parser.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="ID",
        help="make an optional check required (repeatable)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="ID",
        help="make a required check optional: it still runs and warns (repeatable)",
    )
    parser.add_argument(
        "--config",
        type=path_arg,
        metavar="FILE",
        help="kernel config to check (default: /proc/config.gz, /boot/config-R, ...)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help=f"limit for each live probe (default {DEFAULT_TIMEOUT:g}; live only)",
    )
    parser.add_argument("--catalog", type=path_arg, metavar="DIR", help="patchset catalog directory")
    offline = parser.add_argument_group(
        "offline (judge a kernel that is not running, e.g. a node image, from its files)"
    )
    offline.add_argument("--root", type=path_arg, metavar="DIR", help="an unpacked or mounted image root")
    offline.add_argument(
        "--release",
        metavar="R",
        type=kernel_release,
        help="the kernel release to judge (default with --root: the vmlinuz link's target, else the newest)",
    )
    vm = parser.add_argument_group("live in a VM (boot a kernel under QEMU with virtme-ng, probe inside)")
    vm.add_argument(
        "--boot",
        nargs="?",
        const=IMAGE_KERNEL,
        type=path_arg,
        metavar="KERNEL",
        help="boot this bzImage/vmlinuz; without KERNEL, the --root image's own kernel",
    )
    vm.add_argument(
        "--boot-timeout",
        type=seconds,
        metavar="SECONDS",
        help=f"limit for the boot and probe (default {DEFAULT_BOOT_TIMEOUT:g}; KVM is tried "
        "first for a shorter time when /dev/kvm is usable)",
    )
    vm.add_argument(
        "--boot-accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="auto (default): KVM when /dev/kvm works, else software emulation (tcg)",
    )
    vm.add_argument(
        "--boot-append",
        action="append",
        default=[],
        metavar="ARG",
        help="guest kernel command line argument (repeatable), e.g. sysctl.fs.aio-max-nr=0",
    )
    parser.set_defaults(handler=run, prestarted=None)


def run(args: argparse.Namespace) -> int:
    from kcheck.errors import KcheckError, printable

    try:
        return _run(args)
    except KcheckError as exc:
        if args.format != "npd":
            raise
        # node-problem-detector reads only 0/1/2 and one line of stdout: bad input is unknown.
        from kcheck.core.render import npd_line
        from kcheck.core.result import ExitCode

        message = printable(str(exc), keep_newlines=False)
        print(f"kcheck: error: {message}", file=sys.stderr)
        sys.stdout.write(npd_line(f"kcheck cannot probe: {message}"))
        return int(ExitCode.UNDECIDED)


def _run(args: argparse.Namespace) -> int:
    from kcheck.errors import KcheckError

    if args.boot is not None:
        return _emit(args, _probe_in_vm(args))
    if args.boot_append or args.boot_timeout is not None or args.boot_accel != "auto":
        raise KcheckError("--boot-append/--boot-timeout/--boot-accel: only with --boot KERNEL")
    offline = args.root is not None or args.release is not None
    if offline and args.timeout is not None:
        raise KcheckError("--timeout: live-only, but --root/--release judge a kernel offline; drop one")
    if args.prestarted is not None:  # kcheck.cli started it before parsing, and closes it
        return _probe(args, args.prestarted)
    if offline or args.check or os.geteuid() != 0:
        return _probe(args, None)
    # A live probe of the default selection, as root, starts its slowest evidence (criu check,
    # the AIO child) now, before the imports; without root, checks that need it do not run.
    from kcheck.probe.early import EarlyStart

    early = EarlyStart(args.timeout or DEFAULT_TIMEOUT)
    try:
        return _probe(args, early)
    finally:
        early.close()


def _probe(args: argparse.Namespace, early: EarlyStart | None) -> int:
    from kcheck.probe.engine import probe_setup, run_probe, select_checks

    timeout = args.timeout or DEFAULT_TIMEOUT
    specs = select_checks(args.check, args.require, args.ignore)
    ctx = probe_setup(args.catalog, args.config, timeout, root=args.root, release=args.release, early=early)
    return _emit(args, run_probe(specs, ctx))


def _emit(args: argparse.Namespace, report) -> int:
    """Render the report as asked, to --output or stdout; the exit code follows it."""
    report.name = args.name
    from kcheck.core.output import append_text, emit, text_style
    from kcheck.core.render import FORMATS, github_step_summary, render_text

    if args.format == "text":
        table, color = text_style(args.output)
        text = render_text(report, table=table, color=color)
    else:
        text = FORMATS[args.format](report)
    emit(args.output, text)
    summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
    if args.format == "github" and summary_path:
        append_text(summary_path, github_step_summary(report))
    return int(report.exit_code)


def _probe_in_vm(args: argparse.Namespace):
    from kcheck.errors import KcheckError
    from kcheck.probe.engine import select_checks
    from kcheck.probe.image import image_path, select_release
    from kcheck.probe.vm import BootPlan, find_kernel_config, module_directory, probe_in_vm

    select_checks(args.check, args.require, args.ignore)  # unknown ids: bad input before booting
    kernel, config = args.boot, args.config
    if str(kernel) == IMAGE_KERNEL:  # argparse made the const a Path (path_arg), as a value
        if args.root is None:
            raise KcheckError(
                "--boot without KERNEL boots the --root image's kernel; pass --root DIR or a KERNEL"
            )
        release, _ = select_release(args.root, args.release)
        kernel = image_path(args.root, f"boot/vmlinuz-{release}")  # links resolve inside the image
        image_config = image_path(args.root, f"boot/config-{release}")
        if config is None and image_config.is_file():
            config = image_config
        modules = module_directory(args.root, release)
    elif args.root is not None or args.release is not None:
        raise KcheckError(f"--boot {kernel} with --root/--release: pass either a KERNEL or --boot --root DIR")
    elif kernel.name.startswith("vmlinuz-") and kernel.parent.name == "boot":
        # an installed kernel (/boot/vmlinuz-R): its modules are in that root's lib/modules/R
        modules = module_directory(kernel.parent.parent, kernel.name.removeprefix("vmlinuz-"))
    else:
        modules = None  # a build tree's bzImage: what the VM needs must be built in
    passthrough = [f"--check={i}" for i in args.check] + [f"--require={i}" for i in args.require]
    passthrough += [f"--ignore={i}" for i in args.ignore]
    if args.timeout is not None:
        passthrough.append(f"--timeout={args.timeout}")
    plan = BootPlan(
        kernel=kernel,
        config=find_kernel_config(kernel, config),
        timeout=args.boot_timeout or DEFAULT_BOOT_TIMEOUT,
        append=tuple(args.boot_append),
        probe_args=tuple(passthrough),
        catalog=args.catalog,
        accel=args.boot_accel,
        modules=modules,
    )
    return probe_in_vm(plan)
