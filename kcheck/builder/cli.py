"""`kcheck build-kernel` and `kcheck build-criu`: argument parsing, and build-criu's output.

GitPython and the work are imported in the handlers, so `kcheck probe` never loads them.
build-kernel's options default to SUPPRESS so its handler can tell what was given
(--continue and --abort replay the saved options and refuse others).
"""

from __future__ import annotations

import argparse

from kcheck.core.args import jobs_arg, path_arg, seconds

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
        "--tree", type=path_arg, metavar="PATH", help="an existing kernel git checkout to build in"
    )
    source.add_argument(
        "--repo",
        metavar="URL",
        help="clone this kernel repository into the work dir (default: the distro's, from /etc/os-release)",
    )
    source.add_argument("--branch", metavar="B", help="branch to clone with --repo")
    source.add_argument(
        "--reference", type=path_arg, metavar="DIR", help="a local kernel clone to borrow objects from"
    )
    source.add_argument(
        "--no-filter",
        dest="blob_filter",
        action="store_false",
        help="clone every blob up front (default: --filter=blob:none, blobs on demand)",
    )
    source.add_argument(
        "--workdir",
        type=path_arg,
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
    picks.add_argument("--catalog", type=path_arg, metavar="DIR", help="patchset catalog directory")
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
    build.add_argument(
        "--jobs",
        "-j",
        type=jobs_arg,
        metavar="N",
        help="parallel make jobs (default: nproc; with --distcc, the hosts' slots)",
    )
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
        "--distcc",
        metavar="HOSTS",
        help="compile across these distccd hosts, in DISTCC_HOSTS syntax (e.g. 'helper1/8 helper2/8,lzo'); "
        "each must answer a test compile with this machine's gcc first; -j defaults to their slots",
    )
    build.add_argument(
        "--distcc-degraded",
        action="store_true",
        help="with --distcc: build with the hosts that answer instead of refusing when some do not",
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
        "--install-root",
        type=path_arg,
        metavar="IMG",
        help="install into this unpacked node image instead: its modules, boot/vmlinuz-R, System.map-R "
        "and config-R, and the record in IMG/var/lib/kcheck/builds; no host installkernel hooks",
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
    from kcheck.builder.command import execute

    given = {key: value for key, value in vars(args).items() if key not in ("handler", "command")}
    return execute(given)


def register_criu(jobs) -> None:
    parser = jobs.add_parser(
        "build-criu",
        help="build and install a CRIU that works on this kernel (beside the distro's, never over it)",
        description="Build CRIU from its upstream release tag (the newest release kcheck knows that "
        "supports this kernel), a local tree or a tarball; run the new binary's `criu check`; install it "
        "with make install-criu into --prefix; record it in $KCHECK_STATE_DIR/criu/VERSION.json. "
        "Exit 0 installed, 1 the build or its criu check failed (nothing installed), 3 bad input.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--source", type=path_arg, metavar="DIR|TARBALL", help="a local CRIU tree or release tarball"
    )
    source.add_argument("--repo", metavar="URL", help="a CRIU git repository (default: upstream)")
    parser.add_argument("--tag", metavar="TAG", help="release tag to clone (default: the newest known)")
    parser.add_argument(
        "--prefix",
        type=path_arg,
        metavar="DIR",
        help="install prefix (default /usr/local: /usr/local/sbin/criu)",
    )
    parser.add_argument(
        "--jobs", "-j", type=jobs_arg, metavar="N", help="parallel make jobs (default: nproc + 1)"
    )
    parser.add_argument(
        "--workdir",
        type=path_arg,
        metavar="DIR",
        help="where to build (default /var/tmp/kcheck-build-criu as root, else ~/.cache/kcheck/build-criu)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument(
        "--force", action="store_true", help="install even when the new binary's criu check fails"
    )
    parser.set_defaults(handler=run_criu)


def run_criu(args: argparse.Namespace) -> int:
    import os
    import sys

    from kcheck.builder import criu, criu_stages
    from kcheck.builder.options import default_workdir
    from kcheck.builder.progress import BuildLog, Progress
    from kcheck.errors import KcheckError

    options = criu.CriuOptions(
        source=criu.choose_source(args.source, args.repo, args.tag),
        prefix=(args.prefix or criu.DEFAULT_PREFIX).absolute(),
        workdir=(args.workdir or default_workdir("build-criu")).absolute(),
        jobs=args.jobs if args.jobs is not None else (os.cpu_count() or 1) + 1,
        force=args.force,
    )
    criu.preflight(options)
    if args.dry_run:
        print("\n".join(criu.plan(options)))
        return 0
    criu.preflight_run(options)
    try:
        options.workdir.mkdir(parents=True, exist_ok=True)
        log = BuildLog(options.workdir / "build.log")
    except OSError as exc:
        raise KcheckError(f"--workdir {options.workdir}: {exc.strerror}; pass a writable --workdir") from None
    progress = Progress(log)
    log.header(f"kcheck build-criu from {options.source.describe()}")
    try:
        record = criu_stages.build(options, progress, log)
    except KcheckError as exc:
        tail = log.tail()
        print(f"kcheck: build-criu failed; the last {len(tail)} lines of {log.path}:", file=sys.stderr)
        for line in tail:
            print(f"  {line}", file=sys.stderr)
        raise exc from None
    finally:
        log.close()
    check = record["check"]["summary"]
    progress.say(f"installed criu {record['version']} as {record['binary']} (criu check: {check})")
    progress.say(f"record: {record['record_path']}")
    progress.say(f"use it: put {options.prefix / 'sbin'} first on PATH; then `kcheck probe` shows it")
    return 0
