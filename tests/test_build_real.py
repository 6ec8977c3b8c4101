"""End to end: `kcheck build-kernel` on Debian's real linux-source-6.1 with a tinyconfig.

Takes minutes (an untar the first time, then a real kernel build); it runs in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import git
import pytest
from conftest import kcheck_argv
from kbuild_fixtures import (
    FIX_SUBJECT,
    clone_linux_source,
    linux_tinyconfig,
    real_fix_catalog,
    upstream_with_a_real_fix,
)


@pytest.mark.slow
def test_real_kernel_builds_with_the_picked_fix(tmp_path):
    started = time.monotonic()
    tree = tmp_path / "linux"
    clone_linux_source(tree).close()
    upstream, fix = upstream_with_a_real_fix(tmp_path / "upstream.git")
    catalog = real_fix_catalog(tmp_path / "catalog", upstream, fix)
    workdir = tmp_path / "work"
    argv = [
        *kcheck_argv(),
        "build-kernel",
        "--tree",
        str(tree),
        "--upstream",
        upstream,
        "--catalog",
        str(catalog),
        "--config",
        str(linux_tinyconfig()),
        "--targets",
        "bzImage",
        "--jobs",
        "2",
        "--workdir",
        str(workdir),
        "--min-free",
        "2G",
    ]
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"real kernel build-kernel: {time.monotonic() - started:.0f}s in all")

    assert (tree / "arch/x86/boot/bzImage").stat().st_size > 100_000
    assert b"KCHECK_FIX=applied" in (tree / "vmlinux").read_bytes()  # the picked change was compiled
    release = subprocess.run(["make", "-s", "kernelrelease"], cwd=tree, capture_output=True, text=True)
    assert release.stdout.strip().endswith("-kcheck"), release.stdout + release.stderr
    with git.Repo(tree) as repo:
        message = repo.head.commit.message
        assert message.startswith(FIX_SUBJECT)
        assert f"(cherry picked from commit {fix})" in message
        assert repo.heads.main.commit.hexsha != repo.head.commit.hexsha

    meta = json.loads((workdir / "metadata.json").read_text())
    assert meta["release"] == release.stdout.strip() and meta["release"].startswith("6.1.")
    assert meta["source"]["tree"] == str(tree) and meta["source"]["commit"]
    assert meta["upstream"] == upstream and meta["patchsets"] == ["kcheck-test-fix"]
    assert meta["patches"] == [
        {
            "patchset": "kcheck-test-fix",
            "upstream_sha": fix,
            "subject": FIX_SUBJECT,
            "status": "picked",
            "commit": meta["commit"],
        }
    ]
    assert meta["config"]["sha256"] == hashlib.sha256((tree / ".config").read_bytes()).hexdigest()
    assert meta["config"]["source"] == str(linux_tinyconfig())
    assert meta["build"]["targets"] == ["bzImage"] and meta["build"]["jobs"] == 2
    assert {stage: s["status"] for stage, s in meta["stages"].items()} == {
        "fetch": "done",
        "pick": "done",
        "config": "done",
        "build": "done",
    }
    assert all(s["duration"] > 0 for s in meta["stages"].values())
    assert all(meta["tools"][tool] for tool in ("git", "make", "gcc", "kcheck"))
    assert Path(meta["reproducer"]).is_file() and Path(meta["log"]).stat().st_size > 0
