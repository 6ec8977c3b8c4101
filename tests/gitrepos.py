"""Real git repositories and catalogs for the catalog and audit tests.

`build_kernel_repos` makes an "upstream" repo with fix commits and a "distro" repo forked
before them, which carries one fix cherry-picked with -x, one applied by hand (same diff,
no trailer), one with a stable-style trailer (and an adjusted diff), and lacks one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import git

DAY = 86400
T0 = 1_420_000_000  # early 2015, when the seed's fixes were current

MAKEFILE = """VERSION = 3
PATCHLEVEL = 18
SUBLEVEL = 0
EXTRAVERSION =
NAME = Diseased Newt
"""


def source(name: str, lines: int = 40) -> str:
    """A C-looking file whose lines are all distinct, so diffs have stable context."""
    return "".join(f"/* {name} line {n} */\n" for n in range(lines))


def changed(text: str, line: int, replacement: str) -> str:
    rows = text.splitlines(keepends=True)
    rows[line] = replacement + "\n"
    return "".join(rows)


def init_repo(path: Path) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test Dev")
        config.set_value("user", "email", "dev@example.org")
        config.set_value("commit", "gpgsign", "false")
    return repo


def commit(repo: git.Repo, message: str, when: int, files: dict[str, str] | None = None) -> str:
    """Write `files`, commit them with author and committer date `when`; the new SHA."""
    for name, text in (files or {}).items():
        path = Path(repo.working_tree_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        repo.git.add("--", name)
    stamp = f"{when} +0000"
    with repo.git.custom_environment(GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp):
        repo.git.commit("--quiet", "--allow-empty", "-m", message)
    return repo.head.commit.hexsha


def read(repo: git.Repo, name: str) -> str:
    return (Path(repo.working_tree_dir) / name).read_text()


@dataclass(frozen=True)
class KernelRepos:
    upstream: Path
    work: Path  # the distro branch in a clone of upstream: it has every upstream object
    distro: Path  # the same branch alone: no upstream object past the fork
    subjects: dict[str, str]  # role -> subject
    shas: dict[str, str]  # role -> upstream SHA
    before_backports: str  # a distro commit before any fix was carried


def build_kernel_repos(root: Path) -> KernelRepos:
    upstream = init_repo(root / "upstream")
    files = {
        "Makefile": MAKEFILE,
        "include/linux/fs.h": source("fs.h"),
        "fs/overlayfs/super.c": source("super.c"),
        "fs/overlayfs/inode.c": source("inode.c"),
        "fs/aio.c": source("aio.c"),
        "fs/namei.c": source("namei.c"),
    }
    commit(upstream, "Linux 3.18-rc1", T0, files)
    subjects = {
        "ancestor": "VFS: Introduce inode-getting helpers for layered/unioned fs environments",
        "picked": "overlayfs: Make f_path always point to the overlay and f_inode to the underlay",
        "by_hand": "overlay: Call ovl_drop_write() earlier in ovl_dentry_open()",
        "stable": "aio: Make it possible to remap aio ring",
        "missing": "fix a braino in ovl_d_select_inode()",
    }
    shas = {}
    shas["ancestor"] = commit(
        upstream,
        subjects["ancestor"],
        T0 + DAY,
        {"include/linux/fs.h": changed(files["include/linux/fs.h"], 5, "struct inode *d_inode_helper;")},
    )
    upstream.create_tag("v3.18")
    fixes = {
        "picked": "fs/overlayfs/super.c",
        "by_hand": "fs/overlayfs/inode.c",
        "stable": "fs/aio.c",
        "missing": "fs/namei.c",
    }
    for offset, (role, name) in enumerate(fixes.items(), start=10):
        text = changed(read(upstream, name), 20, f"/* {role}: the upstream fix */")
        shas[role] = commit(
            upstream, f"{subjects[role]}\n\nUpstream fix for {name}.", T0 + offset * DAY, {name: text}
        )
    commit(upstream, "Linux 3.19-rc1", T0 + 15 * DAY, {"Makefile": MAKEFILE.replace("18", "19")})
    upstream.create_tag("v3.19-rc1")

    work = git.Repo.clone_from(str(root / "upstream"), root / "work")
    with work.config_writer() as config:
        config.set_value("user", "name", "Distro Dev")
        config.set_value("user", "email", "distro@example.org")
        config.set_value("commit", "gpgsign", "false")
    work.git.checkout("--quiet", "-b", "distro", "v3.18")
    before = commit(
        work, "debian: packaging for 3.18", T0 + 5 * DAY, {"debian/changelog": "linux (3.18-1)\n"}
    )
    stamp = f"{T0 + 20 * DAY} +0000"
    with work.git.custom_environment(GIT_COMMITTER_DATE=stamp):
        work.git.cherry_pick("-x", shas["picked"])
    work.git.cherry_pick("--no-commit", shas["by_hand"])
    commit(work, "ovl: drop write access earlier on open\n\nApplied by hand from the list.", T0 + 21 * DAY)
    work.git.cherry_pick("--no-commit", shas["stable"])
    adjusted = changed(read(work, "fs/aio.c"), 22, "/* stable: adjusted for 3.18 */")
    commit(
        work,
        f"{subjects['stable']}\n\n[ Upstream commit {shas['stable']} ]\n\nAdjusted context.",
        T0 + 22 * DAY,
        {"fs/aio.c": adjusted},
    )
    commit(
        work,
        "namei: distro tweak",
        T0 + 23 * DAY,
        {"fs/namei.c": changed(read(work, "fs/namei.c"), 30, "/* distro tweak */")},
    )

    distro = init_repo(root / "distro")
    remote = distro.create_remote("work", str(root / "work"))
    remote.fetch("refs/heads/distro")  # only what the branch reaches: no upstream fix objects
    distro.delete_remote(remote)
    distro.git.reset("--quiet", "--hard", "FETCH_HEAD")
    return KernelRepos(root / "upstream", root / "work", root / "distro", subjects, shas, before)


def tree_state(path: Path) -> tuple[str, ...]:
    """What an audit must leave alone: worktree status, HEAD, refs and the object count."""
    repo = git.Repo(path)
    with repo:
        status = "" if repo.bare else repo.git.status("--porcelain", "--ignored")
        return (
            status,
            repo.git.rev_parse("--verify", "--quiet", "HEAD") if repo.head.is_valid() else "",
            repo.git.for_each_ref(),
            repo.git.count_objects("-v"),
        )


def patchset_toml(data: dict) -> str:
    """TOML text for one patchset table (JSON strings and arrays are valid TOML values)."""
    tables = data.get("commits") or []
    lines = [f"{key} = {json.dumps(value)}" for key, value in data.items() if key != "commits" or not tables]
    for entry in tables:
        lines += ["", "[[commits]]"] + [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"


def write_catalog(directory: Path, *patchsets: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for data in patchsets:
        (directory / f"{data['name']}.toml").write_text(patchset_toml(data))
    return directory


def patchset(name: str, commits: list[dict], **fields) -> dict:
    """A valid patchset dict; `fields` override or add top-level keys."""
    return {
        "name": name,
        "summary": f"test patchset {name}",
        "fixes": ["overlayfs.mnt_id"],
        "needed_below": "4.2",
        "upstream": "https://example.org/linux.git",
        **fields,
        "commits": commits,
    }


def catalog_commit(sha: str, subject: str, tag: str = "v3.19-rc1", **fields) -> dict:
    return {"sha": sha, "subject": subject, "author": "Test Dev", "tag": tag, **fields}
