"""Which catalog commits a tree gets, and the git commands that apply them.

`kcheck audit`'s verdict on the patchsets the tree's version needs gives the selection; the
PickPlan turns it into commands. The one plan has four readers: the run executes it (with
resume and conflict handling, picks.py), --dry-run prints it, reproducer.sh replays it, and
`kcheck patchsets show` prints it as the manual recipe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import git

from kcheck.builder.gitops import REMOTE, FetchPlan, plan_fetch, tag_argv
from kcheck.core.release import KernelRelease, KernelVersion
from kcheck.core.repos import kernel_tree
from kcheck.errors import KcheckError
from kcheck.patchsets.audit import PRESENT, AuditStatus, Finding, audit
from kcheck.patchsets.catalog import Patchset

# A forced patchset (--patchset) is audited as if every kernel version needed it.
_EVERY_VERSION = KernelVersion(1 << 16, 0)


@dataclass(frozen=True)
class Selection:
    """The tree's version, the patchsets it gets, and audit's finding for each of their commits."""

    release: KernelRelease
    head: str
    patchsets: tuple[Patchset, ...]
    findings: tuple[Finding, ...]

    @property
    def present(self) -> list[Finding]:
        return [f for f in self.findings if f.status in PRESENT]

    @property
    def to_pick(self) -> list[Finding]:
        """Missing commits in catalog order; unknown ones too (the fetch decides them)."""
        return [f for f in self.findings if f.status in (AuditStatus.MISSING, AuditStatus.UNKNOWN)]


def select_patchsets(
    catalog: dict[str, Patchset], version: KernelVersion, forced: tuple[str, ...]
) -> list[Patchset]:
    """--patchset names as given (needed or not), else every patchset the version needs."""
    if forced:
        return [
            catalog[name]._replace(needed_from=None, needed_below=_EVERY_VERSION)
            for name in dict.fromkeys(forced)
        ]
    return [p for p in catalog.values() if p.needed_for(version)]


def check_patchset_names(catalog: dict[str, Patchset], names: tuple[str, ...]) -> None:
    for name in names:
        if name not in catalog:
            raise KcheckError(
                f"--patchset {name}: unknown patchset; known: {', '.join(catalog)} "
                "(see kcheck patchsets list)"
            )


def selected(
    repo: git.Repo, tree: Path, catalog: dict[str, Patchset], forced: tuple[str, ...]
) -> tuple[KernelRelease, str, list[Patchset]]:
    """The tree's release, HEAD, and the patchsets it gets (cheap: no history is read)."""
    kernel = kernel_tree(repo, tree, "HEAD")
    return kernel.release, kernel.head, select_patchsets(catalog, kernel.release.version, forced)


def classify(
    repo: git.Repo, tree: Path, patchsets: list[Patchset], upstream: git.Repo | None = None
) -> Selection:
    """`kcheck audit` of the tree's HEAD: with the tree's own objects, plus `upstream`'s if given."""
    kernel = kernel_tree(repo, tree, "HEAD")
    report = audit(kernel, patchsets, upstream, str(upstream.git_dir) if upstream else None)
    return Selection(kernel.release, kernel.head, tuple(patchsets), report.findings)


def branch_name(patchset_names: list[str], when: float | None = None) -> str:
    """kcheck/<date>-<patchsets>: where the picks go, so the original branch stays untouched."""
    date = time.strftime("%Y%m%d", time.gmtime(when))
    return f"kcheck/{date}-{'+'.join(patchset_names) or 'as-is'}"


def build_tag(branch: str | None, head: str, patchset_names: list[str]) -> tuple[str, str]:
    """The annotated tag on the built commit (name, message): after the branch, or HEAD's SHA."""
    suffix = (
        branch.removeprefix("kcheck/")
        if branch
        else branch_name([]).removeprefix("kcheck/") + "-" + head[:12]
    )
    return (
        f"kcheck-built/{suffix}",
        f"kcheck build-kernel: {', '.join(patchset_names) or 'no patchset needed'}",
    )


@dataclass(frozen=True)
class Pick:
    """One cherry-pick: an upstream commit; `resolved` is False for an abbreviated SHA that only
    the fetched tag resolves (the run may then find the tree has it)."""

    patchset: str
    sha: str
    subject: str
    resolved: bool = True

    def argv(self) -> list[str]:
        return ["git", "cherry-pick", "-x", self.sha]


@dataclass(frozen=True)
class PickPlan:
    """The commands that give a tree its patchsets: point the kcheck-upstream remote, fetch only
    what is missing, branch, cherry-pick with -x, and tag the result."""

    remote: tuple[str, ...] | None  # git remote add/set-url; None when it points there already
    fetch: FetchPlan
    picks: tuple[Pick, ...]
    branch: str | None
    tag: tuple[str, str]  # name, message

    def setup_commands(self) -> list[list[str]]:
        """Before the picks: remote, fetch and branch."""
        commands = [list(self.remote)] if self.remote else []
        if self.fetch:
            commands.append(self.fetch.argv())
        if self.branch:
            commands.append(["git", "checkout", "-b", self.branch])
        return commands

    def tag_command(self) -> list[str]:
        return tag_argv(*self.tag)

    def commands(self) -> list[list[str]]:
        return [*self.setup_commands(), *(pick.argv() for pick in self.picks), self.tag_command()]


def picks_of(findings: list[Finding]) -> tuple[Pick, ...]:
    return tuple(
        Pick(f.patchset, f.upstream_sha or f.commit.sha, f.commit.subject, f.upstream_sha is not None)
        for f in findings
    )


def pick_plan(
    fetch: FetchPlan, remote: list[str] | None, picks: tuple[Pick, ...], head: str, patchset_names: list[str]
) -> PickPlan:
    """The plan for these picks: a branch named after the patchsets that get commits, and the tag."""
    with_picks = list(dict.fromkeys(pick.patchset for pick in picks))
    branch = branch_name(with_picks) if with_picks else None
    return PickPlan(
        tuple(remote) if remote else None, fetch, picks, branch, build_tag(branch, head, patchset_names)
    )


def manual_recipe(patchset: Patchset) -> list[list[str]]:
    """The plan for a clone of the distro kernel that has none of the commits: the recipe a
    user can run by hand, the same commands build-kernel runs."""
    fetch = plan_fetch(list(patchset.commits), lambda sha: False)
    picks = tuple(Pick(patchset.name, c.sha, c.subject, c.is_full) for c in patchset.commits)
    remote = ["git", "remote", "add", REMOTE, patchset.upstream]
    return pick_plan(fetch, remote, picks, "HEAD", [patchset.name]).commands()
