"""`kcheck cr`: its arguments and handlers; the work is imported when a command runs."""

from __future__ import annotations

import argparse

from kcheck.core.args import path_arg

ENGINES = ("auto", "docker", "podman", "external")


def register(jobs) -> None:
    parser = jobs.add_parser(
        "cr",
        help="checkpoint/restore a container with docker, podman or criu, behind a pre-flight probe",
        description="Checkpoint and restore containers, after the probe's required checks pass. "
        "Exit 0 done, 1 refused or failed, 3 bad input.",
    )
    actions = parser.add_subparsers(dest="cr_command", metavar="ACTION", required=True)

    checkpoint = actions.add_parser("checkpoint", help="checkpoint a running container")
    checkpoint.add_argument("container", metavar="CONTAINER", help="container name or id")
    _add_common(checkpoint)
    checkpoint.add_argument(
        "--leave-running", action="store_true", help="keep the container running after the checkpoint"
    )
    checkpoint.add_argument(
        "--export",
        type=path_arg,
        metavar="FILE",
        help="podman: export the checkpoint to FILE (tar.gz) to move it to another host",
    )
    checkpoint.set_defaults(handler=run_checkpoint)

    restore = actions.add_parser("restore", help="restore a container from its checkpoint")
    restore.add_argument(
        "container", metavar="CONTAINER", nargs="?", help="container name or id (omitted with --import)"
    )
    _add_common(restore)
    restore.add_argument(
        "--import",
        dest="import_file",
        type=path_arg,
        metavar="FILE",
        help="podman: restore from a checkpoint exported with --export",
    )
    restore.add_argument(
        "--new-name", metavar="NAME", help="podman: name for the container restored with --import"
    )
    restore.set_defaults(handler=run_restore)

    listing = actions.add_parser("list", help="list a docker container's checkpoints (docker checkpoint ls)")
    listing.add_argument("container", metavar="CONTAINER", help="container name or id")
    listing.add_argument(
        "--dir", dest="directory", type=path_arg, metavar="DIR", help="docker --checkpoint-dir"
    )
    listing.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    listing.set_defaults(handler=run_list)

    compare = actions.add_parser(
        "compare",
        help="decide whether a checkpoint from one host restores on another",
        description="Compare two `kcheck probe --format json` reports. "
        "Exit 0 compatible, 1 not compatible, 3 bad input.",
    )
    compare.add_argument(
        "source", type=path_arg, metavar="SOURCE.json", help="probe report of the checkpoint host"
    )
    compare.add_argument(
        "target", type=path_arg, metavar="TARGET.json", help="probe report of the restore host"
    )
    compare.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    compare.set_defaults(handler=run_compare)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="auto (default): podman when podman knows the container, else docker",
    )
    parser.add_argument(
        "--name", metavar="CHECKPOINT", help="checkpoint name, docker and external (default kcheck)"
    )
    parser.add_argument(
        "--dir",
        dest="directory",
        type=path_arg,
        metavar="DIR",
        help="checkpoint directory: docker --checkpoint-dir; external images go in DIR/NAME "
        "(default /var/lib/kcheck/checkpoints/CONTAINER)",
    )
    parser.add_argument(
        "--tcp-established", action="store_true", help="checkpoint/restore established TCP connections"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each command as a shell line and run nothing (the pre-flight still runs)",
    )
    parser.add_argument(
        "--skip-preflight",
        action="store_true",
        help="run without checking the kernel first (dangerous: the container can be lost)",
    )
    parser.add_argument("--config", type=path_arg, metavar="FILE", help="kernel config for the pre-flight")
    parser.add_argument(
        "--catalog", type=path_arg, metavar="DIR", help="patchset catalog the pre-flight names fixes from"
    )


def _request(args: argparse.Namespace):
    """The parsed options as an actions.Request; options an action lacks keep their defaults."""
    from dataclasses import fields

    from kcheck.cr.actions import Request

    given = vars(args)
    options = {f.name: given[f.name] for f in fields(Request) if f.name in given}
    return Request(action=args.cr_command, **options)


def run_checkpoint(args: argparse.Namespace) -> int:
    from kcheck.cr.actions import checkpoint

    return checkpoint(_request(args))


def run_restore(args: argparse.Namespace) -> int:
    from kcheck.cr.actions import restore

    return restore(_request(args))


def run_list(args: argparse.Namespace) -> int:
    from kcheck.cr.actions import list_checkpoints

    return list_checkpoints(_request(args))


def run_compare(args: argparse.Namespace) -> int:
    from kcheck.cr.compare import run_compare as compare_reports

    return compare_reports(args.source, args.target, args.format)
