"""Kernel trees for the build-kernel tests: a fake one built with GitPython, and the real one.

The real tree is Debian's `linux-source-6.1`, unpacked once into a cache shared across test
runs (and with the VM boot test): `cached_linux_source_repo()` returns it as a one-commit git
repository, `clone_linux_source()` gives a test its own working copy, `linux_tinyconfig()` the
tree's own `make tinyconfig`.

The fake tree is a git repository whose top-level Makefile says VERSION 3, PATCHLEVEL 19 and
whose olddefconfig, bzImage, modules, kernelrelease, install and modules_install targets are
small real make rules: they compile C files with $(CC) and write files where the kernel would.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import git
from conftest import kcheck_argv, run_kcheck
from gitrepos import catalog_commit, commit, init_repo, patchset, write_catalog

from kcheck.probe.checks import CONFIG_OPTIONS

LINUX_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
# Shared by every test run on the machine; KCHECK_TEST_CACHE moves it.
KERNEL_TEST_CACHE = Path(os.environ.get("KCHECK_TEST_CACHE", "/var/tmp/kcheck-test-cache"))
LINUX_SOURCE_REPO_NAME = "linux-source-6.1"
_CACHE_KEY_FILE = "kcheck-cache-key"  # inside .git: which tarball the cached tree came from
_COMMIT_DATE = "1700000000 +0000"


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """One test process fills the cache; the others wait for it and then reuse it."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _tarball_key(tarball: Path) -> str:
    stat = tarball.stat()
    return f"{tarball} {stat.st_size} {int(stat.st_mtime)}\n"


def _quiet(argv: list[str], cwd: Path, env: dict | None = None) -> None:
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=env)


def cached_linux_source_repo(tarball: Path = LINUX_SOURCE_TARBALL, cache: Path = KERNEL_TEST_CACHE) -> Path:
    """The unpacked kernel source as a git repository with one commit (branch main).

    Unpacked (about 10 s) and committed once per tarball; later calls, in this run or a later
    one, return the cached tree. Treat it as read-only: clone it to build in it.
    """
    repo = cache / LINUX_SOURCE_REPO_NAME
    key = _tarball_key(tarball)
    marker = repo / ".git" / _CACHE_KEY_FILE
    # The marker is written before the tree is renamed into place: where it is, the tree is
    # complete, so a filled cache is reused without waiting for the lock (others hold it long).
    if marker.is_file() and marker.read_text() == key:
        return repo
    with _cache_lock(cache):
        if marker.is_file() and marker.read_text() == key:
            return repo
        shutil.rmtree(repo, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
        try:
            _quiet(["tar", "-xJf", str(tarball), "-C", str(scratch)], cwd=cache)
            (top,) = scratch.iterdir()
            env = {
                **os.environ,
                "GIT_AUTHOR_NAME": "Debian",
                "GIT_AUTHOR_EMAIL": "debian-kernel@lists.debian.org",
                "GIT_COMMITTER_NAME": "kcheck tests",
                "GIT_COMMITTER_EMAIL": "tests@kcheck.invalid",
                "GIT_AUTHOR_DATE": _COMMIT_DATE,
                "GIT_COMMITTER_DATE": _COMMIT_DATE,
            }
            _quiet(["git", "init", "--quiet", "--initial-branch=main"], cwd=top)
            # --force: the tarball holds files its own .gitignore names; a clone needs them all.
            _quiet(["git", "add", "--all", "--force"], cwd=top)
            _quiet(
                ["git", "commit", "--quiet", "--no-gpg-sign", "-m", f"{top.name} from {tarball.name}"],
                top,
                env,
            )
            (top / ".git" / _CACHE_KEY_FILE).write_text(key)
            top.rename(repo)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return repo


def clone_linux_source(dest: Path) -> git.Repo:
    """A working copy of the cached kernel repository (objects hard-linked, files checked out)."""
    repo = git.Repo.clone_from(str(cached_linux_source_repo()), dest)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Distro Dev")
        config.set_value("user", "email", "distro@example.org")
        config.set_value("commit", "gpgsign", "false")
    return repo


def linux_tinyconfig(cache: Path = KERNEL_TEST_CACHE) -> Path:
    """The .config the tree's own `make tinyconfig` writes, made once beside the cached tree."""
    source = cached_linux_source_repo(cache=cache)
    config = cache / "tinyconfig-6.1"
    if config.is_file():  # renamed into place complete
        return config
    with _cache_lock(cache):
        if not config.is_file():
            with tempfile.TemporaryDirectory(prefix="tinyconfig-", dir=cache) as objects:
                # O= keeps the cached source tree untouched.
                _quiet(["make", "-s", f"O={objects}", "tinyconfig"], cwd=source)
                shutil.copyfile(Path(objects) / ".config", config.with_suffix(".tmp"))
                config.with_suffix(".tmp").rename(config)
    return config


FIX_FILE = "init/main.c"
FIX_BEFORE = '{ "HOME=/", "TERM=linux", NULL, }'
FIX_AFTER = '{ "HOME=/", "TERM=linux", "KCHECK_FIX=applied", NULL, }'
FIX_SUBJECT = "init: tell the init process the kcheck fix is applied"


UPSTREAM_IDENTITY = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@kernel.example",
    "GIT_COMMITTER_NAME": "Upstream Dev",
    "GIT_COMMITTER_EMAIL": "dev@kernel.example",
}


def commit_file_on_head(repo: git.Repo, scratch: Path, name: str, text: str, message: str) -> str:
    """In a bare repo: a commit on HEAD that writes `text` to `name` (through a temporary index
    in `scratch`), as the upstream developer; its SHA. HEAD does not move."""
    index, content = scratch / "kcheck-commit.index", scratch / "kcheck-commit.blob"
    with repo.git.custom_environment(GIT_INDEX_FILE=str(index), **UPSTREAM_IDENTITY):
        repo.git.read_tree("HEAD")
        content.write_text(text)
        blob = repo.git.hash_object("-w", str(content))
        repo.git.update_index("--add", "--cacheinfo", f"100644,{blob},{name}")
        sha = repo.git.commit_tree(repo.git.write_tree(), "-p", "HEAD", "-m", message)
    index.unlink()
    content.unlink()
    return sha


def upstream_with_a_real_fix(path: Path) -> tuple[str, str]:
    """A bare clone of the cached kernel with one real commit on top (tag v6.1-kcheck-fix).

    Returns (the clone's path, the fix's SHA). The fix changes a string the tinyconfig kernel
    compiles in, so a build shows whether it was picked.
    """
    repo = git.Repo.clone_from(str(cached_linux_source_repo()), path, bare=True)
    with repo:
        original = repo.git.show(f"HEAD:{FIX_FILE}")
        assert FIX_BEFORE in original
        fixed = original.replace(FIX_BEFORE, FIX_AFTER) + "\n"
        fix = commit_file_on_head(repo, path, FIX_FILE, fixed, f"{FIX_SUBJECT}\n\nA small real change.")
        repo.git.update_ref("refs/heads/main", fix)
        repo.git.tag("-a", "-m", "fix", "v6.1-kcheck-fix", fix)
    return str(path), fix


def real_fix_catalog(directory: Path, upstream: str, fix: str) -> Path:
    """A catalog whose one patchset, needed below 6.2, is the real fix."""
    return write_catalog(
        directory,
        patchset(
            "kcheck-test-fix",
            [catalog_commit(fix, FIX_SUBJECT, tag="v6.1-kcheck-fix")],
            fixes=["aio.ring_remap"],
            needed_below="6.2",
            upstream=upstream,
        ),
    )


# --- the fake kernel tree ------------------------------------------------------------------

FAKE_MAKEFILE = r"""VERSION = 3
PATCHLEVEL = 19
SUBLEVEL = 0
EXTRAVERSION =
NAME = Diseased Newt

# A stand-in for the kernel's build: the same targets, each a small real rule.
CC = gcc
INSTALL_PATH ?= /boot
KBUILD_BUILD_TIMESTAMP ?= $(shell date)
KBUILD_BUILD_USER ?= $(shell whoami)
KBUILD_BUILD_HOST ?= $(shell uname -n)
LOCALVERSION_CONFIG = $(shell sed -n 's/^CONFIG_LOCALVERSION="\(.*\)"$$/\1/p' .config 2>/dev/null)
KERNELRELEASE = $(shell cat include/config/kernel.release 2>/dev/null)
OBJS = fs/aio.o fs/namei.o fs/overlayfs/inode.o init/version.o

.PHONY: olddefconfig localmodconfig kernelrelease bzImage modules install modules_install

olddefconfig:
	@test -f .config || { echo "*** no .config: copy one first"; exit 1; }
	@grep -q '^CONFIG_LOCALVERSION=' .config || echo 'CONFIG_LOCALVERSION=""' >> .config
	@mkdir -p include/config
	grep '^CONFIG_' .config | sort > include/config/auto.conf
	echo $(VERSION).$(PATCHLEVEL).$(SUBLEVEL)$(LOCALVERSION_CONFIG) > include/config/kernel.release

localmodconfig:
	sed -i 's/=m$$/=n/' .config

kernelrelease:
	@echo $(VERSION).$(PATCHLEVEL).$(SUBLEVEL)$(LOCALVERSION_CONFIG)

init/version.c: include/config/kernel.release
	@mkdir -p init
	echo 'const char linux_banner[] = "Linux version $(KERNELRELEASE) \
	($(KBUILD_BUILD_USER)@$(KBUILD_BUILD_HOST)) $(KBUILD_BUILD_TIMESTAMP)";' > $@

%.o: %.c .config
	$(CC) -c -o $@ $<

bzImage: arch/x86/boot/bzImage
arch/x86/boot/bzImage: $(OBJS)
	@mkdir -p arch/x86/boot
	@touch arch/x86/boot/.building
	sleep $${FAKE_BUILD_SECONDS:-0}
	cat $(OBJS) > $@.tmp
	strings init/version.o | grep 'Linux version' >> $@.tmp
	mv $@.tmp $@
	echo "ffffffff81000000 T _text" > System.map
	$(if $(FAKE_BOOTABLE_IMAGE),cp $(FAKE_BOOTABLE_IMAGE) $@)

modules: fs/overlayfs/overlay.ko
fs/overlayfs/overlay.ko: fs/overlayfs/inode.o
	cp $< $@
	echo $@ > modules.order

install: arch/x86/boot/bzImage
	mkdir -p $(INSTALL_PATH)
	cp arch/x86/boot/bzImage $(INSTALL_PATH)/vmlinuz-$(KERNELRELEASE)
	cp .config $(INSTALL_PATH)/config-$(KERNELRELEASE)

modules_install: modules
	mkdir -p $(INSTALL_MOD_PATH)/lib/modules/$(KERNELRELEASE)/kernel/fs/overlayfs
	cp fs/overlayfs/overlay.ko $(INSTALL_MOD_PATH)/lib/modules/$(KERNELRELEASE)/kernel/fs/overlayfs/
	cp modules.order $(INSTALL_MOD_PATH)/lib/modules/$(KERNELRELEASE)/
"""

# The subset of the kernel's scripts/config that kcheck uses, with the same effect.
FAKE_SCRIPTS_CONFIG = r"""#!/bin/sh
file=.config
if [ "$1" = --file ]; then file=$2; shift 2; fi
while [ $# -gt 0 ]; do
    command=$1; name=${2#CONFIG_}; shift 2
    case $command in
        --enable) line="CONFIG_$name=y" ;;
        --module) line="CONFIG_$name=m" ;;
        --disable) line="# CONFIG_$name is not set" ;;
        --set-str) line="CONFIG_$name=\"$1\""; shift ;;
        --set-val) line="CONFIG_$name=$1"; shift ;;
        *) echo "scripts/config: unknown command $command" >&2; exit 1 ;;
    esac
    sed -i -e "/^CONFIG_$name=/d" -e "/^# CONFIG_$name is not set/d" "$file"
    echo "$line" >> "$file"
done
"""

FAKE_GITIGNORE = (
    "*.o\n*.ko\n*.tmp\n.config\ninclude/config/\ninit/version.c\nmodules.order\narch/x86/boot/\nSystem.map\n"
)

# The distro's running config, in the shape Debian ships it.
FAKE_RUNNING_CONFIG = """CONFIG_MODULES=y
CONFIG_OVERLAY_FS=m
CONFIG_AIO=y
CONFIG_LOCALVERSION=""
CONFIG_SYSTEM_TRUSTED_KEYS="debian/certs/debian-uefi-certs.pem"
CONFIG_SYSTEM_REVOCATION_KEYS="debian/certs/revoked.pem"
# CONFIG_CHECKPOINT_RESTORE is not set
"""

T0 = 1_420_000_000
DAY = 86400


def c_source(name: str, lines: int = 30) -> str:
    """A C file whose lines are all distinct, so cherry-picks have stable context."""
    stem = name.replace("/", "_").replace(".", "_")
    return "".join(f"int {stem}_{n} = {n};\n" for n in range(lines))


def change_line(text: str, line: int, replacement: str) -> str:
    rows = text.splitlines(keepends=True)
    rows[line] = replacement + "\n"
    return "".join(rows)


@dataclass(frozen=True)
class FakeKernel:
    root: Path
    upstream: Path
    distro: Path  # the tree kcheck builds in (branch main)
    catalog: Path
    config: Path  # the "running" config to pass as --config
    shas: dict[str, str]  # role -> upstream SHA of each fix
    subjects: dict[str, str]
    base: str  # the distro's HEAD before kcheck

    def repo(self) -> git.Repo:
        return git.Repo(self.distro)

    def tree(self, *names: str) -> Path:
        return self.distro.joinpath(*names)


FIXES = {
    # role: (patchset, file, subject)
    "aio_remap": ("aio-fix", "fs/aio.c", "aio: Make it possible to remap aio ring"),
    "aio_enxio": ("aio-fix", "fs/namei.c", "make default ->i_fop have ->open() fail with ENXIO"),
    "ovl_path": (
        "overlay-fix",
        "fs/overlayfs/inode.c",
        "overlayfs: Make f_path always point to the overlay and f_inode to the underlay",
    ),
}


def build_fake_kernel(
    root: Path, *, applied: bool = False, conflict: bool = False, payload_bytes: int = 0
) -> FakeKernel:
    """An upstream repo with three fixes after v3.19, and a distro tree forked at v3.19.

    `applied`: the distro already carries aio_remap as a `cherry-pick -x`.
    `conflict`: the distro changed the line ovl_path changes, so its pick conflicts.
    `payload_bytes`: the first fix also adds that much random data, so fetching it takes time.
    """
    upstream = init_repo(root / "upstream")
    files = {
        "Makefile": FAKE_MAKEFILE,
        "scripts/config": FAKE_SCRIPTS_CONFIG,
        ".gitignore": FAKE_GITIGNORE,
        "fs/aio.c": c_source("fs/aio.c"),
        "fs/namei.c": c_source("fs/namei.c"),
        "fs/overlayfs/inode.c": c_source("fs/overlayfs/inode.c"),
    }
    commit(upstream, "Linux 3.19", T0, files)
    os.chmod(root / "upstream/scripts/config", 0o755)
    upstream.git.update_index("--chmod=+x", "scripts/config")
    upstream.git.commit("--quiet", "--amend", "--no-edit")
    upstream.create_tag("v3.19", message="Linux 3.19")
    shas = {}
    for offset, (role, (_, name, subject)) in enumerate(FIXES.items(), start=1):
        text = change_line((root / "upstream" / name).read_text(), 10, f"int {role}_fixed = 1;")
        changes = {name: text}
        if payload_bytes and offset == 1:
            changes["firmware/aio-test.bin"] = os.urandom(payload_bytes).hex()
        shas[role] = commit(upstream, f"{subject}\n\nThe upstream fix in {name}.", T0 + offset * DAY, changes)
    upstream.create_tag("v4.0-rc1", message="Linux 4.0-rc1")
    commit(upstream, "Linux 4.0-rc1", T0 + 10 * DAY, {"Makefile": FAKE_MAKEFILE.replace("= 3\n", "= 4\n", 1)})

    distro = init_repo(root / "distro")
    distro.git.fetch("--quiet", str(root / "upstream"), "refs/tags/v3.19")
    distro.git.reset("--quiet", "--hard", "FETCH_HEAD")
    commit(distro, "debian: packaging for 3.19", T0 + 5 * DAY, {"debian/changelog": "linux (3.19-1)\n"})
    if applied:
        distro.git.fetch("--quiet", str(root / "upstream"), shas["aio_remap"])
        distro.git.cherry_pick("-x", shas["aio_remap"])
    if conflict:
        name = FIXES["ovl_path"][1]
        text = change_line((root / "distro" / name).read_text(), 10, "int distro_tweak = 2;")
        commit(distro, "overlayfs: distro tweak", T0 + 6 * DAY, {name: text})
    subjects = {role: subject for role, (_, _, subject) in FIXES.items()}
    catalog = write_catalog(
        root / "catalog",
        patchset(
            "aio-fix",
            [
                catalog_commit(shas["aio_enxio"], subjects["aio_enxio"], tag="v4.0-rc1"),
                catalog_commit(shas["aio_remap"], subjects["aio_remap"], tag="v4.0-rc1"),
            ],
            fixes=["aio.ring_remap"],
            needed_below="4.0",
            upstream=str(root / "upstream"),
        ),
        patchset(
            "overlay-fix",
            # abbreviated, as the real catalog has some: resolved from the fetched tag
            [catalog_commit(shas["ovl_path"][:10], subjects["ovl_path"], tag="v4.0-rc1")],
            needed_from="3.18",
            needed_below="4.2",
            upstream=str(root / "upstream"),
        ),
    )
    config = root / "running-config"
    config.write_text(FAKE_RUNNING_CONFIG)
    return FakeKernel(
        root, root / "upstream", root / "distro", catalog, config, shas, subjects, distro.head.commit.hexsha
    )


# --- running kcheck on a fake kernel ------------------------------------------------------


def build_args(kernel: FakeKernel, *extra: str, workdir: Path | None = None) -> list[str]:
    return [
        "build-kernel",
        "--tree",
        str(kernel.distro),
        "--catalog",
        str(kernel.catalog),
        "--config",
        str(kernel.config),
        "--workdir",
        str(workdir or kernel.root / "work"),
        "--min-free",
        "0",
        "--jobs",
        "2",
        *extra,
    ]


def build(kernel: FakeKernel, *extra: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return run_kcheck(*build_args(kernel, *extra, workdir=kwargs.pop("workdir", None)), env=env, **kwargs)


def start_build(kernel: FakeKernel, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """A run in the background in its own process group (as a shell job), for the tests that kill it."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.Popen(
        [*kcheck_argv(), *build_args(kernel, *extra)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def workdir_json(kernel: FakeKernel, name: str) -> dict:
    return json.loads((kernel.root / "work" / name).read_text())


def picked_commits(tree: Path, base: str) -> list[tuple[str, str]]:
    """(subject, cherry-pick trailer SHA) of each commit kcheck added on top of `base`."""
    with git.Repo(tree) as repo:
        out = repo.git.log("--reverse", "--format=%s%x1f%b%x1e", f"{base}..HEAD")
    commits = []
    for record in filter(str.strip, out.split("\x1e")):
        subject, body = record.strip().split("\x1f")
        trailer = [line for line in body.splitlines() if line.startswith("(cherry picked from commit ")]
        commits.append((subject, trailer[0].removeprefix("(cherry picked from commit ").rstrip(")")))
    return commits


def kernelrelease(kernel: FakeKernel) -> str:
    done = subprocess.run(["make", "-s", "kernelrelease"], cwd=kernel.distro, capture_output=True, text=True)
    return done.stdout.strip()


def kcheck_refs(kernel: FakeKernel) -> list[str]:
    with kernel.repo() as repo:
        return sorted(repo.git.for_each_ref("--format=%(refname)").split())


# --- the VM boot tests' kernels -----------------------------------------------------------

# An in-tree build in a clone of the cached source: in-tree paths are relative, so a copy of it
# rebuilds incrementally and ccache hits carry over to other clones (build-kernel's trees).
VM_BUILD = KERNEL_TEST_CACHE / "vm-kernel-6.1"
VM_CCACHE = KERNEL_TEST_CACHE / "ccache"
# The probe's config options, so the guest is judged ready, and /proc/config.gz for it.
VM_CONFIG_ITEMS = [f"CONFIG_{option}=y" for option, _, _ in CONFIG_OPTIONS] + [
    "CONFIG_IKCONFIG=y",
    "CONFIG_IKCONFIG_PROC=y",
]
VM_BUILD_LAYOUT = "in-tree, CC=ccache gcc"  # part of the cache key: another layout rebuilds
# Patches that each put back one behaviour an upstream fix removed (see their headers).
REGRESSIONS = Path(__file__).parent / "regressions"
_VM_LOCK = KERNEL_TEST_CACHE / ".vm-kernel.lock"  # its own: not the source cache's
_BUILT_FROM = "kcheck-built-from"


def vng() -> str:
    """virtme-ng from the test extra, beside this interpreter."""
    return str(Path(sys.executable).parent / "vng")


def vm_build_env() -> dict[str, str]:
    """vng on PATH; one ccache shared by the test kernels and build-kernel's test builds."""
    return {
        **os.environ,
        "PATH": f"{Path(vng()).parent}{os.pathsep}{os.environ['PATH']}",
        "CCACHE_DIR": str(VM_CCACHE),
        "CCACHE_NOHASHDIR": "true",
    }


def vm_make_argv() -> list[str]:
    return ["make", f"-j{(os.cpu_count() or 1) + 1}", "CC=ccache gcc", "bzImage"]


def _run_logged(steps: list[list[str]], cwd: Path, log: Path) -> None:
    """Run each step with its output appended to `log`; AssertionError with the log's tail."""
    with open(log, "a") as out:
        for argv in steps:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            done = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=vm_build_env())
            if done.returncode != 0:
                tail = log.read_text().splitlines()[-30:]
                raise AssertionError(f"{argv} failed in {cwd}; last lines of {log}:\n" + "\n".join(tail))


def _cached_build(tree: Path, key: str, make_tree: Callable[[Path], None]) -> Path:
    """tree/arch/x86/boot/bzImage, rebuilt by `make_tree(tree)` unless the tree was built from `key`."""
    image = tree / "arch/x86/boot/bzImage"
    marker = tree / _BUILT_FROM
    if marker.is_file() and marker.read_text() == key and image.is_file():
        return image  # the marker is written last: where it is, the build is complete
    with open(_VM_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == key and image.is_file():
            return image
        shutil.rmtree(tree, ignore_errors=True)
        make_tree(tree)
        marker.write_text(key)
    return image


def cached_vm_kernel() -> Path:
    """arch/x86/boot/bzImage of Debian's 6.1 configured by `vng --kconfig` (plus the options
    CRIU needs), built in a clone of the cached source tree once, then reused by later runs."""
    source = cached_linux_source_repo()
    key = f"{(source / '.git' / _CACHE_KEY_FILE).read_text()}{' '.join(VM_CONFIG_ITEMS)}\n{VM_BUILD_LAYOUT}\n"

    def make_tree(tree: Path) -> None:
        clone_linux_source(tree).close()
        items = [arg for item in VM_CONFIG_ITEMS for arg in ("--configitem", item)]
        _run_logged([[vng(), "--kconfig", *items], vm_make_argv()], tree, tree / "build.log")

    KERNEL_TEST_CACHE.mkdir(parents=True, exist_ok=True)
    return _cached_build(VM_BUILD, key, make_tree)


def regression_patch(variant: str) -> Path:
    return REGRESSIONS / f"{variant}.patch"


def regression_variants() -> list[str]:
    return sorted(path.stem for path in REGRESSIONS.glob("*.patch"))


def patch_header(patch: Path) -> str:
    """The text before the diff: the regression's name, the upstream commit it reverts, the symptom."""
    return patch.read_text().split("\ndiff --git ", 1)[0].strip()


def _relocate_objtool(tree: Path, original: Path) -> None:
    """objtool alone is built with absolute paths: point its recorded commands at the copy, or
    make rebuilds it there, and then every object that objtool checked (all of them)."""
    old, new = str(original).encode(), str(tree).encode()
    for path in (tree / "tools/objtool").rglob(".*"):
        if path.suffix in (".cmd", ".d") and path.is_file() and old in (data := path.read_bytes()):
            times = path.stat()
            path.write_bytes(data.replace(old, new))
            os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def regression_kernel(variant: str) -> Path:
    """The VM kernel with tests/regressions/VARIANT.patch committed on top, rebuilt incrementally
    in a copy of the stock tree (one or two objects and the link) and cached beside it."""
    stock = cached_vm_kernel()
    patch = regression_patch(variant)
    stock_key = (VM_BUILD / _BUILT_FROM).read_text()
    key = f"{stock_key}{variant} {hashlib.sha256(patch.read_bytes()).hexdigest()}\n"

    def make_tree(tree: Path) -> None:
        # cp -a keeps the stock objects' timestamps, so make rebuilds only what the patch touches.
        _quiet(["cp", "-a", "--reflink=auto", str(VM_BUILD), str(tree)], cwd=KERNEL_TEST_CACHE)
        (tree / _BUILT_FROM).unlink()
        _relocate_objtool(tree, VM_BUILD)
        with git.Repo(tree) as repo:
            repo.git.update_index("-q", "--refresh")  # the copy's files have new inodes
            repo.git.apply("--index", str(patch))
            repo.git.commit("--quiet", "--no-verify", "-m", patch_header(patch))
        _run_logged([vm_make_argv()], tree, tree / "build.log")

    assert stock.is_file()
    return _cached_build(KERNEL_TEST_CACHE / f"vm-kernel-6.1-{variant}", key, make_tree)


# What the stock VM kernel shows live (measured): Debian's 6.1 has the overlay maps bug
# (/proc/self/maps names the underlying tmpfs's device and inode), and that check is optional.
STOCK_VM_LIVE_RESULTS = {
    "overlayfs.mnt_id": "pass",
    "overlayfs.fd_path": "pass",
    "overlayfs.maps": "fail",
    "aio.ring_remap": "pass",
    "aio.reopen_enxio": "pass",
    "fdinfo.mnt_id_field": "pass",
}


def live_results(report: dict) -> dict[str, str]:
    """check id -> status of the checks a probe report observed live."""
    return {check["id"]: check["status"] for check in report["checks"] if check["evidence"] == "live"}
