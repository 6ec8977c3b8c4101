"""Fuzzing the whole command line: random argv for every subcommand, with random bytes and
special files (a FIFO, /dev/zero, a symlink loop, a device node) as every kind of input,
inside a throwaway root.

Property: kcheck ends within a time bound with an exit code of 0 to 3, never a traceback,
one line on stderr when it refuses (exit 3), and nothing outside the temp dir changes (/dev
and the special files are compared before and after).

KCHECK_FUZZ_EXAMPLES sets the budget (scripts/bench-fuzz raises it); KCHECK_FUZZ_VERBOSE=1
prints every case tried.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from conftest import kcheck_argv, requires_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcheck.cli import build_parser
from kcheck.completion import command_tree, leaves

EXAMPLES = int(os.environ.get("KCHECK_FUZZ_EXAMPLES", "60"))
VERBOSE = os.environ.get("KCHECK_FUZZ_VERBOSE") == "1"
TIME_BOUND = 60.0  # seconds per run: a hang fails the property
# Jobs that change the host when they succeed run as plans only.
PLAN_ONLY = {("build-kernel",), ("build-criu",)}
FILE_KINDS = (
    "config",
    "config.gz",
    "report.json",
    "record.json",
    "manifest.json",
    "changelog.gz",
    "catalog.toml",
)


# Every leaf subcommand of the real parser, with its option strings.
SUBCOMMANDS = {
    path: [o for o in node.options if o not in ("-h", "--help")]
    for path, node in leaves(command_tree(build_parser())).items()
}


def make_root(top: Path, blobs: dict[str, bytes]) -> dict[str, Path]:
    """The throwaway root: input files of every kind (random bytes), an image with them in
    place, and special files. Returns the named paths argv values are drawn from."""
    paths: dict[str, Path] = {}
    for kind in FILE_KINDS:
        path = top / "inputs" / kind
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs[kind])
        paths[kind] = path
    catalog = top / "catalog"
    catalog.mkdir()
    (catalog / "x.toml").write_bytes(blobs["catalog.toml"])
    paths["catalog"] = catalog
    image = top / "image"
    (image / "boot").mkdir(parents=True)
    (image / "boot/vmlinuz-6.1.0-fuzz").write_bytes(blobs["config"][:64])
    (image / "boot/config-6.1.0-fuzz").write_bytes(blobs["config"])
    (image / "var/lib/kcheck/builds").mkdir(parents=True)
    (image / "var/lib/kcheck/builds/6.1.0-fuzz.json").write_bytes(blobs["record.json"])
    doc = image / "usr/share/doc/linux-image-6.1.0-fuzz"
    doc.mkdir(parents=True)
    (doc / "changelog.Debian.gz").write_bytes(blobs["changelog.gz"])
    paths["image"] = image
    checkpoint = top / "cp" / "kcheck"
    checkpoint.mkdir(parents=True)
    (checkpoint / "kcheck-manifest.json").write_bytes(blobs["manifest.json"])
    paths["cp"] = top / "cp"
    special = top / "special"
    special.mkdir()
    os.mkfifo(special / "fifo")
    (special / "loop-a").symlink_to("loop-b")
    (special / "loop-b").symlink_to("loop-a")
    if os.geteuid() == 0:
        os.mknod(special / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    paths.update({name: special / name for name in ("fifo", "loop-a")})
    paths["zero"] = Path("/dev/zero")
    paths["out"] = top / "out" / "report"
    return paths


def snapshot(*places: Path) -> dict[str, tuple[int, int]]:
    """Name -> (file type, rdev) of everything directly in the places (not their contents)."""
    found = {}
    for place in places:
        for entry in os.scandir(place):
            info = entry.stat(follow_symlinks=False)
            found[entry.path] = (stat.S_IFMT(info.st_mode), info.st_rdev)
    return found


NASTY = ["", "-", "0", "-1", "1e999", "nan", "x" * 300, "a\nb", "../../../etc/passwd", "running", "web", "/"]
BLOB = st.binary(max_size=512) | st.sampled_from(
    [b"CONFIG_CHECKPOINT_RESTORE=y\n", b"\x1f\x8b", b"{}", b"[" * 2000]
)


@st.composite
def cases(draw) -> tuple[tuple[str, ...], list[str | tuple[str]], dict[str, bytes]]:
    command = draw(st.sampled_from(sorted(SUBCOMMANDS)))
    options = SUBCOMMANDS[command]
    value = st.one_of(
        st.sampled_from(NASTY),
        st.sampled_from(["config", "config.gz", "report.json", "record.json", "manifest.json"]).map(
            lambda k: (k,)
        ),
        st.sampled_from(["changelog.gz", "catalog", "image", "cp", "fifo", "loop-a", "zero", "out"]).map(
            lambda k: (k,)
        ),
        st.text(
            st.characters(exclude_characters="\0", exclude_categories=["Cs"]), max_size=12
        ),  # argv holds no NUL
    )
    token = st.sampled_from(options) | value if options else value
    words = draw(st.lists(token, max_size=6))
    blobs = {kind: draw(BLOB) for kind in FILE_KINDS}
    return command, words, blobs


def resolve(words: list, paths: dict[str, Path]) -> list[str]:
    return [str(paths[w[0]]) if isinstance(w, tuple) else w for w in words]


@requires_root  # mknod, and the live probe's mounts
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases())
def test_any_command_line_ends_cleanly_and_changes_nothing_outside(case):
    command, words, blobs = case
    top = Path(tempfile.mkdtemp(prefix="kcheck-fuzz-"))
    try:
        paths = make_root(top, blobs)
        argv = [*command, *resolve(words, paths), *(["--dry-run"] if command in PLAN_ONLY else [])]
        env = {
            "PATH": os.environ["PATH"],
            "NO_COLOR": "1",
            "HOME": str(top),
            "KCHECK_STATE_DIR": str(top / "state"),
            "DOCKER_HOST": f"unix://{top}/no-docker.sock",  # no daemon: engines answer no
            "CONTAINERS_CONF": str(top / "no-containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(top / "no-storage.conf"),
        }
        before = snapshot(Path("/dev"), top / "special")
        if VERBOSE:
            print("kcheck", " ".join(map(repr, argv)))
        done = subprocess.run(
            [*kcheck_argv(), *argv],
            cwd=top,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIME_BOUND,
            stdin=subprocess.DEVNULL,
        )
        assert "Traceback" not in done.stderr, (argv, done.stderr)
        assert done.returncode in (0, 1, 2, 3), (argv, done.returncode, done.stderr)
        if done.returncode == 3:
            assert done.stderr.count("\n") == 1 and done.stderr.startswith("kcheck: error: "), (
                argv,
                done.stderr,
            )
        assert snapshot(Path("/dev"), top / "special") == before, argv
        assert f" {top}" not in Path("/proc/self/mountinfo").read_text(), argv  # nothing left mounted
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_every_subcommand_is_fuzzed():
    assert {("probe",), ("cr", "checkpoint"), ("cr", "compare"), ("build-kernel",), ("build-criu",)} <= set(
        SUBCOMMANDS
    )
