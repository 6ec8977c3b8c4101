"""Shared fixtures: captured observations and a way to run the installed kcheck."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def load_capture(name: str) -> dict:
    """A captured observation from tests/data (the 'captured' key is a note, not data)."""
    data = json.loads((DATA / name).read_text())
    data.pop("captured", None)
    return data


def kcheck_argv() -> list[str]:
    """The installed console script when present, so tests exercise the real entry point."""
    script = shutil.which("kcheck")
    return [script] if script else [sys.executable, "-m", "kcheck"]


def run_kcheck(
    *args: str, env: dict | None = None, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    """Run the installed kcheck with no colour and no inherited GitHub step summary."""
    full_env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    full_env.update({"NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        [*kcheck_argv(), *args], capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs
    )


@pytest.fixture(autouse=True, scope="session")
def private_user_cache(tmp_path_factory):
    """kcheck's user cache (the catalog's JSON) in this run's own directory, for every test and
    every kcheck it starts: never the tester's ~/.cache, never a cache left by an earlier run."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


# Run a command as user nobody (root's tests of what an unprivileged user gets).
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="live probes need root (CI runs as root)")


@pytest.fixture
def open_dir():
    """A directory user nobody can reach, for tests run as nobody (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="kcheck-nobody-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)
