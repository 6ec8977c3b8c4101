"""kcheck build-criu: its plan, its refusals, and what it installs.

The real build of CRIU 4.2 from ../shared/criu (checksum checked) is realstack.built_criu(),
which every real C/R test and the criu.trial tests use; its record is checked here. Builds
that fail on demand use a FAKE CRIU tree (a Makefile whose criu and check fail when asked):
a real source that fails its build, or a built criu that fails its check after building,
cannot be had here in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import git
import pytest
from conftest import NOBODY, kcheck_argv, requires_root, run_kcheck
from realstack import CRIU_STATE, CRIU_TARBALL, built_criu

FAKE_MAKEFILE = """\
.PHONY: criu install-criu

criu:
\t@echo compiling criu
\t@if [ -e fail-build ]; then echo "cc: error: boom.c: no such file"; exit 2; fi
\t@printf '#!/bin/sh\\ncase "$$1" in\\n--version) echo "Version: 9.9";;\\n' > criu/criu
\t@printf 'check) %s;;\\nesac\\n' "$$(cat check-result)" >> criu/criu
\t@chmod +x criu/criu

install-criu:
\tinstall -D criu/criu $(DESTDIR)$(PREFIX)/sbin/criu
"""


def fake_criu_tree(top: Path, check: str = "echo 'Looks good.'") -> Path:
    """A FAKE CRIU source tree: version 9.9; `criu check` runs `check`."""
    tree = top / "criu-9.9"
    (tree / "criu").mkdir(parents=True)
    (tree / "Makefile.versions").write_text("CRIU_VERSION_MAJOR := 9\nCRIU_VERSION_MINOR := 9\n")
    (tree / "criu" / "Makefile").write_text("")
    (tree / "Makefile.install").write_text("")
    (tree / "Makefile").write_text(FAKE_MAKEFILE)
    (tree / "check-result").write_text(check)
    return tree


def build_criu(tmp_path: Path, *args: str, env: dict | None = None):
    return run_kcheck(
        "build-criu",
        "--workdir",
        str(tmp_path / "work"),
        *args,
        env={"KCHECK_STATE_DIR": str(tmp_path / "state"), **(env or {})},
        timeout=600,
    )


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    done = build_criu(tmp_path, "--source", str(CRIU_TARBALL), "--prefix", str(tmp_path / "opt"), "--dry-run")
    assert done.returncode == 0, done.stderr
    work = tmp_path / "work"
    assert done.stdout.splitlines()[1:5] == [
        f"mkdir -p {work}/src && tar -xf {CRIU_TARBALL} -C {work}/src --strip-components 1",
        f"cd {work}/src",
        f"make -j{os.cpu_count() + 1} criu",
        "./criu/criu check    # must say 'Looks good.'; --force installs anyway",
    ]
    assert f"make install-criu PREFIX={tmp_path / 'opt'} DESTDIR={work}/stage" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_default_source_is_the_upstream_release_kept_as_data(tmp_path):
    done = build_criu(tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "git clone --depth=1 --branch=v4.2 https://github.com/checkpoint-restore/criu.git" in done.stdout
    assert "make install-criu PREFIX=/usr/local " in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "/nonexistent"], "--source /nonexistent: no such file or directory"),
        (["--source", "{junk}"], "is not a tar archive (plain, gzip, bzip2 or xz)"),
        (["--source", "{not_criu}"], "is not a CRIU source tree (no Makefile.versions, criu/Makefile"),
        (
            ["--source", "{tarball}", "--prefix", "/usr"],
            "--prefix /usr would overwrite the distro's /usr/sbin/criu",
        ),
        (["--source", "{tarball}", "--prefix", "{junk}/x"], "is not a writable directory"),
        (["--source", "{tarball}", "--jobs", "0"], "argument --jobs/-j: 0 jobs: give 1 to 4096"),
        (["--repo", "/nonexistent"], "--repo /nonexistent: name the release with --tag"),
        (
            ["--repo", "ext::sh -c id", "--tag", "v4.2"],
            "--repo ext::sh -c id: refused an unsafe git transport",
        ),
    ],
)
def test_bad_input_is_one_line_exit_3_and_leaves_nothing(tmp_path, args, message):
    junk = tmp_path / "inputs" / "junk.tar.xz"
    junk.parent.mkdir()
    junk.write_text("not a tarball\n")
    not_criu = tmp_path / "inputs" / "notcriu"
    not_criu.mkdir()
    filled = [a.format(junk=junk, not_criu=not_criu, tarball=CRIU_TARBALL) for a in args]
    done = build_criu(tmp_path, *filled)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]


def test_missing_build_dependencies_are_named_with_the_command_that_installs_them(tmp_path):
    """A PATH with the compilers but not protobuf's: the one apt-get line is given."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("gcc", "make", "pkg-config", "tar", "xz", "apt-get"):
        if found := shutil.which(tool):
            (tools / tool).symlink_to(found)
    venv = Path(shutil.which("kcheck") or "/usr/bin/python3").parent
    done = build_criu(tmp_path, "--source", str(CRIU_TARBALL), env={"PATH": f"{venv}:{tools}"})
    assert done.returncode == 3
    assert (
        "missing CRIU build dependencies: protoc, protoc-c; "
        "install them: apt-get install protobuf-compiler protobuf-c-compiler"
    ) in done.stderr
    assert not (tmp_path / "work").exists()


def test_a_failed_build_exits_1_with_the_log_tail_and_installs_nothing(tmp_path):
    tree = fake_criu_tree(tmp_path / "src")
    (tree / "fail-build").write_text("")
    done = build_criu(tmp_path, "--source", str(tree), "--prefix", str(tmp_path / "opt"))
    assert done.returncode == 1
    assert "build-criu failed; the last" in done.stderr and "cc: error: boom.c: no such file" in done.stderr
    assert not (tmp_path / "opt").exists()
    assert not (tmp_path / "state").exists()
    assert "cc: error: boom.c" in (tmp_path / "work" / "build.log").read_text()


def test_a_criu_that_fails_its_check_is_not_installed_unless_forced(tmp_path):
    failing = "echo 'Error (criu/kerndat.c:1): kerndat failed' >&2; exit 1"
    tree = fake_criu_tree(tmp_path / "src", check=failing)
    prefix = tmp_path / "opt"
    done = build_criu(tmp_path, "--source", str(tree), "--prefix", str(prefix))
    assert done.returncode == 1
    assert (
        "the new criu 9.9 fails `criu check`, so it was not installed: "
        "Error (criu/kerndat.c:1): kerndat failed"
    ) in done.stderr
    assert not prefix.exists()
    forced = build_criu(tmp_path, "--source", str(tree), "--prefix", str(prefix), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (prefix / "sbin" / "criu").is_file()
    record = json.loads((tmp_path / "state" / "criu" / "9.9.json").read_text())
    assert record["check"]["passed"] is False and record["installed"] == [str(prefix / "sbin" / "criu")]
    assert record["source"] == {"kind": "tree", "location": str(tree), "tag": None, "commit": None}


def test_an_install_replaces_the_binary_and_records_it(tmp_path):
    tree = fake_criu_tree(tmp_path / "src")
    prefix = tmp_path / "opt"
    (prefix / "sbin").mkdir(parents=True)
    (prefix / "sbin" / "criu").write_text("old\n")
    done = build_criu(tmp_path, "--source", str(tree), "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    assert "Version: 9.9" in (prefix / "sbin" / "criu").read_text()
    assert f"installed criu 9.9 as {prefix / 'sbin' / 'criu'} (criu check: Looks good.)" in done.stdout
    assert sorted(p.name for p in (prefix / "sbin").iterdir()) == ["criu"]  # no backup, no temp left
    record = json.loads((tmp_path / "state" / "criu" / "9.9.json").read_text())
    assert record["check"]["passed"] is True and record["binary"] == str(prefix / "sbin" / "criu")
    assert not (tmp_path / "work" / "stage").exists()


def test_a_repository_that_is_not_criu_fails_the_fetch_and_installs_nothing(tmp_path):
    """A real local git repository with the tag asked for, but no CRIU in it."""
    repo = git.Repo.init(tmp_path / "repo")
    (tmp_path / "repo" / "README").write_text("not criu\n")
    repo.index.add(["README"])
    repo.index.commit("not criu")
    repo.create_tag("v9.9")
    prefix = tmp_path / "opt"
    done = build_criu(tmp_path, "--repo", str(tmp_path / "repo"), "--tag", "v9.9", "--prefix", str(prefix))
    assert done.returncode == 1
    assert "is not a CRIU source tree (no Makefile.versions, criu/Makefile, Makefile.install)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not prefix.exists() and not (tmp_path / "state").exists()


@requires_root
def test_a_real_run_needs_root_but_its_plan_does_not(open_dir):
    tmp_path = open_dir
    tree = fake_criu_tree(tmp_path / "src")
    args = ["--source", str(tree), "--prefix", str(tmp_path / "opt"), "--workdir", str(tmp_path / "work")]
    nobody = [*NOBODY, *kcheck_argv(), "build-criu"]
    for directory in ("opt", "work"):
        (tmp_path / directory).mkdir()
        (tmp_path / directory).chmod(0o777)
    env = {**os.environ, "NO_COLOR": "1", "KCHECK_STATE_DIR": str(tmp_path / "opt")}
    plan = subprocess.run([*nobody, *args, "--dry-run"], capture_output=True, text=True, env=env)
    assert plan.returncode == 0, plan.stderr
    run = subprocess.run([*nobody, *args], capture_output=True, text=True, env=env)
    assert run.returncode == 3
    assert "`criu check`, which needs root: run it as root" in run.stderr
    assert list((tmp_path / "opt").iterdir()) == [] and list((tmp_path / "work").iterdir()) == []
    tree.chmod(0o700)  # a source nobody cannot read: one line, not a traceback
    unreadable = subprocess.run([*nobody, *args, "--dry-run"], capture_output=True, text=True, env=env)
    assert unreadable.returncode == 3
    assert (
        unreadable.stderr
        == f"kcheck: error: --source {tree} is unreadable (Permission denied); check its permissions\n"
    )


def test_the_plan_quotes_paths(tmp_path):
    tree = fake_criu_tree(tmp_path / "src")
    done = build_criu(tmp_path / "with space", "--source", str(tree), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"cd '{tmp_path}/with space/work/src'" in done.stdout.splitlines()


@requires_root
def test_the_suites_criu_was_built_from_the_checked_tarball_and_passes_its_check():
    criu_bin = built_criu()
    record = json.loads((CRIU_STATE / "criu" / "4.2.json").read_text())
    assert record["schema"] == "kcheck.criu-build/1"
    assert record["binary"] == str(criu_bin / "criu")
    assert record["check"] == {"passed": True, "returncode": 0, "version": "4.2", "summary": "Looks good."}
    assert record["source"]["kind"] == "tarball"
    assert record["source"]["sha256"] == (CRIU_TARBALL.parent / "SHA256SUMS").read_text().split()[0]
    assert str(criu_bin / "criu") in record["installed"]
