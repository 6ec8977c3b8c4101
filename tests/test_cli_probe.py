"""`kcheck probe` as users run it: bad input, output files, formats end to end."""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kcheck_argv, requires_root, run_kcheck

import kcheck

FIXED_CONFIG = "CONFIG_CHECKPOINT_RESTORE=y\nCONFIG_NAMESPACES=y\n# CONFIG_TUN is not set\n"


def one_error_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.config", "not found"),
        (lambda d: d, "is a directory, not a regular file; pass a kernel config file"),
        # Root reads through file modes; /proc/self/mem refuses a plain read (EIO) even to root.
        (lambda d: Path("/proc/self/mem"), "is unreadable (Input/output error)"),
        (lambda d: _write(d / "bad.gz", b"\x1f\x8b\x08\x00garbage"), "corrupt gzip"),
        (lambda d: _write(d / "notes.txt", b"hello\nworld\n"), "not a kernel config"),
    ],
)
def test_bad_config_is_one_line_exit_3(tmp_path, make, expected):
    path = make(tmp_path)
    done = run_kcheck("probe", "--config", str(path), "--check", "config.*")
    assert done.returncode == 3
    line = one_error_line(done)
    assert line.startswith("kcheck: error: config file") and str(path) in line and expected in line
    assert done.stdout == ""


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_gzipped_config_is_read(tmp_path):
    path = _write(tmp_path / "config.gz", gzip.compress(FIXED_CONFIG.encode()))
    done = run_kcheck(
        "probe",
        "--config",
        str(path),
        "--check",
        "config.NAMESPACES",
        "--check",
        "config.TUN",
        "--check",
        "config.PID_NS",
        "--format",
        "json",
    )
    checks = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["config.NAMESPACES"]["status"] == "pass"
    assert checks["config.TUN"]["status"] == "fail" and not checks["config.TUN"]["required"]
    assert checks["config.PID_NS"]["detail"] == f"CONFIG_PID_NS is absent from {path}"
    assert done.returncode == 1


def test_unknown_check_id_lists_valid_ids():
    done = run_kcheck("probe", "--ignore", "aio.nope")
    assert done.returncode == 3
    assert "--ignore aio.nope: unknown check id; valid ids: overlayfs.mnt_id" in one_error_line(done)


@pytest.mark.parametrize("args", [["--format", "xml"], ["--bogus"], ["--timeout", "soon"], []])
def test_usage_errors_exit_3(args):
    done = run_kcheck("probe", *args) if args else run_kcheck()
    assert done.returncode == 3
    assert one_error_line(done).endswith("--help`")


def test_bad_output_directory_is_exit_3_and_leaves_nothing(tmp_path):
    target = tmp_path / "no-such-dir" / "kcheck.prom"
    done = run_kcheck("probe", "--check", "kernel.release", "--format", "prometheus", "--output", str(target))
    assert done.returncode == 3
    assert str(target) in one_error_line(done)
    assert list(tmp_path.iterdir()) == []


def test_output_file_is_written_atomically(tmp_path):
    target = tmp_path / "kcheck.prom"
    target.write_text("old\n")
    done = run_kcheck("probe", "--check", "kernel.release", "--format", "prometheus", "--output", str(target))
    assert done.returncode == 0 and done.stdout == ""
    assert 'kcheck_check_pass{check="kernel.release"' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kcheck.prom"]  # no temp file left


def test_github_format_appends_the_step_summary(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    done = run_kcheck(
        "probe", "--check", "kernel.release", "--format", "github", env={"GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1].startswith("::notice title=kcheck verdict::ready")
    text = summary.read_text()
    assert text.startswith("earlier step\n### kcheck probe: ready")


@requires_root
@pytest.mark.parametrize("fmt", ["text", "json", "junit", "prometheus", "npd", "github"])
def test_every_format_on_the_live_probe(fmt):
    done = run_kcheck("probe", "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "\x1b[" not in done.stdout  # not a tty: never colour


# What the probe never needs: GitPython and rich, and every other subcommand's code.
NOT_ON_THE_PROBE_PATH = (
    "git",
    "rich",
    "kcheck.builder",
    "kcheck.cr",
    "kcheck.fleet",
    "kcheck.patchsets.cli",
    "kcheck.patchsets.audit",
    "kcheck.completion",
)
# Standard modules whose import would cost the probe's start-up more than they give it (each
# measured with python -X importtime): the probe runs on every node every few minutes.
SLOW_FOR_THE_PROBE = (
    "dataclasses",  # with inspect, ast, dis: ~20 ms on this VM
    "tomllib",  # the catalog comes from its JSON cache
    "typing",  # annotations are not evaluated
    "gzip",  # /proc/config.gz is read with zlib
    "shutil",  # with bz2 and lzma; argparse's help width and `which` are found without it
    "subprocess",  # criu is started with os.posix_spawn
    "tempfile",
    "pathlib",  # with urllib.parse and ipaddress; paths are str unless given as arguments
)


@pytest.mark.parametrize("criu", ["criu on PATH", "no criu"])
@pytest.mark.parametrize("checks", [["--check", "kernel.release"], []])
def test_probe_path_imports_nothing_it_does_not_need(checks, criu):
    code = (  # what the probe imports, beyond what the interpreter loaded before it
        "import sys; before = set(sys.modules); from kcheck.cli import main; "
        f"rc = main(['probe', '--format', 'json', *{checks!r}]); "
        "import json; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    path = os.environ["PATH"]
    if criu == "no criu":
        dirs = path.split(os.pathsep)
        path = os.pathsep.join(d for d in dirs if not os.path.exists(os.path.join(d, "criu")))
    else:
        assert shutil.which("criu")
    # -S: no site, whose .pth files would hide an import (an editable install's finder loads
    # pathlib); kcheck is found where it is installed.
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(Path(kcheck.__file__).parent.parent)}
    runs = [  # the first run may write the catalog's cache
        subprocess.run(
            [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, env=env
        )
        for _ in range(2)
    ]
    loaded = set(json.loads(runs[-1].stdout.strip().splitlines()[-1]))
    assert "kcheck.probe.engine" in loaded  # the probe ran
    assert not [name for name in loaded if name.startswith(NOT_ON_THE_PROBE_PATH)]
    assert not [name for name in loaded if name.split(".")[0] in SLOW_FOR_THE_PROBE]


def test_help_is_laid_out_as_argparse_lays_it_out(monkeypatch):
    """kcheck's help formatter finds the width without shutil; the layout must not change."""
    import argparse

    from kcheck.cli import build_parser

    lines = []
    for columns in ("50", "97", "200"):
        monkeypatch.setenv("COLUMNS", columns)
        ours = build_parser("probe")._subparsers._group_actions[0].choices["probe"]
        assert ours.formatter_class is not argparse.HelpFormatter
        theirs = copy.copy(ours)
        theirs.formatter_class = argparse.HelpFormatter
        assert ours.format_help() == theirs.format_help()
        lines.append(len(ours.format_help().splitlines()))
    assert lines[0] > lines[1] > lines[2]  # the width followed $COLUMNS


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "kcheck", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("kcheck ")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e300"])
def test_timeouts_must_be_finite_and_positive(value):
    for option in ("--timeout", "--boot-timeout"):
        done = run_kcheck("probe", option, value)
        assert done.returncode == 3, (option, value)
        assert "Traceback" not in done.stderr
        assert f"argument {option}: {value!r}" in done.stderr


def test_require_outside_the_check_selection_is_bad_input():
    done = run_kcheck("probe", "--check", "aio.*", "--require", "overlayfs.maps")
    assert done.returncode == 3
    assert "--require overlayfs.maps: not among the --check selection; add it to --check" in done.stderr


def test_output_file_is_world_readable_for_collectors(tmp_path):
    target = tmp_path / "kcheck.prom"
    done = run_kcheck("probe", "--check", "kernel.release", "--format", "prometheus", "--output", str(target))
    assert done.returncode == 0
    assert target.stat().st_mode & 0o777 == 0o644


def test_closed_pipe_ends_quietly():
    """`kcheck probe | head -0`: the reader is gone before kcheck writes; no traceback, 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [*kcheck_argv(), "probe", "--check", "kernel.release", "--format", "json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141


@pytest.mark.parametrize("no_color", [False, True])
def test_text_on_a_terminal_is_a_rich_table_unless_no_color(no_color):
    import pty

    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = "1"
    try:
        done = subprocess.run(
            [*kcheck_argv(), "probe", "--check", "kernel.release"],
            stdout=secondary,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
        )
        os.close(secondary)
        output = b""
        while chunk := _read_pty(primary):
            output += chunk
    finally:
        os.close(primary)
    text = output.decode()
    assert done.returncode == 0
    assert "kernel.release" in text and "verdict" in text
    assert ("\x1b[" in text) is not no_color
    assert "┃" in text or "│" in text or "━" in text  # a rich table, not the plain layout


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO once the writer is gone
        return b""


# --- --output never destroys what is at the path (as root it could replace device nodes) -------

PROM = ("probe", "--check", "kernel.release", "--format", "prometheus")


@requires_root
@pytest.mark.parametrize(("minor", "returncode"), [(3, 0), (7, 3)])  # a null and a full device
def test_output_to_a_character_device_writes_through_it(tmp_path, minor, returncode):
    device = tmp_path / "dev"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    done = run_kcheck(*PROM, "--output", str(device))
    assert done.returncode == returncode
    if returncode:
        assert (
            one_error_line(done)
            == f"kcheck: error: --output {device}: cannot write (No space left on device)"
        )
    assert stat.S_ISCHR(os.lstat(device).st_mode)  # still the device, not a regular file


def test_output_to_a_fifo_is_written_through_and_never_hangs(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    alone = run_kcheck(*PROM, "--output", str(fifo), timeout=30)
    assert alone.returncode == 3
    assert "a FIFO with no reader" in one_error_line(alone)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    try:
        done = run_kcheck(*PROM, "--output", str(fifo), timeout=30)
        assert done.returncode == 0, done.stderr
        assert 'kcheck_check_pass{check="kernel.release"' in reader.communicate(timeout=30)[0]
    finally:
        reader.kill()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_output_keeps_a_files_mode_and_owner_and_a_symlink_stays_a_link(tmp_path):
    target = tmp_path / "private.prom"
    target.write_text("old\n")
    target.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(target, 65534, 65534)
    link = tmp_path / "link.prom"
    link.symlink_to(target)
    done = run_kcheck(*PROM, "--output", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert "kernel.release" in target.read_text()
    after = os.stat(target)
    assert stat.S_IMODE(after.st_mode) == 0o600
    if os.geteuid() == 0:
        assert (after.st_uid, after.st_gid) == (65534, 65534)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.prom", "private.prom"]


@pytest.mark.parametrize("path", ["-", "stdout-link", "/proc/self/fd/1"])
def test_output_to_stdout_by_any_name(tmp_path, path):
    """stdout-link is a private /dev/stdout (a link to /proc/self/fd/1): a regression must
    not be able to replace the system's own."""
    (tmp_path / "stdout-link").symlink_to("/proc/self/fd/1")
    done = run_kcheck(*PROM, "--output", path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'kcheck_check_pass{check="kernel.release"' in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdout-link"]
    assert (tmp_path / "stdout-link").is_symlink()


def test_output_to_stdout_redirected_to_a_file_appends_to_it(tmp_path):
    out = tmp_path / "out"
    with open(out, "w") as stream:
        stream.write("before\n")
        stream.flush()
        done = subprocess.run(
            [*kcheck_argv(), *PROM, "--output", "/proc/self/fd/1"], stdout=stream, timeout=60
        )
    assert done.returncode == 0
    text = out.read_text()
    assert text.startswith("before\n") and "kernel.release" in text


@pytest.mark.parametrize("kind", ["directory", "dangling link"])
def test_output_to_a_directory_or_dangling_link_is_bad_input(tmp_path, kind):
    path = tmp_path / "x"
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere")
    done = run_kcheck(*PROM, "--output", str(path))
    assert done.returncode == 3
    assert str(path) in one_error_line(done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


@pytest.mark.parametrize("kind", ["fifo", "zero", "bomb"])
def test_a_config_that_never_ends_is_bad_input_not_a_hang_or_memory_error(tmp_path, kind):
    if kind == "fifo":
        config = tmp_path / "config"
        os.mkfifo(config)
        why = "is a FIFO, not a regular file"
    elif kind == "zero":
        config, why = Path("/dev/zero"), "is a character device, not a regular file"
    else:
        config = tmp_path / "config.gz"
        with gzip.open(config, "wb", compresslevel=9) as stream:  # 32 MB of zeros in about 32 KB
            for _ in range(32):
                stream.write(bytes(1 << 20))
        why = "decompresses to more than 16 MB, more than kcheck reads"
    done = run_kcheck("probe", "--check", "config.*", "--config", str(config), timeout=30)
    assert done.returncode == 3
    assert one_error_line(done) == f"kcheck: error: config file {config} {why}; pass a kernel config file"


# --- no tracebacks: one line and the right exit code ---------------------------------------------


@pytest.mark.parametrize("command", [["probe"], ["probe", "--format", "json"], ["patchsets", "list"]])
def test_a_full_stdout_is_one_line_exit_3(command):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*kcheck_argv(), *command], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert done.returncode == 3
    assert (
        done.stderr
        == "kcheck: error: cannot write to stdout (No space left on device); free space or redirect it\n"
    )


def test_a_closed_stdout_is_one_line_exit_3():
    done = subprocess.run(
        [*kcheck_argv(), "probe", "--check", "kernel.release"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        pass_fds=(),
        preexec_fn=lambda: os.close(1),
    )
    assert done.returncode == 3
    assert done.stderr == "kcheck: error: stdout is closed; run kcheck with stdout open (e.g. >/dev/null)\n"


@pytest.mark.parametrize("release", ["5." + "1" * 300, "6.1.0\n", "6.1/../x", "", "-6.1"])
def test_a_release_that_is_no_kernel_release_is_bad_input(release):
    done = run_kcheck("probe", "--release", release, "--check", "kernel.release")
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert "is not a kernel release (as `uname -r` prints it" in done.stderr


def test_npd_bad_input_is_one_line_on_stdout_and_exit_2():
    """node-problem-detector understands only 0/1/2 and a line of stdout."""
    done = run_kcheck("probe", "--format", "npd", "--check", "nope.x")
    assert done.returncode == 2
    assert done.stdout.startswith("kcheck cannot probe: --check nope.x: unknown check id")
    assert done.stdout.count("\n") == 1 and len(done.stdout) <= 81
    assert one_error_line(done).startswith("kcheck: error: --check nope.x")


@requires_root
def test_a_tiny_timeout_says_what_did_not_finish_and_what_to_raise():
    # The overlay child holds its report: one that came in time would count, however tiny
    # the limit (a busy machine can make kcheck that late).
    done = run_kcheck("probe", "--format", "json", "--timeout", "0.001", env={"KCHECK_OVERLAY_HOLD": "5"})
    checks = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
    assert "did not finish within 0.001s; raise --timeout" in checks["overlayfs.maps"]["detail"]
    criu = checks["criu.check"]["detail"]
    if checks["criu.check"]["status"] == "unknown":  # criu installed: its run did not finish either
        assert "did not finish within" in criu and "raise --timeout" in criu


@requires_root
def test_output_never_follows_a_link_another_user_planted(tmp_path):
    """A link in a shared directory, owned by someone else, could point root's write anywhere."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "kcheck.prom"
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)
    done = run_kcheck(*PROM, "--output", str(link))
    assert done.returncode == 3
    assert one_error_line(done).startswith(f"kcheck: error: --output {link} is a symlink owned by uid 65534")
    assert target.read_text() == "keep me\n" and link.is_symlink()


def test_find_program_finds_what_shutil_which_finds(tmp_path, monkeypatch):
    """criu is looked up without shutil (see SLOW_FOR_THE_PROBE), with the same answer."""
    from kcheck.probe.criu_check import find_program

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "criu").mkdir()  # a directory
    (tmp_path / "b" / "criu").write_text("")  # not executable
    program = tmp_path / "c" / "criu"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join(str(tmp_path / name) for name in "abc"))
    assert find_program("criu") == str(program) == shutil.which("criu")
    monkeypatch.setenv("PATH", os.pathsep.join(str(tmp_path / name) for name in "ab"))
    assert find_program("criu") is None is shutil.which("criu")
