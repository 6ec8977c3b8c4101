"""`kcheck build-kernel`: argument parsing only.

GitPython and the work are imported in the handler, so `kcheck probe` never loads them.
Options default to SUPPRESS so the handler can tell what was given (--continue and
--abort replay the saved options and refuse others).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kcheck.probe.cli import seconds

SUPPRESS = argparse.SUPPRESS


def register(jobs) -> None:
    parser = jobs.add_parser(
        "build-kernel",
        help="build the distro kernel with the fixes it lacks, resumably",
        description="Clone (or use) the distro kernel tree, fetch the catalog fixes its version needs and "
        "lacks, cherry-pick them with -x on a new branch, configure from the running config, build, "
        "and optionally install. Each stage is recorded in WORKDIR/state.json: a rerun resumes. "
        "Exit 0 done, 1 a stage failed (conflict, build error), 3 bad input or preflight refusal.",
        argument_default=SUPPRESS,
    )
    source = parser.add_argument_group("source")
    source.add_argument(
        "--tree", type=Path, metavar="PATH", help="an existing kernel git checkout to build in"
    )
    source.add_argument(
        "--repo",
        metavar="URL",
        help="clone this kernel repository into the work dir (default: the distro's, from /etc/os-release)",
    )
    source.add_argument("--branch", metavar="B", help="branch to clone with --repo")
    source.add_argument(
        "--reference", type=Path, metavar="DIR", help="a local kernel clone to borrow objects from"
    )
    source.add_argument(
        "--no-filter",
        dest="blob_filter",
        action="store_false",
        help="clone every blob up front (default: --filter=blob:none, blobs on demand)",
    )
    source.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="state, logs, metadata and clones (default /var/tmp/kcheck-build for root, "
        "else ~/.cache/kcheck/build)",
    )
    picks = parser.add_argument_group("fixes")
    picks.add_argument(
        "--upstream", metavar="URL", help="where the fixes come from (default: the catalog's, torvalds/linux)"
    )
    picks.add_argument(
        "--patchset",
        dest="patchsets",
        action="append",
        metavar="NAME",
        help="apply this patchset even if the version does not need it (repeatable; "
        "default: those kcheck audit finds needed and missing)",
    )
    picks.add_argument("--catalog", type=Path, metavar="DIR", help="patchset catalog directory")
    config = parser.add_argument_group("config")
    config.add_argument(
        "--config",
        metavar="FILE|running",
        help="base config (default running: /proc/config.gz, else /boot/config-$(uname -r))",
    )
    config.add_argument(
        "--localmodconfig",
        action="store_true",
        help="trim the config to the loaded modules (much faster builds)",
    )
    config.add_argument(
        "--set",
        dest="settings",
        action="append",
        metavar='CONFIG_X=y|m|n|"str"',
        help="set a config option before olddefconfig (repeatable)",
    )
    config.add_argument(
        "--localversion",
        metavar="SUFFIX",
        help="release suffix (default -kcheck); write --localversion=-lab, as it starts with '-'",
    )
    build = parser.add_argument_group("build")
    build.add_argument("--jobs", "-j", type=int, metavar="N", help="parallel make jobs (default: nproc)")
    build.add_argument(
        "--targets",
        action="append",
        metavar="T",
        help="make targets, comma or space separated, repeatable (default: the arch's image plus modules)",
    )
    build.add_argument(
        "--cc-wrapper", metavar="WRAPPER", help='compile through ccache, distcc or "ccache distcc"'
    )
    build.add_argument(
        "--min-free",
        metavar="SIZE",
        help="refuse with less free disk than this in the work dir and tree (default 20G)",
    )
    verify = parser.add_argument_group("verify")
    verify.add_argument(
        "--verify",
        action="store_true",
        help="after the build, boot the new kernel under QEMU (virtme-ng) and run kcheck probe inside; "
        "--install then refuses a kernel that is not ready",
    )
    verify.add_argument(
        "--verify-timeout",
        type=seconds,
        metavar="SECONDS",
        help="limit for that boot and probe (default 300)",
    )
    verify.add_argument(
        "--force", action="store_true", help="with --verify --install: install even if not ready"
    )
    install = parser.add_argument_group("install")
    install.add_argument(
        "--install",
        action="store_true",
        help="as root: make modules_install install, and record the build in /var/lib/kcheck/builds "
        "($KCHECK_STATE_DIR/builds when set)",
    )
    install.add_argument(
        "--reboot", action="store_true", help="with --install: reboot into it after a confirmation"
    )
    install.add_argument("--yes", action="store_true", help="with --reboot: do not ask")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--dry-run", action="store_true", help="print the plan as the exact commands; change nothing"
    )
    modes.add_argument(
        "--continue",
        dest="resume",
        action="store_const",
        const="continue",
        help="after resolving a cherry-pick conflict: commit it and go on",
    )
    modes.add_argument(
        "--abort",
        dest="resume",
        action="store_const",
        const="abort",
        help="undo the pick: back to the branch and commit the run started from",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from kcheck.build.command import execute

    given = {key: value for key, value in vars(args).items() if key not in ("handler", "command")}
    return execute(given)
