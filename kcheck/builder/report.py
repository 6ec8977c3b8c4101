"""What build-kernel tells the user at the end of a run or a stage: failures with the log's
last lines, conflict help, next steps, and the reboot prompt."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

from kcheck.builder.context import METADATA, REPRODUCER, VERIFY_REPORT, Run
from kcheck.builder.progress import shell_line
from kcheck.builder.state import Stage, StageStatus
from kcheck.core import channel


def failing(run: Run, stage: Stage) -> None:
    """Record a failed stage (unless it is not running), show the log's last lines and what to do."""
    record = run.state.get(stage)
    if record is not None and record.status == StageStatus.RUNNING:
        run.state.finish(stage, StageStatus.FAILED)
    tail = run.log.tail()
    lines = "".join(f"\n  {line}" for line in tail)
    channel.note(f"stage {stage.value} failed; the last {len(tail)} lines of {run.log.path}:{lines}")
    run.say("Next steps:")
    run.say(f"  read {run.log.path}, fix the cause, then rerun the same command: finished stages are skipped")


def print_conflict(run: Run, item: dict[str, Any], conflicts: tuple[str, ...]) -> None:
    run.say(
        f"[pick] conflict: git cherry-pick -x {item['sha'][:12]} ({item['subject']!r}) stopped in {run.tree}:"
    )
    for name in conflicts:
        run.say(f"  {name}")
    pick = run.picked
    back = pick.original_branch or pick.original_commit[:12]
    workdir = ["--workdir", str(run.workdir)]
    run.say("Next steps:")
    run.say(
        f"  cd {run.tree}, edit the files above to resolve the conflict, then: git add {' '.join(conflicts)}"
    )
    run.say(f"  {shell_line(['kcheck', 'build-kernel', '--continue', *workdir])}   (commits it and goes on)")
    run.say(f"  or: {shell_line(['kcheck', 'build-kernel', '--abort', *workdir])}   (back to {back})")


def print_next_steps(run: Run) -> None:
    release = run.configured.release
    pick = run.picked
    run.say(f"Built {release} from {run.tree} ({pick.branch or (pick.head or '')[:12]}).")
    run.say(
        f"  metadata: {run.workdir / METADATA}; reproducer: {run.workdir / REPRODUCER}; log: {run.log.path}"
    )
    if verified := run.verified:
        run.say(f"  verified in a VM: {verified.verdict}; report: {run.workdir / VERIFY_REPORT}")
    run.say("Next steps:")
    if (root := run.options.install_root) is not None:
        run.say(f"  gate the image offline: kcheck probe --root {root} --release {release}")
        run.say(f"  or boot it and probe it live: kcheck probe --boot --root {root} --release {release}")
    elif not run.options.install:
        run.say("  install it as root: rerun this command with --install (finished stages are skipped)")
        run.say(f"  then reboot into {release} and check it: kcheck probe")
    elif not run.options.reboot:
        run.say(
            f"  reboot into {release} (make sure the boot loader's default entry is it), then: kcheck probe"
        )
    else:
        run.say(f"  after the reboot into {release}, check it: kcheck probe")


def reboot_argv() -> list[str]:
    return ["systemctl", "reboot"] if shutil.which("systemctl") else ["reboot"]


def reboot(run: Run) -> None:
    """Only after a yes on the terminal, or --yes."""
    release = run.configured.release
    if not run.options.yes:
        if not sys.stdin.isatty():
            run.say("Not rebooting: no terminal to confirm on. Pass --yes, or reboot when you are ready.")
            return
        if input(f"Reboot now into {release}? [y/N] ").strip().lower() not in ("y", "yes"):
            run.say("Not rebooting; reboot when you are ready.")
            return
    argv = reboot_argv()
    run.log.command(shell_line(argv))
    run.say(f"Rebooting into {release}: {shell_line(argv)}")
    subprocess.run(argv, check=False)
