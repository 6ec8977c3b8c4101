"""Load and validate the patchset catalog (`patchsets/*.toml`).

Every probe loads it, and parsing TOML (tomllib and its imports) costs the probe's start-up
more than the rest of the catalog work. So a validated catalog is kept as JSON in the user's
cache, keyed by each file's name, size, mtime and inode (as Python keys its bytecode cache),
kcheck's version and the probe's check ids; any change is parsed and validated again."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections import namedtuple

from kcheck import __version__
from kcheck.core.files import DOCUMENT_LIMIT, read_capped, user_cache_dir
from kcheck.core.release import KernelVersion, parse_version
from kcheck.errors import CatalogError

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from kcheck.core.files import FilePath

# Patterns compile on first use (re's cache): a probe whose catalog comes from the cache needs none.
_SHA = r"^[0-9a-f]{10,40}$"
_NAME = r"^[a-z0-9][a-z0-9-]*$"
# Tags and URLs end up in git command lines (fetch refspecs, `git remote add`): keep them plain.
_TAG = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_UPSTREAM = r"^[^\s-]\S*$"
CACHE_FORMAT = 1
_PATCHSET_KEYS = {"name", "summary", "fixes", "needed_from", "needed_below", "upstream", "commits"}
_REQUIRED_PATCHSET_KEYS = _PATCHSET_KEYS - {"needed_from"}
_COMMIT_KEYS = {"sha", "subject", "author", "tag", "note"}
_REQUIRED_COMMIT_KEYS = _COMMIT_KEYS - {"note"}


class Commit(namedtuple("Commit", ("sha", "subject", "author", "tag", "note"), defaults=(None,))):
    """One upstream commit (text fields; note may be None); `sha` may be abbreviated (10+ hex)
    when only that is known."""

    __slots__ = ()

    @property
    def is_full(self) -> bool:
        return len(self.sha) == 40


class Patchset(
    namedtuple(
        "Patchset", ("name", "summary", "fixes", "needed_from", "needed_below", "upstream", "commits", "path")
    )
):
    """Upstream commits (a tuple of Commit) that together fix some probe checks (`fixes`, a
    tuple of check ids), and the kernels that need them: KernelVersions from `needed_from`
    (or None: every older one) to below `needed_below`. `path` is the file it came from (a str:
    pathlib's import costs the probe's start-up)."""

    __slots__ = ()

    def needed_for(self, version: KernelVersion) -> bool:
        """Whether a kernel of this version lacks the fix by its version alone."""
        if self.needed_from is not None and version < self.needed_from:
            return False
        return version < self.needed_below

    @property
    def range_text(self) -> str:
        low = f">= {self.needed_from}, " if self.needed_from else ""
        return f"{low}< {self.needed_below}"


def default_catalog_dir() -> str:
    """The shipped catalog: kcheck/catalog when installed, ../patchsets in a source tree."""
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    installed = os.path.join(package, "catalog")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "patchsets")


def load_catalog(directory: FilePath | None = None, use_cache: bool = True) -> dict[str, Patchset]:
    """All patchsets in `directory` (default: the shipped catalog), validated; CatalogError on
    the first problem. A patchset claiming to fix a check the probe does not have is rejected,
    so the catalog and the probe cannot drift apart. Without `use_cache`, the TOML is parsed
    and validated whatever the cache holds (`kcheck patchsets validate`)."""
    from kcheck.probe.checks import CHECK_IDS

    directory = os.fspath(directory or default_catalog_dir())
    if not os.path.isdir(directory):
        raise CatalogError(f"{directory}: catalog directory not found; pass --catalog DIR")
    try:
        with os.scandir(directory) as entries:
            files = sorted(
                entry.path for entry in entries if entry.name.endswith(".toml") and entry.name != ".toml"
            )
    except OSError as exc:
        raise CatalogError(f"{directory}: cannot list the catalog directory ({exc.strerror})") from None
    if not files:
        raise CatalogError(f"{directory}: no *.toml patchsets in the catalog directory")
    cache = _CatalogCache(directory, files, CHECK_IDS)
    if use_cache and (catalog := cache.read()) is not None:
        return catalog
    known = set(CHECK_IDS)
    catalog = {}
    listed: list[tuple[str, int, str, int]] = []  # sha, order of listing, file, index
    for path in files:
        patchset = _load_patchset(path, known)
        listed += [(c.sha, len(listed) + i, path, i) for i, c in enumerate(patchset.commits)]
        catalog[patchset.name] = patchset
    _refuse_duplicate_commits(listed)
    cache.write(catalog)
    return catalog


class _CatalogCache:
    """A validated catalog as JSON in the user's cache, good while its files are unchanged.

    Best effort: a cache that cannot be read or written only means parsing the TOML. Only a
    cache directory of this user's, that no one else may write, is used, and only such a file
    in it: a root probe run with a user's HOME (sudo -E) neither reads what that user wrote
    nor makes root's files in that user's home."""

    def __init__(self, directory: str, files: list[str], check_ids: tuple[str, ...]) -> None:
        where = os.path.realpath(directory)
        self.directory = directory
        self.cache_dir = user_cache_dir()
        self.file = os.path.join(self.cache_dir, f"catalog-{_crc(where):08x}.json")
        self.key: object = None
        try:
            stats = [(os.path.basename(path), os.stat(path)) for path in files]
        except OSError:
            return  # read as TOML, which reports the problem
        self.key = [
            CACHE_FORMAT,
            __version__,
            where,
            list(check_ids),
            # ctime too: `cp -p` onto a file keeps its inode, size and mtime, not its ctime
            [[name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino] for name, st in stats],
        ]

    def read(self) -> dict[str, Patchset] | None:
        if self.key is None or not _own_private_dir(self.cache_dir):
            return None
        try:
            with open(self.file, "rb", opener=_no_follow) as stream:
                st = os.fstat(stream.fileno())
                if not _private(st) or st.st_size > DOCUMENT_LIMIT:
                    return None
                data = json.loads(stream.read())
            if data["key"] != self.key:
                return None
            return {entry["name"]: _patchset_from_json(entry, self.directory) for entry in data["patchsets"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, catalog: dict[str, Patchset]) -> None:
        if self.key is None or not _may_make(self.cache_dir):
            return
        document = {"key": self.key, "patchsets": [_patchset_to_json(p) for p in catalog.values()]}
        temp = f"{self.file}.{os.getpid()}.tmp"
        try:
            os.makedirs(self.cache_dir, mode=0o700, exist_ok=True)
            if not _own_private_dir(self.cache_dir):
                return
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as stream:
                json.dump(document, stream)
            os.replace(temp, self.file)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _own_private_dir(path: str) -> bool:
    """An absolute path to a directory (not a link to one) of this user's, that no one else
    may write."""
    if not os.path.isabs(path):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and _private(st)


def _private(st: os.stat_result) -> bool:
    """This user's, and no one else may write it."""
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _may_make(directory: str) -> bool:
    """Whether kcheck may make `directory` and its missing parents: an absolute path whose
    nearest existing ancestor (or itself) is a private directory of this user's."""
    while os.path.isabs(directory) and not os.path.lexists(directory):
        directory = os.path.dirname(directory)
    return _own_private_dir(directory)


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _crc(text: str) -> int:
    import zlib

    return zlib.crc32(os.fsencode(text))


def _patchset_to_json(patchset: Patchset) -> dict[str, object]:
    return {
        **patchset._asdict(),
        "commits": [list(commit) for commit in patchset.commits],
        "path": os.path.basename(patchset.path),  # in the directory as it is given then
    }


def _patchset_from_json(entry: dict, directory: str) -> Patchset:
    return Patchset(
        name=entry["name"],
        summary=entry["summary"],
        fixes=tuple(entry["fixes"]),
        needed_from=KernelVersion(*entry["needed_from"]) if entry["needed_from"] else None,
        needed_below=KernelVersion(*entry["needed_below"]),
        upstream=entry["upstream"],
        commits=tuple(Commit(*commit) for commit in entry["commits"]),
        path=os.path.join(directory, entry["path"]),
    )


def _refuse_duplicate_commits(listed: list[tuple[str, int, str, int]]) -> None:
    """No commit twice, also as an abbreviation of another. Sorted, every SHA that another
    starts with sits right before one of them, so neighbours suffice: O(n log n), not O(n²)."""
    ordered = sorted(listed)
    for first, second in zip(ordered, ordered[1:], strict=False):
        if second[0].startswith(first[0]):
            earlier, later = sorted((first, second), key=lambda entry: entry[1])
            raise CatalogError(
                f"{later[2]}: commits[{later[3]}].sha: duplicate commit {later[0]}, "
                f"already listed in {os.path.basename(earlier[2])} commits[{earlier[3]}]"
            )


def _load_patchset(path: str, known_checks: set[str]) -> Patchset:
    import tomllib

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
    if not re.match(_NAME, name):
        raise fail("name", f"{name!r} must be lowercase ASCII letters, digits and dashes")
    stem = os.path.basename(path).removesuffix(".toml")
    if name != stem:
        raise fail("name", f"{name!r} must match the file name {stem!r}")
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
    if not re.match(_UPSTREAM, upstream):
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
        if not re.match(_SHA, sha):
            raise fail(f"{where}.sha", f"{sha!r} is not 10 to 40 hex digits")
        tag = _string(entry, "tag", fail, where)
        if not re.match(_TAG, tag):
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
