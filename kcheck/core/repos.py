"""The git layer every git user in kcheck shares (audit, build-kernel, build-criu): opening a
repository or a kernel tree at a rev, opening the upstream to compare with, resolving SHAs,
ancestry and patch-ids, one refusal for unsafe transports, and the line of git's stderr that
explains a failure.

GitPython's unsafe-protocol and unsafe-option guards stay on: every clone, remote and fetch
goes through them, and `transport_guard` turns their refusal into kcheck's one-line error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

from kcheck.core.release import KernelRelease, version_from_makefile
from kcheck.errors import KcheckError


def open_repo(path: Path, refusal: str) -> git.Repo:
    """The repository at `path`; `refusal` (bad input, one line) when there is none."""
    try:
        return git.Repo(path)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        raise KcheckError(refusal) from None


def unsafe_transport(option: str, url: str) -> KcheckError:
    return KcheckError(
        f"{option} {url}: refused an unsafe git transport; pass an https, ssh, git or file URL"
    )


def check_url(option: str, url: str) -> None:
    """Refuse `url` before any work when GitPython would refuse it later."""
    try:
        git.Git.check_unsafe_protocols(url)
    except git.UnsafeProtocolError:
        raise unsafe_transport(option, url) from None


@contextmanager
def transport_guard(option: str, url: str) -> Iterator[None]:
    """GitPython refused `url` (or an option) as unsafe: bad input naming the option."""
    try:
        yield
    except (git.UnsafeProtocolError, git.UnsafeOptionError):
        raise unsafe_transport(option, url) from None


def clone(
    option: str, url: str, dest: Path, options: list[str], progress: git.RemoteProgress | None = None
) -> git.Repo:
    """`git clone OPTIONS URL DEST` through GitPython's guards; an unsafe URL is bad input
    naming `option`. A failing clone raises git.GitCommandError for the caller to explain."""
    with transport_guard(option, url):
        return git.Repo.clone_from(url, dest, multi_options=options, progress=progress)


def git_reason(stderr: str) -> str:
    """The line of git's stderr that says what went wrong: its first fatal/error line."""
    # GitPython wraps it as "\n  stderr: '...'".
    lines = [line.strip().removeprefix("stderr:").strip(" '\"") for line in str(stderr).splitlines()]
    lines = [line for line in lines if line.startswith(("fatal:", "error:"))] or list(filter(None, lines))
    return lines[0] if lines else "git failed"


class AmbiguousSha(Exception):
    """A short SHA that names several commits: the catalog must give more digits."""


def resolve_commit(repo: git.Repo, name: str) -> str | None:
    """The full SHA of commit `name` in `repo`, None when there is no such commit."""
    try:
        return repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}")
    except git.GitCommandError as exc:
        if "ambiguous" in str(exc.stderr):
            raise AmbiguousSha(name) from None
        return None


def why_no_commit(repo: git.Repo, rev: str) -> str:
    """Why `rev` names no commit: an empty repository, another kind of object, or nothing."""
    if not repo.head.is_valid() and rev == "HEAD":
        return "the repository has no commits yet"
    try:
        kind = repo.git.cat_file("-t", "--end-of-options", rev)
    except git.GitCommandError:
        return f"unknown rev {rev!r}"
    return f"rev {rev!r} is a {kind}, not a commit"


@dataclass(frozen=True)
class KernelTree:
    """The audited tree at the audited rev, with the version its Makefile declares there."""

    path: Path
    repo: git.Repo
    rev: str
    head: str
    release: KernelRelease


def open_kernel_repo(path: Path) -> git.Repo:
    """The repository of a kernel tree; bad input when `path` is none."""
    return open_repo(path, f"{path}: not a git repository; pass the top directory of a kernel git tree")


def open_tree(path: Path, rev: str) -> KernelTree:
    """Open a kernel git tree at `rev` and read its version from the Makefile at that rev."""
    return kernel_tree(open_kernel_repo(path), path, rev)


def kernel_tree(repo: git.Repo, path: Path, rev: str) -> KernelTree:
    """The kernel tree at `rev` of a repository already open (a run opens its tree once)."""
    try:
        head = resolve_commit(repo, rev)
    except AmbiguousSha:
        raise KcheckError(
            f"{path}: rev {rev!r} is ambiguous; give more hex digits, or a branch or tag"
        ) from None
    if head is None:
        raise KcheckError(f"{path}: {why_no_commit(repo, rev)}; pass --rev with a branch, tag or commit")
    try:
        makefile = repo.git.cat_file("blob", f"{head}:Makefile")
    except git.GitCommandError:
        raise KcheckError(
            f"{path}: {rev} has no top-level Makefile; pass the root of a kernel tree"
        ) from None
    try:
        release = version_from_makefile(makefile)
    except ValueError as exc:
        raise KcheckError(f"{path}: Makefile at {rev}: {exc}") from None
    return KernelTree(path=path, repo=repo, rev=rev, head=head, release=release)


@contextmanager
def open_upstream(spec: str, tags: Iterable[str]) -> Iterator[git.Repo]:
    """The upstream objects to compare with: a local clone as is, or `tags` fetched from a URL.

    A URL is fetched into a throwaway bare repo (commits only; trees and blobs come on
    demand), never into the audited tree.
    """
    path = Path(spec).expanduser()
    if path.exists():
        with open_repo(path, f"--upstream {spec}: not a git repository; pass a kernel clone or URL") as repo:
            yield repo
        return
    if "://" not in spec and ":" not in spec:
        raise KcheckError(f"--upstream {spec}: no such directory, and not a URL; pass a kernel clone or URL")
    with (
        tempfile.TemporaryDirectory(prefix="kcheck-upstream-") as scratch,
        git.Repo.init(scratch, bare=True) as repo,
    ):
        refspecs = [f"refs/tags/{tag}:refs/tags/{tag}" for tag in sorted(set(tags))]
        try:
            with transport_guard("--upstream", spec):
                remote = repo.create_remote("upstream", spec)
                remote.fetch(refspecs, filter="tree:0", no_tags=True)
        except git.GitCommandError as exc:
            raise KcheckError(
                f"--upstream {spec}: cannot fetch tags {', '.join(sorted(set(tags)))}: "
                f"{git_reason(exc.stderr)}; pass a reachable URL or a local clone"
            ) from None
        yield repo


def is_ancestor(tree: KernelTree, sha: str) -> bool:
    try:
        tree.repo.git.merge_base("--is-ancestor", sha, tree.head)
    except git.GitCommandError as exc:
        if exc.status == 1:
            return False
        raise KcheckError(f"{tree.path}: git merge-base failed: {git_reason(exc.stderr)}") from None
    return True


def patch_ids(repo: git.Repo, diffs: git.Git.AutoInterrupt) -> list[tuple[str, str]]:
    """(patch-id, commit) for each patch a running git process writes, in its order.

    The diff streams from one git process into `git patch-id` without passing through Python.
    """
    output = repo.git.patch_id("--stable", istream=diffs.stdout)
    diffs.wait()
    return [(patch_id, commit) for patch_id, commit in (line.split() for line in output.splitlines())]
