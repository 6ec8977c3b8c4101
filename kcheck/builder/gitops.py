"""The git side of a build: clone, fetch the fixes, cherry-pick them, abort, tag the result.

All through GitPython with its unsafe-protocol and unsafe-option guards left on; every
command and its output goes to the build log.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from kcheck.builder.progress import BuildLog, shell_line
from kcheck.core import repos
from kcheck.core.repos import git_reason, transport_guard
from kcheck.errors import KcheckError, StageFailed
from kcheck.patchsets.catalog import Commit

REMOTE = "kcheck-upstream"
FETCHED_REF_PREFIX = "refs/kcheck/upstream/"


class TreeGit:
    """A kernel work tree's repository, with each command logged."""

    def __init__(self, repo: git.Repo, log: BuildLog | None) -> None:
        self.repo = repo
        self.log = log
        self.path = Path(repo.working_tree_dir or repo.git_dir)
        if not _has_identity(repo):
            # Cherry-picks and the build tag need a committer; lab hosts often have none set.
            repo.git.update_environment(
                GIT_COMMITTER_NAME="kcheck build-kernel", GIT_COMMITTER_EMAIL=f"kcheck@{socket.gethostname()}"
            )

    def run(self, *args: str) -> str:
        """`git ARGS` in the tree; GitCommandError on failure, after logging it."""
        assert self.log is not None, "a dry run never changes the tree"
        self.log.command(shell_line(["git", *args]), self.path)
        try:
            status, out, err = self.repo.git.execute(
                ["git", *args], with_extended_output=True, with_exceptions=True
            )
        except git.GitCommandError as exc:
            self.log.write(f"{exc.stdout}\n{exc.stderr}".strip())
            raise
        self.log.write("\n".join(part for part in (out, err) if part))
        return out

    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def current_branch(self) -> str | None:
        return None if self.repo.head.is_detached else self.repo.active_branch.name

    def has_commit(self, name: str) -> bool:
        try:
            return repos.resolve_commit(self.repo, name) is not None
        except repos.AmbiguousSha:
            return False

    def changed_files(self) -> list[str]:
        """Tracked files with uncommitted changes (untracked and ignored build output is fine)."""
        output = self.repo.git.status("--porcelain", "--untracked-files=no")
        return [line[3:] for line in output.splitlines() if line.strip()]

    def conflicted_files(self) -> list[str]:
        return self.repo.git.diff("--name-only", "--diff-filter=U").split()

    @property
    def git_dir(self) -> Path:
        return Path(self.repo.git_dir)

    def picking(self) -> bool:
        return (self.git_dir / "CHERRY_PICK_HEAD").exists()

    def commit_date(self, rev: str) -> str:
        """The committer date, RFC 2822: a fixed KBUILD_BUILD_TIMESTAMP that `date -d` reads."""
        return self.repo.git.log("-1", "--format=%cd", "--date=rfc2822", rev)

    def origin_url(self) -> str | None:
        try:
            return self.repo.remote("origin").url
        except ValueError:
            return None


def _has_identity(repo: git.Repo) -> bool:
    try:
        repo.git.var("GIT_COMMITTER_IDENT")
    except git.GitCommandError:
        return False
    return True


def clone_options(branch: str | None, reference: Path | None, blob_filter: bool) -> list[str]:
    """The options of the clone; `git clone OPTIONS URL DEST` is the command."""
    options = ["--filter=blob:none"] if blob_filter else []
    if branch:
        options += ["--branch", branch]
    if reference:
        options += ["--reference", str(reference)]
    return options


IGNORED_FILTER = "filtering not recognized by server"


def clone(url: str, dest: Path, options: list[str], log: BuildLog) -> tuple[git.Repo, bool]:
    """Clone through GitPython's guards; (repo, whether it is a partial clone).

    A server that ignores --filter sends everything; git then still marks origin a promisor
    remote, so that marking is removed: the clone is an ordinary full one.
    """
    log.command(shell_line(["git", "clone", *options, url, str(dest)]))
    messages = git.RemoteProgress()
    try:
        repo = repos.clone("--repo", url, dest, options, messages)
    except git.GitCommandError as exc:
        log.write(str(exc.stderr))
        shutil.rmtree(dest, ignore_errors=True)
        raise StageFailed(f"clone of {url} failed: {git_reason(exc.stderr)}") from None
    log.write("\n".join(messages.other_lines))
    filtered = any(option.startswith("--filter=") for option in options)
    if filtered and any(IGNORED_FILTER in line for line in messages.other_lines):
        with repo.config_writer() as config:
            config.remove_option('remote "origin"', "promisor")
            config.remove_option('remote "origin"', "partialclonefilter")
        filtered = False
    return repo, filtered


@dataclass(frozen=True)
class FetchPlan:
    """What to fetch for the catalog commits the tree lacks: full SHAs, and tags for abbreviations."""

    shas: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def refspecs(self) -> list[str]:
        return [f"{sha}:{FETCHED_REF_PREFIX}{sha}" for sha in self.shas] + [
            f"refs/tags/{tag}:refs/tags/{tag}" for tag in self.tags
        ]

    def argv(self) -> list[str]:
        return ["git", "fetch", "--no-tags", REMOTE, *self.refspecs]

    def __bool__(self) -> bool:
        return bool(self.shas or self.tags)


def plan_fetch(commits: list[Commit], has_commit: Callable[[str], bool]) -> FetchPlan:
    """Only what the commits need: nothing for those the tree has, a tag where a SHA is abbreviated."""
    shas, tags = [], []
    for commit in commits:
        if has_commit(commit.sha):
            continue
        if commit.is_full:
            shas.append(commit.sha)
        elif commit.tag not in tags:
            tags.append(commit.tag)
    return FetchPlan(tuple(dict.fromkeys(shas)), tuple(tags))


def remote_argv(tree: TreeGit, url: str) -> list[str] | None:
    """The command that points the kcheck-upstream remote at `url`, None when it already does."""
    try:
        current = tree.repo.remote(REMOTE).url
    except ValueError:
        return ["git", "remote", "add", REMOTE, url]
    return None if current == url else ["git", "remote", "set-url", REMOTE, url]


def fetch(tree: TreeGit, url: str, plan: FetchPlan) -> None:
    """Add or repoint the kcheck-upstream remote and fetch the plan; never a full remote update.

    The remote is created through GitPython (its URL guard applies). The fetch runs as a plain
    `git fetch`: GitPython cannot parse the result of fetching a bare SHA, and its argv is
    kcheck's own (fixed remote name, validated SHAs and tags).
    """
    argv = remote_argv(tree, url)
    try:
        with transport_guard("--upstream", url):
            if argv is not None:
                tree.log.command(shell_line(argv), tree.path)
                if argv[2] == "add":
                    tree.repo.create_remote(REMOTE, url)
                else:
                    tree.repo.remote(REMOTE).set_url(url)
            tree.run(*plan.argv()[1:])
    except git.GitCommandError as exc:
        raise StageFailed(f"fetch from {url} failed: {git_reason(exc.stderr)}") from None


@dataclass(frozen=True)
class PickOutcome:
    new_sha: str | None  # None: the pick was empty (the tree already had the change)
    conflicts: tuple[str, ...] = ()


def cherry_pick(tree: TreeGit, sha: str) -> PickOutcome:
    """`git cherry-pick -x SHA`; on a conflict the tree is left mid-cherry-pick."""
    try:
        tree.run("cherry-pick", "-x", sha)
    except git.GitCommandError as exc:
        conflicts = tree.conflicted_files()
        if conflicts:
            return PickOutcome(None, tuple(conflicts))
        if tree.picking() and not tree.repo.git.diff("--cached", "--name-only"):
            tree.run("cherry-pick", "--skip")  # empty: the tree already carries the change
            return PickOutcome(None)
        raise StageFailed(f"git cherry-pick -x {sha[:12]} failed: {git_reason(exc.stderr)}") from None
    return PickOutcome(tree.head())


def continue_pick(tree: TreeGit, sha: str, head_before_conflict: str | None) -> str | None:
    """Commit the resolved cherry-pick of `sha` with git's own -x message; the new SHA (None if empty).

    With no cherry-pick in progress the user ended it by hand: a moved HEAD is their commit of
    it; an unmoved one means it was aborted or skipped, so the fix is not in the tree.
    """
    conflicts = tree.conflicted_files()
    if conflicts:
        raise KcheckError(
            f"--continue: {tree.path} still has unresolved files ({', '.join(conflicts)}); "
            f"edit them, `git add` them, then rerun --continue"
        )
    if not tree.picking():
        if head_before_conflict is not None and tree.head() != head_before_conflict:
            return tree.head()  # the user committed the resolution by hand
        raise KcheckError(
            f"--continue: the pick of {sha} was abandoned in {tree.path}; redo it with "
            f"git cherry-pick -x {sha} and --continue, or --abort"
        )
    if not tree.repo.git.diff("--cached", "--name-only"):
        tree.run("cherry-pick", "--skip")
        return None
    with tree.repo.git.custom_environment(GIT_EDITOR="true"):
        tree.run("cherry-pick", "--continue")
    return tree.head()


def abort(tree: TreeGit, original_branch: str | None, original_commit: str, branch: str | None) -> None:
    """Undo kcheck's pick: stop a cherry-pick, go back to where the run started, drop its branch."""
    if tree.picking():
        tree.run("cherry-pick", "--abort")
    tree.run("checkout", "--quiet", original_branch or original_commit)
    if original_branch is None:
        tree.run("checkout", "--quiet", "--detach", original_commit)
    if branch and branch != original_branch and branch in [head.name for head in tree.repo.heads]:
        tree.run("branch", "-D", branch)


def unique_branch(tree: TreeGit, wanted: str) -> str:
    existing = {head.name for head in tree.repo.heads}
    name, number = wanted, 2
    while name in existing:
        name, number = f"{wanted}-{number}", number + 1
    return name


def tag_argv(name: str, message: str) -> list[str]:
    """An annotated tag on the built commit: it marks what was built, and makes the kernel's
    setlocalversion see a tagged tree, so `make kernelrelease` has no "+" appended."""
    return ["git", "tag", "--annotate", "--force", "--message", message, name]
