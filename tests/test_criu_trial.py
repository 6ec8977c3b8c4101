"""criu.trial for real: a canary dumped and restored by the criu first on PATH. CRIU 4.2
(built by `kcheck build-criu`) must pass it here; Debian's criu 3.17 must fail it (vDSO).
Either way nothing may be left: no process, no mount, no scratch directory."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import requires_root, run_kcheck
from realstack import built_criu, search_path

pytestmark = requires_root


def leftovers() -> list[str]:
    """Anything a trial could leave: scratch dirs, mounts, canary processes."""
    scratch = [str(p) for p in Path(tempfile.gettempdir()).glob("kcheck-trial-*")]
    mounts = []  # in any namespace: the trial's mounts live in a private one
    for table in Path("/proc").glob("[0-9]*/mountinfo"):
        with contextlib.suppress(OSError):  # the process is gone
            mounts += [
                f"{table}: {line}" for line in table.read_text().splitlines() if "kcheck-trial" in line
            ]
    canaries = subprocess.run(["pgrep", "-f", "kcheck.probe.canary"], capture_output=True, text=True)
    return scratch + mounts + canaries.stdout.split()


def trial(path: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = run_kcheck("probe", "--format", "json", *args, env={"PATH": path})
    report = json.loads(done.stdout)
    return done, {check["id"]: check for check in report["checks"]}


@pytest.fixture(scope="module")
def criu_bin() -> Path:
    return built_criu()


def test_trial_passes_with_a_criu_that_fits_the_kernel(criu_bin):
    assert leftovers() == []
    done, checks = trial(search_path(criu_bin), "--require", "criu.trial")
    assert done.returncode == 0, done.stdout
    result = checks["criu.trial"]
    assert (result["status"], result["evidence"], result["required"]) == ("pass", "tool", True)
    assert result["detail"].startswith(f"criu 4.2 ({criu_bin / 'criu'}): dumped and restored a canary")
    assert "reaped its AIO read, and its fd still names /tmp/kcheck-trial-" in result["detail"]
    assert leftovers() == []


def test_trial_fails_with_debians_criu_and_names_build_criu():
    done, checks = trial(search_path(), "--check", "criu.trial", "--require", "criu.trial")
    assert done.returncode == 1
    result = checks["criu.trial"]
    assert result["status"] == "fail"
    assert "criu dump of the canary failed" in result["detail"]
    assert "vdso" in result["detail"].lower()
    assert "kcheck build-criu" in result["remedy"]
    assert leftovers() == []


def test_trial_runs_only_on_demand():
    done = run_kcheck("probe", "--format", "json", env={"PATH": search_path()})
    ids = [check["id"] for check in json.loads(done.stdout)["checks"]]
    assert "criu.check" in ids and "criu.trial" not in ids
