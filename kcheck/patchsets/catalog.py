"""Load and validate the patchset catalog (`patchsets/*.toml`)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from kcheck.core.files import DOCUMENT_LIMIT, read_capped
from kcheck.core.release import KernelVersion, parse_version
from kcheck.errors import CatalogError

_SHA = re.compile(r"^[0-9a-f]{10,40}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Tags and URLs end up in git command lines (fetch refspecs, `git remote add`): keep them plain.
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UPSTREAM = re.compile(r"^[^\s-]\S*$")
_PATCHSET_KEYS = {"name", "summary", "fixes", "needed_from", "needed_below", "upstream", "commits"}
_REQUIRED_PATCHSET_KEYS = _PATCHSET_KEYS - {"needed_from"}
_COMMIT_KEYS = {"sha", "subject", "author", "tag", "note"}
_REQUIRED_COMMIT_KEYS = _COMMIT_KEYS - {"note"}


@dataclass(frozen=True)
class Commit:
    """One upstream commit; `sha` may be abbreviated (10+ hex) when only that is known."""

    sha: str
    subject: str
    author: str
    tag: str
    note: str | None = None

    @property
    def is_full(self) -> bool:
        return len(self.sha) == 40


@dataclass(frozen=True)
class Patchset:
    """Upstream commits that together fix some probe checks, and the kernels that need them."""

    name: str
    summary: str
    fixes: tuple[str, ...]
    needed_from: KernelVersion | None
    needed_below: KernelVersion
    upstream: str
    commits: tuple[Commit, ...]
    path: Path

    def needed_for(self, version: KernelVersion) -> bool:
        """Whether a kernel of this version lacks the fix by its version alone."""
        if self.needed_from is not None and version < self.needed_from:
            return False
        return version < self.needed_below

    @property
    def range_text(self) -> str:
        low = f">= {self.needed_from}, " if self.needed_from else ""
        return f"{low}< {self.needed_below}"


def default_catalog_dir() -> Path:
    """The shipped catalog: kcheck/catalog when installed, ../patchsets in a source tree."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "catalog"
    return installed if installed.is_dir() else package.parent / "patchsets"


def load_catalog(directory: Path | None = None) -> dict[str, Patchset]:
    """All patchsets in `directory` (default: the shipped catalog), validated; CatalogError on
    the first problem. A patchset claiming to fix a check the probe does not have is rejected,
    so the catalog and the probe cannot drift apart."""
    from kcheck.probe.checks import CHECK_IDS

    directory = directory or default_catalog_dir()
    if not directory.is_dir():
        raise CatalogError(f"{directory}: catalog directory not found; pass --catalog DIR")
    try:
        files = sorted(path for path in directory.iterdir() if path.suffix == ".toml")
    except OSError as exc:
        raise CatalogError(f"{directory}: cannot list the catalog directory ({exc.strerror})") from None
    if not files:
        raise CatalogError(f"{directory}: no *.toml patchsets in the catalog directory")
    known = set(CHECK_IDS)
    catalog: dict[str, Patchset] = {}
    listed: list[tuple[str, int, Path, int]] = []  # sha, order of listing, file, index
    for path in files:
        patchset = _load_patchset(path, known)
        listed += [(c.sha, len(listed) + i, path, i) for i, c in enumerate(patchset.commits)]
        catalog[patchset.name] = patchset
    _refuse_duplicate_commits(listed)
    return catalog


def _refuse_duplicate_commits(listed: list[tuple[str, int, Path, int]]) -> None:
    """No commit twice, also as an abbreviation of another. Sorted, every SHA that another
    starts with sits right before one of them, so neighbours suffice: O(n log n), not O(n²)."""
    ordered = sorted(listed)
    for first, second in zip(ordered, ordered[1:], strict=False):
        if second[0].startswith(first[0]):
            earlier, later = sorted((first, second), key=lambda entry: entry[1])
            raise CatalogError(
                f"{later[2]}: commits[{later[3]}].sha: duplicate commit {later[0]}, "
                f"already listed in {earlier[2].name} commits[{earlier[3]}]"
            )


def _load_patchset(path: Path, known_checks: set[str]) -> Patchset:
    try:
        data = tomllib.loads(read_capped(path, DOCUMENT_LIMIT).decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from None

    def fail(key: str, problem: str) -> CatalogError:
        return CatalogError(f"{path}: {key}: {problem}")

    _check_keys(data, _PATCHSET_KEYS, _REQUIRED_PATCHSET_KEYS, "", fail)
    name = _string(data, "name", fail)
    if not _NAME.match(name):
        raise fail("name", f"{name!r} must be lowercase ASCII letters, digits and dashes")
    if name != path.stem:
        raise fail("name", f"{name!r} must match the file name {path.stem!r}")
    fixes = data["fixes"]
    if not isinstance(fixes, list) or not fixes or not all(isinstance(f, str) for f in fixes):
        raise fail("fixes", "must be a non-empty list of probe check ids")
    for check_id in fixes:
        if check_id not in known_checks:
            raise fail("fixes", f"unknown check id {check_id!r}; known: {', '.join(sorted(known_checks))}")
    needed_below = _version(data, "needed_below", fail)
    needed_from = _version(data, "needed_from", fail) if "needed_from" in data else None
    if needed_from is not None and needed_from >= needed_below:
        raise fail("needed_from", f"{needed_from} is not below needed_below {needed_below}: empty range")
    upstream = _string(data, "upstream", fail)
    if not _UPSTREAM.match(upstream):
        raise fail("upstream", f"{upstream!r} must be a git URL or path without spaces or a leading '-'")
    commits_data = data["commits"]
    if not isinstance(commits_data, list) or not commits_data:
        raise fail("commits", "must be a non-empty array of [[commits]] tables")
    commits = []
    for index, entry in enumerate(commits_data):
        where = f"commits[{index}]"
        if not isinstance(entry, dict):
            raise fail(where, "must be a table")
        _check_keys(entry, _COMMIT_KEYS, _REQUIRED_COMMIT_KEYS, f"{where}.", fail)
        sha = _string(entry, "sha", fail, where).lower()
        if not _SHA.match(sha):
            raise fail(f"{where}.sha", f"{sha!r} is not 10 to 40 hex digits")
        tag = _string(entry, "tag", fail, where)
        if not _TAG.match(tag):
            raise fail(f"{where}.tag", f'{tag!r} is not a tag name such as "v4.2-rc2"')
        note = _string(entry, "note", fail, where) if "note" in entry else None
        commits.append(
            Commit(
                sha=sha,
                subject=_string(entry, "subject", fail, where),
                author=_string(entry, "author", fail, where),
                tag=tag,
                note=note,
            )
        )
    return Patchset(
        name=name,
        summary=_string(data, "summary", fail),
        fixes=tuple(fixes),
        needed_from=needed_from,
        needed_below=needed_below,
        upstream=upstream,
        commits=tuple(commits),
        path=path,
    )


def _check_keys(table: dict, allowed: set[str], required: set[str], prefix: str, fail) -> None:
    for key in sorted(required - table.keys()):
        raise fail(f"{prefix}{key}", "missing required field")
    for key in sorted(table.keys() - allowed):
        raise fail(f"{prefix}{key}", f"unknown field; allowed: {', '.join(sorted(allowed))}")


def _string(table: dict, key: str, fail, where: str = "") -> str:
    value = table[key]
    full_key = f"{where}.{key}" if where else key
    if not isinstance(value, str) or not value.strip():
        raise fail(full_key, "must be a non-empty string")
    return value


def _version(table: dict, key: str, fail) -> KernelVersion:
    value = table[key]
    if not isinstance(value, str):
        raise fail(key, 'must be a version string such as "4.2"')
    try:
        return parse_version(value)
    except ValueError as exc:
        raise fail(key, str(exc)) from None
