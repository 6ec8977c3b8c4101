"""The live checks against kernels that have the bugs: Debian's 6.1 (the VM test kernel) with one
historical behaviour put back by a small patch in tests/regressions/, booted with `kcheck probe
--boot`. Each must fail exactly its own checks, live, and change nothing else.

The kernels are rebuilt incrementally from the cached stock VM tree and cached beside it.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_kcheck
from kbuild_fixtures import (
    STOCK_VM_LIVE_RESULTS,
    live_results,
    patch_header,
    regression_kernel,
    regression_patch,
    regression_variants,
)

# variant -> {check id failing live on it: what its detail must say it saw}
EXPECTED_FAILURES = {
    "overlay-realpath": {
        # The layer's private mount (not in mountinfo), and the file's path inside the layer.
        "overlayfs.mnt_id": [
            r"lower-only: fdinfo mnt_id \d+ \(not in mountinfo\) but overlay is mount \d+ \(/\S+/merged\)",
            r"copied-up: fdinfo mnt_id \d+ \(not in mountinfo\) but overlay is mount \d+ \(/\S+/merged\)",
        ],
        "overlayfs.fd_path": [
            r"lower-only: /proc/self/fd link is /lower-only but the file is /\S+/merged/lower-only",
            r"copied-up: /proc/self/fd link is /copied-up but the file is /\S+/merged/copied-up",
        ],
    },
    "aio-no-remap": {
        "aio.ring_remap": [r"io_getevents on the moved AIO ring returned -1 \(EINVAL\)"],
    },
    "aio-reopen": {
        "aio.reopen_enxio": [r"reopening the AIO ring via /proc/self/map_files succeeded; expected ENXIO"],
    },
}
# The upstream commit each one reverts the effect of.
REVERTED_COMMITS = {
    "overlay-realpath": "4bacc9c9234c7c8eec44f5ed4e960d9f96fa0f01",
    "aio-no-remap": "e4a0d3e720e7e508749c1439b5ba3aff56c92976",
    "aio-reopen": "bd9b51e79cb0b8bc00a7e0076a4a8963ca4a797c",
}


def test_every_regression_patch_has_its_expectations_and_names_its_commit():
    assert regression_variants() == sorted(EXPECTED_FAILURES) == sorted(REVERTED_COMMITS)
    for variant, sha in REVERTED_COMMITS.items():
        header = patch_header(regression_patch(variant))
        assert header.startswith(f"kcheck regression: {variant}\n")
        assert sha in header and "Userspace symptom:" in header


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(EXPECTED_FAILURES))
def test_regression_kernel_fails_exactly_its_checks_live(variant):
    kernel = regression_kernel(variant)
    done = run_kcheck("probe", "--boot", str(kernel), "--format", "json", timeout=900)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["mode"] == "vm" and report["verdict"] == "not-ready"
    assert report["kernel"]["boot"]["kernel"] == str(kernel)
    failures = EXPECTED_FAILURES[variant]
    # Exactly the expected checks change; every other live check keeps its stock result.
    assert live_results(report) == {**STOCK_VM_LIVE_RESULTS, **dict.fromkeys(failures, "fail")}
    checks = {check["id"]: check for check in report["checks"]}
    for check_id, seen in failures.items():
        check = checks[check_id]
        assert check["required"] and check["evidence"] == "live"
        for pattern in seen:
            assert re.search(pattern, check["detail"]), (pattern, check["detail"])
