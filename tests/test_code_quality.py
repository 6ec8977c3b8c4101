"""The codebase's own standards, checked like any other behaviour."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def python_scripts() -> list[str]:
    """scripts/ entries without a .py suffix, which ruff would not find on its own."""
    return [
        str(path)
        for path in sorted((ROOT / "scripts").iterdir())
        if path.is_file() and path.read_text(errors="replace").startswith("#!/usr/bin/env python")
    ]


def test_ruff_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is part of the test extra; scripts/test installs it"
    done = subprocess.run(
        [ruff, "check", "kcheck", "tests", *python_scripts()], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_bench_scripts_are_checked():
    assert any(name.endswith("bench-probe") for name in python_scripts())
