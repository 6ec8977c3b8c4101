"""The patchset catalog: the shipped files, every validation error, list/show/validate."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import NOBODY, kcheck_argv, requires_root, run_kcheck
from gitrepos import catalog_commit, patchset, patchset_toml, write_catalog

from kcheck.builder.plan import manual_recipe
from kcheck.core.release import KernelVersion
from kcheck.core.result import ExitCode
from kcheck.errors import CatalogError
from kcheck.patchsets.catalog import load_catalog

TORVALDS = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
# The upstream commits of patchsets/overlayfs-mnt-id.toml, in apply order.
OVERLAY = [
    (
        "155e35d4daa804582f75acaa2c74ec797a89c615",
        "VFS: Introduce inode-getting helpers for layered/unioned fs environments",
    ),
    ("df1a085af1f652a02238168c4f2b730c8c90dd4a", "VFS: Add a fallthrough flag for marking virtual dentries"),
    ("f25801ee46", "overlay: Call ovl_drop_write() earlier in ovl_dentry_open()"),
    (
        "4bacc9c9234c7c8eec44f5ed4e960d9f96fa0f01",
        "overlayfs: Make f_path always point to the overlay and f_inode to the underlay",
    ),
    ("9391dd00d1", "fix a braino in ovl_d_select_inode()"),
]
AIO = [
    ("bd9b51e79cb0b8bc00a7e0076a4a8963ca4a797c", "make default ->i_fop have ->open() fail with ENXIO"),
    ("e4a0d3e720e7e508749c1439b5ba3aff56c92976", "aio: Make it possible to remap aio ring"),
]
SOURCE_CATALOG = Path(__file__).resolve().parent.parent / "patchsets"


@pytest.mark.parametrize("directory", [None, SOURCE_CATALOG], ids=["installed", "source"])
def test_shipped_catalog_loads_with_the_reference_commits(directory):
    catalog = load_catalog(directory)
    assert sorted(catalog) == ["aio-ring-remap", "overlayfs-mnt-id"]
    overlay, aio = catalog["overlayfs-mnt-id"], catalog["aio-ring-remap"]
    assert [(c.sha, c.subject) for c in overlay.commits] == OVERLAY
    assert [(c.sha, c.subject) for c in aio.commits] == AIO
    assert overlay.fixes == ("overlayfs.mnt_id", "overlayfs.fd_path")
    assert aio.fixes == ("aio.ring_remap", "aio.reopen_enxio")
    assert overlay.needed_below == KernelVersion(4, 2) and aio.needed_below == KernelVersion(3, 19)
    assert overlay.needed_for(KernelVersion(3, 19)) and not overlay.needed_for(KernelVersion(4, 2))
    assert aio.needed_for(KernelVersion(3, 18)) and not aio.needed_for(KernelVersion(3, 19))
    assert {c.tag for c in overlay.commits} == {"v4.0-rc1", "v4.2-rc2"}
    assert {p.upstream for p in catalog.values()} == {TORVALDS}


def test_the_command_reads_the_same_files_as_the_source_tree():
    """The installed package carries the catalog as data; it must not drift from patchsets/."""
    listed = json.loads(run_kcheck("patchsets", "list", "--format", "json").stdout)["patchsets"]
    for entry in listed:
        assert Path(entry["file"]).read_text() == (SOURCE_CATALOG / f"{entry['name']}.toml").read_text()


def test_validate_the_shipped_catalog():
    result = run_kcheck("patchsets", "validate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(": 2 patchsets, 7 commits: valid\n")
    result = run_kcheck("patchsets", "validate", str(SOURCE_CATALOG), "--format", "json")
    assert json.loads(result.stdout)["patchsets"] == ["aio-ring-remap", "overlayfs-mnt-id"]


def test_list_text_and_json():
    text = run_kcheck("patchsets", "list")
    assert text.returncode == 0
    rows = [line.split() for line in text.stdout.splitlines()]
    assert rows[0][:4] == ["NAME", "NEEDED", "COMMITS", "FIXES"]
    assert [row[0] for row in rows[1:]] == ["aio-ring-remap", "overlayfs-mnt-id"]
    data = json.loads(run_kcheck("patchsets", "list", "--format", "json").stdout)
    overlay = data["patchsets"][1]
    assert overlay["needed_from"] == "3.18.0" and overlay["needed_below"] == "4.2.0"
    assert [c["sha"] for c in overlay["commits"]] == [sha for sha, _ in OVERLAY]


def test_show_includes_the_git_commands_of_the_manual_recipe():
    result = run_kcheck("patchsets", "show", "overlayfs-mnt-id")
    assert result.returncode == 0
    recipe = [shlex.split(line) for line in result.stdout.split("manual recipe")[1].splitlines()[1:]]
    # build-kernel's own plan for a tree that has none of the commits: never a full remote update
    full = [sha for sha, _ in OVERLAY if len(sha) == 40]
    assert recipe[:2] == [
        ["git", "remote", "add", "kcheck-upstream", TORVALDS],
        ["git", "fetch", "--no-tags", "kcheck-upstream"]
        + [f"{sha}:refs/kcheck/upstream/{sha}" for sha in full]
        + ["refs/tags/v4.2-rc2:refs/tags/v4.2-rc2"],  # the abbreviated SHAs are found under their tag
    ]
    assert recipe[2][:3] == ["git", "checkout", "-b"] and recipe[2][3].endswith("-overlayfs-mnt-id")
    assert recipe[3:-1] == [["git", "cherry-pick", "-x", sha] for sha, _ in OVERLAY]
    assert recipe[-1][:3] == ["git", "tag", "--annotate"]
    for sha, subject in OVERLAY:
        assert sha in result.stdout and subject in result.stdout
    data = json.loads(run_kcheck("patchsets", "show", "aio-ring-remap", "--format", "json").stdout)
    assert data["patchset"]["recipe"][-2] == ["git", "cherry-pick", "-x", AIO[-1][0]]
    assert data["patchset"]["recipe"] == manual_recipe(load_catalog()["aio-ring-remap"])


def test_show_unknown_patchset_is_bad_input():
    result = run_kcheck("patchsets", "show", "nope")
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stderr == (
        "kcheck: error: unknown patchset 'nope'; known: aio-ring-remap, overlayfs-mnt-id "
        "(see kcheck patchsets list)\n"
    )


def test_catalog_option_reads_another_directory(tmp_path):
    catalog = write_catalog(tmp_path, patchset("site-fix", [catalog_commit("a" * 12, "site: fix")]))
    result = run_kcheck("patchsets", "list", "--catalog", str(catalog), "--format", "json")
    assert [p["name"] for p in json.loads(result.stdout)["patchsets"]] == ["site-fix"]
    shown = run_kcheck("patchsets", "show", "site-fix", "--catalog", str(catalog))
    assert "git cherry-pick -x aaaaaaaaaaaa" in shown.stdout


def good() -> dict:
    return patchset(
        "good",
        [catalog_commit("a" * 40, "first fix", note="why"), catalog_commit("b" * 10, "second fix")],
        needed_from="3.18",
    )


def without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


def with_commit(data: dict, index: int, **fields) -> dict:
    commits = [dict(c) for c in data["commits"]]
    commits[index] = {k: v for k, v in {**commits[index], **fields}.items() if v is not None}
    return {**data, "commits": commits}


# case -> (file contents by name, the key the error names, words of the problem)
INVALID = {
    "malformed-toml": ({"good.toml": 'name = "good\n'}, "good.toml", "malformed TOML"),
    "missing-field": (
        {"good.toml": patchset_toml(without(good(), "summary"))},
        "summary",
        "missing required field",
    ),
    "missing-commit-field": (
        {"good.toml": patchset_toml(with_commit(good(), 1, author=None))},
        "commits[1].author",
        "missing required field",
    ),
    "unknown-field": (
        {"good.toml": patchset_toml({**good(), "neded_below": "4.2"})},
        "neded_below",
        "unknown field",
    ),
    "sha-too-short": (
        {"good.toml": patchset_toml(with_commit(good(), 0, sha="a" * 9))},
        "commits[0].sha",
        "10 to 40 hex",
    ),
    "sha-too-long": (
        {"good.toml": patchset_toml(with_commit(good(), 0, sha="a" * 41))},
        "commits[0].sha",
        "10 to 40 hex",
    ),
    "sha-not-hex": (
        {"good.toml": patchset_toml(with_commit(good(), 1, sha="g" * 12))},
        "commits[1].sha",
        "10 to 40 hex",
    ),
    "duplicate-in-patchset": (
        {"good.toml": patchset_toml(with_commit(good(), 1, sha="a" * 12))},
        "commits[1].sha",
        "duplicate commit",
    ),
    "duplicate-across-files": (
        {
            "good.toml": patchset_toml(good()),
            "other.toml": patchset_toml(patchset("other", [catalog_commit("A" * 40, "same fix")])),
        },
        "commits[0].sha",
        "duplicate commit",
    ),
    "unknown-check": (
        {"good.toml": patchset_toml({**good(), "fixes": ["overlayfs.mnt_idd"]})},
        "fixes",
        "unknown check id 'overlayfs.mnt_idd'",
    ),
    "bad-version": (
        {"good.toml": patchset_toml({**good(), "needed_below": "4.x"})},
        "needed_below",
        "not a kernel version",
    ),
    "empty-range": (
        {"good.toml": patchset_toml({**good(), "needed_from": "4.2"})},
        "needed_from",
        "empty range",
    ),
    "version-not-string": (
        {"good.toml": patchset_toml({**good(), "needed_below": 4.2})},
        "needed_below",
        "version string",
    ),
    "name-not-file": ({"good.toml": patchset_toml({**good(), "name": "bad"})}, "name", "match the file name"),
    "bad-tag": (
        {"good.toml": patchset_toml(with_commit(good(), 0, tag="v4.2 rc2"))},
        "commits[0].tag",
        "tag name",
    ),
    "option-like-upstream": (
        {"good.toml": patchset_toml({**good(), "upstream": "--upload-pack=x"})},
        "upstream",
        "leading '-'",
    ),
    "no-commits": ({"good.toml": patchset_toml({**good(), "commits": []})}, "commits", "non-empty"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_every_validation_error_names_file_and_key(tmp_path, case):
    files, key, problem = INVALID[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert str(tmp_path) in str(caught.value) and key in str(caught.value) and problem in str(caught.value)

    for command in (
        ["patchsets", "validate", str(tmp_path)],
        ["patchsets", "list", "--catalog", str(tmp_path)],
    ):
        result = run_kcheck(*command)
        assert result.returncode == ExitCode.BAD_INPUT
        assert result.stdout == ""
        assert result.stderr == f"kcheck: error: {caught.value}\n"
        assert "\n" not in str(caught.value)


def test_the_valid_base_of_those_cases_is_valid(tmp_path):
    """So each case above fails for its own reason, not for the base file."""
    write_catalog(tmp_path, good())
    assert run_kcheck("patchsets", "validate", str(tmp_path)).returncode == 0


@pytest.mark.parametrize(
    "make", [lambda tmp: tmp / "none", lambda tmp: tmp], ids=["missing-dir", "empty-dir"]
)
def test_a_catalog_directory_without_patchsets_is_bad_input(tmp_path, make):
    result = run_kcheck("patchsets", "validate", str(make(tmp_path)))
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stderr.startswith(f"kcheck: error: {make(tmp_path)}: ")
    assert "--catalog" in result.stderr or "no *.toml" in result.stderr


def test_validate_refuses_two_different_directories(tmp_path):
    result = run_kcheck("patchsets", "validate", str(tmp_path), "--catalog", str(SOURCE_CATALOG))
    assert result.returncode == ExitCode.BAD_INPUT
    assert "pass one" in result.stderr


def test_a_non_ascii_name_is_said_to_be_non_ascii_not_a_mismatch(tmp_path):
    """aïo.toml named "aïo" matches its file; what is wrong is the character."""
    write_catalog(tmp_path, patchset("aïo", [catalog_commit("a" * 12, "aio: fix")]))
    with pytest.raises(CatalogError, match="'aïo' must be lowercase ASCII letters, digits and dashes"):
        load_catalog(tmp_path)


@requires_root
def test_an_unlistable_catalog_dir_says_so(open_dir):
    """Run as nobody: root can list any directory."""
    catalog = open_dir / "catalog"
    catalog.mkdir()
    catalog.chmod(0o711)  # nobody may enter it, not list it
    done = subprocess.run(
        [*NOBODY, *kcheck_argv(), "patchsets", "list", "--catalog", str(catalog)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert f"{catalog}: cannot list the catalog directory (Permission denied)" in done.stderr


# --- the catalog cache: a validated catalog kept as JSON, used only while its files are unchanged


def _cached_catalog(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A one-patchset catalog, loaded once, and the cache file that load wrote."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    catalog = write_catalog(tmp_path / "catalog", good())
    load_catalog(catalog)
    (cache,) = (tmp_path / "cache" / "kcheck").glob("catalog-*.json")
    return catalog, cache


def _edit_cache(cache: Path, summary: str) -> None:
    data = json.loads(cache.read_text())
    data["patchsets"][0]["summary"] = summary
    cache.write_text(json.dumps(data))


def test_a_second_load_reads_the_cache_and_equals_the_parsed_catalog(tmp_path, monkeypatch):
    catalog, cache = _cached_catalog(tmp_path, monkeypatch)
    assert cache.stat().st_mode & 0o777 == 0o600 and cache.parent.stat().st_mode & 0o777 == 0o700
    parsed = load_catalog(catalog)  # from the cache
    _edit_cache(cache, "from the cache")
    assert load_catalog(catalog)["good"].summary == "from the cache"  # so the cache is what is read
    cache.unlink()
    assert load_catalog(catalog) == parsed  # the same catalog as parsing the TOML gives
    assert parsed["good"].needed_from == KernelVersion(3, 18)
    assert parsed["good"].commits[0].note == "why" and parsed["good"].path == str(catalog / "good.toml")


def test_a_changed_file_is_parsed_again(tmp_path, monkeypatch):
    catalog, cache = _cached_catalog(tmp_path, monkeypatch)
    _edit_cache(cache, "stale")
    write_catalog(catalog, {**good(), "summary": "edited"})
    assert load_catalog(catalog)["good"].summary == "edited"
    assert load_catalog(catalog)["good"].summary == "edited"  # and the cache was rewritten
    assert "edited" in cache.read_text()


def test_a_broken_file_is_refused_even_when_a_cache_exists(tmp_path, monkeypatch):
    catalog, _ = _cached_catalog(tmp_path, monkeypatch)
    (catalog / "good.toml").write_text("name = ")
    for _ in range(2):  # errors are never cached
        with pytest.raises(CatalogError, match="malformed TOML"):
            load_catalog(catalog)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda cache: cache.chmod(0o622),  # others may write it
        lambda cache: os.chown(cache, 65534, 65534),  # another user's
        lambda cache: cache.write_text("{not json"),
        lambda cache: cache.write_text('{"key": 1}'),
        lambda cache: cache.write_text(json.dumps({**json.loads(cache.read_text()), "patchsets": [{}]})),
    ],
    ids=["writable-by-others", "owned-by-another-user", "not-json", "other-key", "malformed"],
)
def test_a_cache_file_that_cannot_be_trusted_is_not_used(tmp_path, monkeypatch, spoil):
    catalog, cache = _cached_catalog(tmp_path, monkeypatch)
    _edit_cache(cache, "from the cache")
    spoil(cache)
    assert load_catalog(catalog)["good"].summary == "test patchset good"


def test_a_symlinked_cache_file_is_not_followed(tmp_path, monkeypatch):
    catalog, cache = _cached_catalog(tmp_path, monkeypatch)
    _edit_cache(cache, "from the cache")
    cache.rename(tmp_path / "elsewhere.json")
    cache.symlink_to(tmp_path / "elsewhere.json")
    assert load_catalog(catalog)["good"].summary == "test patchset good"


def test_an_unwritable_cache_only_means_parsing(tmp_path, monkeypatch):
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-dir"))
    catalog = write_catalog(tmp_path / "catalog", good())
    assert load_catalog(catalog)["good"].summary == "test patchset good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog", "not-a-dir"]  # no temp file left


def test_a_file_rewritten_with_its_size_and_mtime_is_parsed_again(tmp_path, monkeypatch):
    """As `cp -p` onto it does: same inode, size and mtime; only the ctime tells."""
    catalog, cache = _cached_catalog(tmp_path, monkeypatch)
    path = catalog / "good.toml"
    before = path.stat()
    text = path.read_text()
    path.write_text(text.replace("test patchset good", "test patchset bad!"))  # the same length
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_size) == (before.st_ino, before.st_size)
    assert load_catalog(catalog)["good"].summary == "test patchset bad!"


def test_paths_are_those_of_the_directory_as_given_now(tmp_path, monkeypatch):
    catalog, _ = _cached_catalog(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert load_catalog(Path("catalog"))["good"].path == "catalog/good.toml"
    monkeypatch.chdir(catalog)
    assert load_catalog(Path("."))["good"].path == "./good.toml"


@pytest.mark.parametrize("where", ["another user's", "relative"])
def test_no_cache_is_made_where_another_user_could_reach_it(tmp_path, monkeypatch, where):
    """A root probe run with a user's HOME or XDG_CACHE_HOME (sudo -E) makes nothing there,
    and a relative XDG_CACHE_HOME is not the working directory's business."""
    catalog = write_catalog(tmp_path / "catalog", good())
    if where == "relative":
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    else:
        (tmp_path / "cache").mkdir()
        os.chown(tmp_path / "cache", 65534, 65534)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for _ in range(2):
        assert load_catalog(catalog)["good"].summary == "test patchset good"
    assert not (tmp_path / "cache" / "kcheck").exists()


def test_validate_parses_the_files_whatever_the_cache_holds(tmp_path, monkeypatch):
    catalog, cache = _cached_catalog(tmp_path, monkeypatch)
    data = json.loads(cache.read_text())
    data["patchsets"][0]["name"] = "ghost"
    cache.write_text(json.dumps(data))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    listed = run_kcheck("patchsets", "list", "--catalog", str(catalog), "--format", "json", env=env)
    assert [p["name"] for p in json.loads(listed.stdout)["patchsets"]] == ["ghost"]  # read from the cache
    validated = run_kcheck("patchsets", "validate", str(catalog), "--format", "json", env=env)
    assert json.loads(validated.stdout)["patchsets"] == ["good"]
