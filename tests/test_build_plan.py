"""`kcheck build-kernel`: the dry-run plan, preflight refusals, install, ccache, cloning, and the
pure helpers (option parsing, distro mapping, config edits)."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import time
from pathlib import Path

import git
import pytest
from conftest import NOBODY, kcheck_argv, requires_root, run_kcheck
from gitrepos import tree_state
from kbuild_fixtures import (
    FakeKernel,
    build,
    build_args,
    build_fake_kernel,
    kcheck_refs,
    picked_commits,
    workdir_json,
)

from kcheck.builder.kbuild import lost_settings, stale_key_settings
from kcheck.builder.options import BuildOptions, ConfigSetting, parse_setting, parse_size
from kcheck.builder.source import distro_kernel_repo, parse_os_release
from kcheck.errors import KcheckError

TIMESTAMP = "'KBUILD_BUILD_TIMESTAMP=Mon, 5 Jan 2015 04:26:40 +0000'"
VARIABLES = f"{TIMESTAMP} KBUILD_BUILD_USER=kcheck KBUILD_BUILD_HOST=kcheck"


@pytest.fixture
def kernel(tmp_path) -> FakeKernel:
    return build_fake_kernel(tmp_path)


def date() -> str:
    return time.strftime("%Y%m%d", time.gmtime())


# --- dry run ------------------------------------------------------------------------------------


def test_dry_run_prints_the_exact_commands_and_changes_nothing(kernel):
    before = tree_state(kernel.distro)
    done = build(kernel, "--dry-run")
    assert done.returncode == 0, done.stderr
    work, tree, shas = kernel.root / "work", kernel.distro, kernel.shas
    enxio, remap, ovl = shas["aio_enxio"], shas["aio_remap"], shas["ovl_path"]
    assert done.stdout.splitlines() == [
        "# kcheck build-kernel --dry-run: the commands a run would execute; nothing was changed.",
        f"# work dir {work}: state.json, metadata.json, reproducer.sh, build.log",
        f"# tree {tree}: kernel 3.19.0 at {kernel.base[:12]}",
        "# patchsets: aio-fix, overlay-fix",
        f"cd {tree}",
        f"git remote add kcheck-upstream {kernel.upstream}",
        f"git fetch --no-tags kcheck-upstream {enxio}:refs/kcheck/upstream/{enxio} "
        f"{remap}:refs/kcheck/upstream/{remap} refs/tags/v4.0-rc1:refs/tags/v4.0-rc1",
        f"git checkout -b kcheck/{date()}-aio-fix+overlay-fix",
        f"git cherry-pick -x {enxio}",
        f"git cherry-pick -x {remap}",
        f"git cherry-pick -x {ovl}",  # the abbreviated catalog SHA, resolved in the local upstream
        "git tag --annotate --force --message 'kcheck build-kernel: aio-fix, overlay-fix' "
        f"kcheck-built/{date()}-aio-fix+overlay-fix",
        f"# {work}/base.config: the options of {kernel.config}",
        f"cp {work}/base.config .config",
        "scripts/config --file .config --set-str LOCALVERSION -kcheck",
        "scripts/config --file .config --set-str SYSTEM_TRUSTED_KEYS ''",
        "scripts/config --file .config --set-str SYSTEM_REVOCATION_KEYS ''",
        f"make {VARIABLES} olddefconfig",
        f"make -s {VARIABLES} kernelrelease",
        f"make -j2 {VARIABLES} bzImage modules",
    ]
    assert tree_state(kernel.distro) == before
    assert not work.exists()


def test_dry_run_commands_are_the_ones_the_run_executes(kernel):
    plan = build(kernel, "--dry-run", "--set", "CONFIG_CHECKPOINT_RESTORE=y").stdout.splitlines()
    done = build(kernel, "--set", "CONFIG_CHECKPOINT_RESTORE=y")
    assert done.returncode == 0, done.stderr
    executed = [
        line.split("    # in ")[0][2:]
        for line in (kernel.root / "work/build.log").read_text().splitlines()
        if line.startswith("$ ")
    ]
    commands = [line for line in plan if not line.startswith(("#", "cd "))]
    assert commands == executed


def test_dry_run_with_install_ccache_settings_and_reboot(kernel, tmp_path):
    done = build(
        kernel,
        "--dry-run",
        "--install",
        "--reboot",
        "--yes",
        "--cc-wrapper",
        "ccache",
        "--set",
        'CONFIG_DEFAULT_HOSTNAME="lab"',
        "--localmodconfig",
        "--targets",
        "bzImage",
        env={"KCHECK_STATE_DIR": str(tmp_path / "state")},
    )
    assert done.returncode == 0, done.stderr
    variables = f"{VARIABLES} 'CC=ccache gcc'"
    # Only bzImage is built: no modules to install, though the config enables them.
    assert done.stdout.splitlines()[-11:] == [
        f"yes '' | make {variables} localmodconfig",
        "scripts/config --file .config --set-str LOCALVERSION -kcheck",
        "scripts/config --file .config --set-str SYSTEM_TRUSTED_KEYS ''",
        "scripts/config --file .config --set-str SYSTEM_REVOCATION_KEYS ''",
        "scripts/config --file .config --set-str DEFAULT_HOSTNAME lab",
        f"make {variables} olddefconfig",
        f"make -s {variables} kernelrelease",
        f"CCACHE_NOHASHDIR=true make -j2 {variables} bzImage",
        f"make {variables} install",
        f"# then record the build in {tmp_path / 'state/builds'}/<release>.json",
        "systemctl reboot" if shutil.which("systemctl") else "reboot",
    ]


@pytest.mark.parametrize(
    ("targets", "installs_modules"), [("bzImage,modules", True), ("all", True), ("bzImage", False)]
)
def test_dry_run_installs_modules_only_when_it_builds_them(kernel, tmp_path, targets, installs_modules):
    done = build(kernel, "--dry-run", "--install", "--targets", targets)
    assert done.returncode == 0, done.stderr
    assert (f"make {VARIABLES} modules_install" in done.stdout.splitlines()) is installs_modules
    assert f"make {VARIABLES} install" in done.stdout.splitlines()


def test_dry_run_without_a_source_uses_the_distro_mapping_or_asks_for_repo(kernel, tmp_path):
    done = run_kcheck(
        "build-kernel",
        "--dry-run",
        "--workdir",
        str(tmp_path / "w"),
        "--min-free",
        "0",
        "--config",
        str(kernel.config),
        "--catalog",
        str(kernel.catalog),
    )
    try:
        url = distro_kernel_repo(parse_os_release(Path("/etc/os-release").read_text()))
    except KcheckError as exc:
        assert done.returncode == 3 and done.stderr.strip() == f"kcheck: error: {exc}"
        assert "pass --repo URL" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert f"git clone --filter=blob:none {url} {tmp_path / 'w/linux'}" in done.stdout


def test_dry_run_default_config_is_the_running_kernels(kernel, tmp_path):
    args = [
        "build-kernel",
        "--tree",
        str(kernel.distro),
        "--catalog",
        str(kernel.catalog),
        "--dry-run",
        "--workdir",
        str(tmp_path / "w"),
        "--min-free",
        "0",
    ]
    done = run_kcheck(*args)
    release = os.uname().release
    found = [p for p in (Path("/proc/config.gz"), Path(f"/boot/config-{release}")) if p.is_file()]
    if found:
        assert done.returncode == 0, done.stderr
        assert f"# {tmp_path / 'w'}/base.config: the options of {found[0]}" in done.stdout
    else:
        assert (
            done.returncode == 3
            and f"--config running: no config for the running kernel {release}" in done.stderr
        )


# --- preflight refusals ---------------------------------------------------------------------------


def assert_refused(kernel: FakeKernel, done: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit 3, one line naming the problem, and nothing touched: tree as it was, no work dir."""
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("kcheck: error: ")
    for phrase in phrases:
        assert phrase in done.stderr
    assert not (kernel.root / "work").exists()
    with kernel.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == kernel.base
        assert not [r for r in kcheck_refs(kernel) if "kcheck" in r]


def test_missing_build_tools_are_listed_with_the_install_command(kernel, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "gcc", "make", "perl", "apt-get"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    done = build(kernel, env={"PATH": str(bin_dir)})
    assert_refused(
        kernel, done, "missing build tools: flex, bison, bc;", "install them: apt-get install flex bison bc"
    )


def test_missing_ccache_is_listed_for_cc_wrapper(kernel, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "gcc", "make", "perl", "flex", "bison", "bc", "apt-get"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = build(kernel, "--cc-wrapper", "ccache", env={"PATH": str(bin_dir)})
    assert_refused(kernel, done, "missing build tools: ccache;", "apt-get install ccache")


def test_not_enough_free_disk_is_refused(kernel):
    done = build(kernel, "--min-free", "900T")
    assert_refused(kernel, done, "--workdir", "--min-free asks for", "GiB")


def test_dirty_tree_is_refused(kernel):
    kernel.tree("fs/aio.c").write_text("int dirty;\n")
    done = build(kernel)
    assert done.returncode == 3
    assert "has uncommitted changes (fs/aio.c); commit or stash them" in done.stderr
    assert kernel.tree("fs/aio.c").read_text() == "int dirty;\n"
    assert not (kernel.root / "work").exists()


def test_a_tree_mid_merge_is_refused(kernel):
    with kernel.repo() as repo:
        (Path(repo.git_dir) / "MERGE_HEAD").write_text(kernel.base + "\n")
    assert_refused(kernel, build(kernel), "a git merge is in progress")


def test_install_without_root_is_refused(kernel):
    argv = [*kcheck_argv(), *build_args(kernel, "--install")]
    if os.geteuid() == 0:
        argv = [*NOBODY, "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert_refused(kernel, done, "--install needs root")


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--reboot"], "--reboot needs --install"),
        (["--set", "CHECKPOINT_RESTORE=y"], "--set CHECKPOINT_RESTORE=y: expected CONFIG_NAME="),
        (["--set", "CONFIG_X=maybe"], "--set CONFIG_X=maybe"),
        (["--patchset", "nope"], "--patchset nope: unknown patchset; known: aio-fix, overlay-fix"),
        (["--cc-wrapper", "icecc"], "--cc-wrapper 'icecc': use ccache, distcc"),
        (["--jobs", "0"], "argument --jobs/-j: 0 jobs: give 1 to 4096"),
        (["--jobs", "99999999999"], "argument --jobs/-j: 99999999999 jobs: give 1 to 4096"),
        (["--workdir", ""], "argument --workdir: an empty path; give a file or directory"),
        (["--localversion=-" + "x" * 64], "65 characters; a kernel release holds 64"),
        (
            ["--set", 'CONFIG_LOCALVERSION="-x;id>/root/pwned"'],
            "--set CONFIG_LOCALVERSION '-x;id>/root/pwned': use only letters, digits",
        ),
        (["--set", 'CONFIG_CMDLINE="a$(id)"'], "--set CONFIG_CMDLINE: a string may hold only letters"),
        (["--set", "CONFIG_LOCALVERSION=5"], "--set CONFIG_LOCALVERSION: give it as a quoted string"),
        (["--set", 'CONFIG_LOCALVERSION=""-x""'], "--set CONFIG_LOCALVERSION '\"-x\"': use only letters"),
        (["--localversion=-lab\n"], "--localversion '-lab\\n': use only letters"),
        (["--set", 'CONFIG_CMDLINE="a"b"'], "--set CONFIG_CMDLINE: a string may hold only letters"),
        (["--min-free", "lots"], "--min-free lots: not a size"),
        (["--upstream", "ext::sh"], "--upstream ext::sh: refused an unsafe git transport"),
        (["--upstream=-uevil"], "--upstream '-uevil': must not start with '-'"),
        (["--localversion=-a b"], "--localversion '-a b'"),
        *[
            ([f"--localversion=-lab{char}x"], f"--localversion '-lab{char}x': use only letters, digits")
            for char in ";|&><*()/"
        ],
        (["--config", "/nonexistent/config"], "config file /nonexistent/config not found"),
        (["--continue"], "--continue replays the stopped run's saved options"),
        (["--branch", "main"], "--branch main: only used with --repo"),
        (["--targets", ""], "--targets names no make target"),
        (["--targets", ","], "--targets names no make target"),
        (["--reference", "/srv/linux"], "--reference /srv/linux: only used with --repo"),
        (["--no-filter"], "--no-filter: only used with --repo"),
    ],
)
def test_bad_input_is_one_line_and_exit_3(kernel, args, phrase):
    assert_refused(kernel, build(kernel, *args), phrase)


@pytest.mark.parametrize("blocked", [None, "lock", "build.log"])
def test_a_workdir_that_cannot_be_written_is_one_line_bad_input(kernel, tmp_path, blocked):
    if blocked is None:
        workdir = Path("/proc/kcheck-no-such-dir")  # mkdir fails: ENOENT
    else:
        workdir = tmp_path / "w"
        (workdir / blocked).mkdir(parents=True)  # a directory where the file must go
    done = build(kernel, workdir=workdir)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"kcheck: error: --workdir {workdir}: cannot create ")
    assert "pass a writable directory as --workdir" in done.stderr
    with kernel.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == kernel.base


def test_tree_that_is_not_a_kernel_git_tree_is_refused(tmp_path):
    kernel = build_fake_kernel(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    done = run_kcheck(
        "build-kernel",
        "--tree",
        str(plain),
        "--workdir",
        str(tmp_path / "work"),
        "--catalog",
        str(kernel.catalog),
        "--config",
        str(kernel.config),
        "--min-free",
        "0",
    )
    assert done.returncode == 3 and "not a git repository" in done.stderr
    assert not (tmp_path / "work").exists()


def test_continue_and_abort_without_a_stopped_run(tmp_path):
    for flag in ("--continue", "--abort"):
        done = run_kcheck("build-kernel", flag, "--workdir", str(tmp_path / "w"))
        assert done.returncode == 3 and f"{flag}: no build state in" in done.stderr


def test_a_catalog_subject_that_does_not_match_the_fetched_commit_stops_before_any_pick(kernel):
    toml = kernel.catalog / "overlay-fix.toml"
    toml.write_text(toml.read_text().replace("overlayfs: Make f_path", "overlayfs: Make g_path"))
    done = build(kernel)
    assert done.returncode == 3
    assert (
        f"resolves to {kernel.shas['ovl_path'][:12]}" in done.stderr
        and "fix the sha or subject" in done.stderr
    )
    with kernel.repo() as repo:
        assert repo.active_branch.name == "main" and repo.head.commit.hexsha == kernel.base
    assert not kernel.tree(".config").exists()


# --- install, reboot, ccache ------------------------------------------------------------------------


@requires_root
def test_install_records_the_build_and_never_reboots_without_confirmation(kernel, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("systemctl", "reboot"):  # never the host's: record the call instead
        (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} "$@" >> {tmp_path / "reboots"}\n')
        (bin_dir / tool).chmod(0o755)
    env = {
        "INSTALL_PATH": str(tmp_path / "boot"),
        "INSTALL_MOD_PATH": str(tmp_path / "root"),
        "KCHECK_STATE_DIR": str(tmp_path / "state"),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    done = build(kernel, "--install", "--reboot", env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "boot/vmlinuz-3.19.0-kcheck").read_bytes() == kernel.tree(
        "arch/x86/boot/bzImage"
    ).read_bytes()
    assert (tmp_path / "root/lib/modules/3.19.0-kcheck/kernel/fs/overlayfs/overlay.ko").is_file()
    record = json.loads((tmp_path / "state/builds/3.19.0-kcheck.json").read_text())
    with kernel.repo() as repo:
        assert record["commit"] == repo.head.commit.hexsha
    assert record["release"] == "3.19.0-kcheck"
    assert [p["name"] for p in record["patchsets"]] == ["aio-fix", "overlay-fix"]
    assert [c["upstream_sha"] for c in record["patchsets"][1]["commits"]] == [kernel.shas["ovl_path"]]
    assert "Not rebooting: no terminal to confirm on" in done.stdout
    assert not (tmp_path / "reboots").exists()
    assert workdir_json(kernel, "metadata.json")["stages"]["install"]["status"] == "done"

    # The record is what an offline probe of an image with this kernel trusts: lay the
    # installed files out as an image root and gate it with the same catalog.
    image = tmp_path / "image"
    # Copies, not links: an image's absolute links resolve inside the image.
    shutil.copytree(tmp_path / "boot", image / "boot", symlinks=True)
    shutil.copytree(tmp_path / "root/lib/modules", image / "lib/modules", symlinks=True)
    shutil.copytree(tmp_path / "state/builds", image / "var/lib/kcheck/builds", symlinks=True)
    gate = run_kcheck(
        "probe",
        "--root",
        str(image),
        "--catalog",
        str(kernel.catalog),
        "--format",
        "json",
        "--check",
        "overlayfs.mnt_id",
        "--check",
        "aio.ring_remap",
    )
    checks = {c["id"]: c for c in json.loads(gate.stdout)["checks"]}
    assert json.loads(gate.stdout)["kernel"]["release"] == "3.19.0-kcheck"
    assert (checks["overlayfs.mnt_id"]["status"], checks["overlayfs.mnt_id"]["evidence"]) == ("pass", "tree")
    assert "build record" in checks["overlayfs.mnt_id"]["detail"]
    assert gate.returncode == 0, gate.stdout

    confirmed = build(kernel, "--install", "--reboot", "--yes", env=env, stdin=subprocess.DEVNULL)
    assert confirmed.returncode == 0, confirmed.stderr
    assert "[install] done in a previous run" in confirmed.stdout
    assert (tmp_path / "reboots").read_text() == "systemctl reboot\n"


def test_install_root_installs_into_the_image_only_and_its_record_gates_it(kernel, tmp_path):
    """--install-root: the image gets the modules, boot/*-R and the record; the host gets
    nothing (no `make install`, so no installkernel hooks), and the image's gate reads the record."""
    image = tmp_path / "image"
    (image / "usr/lib").mkdir(parents=True)
    (image / "lib").symlink_to("usr/lib")  # merged /usr, as Debian lays it out
    host = {"INSTALL_PATH": str(tmp_path / "host-boot"), "KCHECK_STATE_DIR": str(tmp_path / "state")}
    done = build(kernel, "--install-root", str(image), env=host)
    assert done.returncode == 0, done.stdout + done.stderr
    release = "3.19.0-kcheck"
    bz_image = kernel.tree("arch/x86/boot/bzImage").read_bytes()
    assert (image / f"boot/vmlinuz-{release}").read_bytes() == bz_image
    assert (image / f"boot/config-{release}").read_bytes() == kernel.tree(".config").read_bytes()
    assert (image / f"boot/System.map-{release}").read_bytes() == kernel.tree("System.map").read_bytes()
    assert (image / f"usr/lib/modules/{release}/kernel/fs/overlayfs/overlay.ko").is_file()
    record = json.loads((image / f"var/lib/kcheck/builds/{release}.json").read_text())
    assert [p["name"] for p in record["patchsets"]] == ["aio-fix", "overlay-fix"]
    assert not (tmp_path / "host-boot").exists() and not (tmp_path / "state").exists()
    assert f"kcheck probe --root {image} --release {release}" in done.stdout  # the next step
    gate = run_kcheck("probe", "--root", str(image), "--catalog", str(kernel.catalog), "--format", "json")
    mnt_id = {c["id"]: c for c in json.loads(gate.stdout)["checks"]}["overlayfs.mnt_id"]
    assert (mnt_id["status"], mnt_id["evidence"]) == ("pass", "tree")
    assert f"build record {image / 'var/lib/kcheck/builds' / release}.json" in mnt_id["detail"]


def test_dry_run_with_install_root_shows_the_copies_into_the_image(kernel, tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    done = build(kernel, "--dry-run", "--install-root", str(image))
    assert done.returncode == 0, done.stderr
    assert f"cp '<image>' '{image}/boot/vmlinuz-<release>'" in done.stdout
    assert f"cp System.map '{image}/boot/System.map-<release>'" in done.stdout
    assert f"# then record the build in {image}/var/lib/kcheck/builds/<release>.json" in done.stdout
    assert " install\n" not in done.stdout  # never the host's make install
    assert not any(image.iterdir())


@pytest.mark.parametrize(
    ("layout", "extra", "message"),
    [
        ("missing", (), "not a directory; pass an unpacked node image root"),
        ("escaping-boot", (), "/boot leads out of the image (to "),
        ("image", ("--install",), "--install and --install-root"),
    ],
)
def test_a_bad_install_root_is_refused_before_any_work(kernel, tmp_path, layout, extra, message):
    image = tmp_path / "image"
    if layout != "missing":
        image.mkdir()
    if layout == "escaping-boot":
        (tmp_path / "host-boot").mkdir()
        (image / "boot").symlink_to(tmp_path / "host-boot")  # absolute: it would write the host's /boot
    done = build(kernel, "--install-root", str(image), *extra)
    assert done.returncode == 3, done.stdout + done.stderr
    assert message in done.stderr
    assert not kernel.tree(".config").exists()  # nothing was built
    assert not (tmp_path / "host-boot").exists() or not any((tmp_path / "host-boot").iterdir())


def test_localmodconfig_and_settings_reach_the_config(kernel):
    done = build(kernel, "--localmodconfig", "--set", "CONFIG_CHECKPOINT_RESTORE=y", "--localversion=-lab")
    assert done.returncode == 0, done.stderr
    config = kernel.tree(".config").read_text()
    assert "CONFIG_OVERLAY_FS=n" in config  # the fake tree's localmodconfig drops modules
    assert "CONFIG_CHECKPOINT_RESTORE=y" in config and 'CONFIG_LOCALVERSION="-lab"' in config
    assert workdir_json(kernel, "metadata.json")["release"] == "3.19.0-lab"
    assert "yes '' | make" in (kernel.root / "work/build.log").read_text()


def test_cc_wrapper_ccache_compiles_through_ccache(kernel, tmp_path):
    cache = tmp_path / "ccache"
    done = build(kernel, "--cc-wrapper", "ccache", env={"CCACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr
    log = (kernel.root / "work/build.log").read_text()
    assert "ccache gcc -c -o fs/aio.o fs/aio.c" in log
    stats = subprocess.run(
        ["ccache", "--print-stats"],
        capture_output=True,
        text=True,
        env={**os.environ, "CCACHE_DIR": str(cache)},
    ).stdout
    misses = dict(line.split("\t", 1) for line in stats.splitlines())
    assert int(misses["cache_miss"]) >= 4
    meta = workdir_json(kernel, "metadata.json")
    assert meta["build"]["env"] == {"CCACHE_NOHASHDIR": "true"} and meta["tools"]["ccache"]


# --- cloning --------------------------------------------------------------------------------------


def clone_args(kernel: FakeKernel, *extra: str) -> list[str]:
    return [
        "build-kernel",
        "--catalog",
        str(kernel.catalog),
        "--config",
        str(kernel.config),
        "--workdir",
        str(kernel.root / "work"),
        "--min-free",
        "0",
        "--jobs",
        "2",
        *extra,
    ]


@pytest.mark.parametrize("server_filters", [True, False])
def test_repo_is_cloned_with_a_blob_filter_or_fully_when_the_server_ignores_it(kernel, server_filters):
    with kernel.repo() as repo, repo.config_writer() as config:
        config.set_value("uploadpack", "allowFilter", str(server_filters).lower())
    done = run_kcheck(*clone_args(kernel, "--repo", f"file://{kernel.distro}", "--branch", "main"))
    assert done.returncode == 0, done.stdout + done.stderr
    clone = kernel.root / "work/linux"
    meta = workdir_json(kernel, "metadata.json")
    assert meta["source"]["partial_clone"] is server_filters
    assert meta["source"]["url"] == f"file://{kernel.distro}" and meta["source"]["commit"] == kernel.base
    with git.Repo(clone) as repo:
        assert repo.config_reader().has_option('remote "origin"', "promisor") is server_filters
        assert len(list(repo.iter_commits(f"{kernel.base}..HEAD"))) == 3
    assert (clone / "arch/x86/boot/bzImage").is_file()
    assert "git clone --filter=blob:none --branch main" in (kernel.root / "work/build.log").read_text()
    again = run_kcheck(*clone_args(kernel, "--repo", f"file://{kernel.distro}", "--branch", "main"))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[clone] done in a previous run" in again.stdout


def test_reference_borrows_objects_from_a_local_clone(kernel):
    done = run_kcheck(
        *clone_args(kernel, "--repo", str(kernel.distro), "--reference", str(kernel.distro), "--no-filter")
    )
    assert done.returncode == 0, done.stderr
    alternates = kernel.root / "work/linux/.git/objects/info/alternates"
    assert alternates.read_text().strip() == str(kernel.distro / ".git/objects")
    assert [sha for _, sha in picked_commits(kernel.root / "work/linux", kernel.base)] == [
        kernel.shas[role] for role in ("aio_enxio", "aio_remap", "ovl_path")
    ]


def test_unsafe_repo_url_is_refused_before_any_work(kernel):
    done = run_kcheck(*clone_args(kernel, "--repo", "ext::sh"))
    assert done.returncode == 3 and "--repo ext::sh: refused an unsafe git transport" in done.stderr
    assert not (kernel.root / "work").exists()


# --- terminal output --------------------------------------------------------------------------------


def run_on_a_tty(argv: list[str], env: dict) -> tuple[int, str]:
    controller, terminal = pty.openpty()
    process = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    return process.wait(), b"".join(chunks).decode(errors="replace")


COLOUR = re.compile(r"\x1b\[[0-9;]*[1-9][0-9;]*m")  # SGR with a non-reset parameter


def test_plain_lines_without_a_tty_and_rich_progress_on_one(kernel, tmp_path):
    plain = build(kernel)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "\x1b" not in plain.stdout and "[build] done in" in plain.stdout

    again = build_fake_kernel(tmp_path / "tty")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm-256color"}
    status, output = run_on_a_tty([*kcheck_argv(), *build_args(again)], env)
    assert status == 0, output
    assert "\x1b[" in output and "[build] done in" in output
    status, no_colour = run_on_a_tty(
        [*kcheck_argv(), *build_args(again, "--set", "CONFIG_AIO=n")], env | {"NO_COLOR": "1"}
    )
    assert status == 0, no_colour
    assert not COLOUR.search(no_colour) and "[build] done in" in no_colour
    assert "[build] done in a previous run" not in no_colour  # --set changed the config: rebuilt


# --- pure helpers ---------------------------------------------------------------------------------


def test_settings_map_to_scripts_config_commands():
    assert parse_setting("CONFIG_CHECKPOINT_RESTORE=y").scripts_config_args() == [
        "--enable",
        "CHECKPOINT_RESTORE",
    ]
    assert parse_setting("CONFIG_OVERLAY_FS=m").scripts_config_args() == ["--module", "OVERLAY_FS"]
    assert parse_setting("CONFIG_DEBUG_INFO=n").scripts_config_args() == ["--disable", "DEBUG_INFO"]
    assert parse_setting('CONFIG_LSM="a,b c"').scripts_config_args() == ["--set-str", "LSM", "a,b c"]
    assert parse_setting("CONFIG_NR_CPUS=64").scripts_config_args() == ["--set-val", "NR_CPUS", "64"]
    assert parse_setting("CONFIG_BASE=0x1000").config_line() == "CONFIG_BASE=0x1000"
    assert parse_setting("CONFIG_DEBUG_INFO=n").config_line() == "# CONFIG_DEBUG_INFO is not set"


def test_sizes():
    assert parse_size("20G") == 20 << 30
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size("512M") == 512 << 20
    assert parse_size("0") == 0


def test_ubuntu_maps_to_its_series_kernel_git_and_others_ask_for_repo():
    ubuntu = parse_os_release('NAME="Ubuntu"\nID=ubuntu\nVERSION_CODENAME=jammy\n')
    assert (
        distro_kernel_repo(ubuntu)
        == "https://git.launchpad.net/~ubuntu-kernel/ubuntu/+source/linux/+git/jammy"
    )
    debian = parse_os_release(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
    )
    with pytest.raises(KcheckError, match=r"for Debian GNU/Linux 12 \(bookworm\); pass --repo URL"):
        distro_kernel_repo(debian)


def test_key_files_the_tree_lacks_are_cleared(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs/ours.pem").write_text("x")
    config = (
        'CONFIG_SYSTEM_TRUSTED_KEYS="certs/ours.pem"\nCONFIG_SYSTEM_REVOCATION_KEYS="debian/revoked.pem"\n'
    )
    assert stale_key_settings(config, tmp_path) == [ConfigSetting("SYSTEM_REVOCATION_KEYS", '""')]
    assert stale_key_settings('CONFIG_SYSTEM_TRUSTED_KEYS=""\n', tmp_path) == []


def test_settings_olddefconfig_dropped_are_reported():
    settings = (parse_setting("CONFIG_A=y"), parse_setting("CONFIG_B=n"), parse_setting("CONFIG_C=m"))
    assert lost_settings(settings, "CONFIG_A=y\nCONFIG_C=y\n") == [settings[2]]


def test_options_round_trip_through_the_state_file(tmp_path):
    options = BuildOptions(
        workdir=tmp_path,
        tree=tmp_path / "t",
        settings=(parse_setting('CONFIG_X="a b"'),),
        targets=("bzImage",),
    )
    assert BuildOptions.from_json(json.loads(json.dumps(options.to_json()))) == options


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_config_that_never_ends_is_refused_at_once_even_in_a_dry_run(kernel, tmp_path, kind):
    """A FIFO as --config once held build-kernel --dry-run for minutes."""
    if kind == "fifo":
        config = tmp_path / "config-fifo"
        os.mkfifo(config)
    else:
        config = Path("/dev/zero")
    done = build(kernel, "--config", str(config), "--dry-run")
    assert_refused(kernel, done, f"config file {config} is a", "not a regular file")


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        (
            {"schema": "kcheck.build-state/1", "options": {}, "stages": {"pick": {"status": "maybe"}}},
            "$.stages.pick lacks",
        ),
        (
            {"schema": "kcheck.build-state/1", "options": {}, "stages": {"nap": {}}},
            "$.stages key 'nap' is 'nap'",
        ),
        ({"schema": "kcheck.build-state/1", "options": [], "stages": {}}, "$.options is list, not object"),
    ],
)
def test_a_malformed_state_file_is_refused_with_what_is_wrong(kernel, state, problem):
    work = kernel.root / "work"
    work.mkdir()
    (work / "state.json").write_text(json.dumps(state))
    done = build(kernel)
    assert done.returncode == 3
    assert (
        "unreadable state (not a kcheck.build-state/1 state file: " in done.stderr and problem in done.stderr
    )
    assert "Traceback" not in done.stderr


# --- per-architecture facts (kcheck/builder/arch.toml) --------------------------------------------


@pytest.mark.parametrize(
    ("machine", "targets", "boot"),
    [
        ("x86_64", ("bzImage", "modules"), "arch/x86/boot/bzImage"),
        ("aarch64", ("Image.gz", "modules"), "arch/arm64/boot/Image.gz"),
        ("riscv64", ("Image", "modules"), "arch/riscv/boot/Image"),
        ("ppc64le", ("vmlinux", "modules"), "vmlinux"),
        ("mips", ("vmlinux", "modules"), None),  # not listed: vmlinux, which nothing boots
    ],
)
def test_each_machine_builds_and_boots_its_own_image(machine, targets, boot):
    from kcheck.builder.arch import arch_facts
    from kcheck.builder.options import default_targets

    assert default_targets(machine) == targets
    assert arch_facts(machine).boot_image(targets) == boot


def test_every_listed_machine_can_boot_the_image_it_builds():
    from kcheck.builder.arch import _table, arch_facts

    for machine in _table():
        facts = arch_facts(machine)
        assert facts.boot_image((facts.image,)) is not None, machine
