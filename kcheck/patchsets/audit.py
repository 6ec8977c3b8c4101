"""`kcheck audit`: which catalog fixes a kernel git tree already carries, with evidence.

Each needed upstream commit gets the strongest status the tree supports:
ancestor (the commit itself is in the history), backported (a commit names it in a
backport trailer), equivalent (a commit has the same `git patch-id --stable`); otherwise
missing, or unknown when no upstream object was there to compare patch-ids with.

The pure classification helpers come first; the scans follow, through the git layer
(kcheck/core/repos.py) for opening trees and upstreams, SHAs, ancestry and patch-ids. The
scan is bounded:
one `git log --grep` pass for trailers, and patch-ids only over commits that touch the
fixes' files since the oldest fix was authored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import git

from kcheck.core.release import KernelRelease
from kcheck.core.render import align_columns
from kcheck.core.repos import AmbiguousSha, KernelTree, is_ancestor, patch_ids, resolve_commit
from kcheck.core.result import ExitCode
from kcheck.errors import KcheckError
from kcheck.patchsets.catalog import Commit, Patchset

SCHEMA = "kcheck.audit/1"


class AuditStatus(StrEnum):
    ANCESTOR = "ancestor"
    BACKPORTED = "backported"
    EQUIVALENT = "equivalent"
    MISSING = "missing"
    UNKNOWN = "unknown"
    NOT_NEEDED = "not-needed"


PRESENT = frozenset({AuditStatus.ANCESTOR, AuditStatus.BACKPORTED, AuditStatus.EQUIVALENT})

# ---------------------------------------------------------------------------------------
# Pure part: trailers, SHA matching, classification, exit code.

# The backport markers distro and stable trees use (git cherry-pick -x; the stable rules in
# Documentation/process/stable-kernel-rules.rst), in one pattern:
#   (cherry picked from commit SHA)   git cherry-pick -x; Ubuntu may add a repo name
#   (cherry-picked from commit SHA), (backported from commit SHA)
#   [ Upstream commit SHA ]           stable
#   commit SHA upstream.              stable, at the start of a line
# git abbreviates to at least 7 hex digits; a shorter trailer SHA names nothing reliably.
_MIN_ABBREV = 7
_SHA = rf"([0-9a-f]{{{_MIN_ABBREV},40}})"
_TRAILER = re.compile(
    rf"\((?:cherry[ -]picked|backported) from commit {_SHA}\b[^)\n]*\)"
    rf"|\[[ \t]*upstream commit {_SHA}\b[^\]\n]*\]"
    rf"|^[ \t]*commit {_SHA}[ \t]+upstream\b",
    re.IGNORECASE | re.MULTILINE,
)


def trailer_shas(message: str) -> list[tuple[str, str]]:
    """(lowercase SHA, trailer text) for each backport trailer in a commit message."""
    found = []
    for match in _TRAILER.finditer(message):
        sha = next(group for group in match.groups() if group)
        found.append((sha.lower(), match.group(0).strip()))
    return found


def same_commit(trailer_sha: str, catalog_sha: str) -> bool:
    """Whether two SHAs, either of them possibly abbreviated, name the same commit."""
    return catalog_sha.startswith(trailer_sha) or trailer_sha.startswith(catalog_sha)


def grep_pattern(shas: Iterable[str]) -> str:
    """A POSIX ERE for `git log -i -E --grep` that every trailer naming one of `shas` matches.

    Every variant contains "commit SHA", so git filters in C and Python only re-checks
    the few messages that pass.
    """
    prefixes = sorted({sha[:_MIN_ABBREV] for sha in shas})
    return "commit[[:space:]]+(" + "|".join(prefixes) + ")"


@dataclass(frozen=True)
class Sighting:
    """A commit of the audited tree that shows an upstream fix is there, and why."""

    commit: str
    subject: str
    reason: str  # the trailer text, or the shared patch-id


def classify(
    in_history: bool,
    backport: Sighting | None,
    equivalent: Sighting | None,
    comparable: bool,
) -> AuditStatus:
    """The strongest status the evidence supports; `comparable`: an upstream object was there."""
    if in_history:
        return AuditStatus.ANCESTOR
    if backport is not None:
        return AuditStatus.BACKPORTED
    if equivalent is not None:
        return AuditStatus.EQUIVALENT
    return AuditStatus.MISSING if comparable else AuditStatus.UNKNOWN


def audit_exit_code(statuses: Iterable[AuditStatus]) -> ExitCode:
    """0 all needed commits present, 1 some missing (outranks unknown), 2 some unknown."""
    seen = set(statuses)
    if AuditStatus.MISSING in seen:
        return ExitCode.NOT_READY
    if AuditStatus.UNKNOWN in seen:
        return ExitCode.UNDECIDED
    return ExitCode.READY


@dataclass(frozen=True)
class Finding:
    patchset: str
    commit: Commit
    status: AuditStatus
    upstream_sha: str | None  # the full SHA, when an object resolved it
    match: str | None  # the tree commit that carries the fix
    evidence: str


@dataclass(frozen=True)
class AuditReport:
    tree: Path
    rev: str
    head: str
    release: KernelRelease
    upstream: str | None
    patchsets: tuple[Patchset, ...]
    findings: tuple[Finding, ...]

    @property
    def exit_code(self) -> ExitCode:
        return audit_exit_code(f.status for f in self.findings)

    def to_json(self) -> str:
        counts = {status.value: 0 for status in AuditStatus}
        for finding in self.findings:
            counts[finding.status.value] += 1
        data = {
            "schema": SCHEMA,
            "tree": str(self.tree),
            "rev": self.rev,
            "commit": self.head,
            "kernel": self.release.raw,
            "upstream": self.upstream,
            "exit_code": int(self.exit_code),
            "summary": counts,
            "patchsets": [
                {
                    "name": patchset.name,
                    "needed": patchset.needed_for(self.release.version),
                    "range": patchset.range_text,
                    "commits": [
                        {
                            "sha": f.commit.sha,
                            "upstream_sha": f.upstream_sha,
                            "subject": f.commit.subject,
                            "status": f.status.value,
                            "match": f.match,
                            "evidence": f.evidence,
                        }
                        for f in self.findings
                        if f.patchset == patchset.name
                    ],
                }
                for patchset in self.patchsets
            ],
        }
        return json.dumps(data, indent=2) + "\n"

    def to_text(self) -> str:
        header = ("PATCHSET", "COMMIT", "STATUS", "EVIDENCE")
        rows = [(f.patchset, f.commit.sha[:12], f.status.value, f.evidence) for f in self.findings]
        lines = [
            f"kcheck audit: {self.tree} at {self.rev} ({self.head[:12]}), kernel {self.release.raw}",
            "",
            *align_columns([header, *rows])[0],
        ]
        statuses = [f.status for f in self.findings]
        present = sum(status in PRESENT for status in statuses)
        missing = statuses.count(AuditStatus.MISSING)
        unknown = statuses.count(AuditStatus.UNKNOWN)
        not_needed = statuses.count(AuditStatus.NOT_NEEDED)
        lines += [
            "",
            f"result: {present} present, {missing} missing, {unknown} unknown, "
            f"{not_needed} not needed (exit {int(self.exit_code)})",
        ]
        if unknown:
            lines.append(
                "unknown: no upstream object to compare patch-ids with; "
                "pass --upstream with a clone or URL of the upstream repository"
            )
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Git part. Everything here only reads the audited tree.

# Options for every log/show: the same diff on both sides so patch-ids compare, and nothing
# that repository or user config could add (signature checks, external diff, textconv).
_LOG_OPTIONS = ("--no-show-signature", "--no-color")
_DIFF_OPTIONS = (*_LOG_OPTIONS, "-p", "--no-ext-diff", "--no-textconv", "--no-renames")


@dataclass(frozen=True)
class UpstreamCommit:
    """A catalog commit resolved to an object, in the tree's repo or in the upstream one."""

    sha: str
    repo: git.Repo
    authored: int
    files: tuple[str, ...]


def audit(
    tree: KernelTree, patchsets: Sequence[Patchset], upstream: git.Repo | None, upstream_spec: str | None
) -> AuditReport:
    """Classify every commit of every selected patchset against the tree."""
    version = tree.release.version
    needed = [commit for patchset in patchsets if patchset.needed_for(version) for commit in patchset.commits]
    sources = [tree.repo] if upstream is None else [tree.repo, upstream]
    resolved = {commit.sha: _resolve_catalog_commit(commit, sources) for commit in needed}
    in_history = {
        sha
        for sha, found in resolved.items()
        if found is not None and found.repo is tree.repo and is_ancestor(tree, found.sha)
    }
    open_commits = [commit for commit in needed if commit.sha not in in_history]
    backports = _find_backports(
        tree, {c.sha: resolved[c.sha].sha if resolved[c.sha] else c.sha for c in open_commits}
    )
    to_compare = [resolved[c.sha] for c in open_commits if c.sha not in backports]
    equivalents = _find_equivalents(tree, [found for found in to_compare if found is not None])

    findings = []
    for patchset in patchsets:
        for commit in patchset.commits:
            if not patchset.needed_for(version):
                evidence = f"kernel {tree.release.raw} is outside {patchset.range_text}"
                findings.append(Finding(patchset.name, commit, AuditStatus.NOT_NEEDED, None, None, evidence))
                continue
            found = resolved[commit.sha]
            backport = backports.get(commit.sha)
            equivalent = equivalents.get(found.sha) if found else None
            status = classify(commit.sha in in_history, backport, equivalent, found is not None)
            sighting = backport if status == AuditStatus.BACKPORTED else equivalent
            findings.append(
                Finding(
                    patchset=patchset.name,
                    commit=commit,
                    status=status,
                    upstream_sha=found.sha if found else None,
                    match=found.sha if status == AuditStatus.ANCESTOR else sighting and sighting.commit,
                    evidence=describe(status, tree.rev, found, sighting),
                )
            )
    return AuditReport(
        tree.path, tree.rev, tree.head, tree.release, upstream_spec, tuple(patchsets), tuple(findings)
    )


def describe(status: AuditStatus, rev: str, found: UpstreamCommit | None, sighting: Sighting | None) -> str:
    """The evidence for a status, in one line."""
    if sighting is not None:
        return f"{sighting.commit[:12]} {sighting.subject!r}: {sighting.reason}"
    if status == AuditStatus.ANCESTOR and found is not None:
        return f"{found.sha[:12]} is in the history of {rev}"
    if status == AuditStatus.MISSING and found is not None:
        since = time.strftime("%Y-%m-%d", time.gmtime(found.authored))
        return (
            f"no backport trailer names it; no commit touching its {len(found.files)} file(s) "
            f"since {since} has its patch-id"
        )
    return "no backport trailer names it; no upstream object to compare patch-ids with"


def _resolve_catalog_commit(commit: Commit, sources: Sequence[git.Repo]) -> UpstreamCommit | None:
    """Find the catalog commit's object in the first source that has it; check its subject."""
    for repo in sources:
        try:
            sha = resolve_commit(repo, commit.sha)
        except AmbiguousSha:
            raise KcheckError(
                f"catalog commit {commit.sha} ({commit.subject!r}) is ambiguous in {repo.git_dir}; "
                "give more hex digits in the catalog"
            ) from None
        if sha is None:
            continue
        header, _, names = repo.git.show(
            *_LOG_OPTIONS, "--no-renames", "--format=%at%x1f%s", "--name-only", sha
        ).partition("\n")
        authored, _, subject = header.partition("\x1f")
        if _normalized(subject) != _normalized(commit.subject):
            raise KcheckError(
                f"catalog commit {commit.sha} resolves to {sha[:12]} {_readable(subject)!r}, "
                f"but the catalog says {commit.subject!r}; fix the sha or subject in the catalog"
            )
        files = tuple(name for name in names.splitlines() if name)
        return UpstreamCommit(sha=sha, repo=repo, authored=int(authored), files=files)
    return None


def _normalized(subject: str) -> str:
    return " ".join(subject.split())


def _readable(text: str) -> str:
    """Commit text with undecodable bytes replaced, so printing it cannot fail."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _find_backports(tree: KernelTree, wanted: dict[str, str]) -> dict[str, Sighting]:
    """Catalog SHA -> the newest tree commit whose trailer names it; one `git log --grep` pass.

    `wanted` maps each catalog SHA to the best SHA known for it (full when resolved).
    """
    if not wanted:
        return {}
    output = tree.repo.git.log(
        tree.head,
        *_LOG_OPTIONS,
        "--regexp-ignore-case",
        "--extended-regexp",
        f"--grep={grep_pattern(wanted.values())}",
        "--format=%x1e%H%x1f%s%x1f%B",
    )
    found: dict[str, Sighting] = {}
    for record in output.split("\x1e")[1:]:
        commit, subject, message = record.split("\x1f", 2)
        for trailer_sha, trailer in trailer_shas(message):
            for catalog_sha, known_sha in wanted.items():
                if catalog_sha not in found and same_commit(trailer_sha, known_sha):
                    found[catalog_sha] = Sighting(commit, _readable(subject), _readable(trailer))
    return found


def _find_equivalents(tree: KernelTree, commits: Sequence[UpstreamCommit]) -> dict[str, Sighting]:
    """Upstream SHA -> a tree commit with the same `git patch-id --stable`.

    Only commits that touch the fixes' files since the oldest fix was authored are diffed.
    """
    if not commits:
        return {}
    upstream_ids: dict[str, list[str]] = {}  # patch-id -> upstream SHAs
    for repo in {id(c.repo): c.repo for c in commits}.values():
        shas = [c.sha for c in commits if c.repo is repo]
        diffs = repo.git.show(*_DIFF_OPTIONS, "--format=commit %H", *shas, as_process=True)
        for patch_id, sha in patch_ids(repo, diffs):
            upstream_ids.setdefault(patch_id, []).append(sha)
    files = sorted({name for c in commits for name in c.files})
    if not files:
        return {}
    since = min(c.authored for c in commits)
    diffs = tree.repo.git(literal_pathspecs=True).log(
        tree.head,
        "--no-merges",
        "--full-history",
        "--full-diff",
        f"--since=@{since}",
        *_DIFF_OPTIONS,
        "--format=commit %H",
        "--",
        *files,
        as_process=True,
    )
    matches: dict[str, tuple[str, str]] = {}  # upstream SHA -> (newest tree commit, patch-id)
    for patch_id, commit in patch_ids(tree.repo, diffs):
        for upstream_sha in upstream_ids.get(patch_id, ()):
            matches.setdefault(upstream_sha, (commit, patch_id))
    if not matches:
        return {}
    subjects = dict(
        line.split("\x1f", 1)
        for line in tree.repo.git.show(
            *_LOG_OPTIONS, "--no-walk", "-s", "--format=%H%x1f%s", *{commit for commit, _ in matches.values()}
        ).splitlines()
    )
    return {
        upstream_sha: Sighting(commit, _readable(subjects[commit]), f"same patch-id {patch_id[:12]}")
        for upstream_sha, (commit, patch_id) in matches.items()
    }
