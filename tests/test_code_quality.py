"""The codebase's own standards, checked like any other behaviour."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is part of the test extra; scripts/test installs it"
    done = subprocess.run(
        [ruff, "check", "kcheck", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
