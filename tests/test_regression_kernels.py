"""The live checks against kernels that have the bugs: Debian's 6.1 (the VM test kernel) with one
historical behaviour put back by a small patch in tests/regressions/, booted with `kcheck probe
--boot`. Each must fail exactly its own checks, live, and change nothing else.

The kernels are rebuilt incrementally from the cached stock VM tree and cached beside it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
from conftest import requires_root, run_kcheck
from gitrepos import catalog_commit, patchset, write_catalog
from kbuild_fixtures import (
    STOCK_VM_LIVE_RESULTS,
    UPSTREAM_IDENTITY,
    VM_BUILD,
    commit_file_on_head,
    live_results,
    patch_header,
    regression_kernel,
    regression_patch,
    regression_variants,
    vm_build_env,
)
from node_images import cached_debian_image, linked_copy

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


def expected_live_results(variant: str) -> dict[str, str]:
    """Exactly its own checks fail; every other live check keeps its stock result."""
    return {**STOCK_VM_LIVE_RESULTS, **dict.fromkeys(EXPECTED_FAILURES[variant], "fail")}


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
    assert live_results(report) == expected_live_results(variant)
    checks = {check["id"]: check for check in report["checks"]}
    for check_id, seen in EXPECTED_FAILURES[variant].items():
        check = checks[check_id]
        assert check["required"] and check["evidence"] == "live"
        for pattern in seen:
            assert re.search(pattern, check["detail"]), (pattern, check["detail"])


# --- the whole mission: the probe finds the bug, build-kernel picks the fix, --verify proves it ---

FIX_SUBJECT = "overlayfs: show the overlay's own path in procfs again"
UNRELATED_SUBJECT = "Documentation: a note kcheck's tests pick instead of the fix"


def upstream_with_the_inverse(regression: Path, path: Path) -> dict[str, str]:
    """A bare clone of the regression tree plus two commits on its HEAD: the fix (the regression's
    inverse, tag v6.1-kcheck-ovl-fix) and an unrelated one (tag v6.1-kcheck-unrelated)."""
    shas = {}
    with git.Repo.clone_from(str(regression), path, bare=True) as repo:
        with repo.git.custom_environment(**UPSTREAM_IDENTITY):
            # The fix's tree is the stock tree: exactly the regression, undone.
            shas["fix"] = repo.git.commit_tree("HEAD~1^{tree}", "-p", "HEAD", "-m", FIX_SUBJECT)
        note = "A note that changes nothing the kernel compiles.\n"
        shas["unrelated"] = commit_file_on_head(
            repo, path, "Documentation/kcheck-note.rst", note, UNRELATED_SUBJECT
        )
        repo.git.tag("-a", "-m", "fix", "v6.1-kcheck-ovl-fix", shas["fix"])
        repo.git.tag("-a", "-m", "unrelated", "v6.1-kcheck-unrelated", shas["unrelated"])
    return shas


def ccache_stats() -> dict[str, int]:
    done = subprocess.run(
        ["ccache", "--print-stats"], capture_output=True, text=True, check=True, env=vm_build_env()
    )
    return {key: int(value) for key, value in (line.split("\t") for line in done.stdout.splitlines())}


def compiled(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Compiles between two ccache stats: served from the cache, and compiled anew."""
    hits = sum(after[k] - before[k] for k in ("direct_cache_hit", "preprocessed_cache_hit"))
    return {"hits": hits, "misses": after["cache_miss"] - before["cache_miss"]}


@pytest.fixture
def trees(tmp_path) -> Iterator[Path]:
    """Where the test's kernel clones go (3-4 GB each once built): removed after the test."""
    yield tmp_path / "trees"
    shutil.rmtree(tmp_path / "trees", ignore_errors=True)


@requires_root  # --install-root into a copy of a debootstrapped node image
@pytest.mark.slow
def test_the_probe_finds_it_build_kernel_fixes_it_and_verify_proves_it(tmp_path, trees):
    """The mission in one test: the fix is built, verified in a VM, installed into a real node
    image, and that image's gate then trusts it, offline by its build record and booted live."""
    regression = regression_kernel("overlay-realpath").parents[3]  # the tree of arch/x86/boot/bzImage
    image = linked_copy(cached_debian_image(), tmp_path / "image")
    shas = upstream_with_the_inverse(regression, tmp_path / "upstream.git")
    upstream = str(tmp_path / "upstream.git")
    catalog = write_catalog(
        tmp_path / "catalog",
        patchset(
            "kcheck-test-ovl-fix",
            [catalog_commit(shas["fix"], FIX_SUBJECT, tag="v6.1-kcheck-ovl-fix")],
            fixes=["overlayfs.mnt_id", "overlayfs.fd_path"],
            needed_below="6.2",
            upstream=upstream,
        ),
        patchset(
            "kcheck-test-unrelated",
            [catalog_commit(shas["unrelated"], UNRELATED_SUBJECT, tag="v6.1-kcheck-unrelated")],
            fixes=["aio.ring_remap"],
            needed_from="7.0",  # never needed here: picked only when asked for
            needed_below="7.1",
            upstream=upstream,
        ),
    )
    env = {key: vm_build_env()[key] for key in ("CCACHE_DIR", "CCACHE_NOHASHDIR")}

    def build_kernel(name: str, *extra: str) -> subprocess.CompletedProcess:
        tree = trees / name
        git.Repo.clone_from(str(regression), tree).close()  # the distro kernel, regression committed
        return run_kcheck(
            "build-kernel",
            "--tree",
            str(tree),
            "--catalog",
            str(catalog),
            "--config",
            str(VM_BUILD / ".config"),
            "--targets",
            "bzImage",
            "--cc-wrapper",
            "ccache",
            "--jobs",
            str((os.cpu_count() or 1) + 1),
            "--workdir",
            str(tmp_path / f"{name}-work"),
            "--min-free",
            "0",
            "--verify",
            "--verify-timeout",
            "600",
            "--install-root",
            str(image),
            *extra,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=3600,
        )

    before = ccache_stats()
    done = build_kernel("fixed")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cache = compiled(before, ccache_stats())
    print(f"close the loop: ccache {cache}")
    assert cache["hits"] > 10 * cache["misses"], cache  # mostly hits from the stock VM kernel's build
    tree = trees / "fixed"
    meta = json.loads((tmp_path / "fixed-work/metadata.json").read_text())
    assert meta["patchsets"] == ["kcheck-test-ovl-fix"]  # audited missing: only it was fetched and picked
    assert [(p["upstream_sha"], p["status"]) for p in meta["patches"]] == [(shas["fix"], "picked")]
    with git.Repo(tree) as repo:
        assert f"(cherry picked from commit {shas['fix']})" in repo.head.commit.message
        assert not repo.git.rev_list("--all", f"^{shas['fix']}", "--", "Documentation/kcheck-note.rst")
    report = json.loads((tmp_path / "fixed-work/verify.json").read_text())
    assert report["kernel"]["boot"]["kernel"] == str(next(tree.glob("arch/*/boot/bzImage")))
    assert report["kernel"]["release"] == meta["release"]  # the kernel it just built
    assert live_results(report) == STOCK_VM_LIVE_RESULTS  # the checks that failed now pass
    assert report["verdict"] == "ready"
    release = meta["release"]
    bz_image = next(tree.glob("arch/*/boot/bzImage")).read_bytes()
    assert (image / f"boot/vmlinuz-{release}").read_bytes() == bz_image

    # The image's gate: offline, the build record names the fix its 6.1 version lacks...
    gate = ["--root", str(image), "--release", release, "--catalog", str(catalog), "--format", "json"]
    # (the test catalog has no AIO patchset that 6.1 can be judged by offline: only the overlay checks)
    offline = run_kcheck("probe", *gate, "--check", "overlayfs.mnt_id", "--check", "overlayfs.fd_path")
    assert offline.returncode == 0, offline.stdout
    by_id = {check["id"]: check for check in json.loads(offline.stdout)["checks"]}
    record = image / f"var/lib/kcheck/builds/{release}.json"
    assert sorted(by_id) == ["overlayfs.fd_path", "overlayfs.mnt_id"]
    for check in by_id.values():
        assert (check["status"], check["evidence"]) == ("pass", "tree")
        assert (
            check["detail"] == f"build record {record} says kcheck build-kernel applied kcheck-test-ovl-fix"
        )
    # ...and booted, the installed kernel passes live.
    booted = run_kcheck("probe", "--boot", *gate, timeout=900)
    assert booted.returncode == 0, booted.stderr[-3000:]
    report = json.loads(booted.stdout)
    assert report["kernel"]["boot"]["kernel"] == str(image / f"boot/vmlinuz-{release}")
    assert (report["kernel"]["release"], live_results(report)) == (release, STOCK_VM_LIVE_RESULTS)

    skipped = build_kernel("unfixed", "--patchset", "kcheck-test-unrelated")
    assert skipped.returncode == 1, skipped.stdout[-3000:] + skipped.stderr[-3000:]
    assert "[verify] not-ready" in skipped.stdout
    assert "[install] refused: the verified kernel is not-ready" in skipped.stderr
    report = json.loads((tmp_path / "unfixed-work/verify.json").read_text())
    assert live_results(report) == expected_live_results("overlay-realpath")
    assert (image / f"boot/vmlinuz-{release}").read_bytes() == bz_image  # the refused kernel left it alone
