"""Which catalog commits a tree gets: `kcheck audit`'s verdict on the patchsets its version needs.

The same selection drives the run, --dry-run and the reproducer, so all three agree.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import git

from kcheck.core.release import KernelRelease, KernelVersion
from kcheck.errors import KcheckError
from kcheck.patchsets.audit import PRESENT, AuditStatus, Finding, audit, open_tree
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
            dataclasses.replace(catalog[name], needed_from=None, needed_below=_EVERY_VERSION)
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
    tree: Path, catalog: dict[str, Patchset], forced: tuple[str, ...]
) -> tuple[KernelRelease, str, list[Patchset]]:
    """The tree's release, HEAD, and the patchsets it gets (cheap: no history is read)."""
    kernel = open_tree(tree, "HEAD")
    with kernel.repo:
        return kernel.release, kernel.head, select_patchsets(catalog, kernel.release.version, forced)


def classify(tree: Path, patchsets: list[Patchset], upstream: git.Repo | None = None) -> Selection:
    """`kcheck audit` of the tree's HEAD: with the tree's own objects, plus `upstream`'s if given."""
    kernel = open_tree(tree, "HEAD")
    with kernel.repo:
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
