"""The README's quick start: scripts/install works where the system pip refuses (PEP 668)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import requires_root

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def install(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "KCHECK_PREFIX": str(tmp_path / "opt"),
        "KCHECK_BINDIR": str(tmp_path / "bin"),
        **env,
    }
    return subprocess.run(
        [str(ROOT / "scripts/install")], capture_output=True, text=True, env=full_env, timeout=600
    )


@requires_root
@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no distro python3 on this machine")
def test_quick_start_with_the_distro_python(tmp_path):
    done = install(tmp_path, PYTHON=SYSTEM_PYTHON)
    assert done.returncode == 0, done.stderr
    kcheck = tmp_path / "bin" / "kcheck"
    assert kcheck.is_symlink()
    probe = subprocess.run(
        [str(kcheck), "probe", "--format", "json"], capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert json.loads(probe.stdout)["verdict"] == "ready"
    # A reinstall over an existing one replaces it and leaves no backup behind.
    again = install(tmp_path, PYTHON=SYSTEM_PYTHON)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "opt"]


def test_missing_python_is_one_line_and_installs_nothing(tmp_path):
    done = install(tmp_path, PYTHON="python3-does-not-exist")
    assert done.returncode == 3
    assert done.stderr.strip() == (
        "kcheck install: error: python3-does-not-exist not found; install python3 (>= 3.11) or set PYTHON"
    )
    assert list(tmp_path.iterdir()) == []


def test_failed_install_restores_the_previous_one(tmp_path):
    previous = tmp_path / "opt"
    previous.mkdir()
    (previous / "marker").write_text("old install")
    # A broken checkout: the same installer next to a pyproject.toml pip cannot build.
    source = tmp_path / "src"
    (source / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts/install", source / "scripts/install")
    (source / "pyproject.toml").write_text("[project\nname = broken\n")
    env = {**os.environ, "KCHECK_PREFIX": str(previous), "KCHECK_BINDIR": str(tmp_path / "bin")}
    done = subprocess.run(
        [str(source / "scripts/install")], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode != 0
    assert "kcheck install: failed; nothing changed" in done.stderr
    assert sorted(p.name for p in previous.iterdir()) == ["marker"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt", "src"]
