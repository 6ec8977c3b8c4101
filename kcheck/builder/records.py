"""The documents a build leaves: metadata.json and reproducer.sh in the work dir, and the
build record an offline probe reads."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from kcheck import __version__
from kcheck.builder import distcc, gitops, kbuild, plan
from kcheck.builder.context import METADATA, METADATA_SCHEMA, REPRODUCER, Run
from kcheck.builder.gitops import TreeGit
from kcheck.builder.progress import shell_line
from kcheck.builder.state import Stage
from kcheck.core.buildrecord import BUILD_RECORD_DIR, dump_record, host_records_dir, record_file
from kcheck.core.output import write_atomic
from kcheck.errors import StageFailed


def patches(run: Run) -> list[dict[str, Any]]:
    pick = run.picked
    return [
        {
            "patchset": p["patchset"],
            "upstream_sha": p["sha"],
            "subject": p["subject"],
            "status": p["status"],
            "commit": p["commit"],
        }
        for p in pick.present
    ] + [
        {
            "patchset": p["patchset"],
            "upstream_sha": p["sha"],
            "subject": p["subject"],
            "status": p["how"],
            "commit": p["commit"],
        }
        for p in pick.picked
    ]


def tool_versions(run: Run) -> dict[str, str | None]:
    tools = {"kcheck": __version__, "python": sys.version.split()[0]}
    compilers = ["gcc", *(run.options.wrapper_tools or "").split()]
    for tool in ["git", "make", *compilers]:
        try:
            done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
            tools[tool] = done.stdout.splitlines()[0] if done.stdout else None
        except (OSError, subprocess.TimeoutExpired):
            tools[tool] = None
    return tools


def metadata(run: Run, tree: TreeGit, variables: tuple[str, ...]) -> dict[str, Any]:
    options = run.options
    pick = run.picked
    config = run.configured
    command = kbuild.build_command(options, variables, run.distcc_hosts)
    data = {
        "schema": METADATA_SCHEMA,
        "source": {
            "tree": str(run.tree),
            "url": options.repo or tree.origin_url(),
            "branch": pick.original_branch,
            "commit": pick.original_commit,
            "partial_clone": run.outputs(Stage.CLONE).get("partial"),
        },
        "upstream": run.upstream,
        "patchsets": list(run.state.get(Stage.PICK).inputs["patchsets"]),
        "patches": patches(run),
        "branch": pick.branch,
        "tag": pick.tag,
        "commit": pick.head,
        "config": {
            "source": str(run.config_path),
            "base": str(run.workdir / kbuild.BASE_CONFIG),
            "sha256": config.config_sha256,
            "localversion": options.localversion,
            "settings": options.to_json()["settings"],
            "cleared": list(config.cleared),
            "not_kept": list(config.lost),
            "localmodconfig": options.localmodconfig,
        },
        "release": config.release,
        "build": {
            "command": command.shell(),
            "targets": list(options.targets),
            "jobs": options.jobs,
            "variables": list(variables),
            "env": command.env,
        },
        "stages": {
            stage.value: {"status": record.status.value, "duration": record.duration}
            for stage, record in run.state.stages.items()
        },
        "verify": asdict(verified) if (verified := run.verified) else None,
        "tools": run.tools,
        "log": str(run.log.path),
        "reproducer": str(run.workdir / REPRODUCER),
    }
    if options.distcc is not None:
        data["distcc"] = distcc_record(run)
    return data


def distcc_record(run: Run) -> dict[str, Any] | None:
    """The hosts that built the kernel (the build stage's, once it finished), their compilers,
    and the jobs each ran by distcc's log."""
    saved = run.outputs(Stage.BUILD).get("distcc")
    cluster = distcc.Cluster.from_json(saved) if saved else run.cluster
    return distcc.record(cluster, run.workdir) if cluster is not None else None


def reproducer(run: Run, variables: tuple[str, ...]) -> str:
    """Plain sh that redoes the build in a fresh clone: same commit, same picks, config and make."""
    options = run.options
    pick = run.picked
    config = run.configured
    lines = [
        "#!/bin/sh",
        f"# Redo the build of {config.release} by kcheck build-kernel {__version__}.",
        "# Run it in an empty directory: it clones the source again, applies the same commits,",
        "# and builds with the same config and make variables.",
        "set -eu",
        shell_line(["git", "clone", options.repo or str(run.tree), "linux"]),
        "cd linux",
        shell_line(["git", "checkout", "--quiet", "--detach", pick.original_commit]),
    ]
    picked = [p for p in pick.picked if p["commit"]]
    # The run's plan again, for a fresh clone: every picked commit is fetched, none is present.
    recipe = plan.PickPlan(
        ("git", "remote", "add", gitops.REMOTE, run.upstream) if picked else None,
        gitops.FetchPlan(tuple(p["sha"] for p in picked), ()),
        tuple(plan.Pick(p["patchset"], p["sha"], p["subject"]) for p in picked),
        None,  # detached, as the checkout above
        (pick.tag or "", "kcheck build-kernel reproducer"),
    )
    lines += [shell_line(argv) for argv in recipe.setup_commands()]
    for item, command in zip(picked, recipe.picks, strict=True):
        if item["how"] == "resolved":
            lines.append(f"# {item['sha'][:12]} conflicted in the original run and was resolved by hand")
        lines.append(shell_line(command.argv()))
    lines.append(shell_line(recipe.tag_command()))
    stale = [kbuild.ConfigSetting(name.removeprefix("CONFIG_"), '""') for name in config.cleared]
    base = run.workdir / kbuild.BASE_CONFIG
    # Without the cluster: this machine alone builds the same kernel.
    local = replace(options, distcc=None, distcc_degraded=False)
    commands = kbuild.config_and_build_commands(local, base, stale, kbuild.variables_for(local, variables))
    lines += [command.shell() for command in commands[:-1]]
    if options.distcc is not None:
        lines += distcc_alternative(run, variables)
    lines.append(commands[-1].shell())
    return "\n".join(lines) + "\n"


def distcc_alternative(run: Run, variables: tuple[str, ...]) -> list[str]:
    """The build line as --distcc ran it, commented out: it needs the cluster."""
    record = distcc_record(run)
    hosts = record["hosts"] if record else run.options.distcc
    remote = kbuild.build_command(run.options, variables, hosts)
    env = {key: value for key, value in remote.env.items() if key not in distcc.PRIVATE_ENV}
    return [
        "# Or across machines with distcc, as kcheck built it. With the same gcc on every host this",
        "# gives the same vmlinux byte for byte for configs without debug info (e.g. tinyconfig):",
        "# " + kbuild.Command(remote.argv, env).shell(),
    ]


def write_records(run: Run, tree: TreeGit, variables: tuple[str, ...]) -> None:
    """metadata.json and reproducer.sh, rewritten as the build's stages progress."""
    write_atomic(run.workdir / METADATA, json.dumps(metadata(run, tree, variables), indent=2) + "\n")
    script = run.workdir / REPRODUCER
    write_atomic(script, reproducer(run, variables))
    script.chmod(0o755)


def write_build_record(run: Run, tree: TreeGit) -> Path:
    """The build record (core/buildrecord.py): on this host, or in the image with --install-root."""
    release = run.configured.release
    carried = patches(run)
    record = {
        "release": release,
        "commit": run.picked.head,
        "source": run.options.repo or tree.origin_url() or str(run.tree),
        "patchsets": [
            {"name": name, "commits": [p for p in carried if p["patchset"] == name]}
            for name in run.state.get(Stage.PICK).inputs["patchsets"]
        ],
        "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metadata": str(run.workdir / METADATA),
    }
    root = run.options.install_root
    directory = host_records_dir() if root is None else root / BUILD_RECORD_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageFailed(f"cannot create {directory}: {exc.strerror}") from None
    path = record_file(directory, release)
    write_atomic(path, dump_record(record))
    return path
