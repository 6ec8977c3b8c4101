"""Offline probe of node images: real image trees, the same engine, mode "offline"."""

from __future__ import annotations

import gzip
import json
import os
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
from conftest import run_kcheck

from kcheck.patchsets.catalog import load_catalog
from kcheck.probe.checks import CONFIG_OPTIONS

CATALOG = load_catalog()
SCHEMA = json.loads(files("kcheck.schemas").joinpath("probe-1.json").read_text())
FULL_CONFIG = "".join(f"CONFIG_{option}=y\n" for option, _, _ in CONFIG_OPTIONS)
OLD = "3.19.0-15-generic"
NEW = "6.1.0-28-amd64"


def make_image(root: Path, releases: list[str], default: str | None = None) -> Path:
    (root / "boot").mkdir(parents=True)
    for release in releases:
        (root / "boot" / f"vmlinuz-{release}").write_bytes(b"MZ fake kernel image")
        (root / "boot" / f"config-{release}").write_text(FULL_CONFIG)
        (root / "lib/modules" / release).mkdir(parents=True)
    if default:
        (root / "boot/vmlinuz").symlink_to(f"vmlinuz-{default}")
    return root


def changelog(root: Path, release: str, lines: list[str]) -> None:
    path = root / f"usr/share/doc/linux-image-{release}/changelog.Debian.gz"
    path.parent.mkdir(parents=True)
    body = "linux (3.19.0-15.15) vivid; urgency=medium\n\n" + "".join(f"  * {line}\n" for line in lines)
    path.write_bytes(gzip.compress(body.encode()))


def probe(*args: str, timeout: float = 120):
    done = run_kcheck("probe", "--format", "json", *args, timeout=timeout)
    report = json.loads(done.stdout) if done.stdout else None
    if report:
        jsonschema.validate(report, SCHEMA)
    return done, report


def checks(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def test_default_kernel_is_the_vmlinuz_link_and_others_are_listed(tmp_path):
    root = make_image(tmp_path / "img", [NEW, OLD, "5.10.0-9-amd64"], default=OLD)
    done, report = probe("--root", str(root))
    assert report["mode"] == "offline"
    assert report["kernel"]["release"] == OLD
    assert report["kernel"]["image"]["other_releases"] == [NEW, "5.10.0-9-amd64"]
    assert report["kernel"]["machine"] is None


def test_newest_kernel_without_a_link_and_version_evidence(tmp_path):
    root = make_image(tmp_path / "img", [OLD, NEW])
    done, report = probe("--root", str(root))
    assert report["kernel"]["release"] == NEW
    by_id = checks(report)
    for check_id in ("overlayfs.mnt_id", "overlayfs.fd_path", "aio.ring_remap", "aio.reopen_enxio"):
        assert (by_id[check_id]["status"], by_id[check_id]["evidence"]) == ("pass", "version")
    assert by_id["overlayfs.maps"]["status"] == "unknown"  # no version decides it
    assert by_id["criu.check"]["status"] == "skip"
    assert by_id["config.NAMESPACES"]["detail"].endswith(f"img/boot/config-{NEW}")
    assert done.returncode == 0 and report["verdict"] == "ready"


def test_old_kernel_without_evidence_is_undecided_never_pass(tmp_path):
    root = make_image(tmp_path / "img", [OLD])
    done, report = probe("--root", str(root))
    mnt_id = checks(report)["overlayfs.mnt_id"]
    assert mnt_id["status"] == "unknown"
    assert "older than 4.2" in mnt_id["detail"] and "--boot" in mnt_id["detail"]
    # 3.19 has the AIO fix by version.
    assert checks(report)["aio.ring_remap"]["evidence"] == "version"
    assert done.returncode == 2 and report["verdict"] == "undecided"


def test_changelog_naming_every_fix_counts_as_backported(tmp_path):
    root = make_image(tmp_path / "img", [OLD])
    overlay = CATALOG["overlayfs-mnt-id"]
    lines = [f"{c.subject}" for c in overlay.commits[:3]]
    lines += [f"(cherry picked from commit {c.sha})" for c in overlay.commits[3:]]
    changelog(root, OLD, lines)
    done, report = probe("--root", str(root))
    mnt_id = checks(report)["overlayfs.mnt_id"]
    assert (mnt_id["status"], mnt_id["evidence"]) == ("pass", "tree")
    assert "changelog.Debian.gz names every overlayfs-mnt-id commit" in mnt_id["detail"]
    assert done.returncode == 0


def test_changelog_missing_a_commit_names_it(tmp_path):
    root = make_image(tmp_path / "img", [OLD])
    overlay = CATALOG["overlayfs-mnt-id"]
    changelog(root, OLD, [c.subject for c in overlay.commits if not c.sha.startswith("4bacc9c923")])
    done, report = probe("--root", str(root))
    mnt_id = checks(report)["overlayfs.mnt_id"]
    assert mnt_id["status"] == "unknown"
    assert "changelog lacks 4bacc9c923" in mnt_id["detail"]
    assert done.returncode == 2


def test_build_record_is_the_strongest_evidence(tmp_path):
    root = make_image(tmp_path / "img", [OLD])
    record = root / f"var/lib/kcheck/builds/{OLD}.json"
    record.parent.mkdir(parents=True)
    # The shape `kcheck build-kernel --install` writes (kcheck/builder/records.py write_build_record).
    picked = {"patchset": "overlayfs-mnt-id", "upstream": "4bacc9c923", "sha": "cd" * 20}
    record.write_text(
        json.dumps(
            {
                "schema": "kcheck.build-record/1",
                "release": OLD,
                "commit": "ab" * 20,
                "patchsets": [{"name": "overlayfs-mnt-id", "commits": [picked]}],
            }
        )
    )
    changelog(root, OLD, ["nothing relevant"])
    done, report = probe("--root", str(root))
    mnt_id = checks(report)["overlayfs.mnt_id"]
    assert (mnt_id["status"], mnt_id["evidence"]) == ("pass", "tree")
    assert f"build record {record}" in mnt_id["detail"]
    assert done.returncode == 0


@pytest.mark.parametrize(
    "patchsets", [{"overlayfs-mnt-id": 1}, None, 5, ["overlayfs-mnt-id"], [{"name": 5, "commits": []}]]
)
def test_a_malformed_build_record_is_no_evidence_never_a_pass(tmp_path, patchsets):
    """A record whose patchsets is an object once made a 4.1 kernel ready (its keys were read)."""
    root = make_image(tmp_path / "img", ["4.1.0-1-amd64"])
    record = root / "var/lib/kcheck/builds/4.1.0-1-amd64.json"
    record.parent.mkdir(parents=True)
    record.write_text(
        json.dumps({"schema": "kcheck.build-record/1", "release": "4.1.0-1-amd64", "patchsets": patchsets})
    )
    done, report = probe("--root", str(root))
    assert done.returncode == 2, done.stderr
    mnt_id = checks(report)["overlayfs.mnt_id"]
    assert mnt_id["status"] == "unknown"
    assert f"cannot use {record}: not a kcheck build record ($.patchsets" in mnt_id["detail"]


def test_release_and_config_without_an_image(tmp_path):
    config = tmp_path / "config"
    config.write_text(FULL_CONFIG.replace("CONFIG_UNIX_DIAG=y", "# CONFIG_UNIX_DIAG is not set"))
    done, report = probe(
        "--release", "4.1.5", "--config", str(config), "--check", "config.*", "--check", "aio.*"
    )
    assert report["mode"] == "offline" and report["kernel"]["release"] == "4.1.5"
    assert checks(report)["config.UNIX_DIAG"]["status"] == "fail"
    assert done.returncode == 1


def test_a_release_without_an_image_is_judged_by_this_hosts_build_record(tmp_path):
    """`--release R` alone: the record build-kernel --install left in KCHECK_STATE_DIR is evidence."""
    config = tmp_path / "config"
    config.write_text(FULL_CONFIG)
    state = tmp_path / "state"
    (state / "builds").mkdir(parents=True)
    record = {
        "schema": "kcheck.build-record/1",
        "release": "4.1.5",
        "patchsets": [{"name": "overlayfs-mnt-id", "commits": []}],
    }
    (state / "builds/4.1.5.json").write_text(json.dumps(record))
    args = [
        "probe",
        "--format",
        "json",
        "--release",
        "4.1.5",
        "--config",
        str(config),
        "--check",
        "overlayfs.mnt_id",
    ]
    recorded = json.loads(run_kcheck(*args, env={"KCHECK_STATE_DIR": str(state)}).stdout)
    mnt_id = checks(recorded)["overlayfs.mnt_id"]
    assert (mnt_id["status"], mnt_id["evidence"]) == ("pass", "tree")
    assert mnt_id["detail"].startswith(f"build record {state / 'builds/4.1.5.json'} says")
    elsewhere = json.loads(run_kcheck(*args, env={"KCHECK_STATE_DIR": str(tmp_path / "none")}).stdout)
    assert checks(elsewhere)["overlayfs.mnt_id"]["status"] == "unknown"  # 4.1 alone decides nothing


def test_offline_gate_can_require_an_optional_check(tmp_path):
    root = make_image(tmp_path / "img", [NEW])
    done, _ = probe("--root", str(root), "--require", "overlayfs.maps")
    assert done.returncode == 2


def test_offline_junit_for_ci(tmp_path):
    root = make_image(tmp_path / "img", [OLD])
    done = run_kcheck("probe", "--root", str(root), "--format", "junit")
    assert done.returncode == 2
    assert '<error message="judged offline' in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda t: ["--root", str(t / "missing")], "not a directory"),
        (lambda t: ["--root", str(t)], "no kernel found"),
        (
            lambda t: ["--root", str(make_image(t / "img", [NEW])), "--release", "9.9.9"],
            f"--release 9.9.9: not in {{t}}/img; the image has {NEW}",
        ),
        (lambda t: ["--root", str(make_image(t / "img", [NEW])), "--timeout", "5"], "--timeout: live-only"),
    ],
)
def test_bad_input_is_one_line_exit_3(tmp_path, args, message):
    done = run_kcheck("probe", *args(tmp_path))
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("kcheck: error: ") and message.format(t=tmp_path) in line
    assert done.stdout == ""


def test_unreadable_image_config_is_bad_input(tmp_path):
    root = make_image(tmp_path / "img", [NEW])
    (root / "boot" / f"config-{NEW}").write_bytes(b"\x1f\x8b\x08\x00truncated")
    done = run_kcheck("probe", "--root", str(root))
    assert done.returncode == 3
    assert f"config file {root}/boot/config-{NEW} is a corrupt gzip" in done.stderr


def test_release_without_an_image_never_reads_the_running_kernels_config():
    # /proc/config.gz describes the running kernel, not the 3.10 kernel being judged.
    done, report = probe("--release", "3.10.0", "--check", "config.NAMESPACES")
    check = checks(report)["config.NAMESPACES"]
    assert check["status"] == "unknown" and "/proc/config.gz" not in check["detail"]
    assert done.returncode == 2


def test_release_that_is_not_a_release_is_bad_input():
    done = run_kcheck("probe", "--release", "garbage")
    assert done.returncode == 3
    assert done.stderr.strip() == (
        "kcheck: error: --release garbage: not a kernel release; pass one like 6.1.0-28-amd64"
    )


# --- special files in an image: refused, never read forever -------------------------------------


def test_a_fifo_as_the_images_config_is_bad_input_not_a_hang(tmp_path):
    root = make_image(tmp_path / "img", [NEW])
    (root / "boot" / f"config-{NEW}").unlink()
    os.mkfifo(root / "boot" / f"config-{NEW}")
    done = run_kcheck("probe", "--root", str(root), timeout=30)
    assert done.returncode == 3
    assert done.stderr == (
        f"kcheck: error: config file {root}/boot/config-{NEW} is a FIFO, not a regular file; "
        "pass a kernel config file\n"
    )


def test_a_gzip_bomb_as_the_changelog_is_refused_and_decides_nothing(tmp_path):
    root = make_image(tmp_path / "img", [OLD])
    path = root / f"usr/share/doc/linux-image-{OLD}/changelog.Debian.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb", compresslevel=9) as stream:  # 80 MB of zeros in about 80 KB
        for _ in range(80):
            stream.write(bytes(1 << 20))
    done, report = probe("--root", str(root), timeout=60)
    assert done.returncode == 2  # undecided: the changelog could not be read, so it proves nothing
    mnt_id = checks(report)["overlayfs.mnt_id"]
    assert mnt_id["status"] == "unknown"
    assert f"cannot use {path}: decompresses to more than 64 MB" in mnt_id["detail"]


def test_absolute_links_in_an_image_resolve_inside_it_never_on_the_host(tmp_path):
    """boot/config-R -> /etc/kernel.cfg once read the HOST's /etc/kernel.cfg."""
    root = make_image(tmp_path / "img", [NEW])
    config = root / "boot" / f"config-{NEW}"
    config.unlink()
    config.symlink_to("/etc/kernel.cfg")  # absolute: means IMG/etc/kernel.cfg
    (root / "etc").mkdir()
    (root / "etc/kernel.cfg").write_text(FULL_CONFIG.replace("CONFIG_TUN=y", "# CONFIG_TUN is not set"))
    done, report = probe("--root", str(root), "--check", "config.*")
    assert done.returncode == 0, done.stderr
    tun = checks(report)["config.TUN"]
    assert tun["status"] == "fail" and f"{root}/etc/kernel.cfg" in tun["detail"]


def test_dotdot_cannot_leave_the_image(tmp_path):
    root = make_image(tmp_path / "img", [NEW])
    config = root / "boot" / f"config-{NEW}"
    config.unlink()
    (tmp_path / "host.cfg").write_text(FULL_CONFIG)  # beside the image: must never be read
    config.symlink_to("../../../../../../../host.cfg")
    done, report = probe("--root", str(root), "--check", "config.*")
    assert done.returncode == 2  # no config in the image: undecided, never the host's file
    detail = checks(report)["config.CHECKPOINT_RESTORE"]["detail"]
    assert f"no kernel config found in {root}/host.cfg" in detail


def test_a_vmlinuz_link_loop_is_no_kernel_and_a_config_loop_is_bad_input(tmp_path):
    root = make_image(tmp_path / "img", [NEW])
    (root / "boot/vmlinuz-9.9.9-loop").symlink_to("vmlinuz-9.9.9-pool")
    (root / "boot/vmlinuz-9.9.9-pool").symlink_to("vmlinuz-9.9.9-loop")
    done, report = probe("--root", str(root), "--check", "config.*")
    assert report["kernel"]["release"] == NEW
    assert report["kernel"]["image"]["other_releases"] == []
    config = root / "boot" / f"config-{NEW}"
    config.unlink()
    config.symlink_to(f"config-{NEW}")
    looped = run_kcheck("probe", "--root", str(root))
    assert looped.returncode == 3
    assert f"/boot/config-{NEW} is a symlink loop in the image" in looped.stderr


def test_a_release_without_a_version_decides_nothing_and_says_so(tmp_path):
    """An image whose only kernel is boot/vmlinuz-custom."""
    root = make_image(tmp_path / "img", ["custom"])
    done, report = probe("--root", str(root), "--check", "overlayfs.mnt_id")
    assert done.returncode == 2
    detail = checks(report)["overlayfs.mnt_id"]["detail"]
    assert "kernel release 'custom' has no version kcheck can read, so it decides nothing" in detail
    assert "older than" not in detail


def test_a_corrupt_changelog_is_not_called_absent(tmp_path):
    root = make_image(tmp_path / "img", [OLD])
    path = root / f"usr/share/doc/linux-image-{OLD}/changelog.Debian.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x1f\x8b not really gzip")
    done, report = probe("--root", str(root), "--check", "overlayfs.mnt_id")
    detail = checks(report)["overlayfs.mnt_id"]["detail"]
    assert f"cannot use {path}" in detail
    assert "no build record or kernel changelog" not in detail


def test_module_dirs_that_are_no_release_names_are_ignored(tmp_path):
    root = make_image(tmp_path / "img", [NEW])
    (root / "lib/modules" / "not a release").mkdir()
    (root / os.fsdecode(b"lib/modules/bad\xff")).mkdir()
    done, report = probe("--root", str(root), "--check", "config.*")
    assert done.returncode == 0, done.stderr
    assert report["kernel"]["release"] == NEW and report["kernel"]["image"]["other_releases"] == []
