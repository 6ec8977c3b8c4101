"""`kcheck audit` against real git trees built with GitPython (see gitrepos.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import git
import jsonschema
import pytest
from conftest import run_kcheck
from gitrepos import (
    DAY,
    MAKEFILE,
    T0,
    KernelRepos,
    build_kernel_repos,
    catalog_commit,
    commit,
    init_repo,
    patchset,
    tree_state,
    write_catalog,
)

from kcheck.core.result import ExitCode
from kcheck.core.validate import first_problem, schema
from kcheck.patchsets.audit import (
    AuditStatus,
    Sighting,
    audit_exit_code,
    classify,
    same_commit,
    trailer_shas,
)

FULL = "4bacc9c9234c7c8eec44f5ed4e960d9f96fa0f01"


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> KernelRepos:
    return build_kernel_repos(tmp_path_factory.mktemp("kernel"))


def main_catalog(repos: KernelRepos, directory: Path, by_hand_subject: str | None = None) -> Path:
    """The five upstream fixes (one abbreviated) plus a patchset 3.18 does not need."""
    shas, subjects = repos.shas, repos.subjects
    commits = [
        catalog_commit(shas["ancestor"], subjects["ancestor"], tag="v3.18"),
        catalog_commit(shas["picked"], subjects["picked"]),
        catalog_commit(shas["by_hand"][:10], by_hand_subject or subjects["by_hand"]),
        catalog_commit(shas["stable"], subjects["stable"]),
        catalog_commit(shas["missing"], subjects["missing"]),
    ]
    old = patchset(
        "old-fixes",
        [catalog_commit("ab" * 20, "an old fix", tag="v2.6.39")],
        needed_below="3.0",
        fixes=["aio.ring_remap"],
    )
    return write_catalog(directory, patchset("test-fixes", commits, upstream=str(repos.upstream)), old)


def audit_json(*args: str) -> tuple[int, dict]:
    result = run_kcheck("audit", "--format", "json", *args)
    assert result.returncode != 3, result.stderr
    report = json.loads(result.stdout)
    assert first_problem(report, "audit-1") is None  # every audit report the tests see conforms
    jsonschema.validate(report, schema("audit-1"))
    return result.returncode, report


def by_sha(report: dict) -> dict[str, dict]:
    return {c["sha"]: c for p in report["patchsets"] for c in p["commits"]}


def distro_log(path: Path) -> dict[str, str]:
    """Subject -> SHA of every commit in a tree."""
    repo = git.Repo(path)
    with repo:
        return {c.summary: c.hexsha for c in repo.iter_commits("HEAD")}


def test_distro_without_upstream_objects(repos, tmp_path):
    catalog = main_catalog(repos, tmp_path / "catalog")
    before = tree_state(repos.distro)
    code, report = audit_json(str(repos.distro), "--catalog", str(catalog))

    shas, found, log = repos.shas, by_sha(report), distro_log(repos.distro)
    assert code == ExitCode.UNDECIDED
    assert report["kernel"] == "3.18.0" and report["commit"] == git.Repo(repos.distro).head.commit.hexsha
    assert found[shas["ancestor"]]["status"] == "ancestor"
    assert found[shas["ancestor"]]["match"] == shas["ancestor"]
    picked = found[shas["picked"]]
    assert picked["status"] == "backported"
    assert picked["match"] == log[repos.subjects["picked"]]
    assert f"(cherry picked from commit {shas['picked']})" in picked["evidence"]
    stable = found[shas["stable"]]
    assert stable["status"] == "backported"
    assert f"[ Upstream commit {shas['stable']} ]" in stable["evidence"]
    # Applied by hand and missing look the same without an upstream object to compare.
    assert found[shas["by_hand"][:10]]["status"] == "unknown"
    assert found[shas["by_hand"][:10]]["upstream_sha"] is None
    assert found[shas["missing"]]["status"] == "unknown"
    assert found["ab" * 20]["status"] == "not-needed"
    assert report["summary"] == {
        "ancestor": 1,
        "backported": 2,
        "equivalent": 0,
        "missing": 0,
        "unknown": 2,
        "not-needed": 1,
    }
    assert tree_state(repos.distro) == before


@pytest.mark.parametrize("upstream_form", ["path", "file-url"])
def test_upstream_decides_equivalent_and_missing(repos, tmp_path, upstream_form):
    catalog = main_catalog(repos, tmp_path / "catalog")
    upstream = str(repos.upstream) if upstream_form == "path" else repos.upstream.as_uri()
    before = tree_state(repos.distro)
    code, report = audit_json(str(repos.distro), "--catalog", str(catalog), "--upstream", upstream)

    shas, found = repos.shas, by_sha(report)
    assert code == ExitCode.NOT_READY
    by_hand = found[shas["by_hand"][:10]]
    assert by_hand["status"] == "equivalent"
    assert by_hand["upstream_sha"] == shas["by_hand"]
    assert by_hand["match"] == distro_log(repos.distro)["ovl: drop write access earlier on open"]
    assert "same patch-id" in by_hand["evidence"]
    assert found[shas["missing"]]["status"] == "missing"
    # The stable backport changed the diff: only its trailer finds it.
    assert found[shas["stable"]]["status"] == "backported"
    assert found[shas["picked"]]["status"] == "backported"
    assert report["upstream"] == upstream
    assert tree_state(repos.distro) == before


def test_tree_with_upstream_objects_needs_no_upstream(repos, tmp_path):
    """A distro tree that fetched upstream compares patch-ids from its own objects."""
    catalog = main_catalog(repos, tmp_path / "catalog")
    code, report = audit_json(str(repos.work), "--catalog", str(catalog))
    found = by_sha(report)
    assert code == ExitCode.NOT_READY
    assert found[repos.shas["by_hand"][:10]]["status"] == "equivalent"
    assert found[repos.shas["missing"]]["status"] == "missing"


def test_all_present_exits_0_and_bare_clones_work(repos, tmp_path):
    shas, subjects = repos.shas, repos.subjects
    present = [
        catalog_commit(shas[role], subjects[role]) for role in ("ancestor", "picked", "by_hand", "stable")
    ]
    catalog = write_catalog(tmp_path / "catalog", patchset("present", present))
    bare = git.Repo.clone_from(str(repos.distro), tmp_path / "distro.git", bare=True)
    bare.close()
    code, report = audit_json(
        str(tmp_path / "distro.git"), "--catalog", str(catalog), "--upstream", str(repos.upstream)
    )
    assert code == ExitCode.READY
    assert [c["status"] for c in report["patchsets"][0]["commits"]] == [
        "ancestor",
        "backported",
        "equivalent",
        "backported",
    ]


def test_rev_selects_the_history_audited(repos, tmp_path):
    catalog = main_catalog(repos, tmp_path / "catalog")
    code, report = audit_json(
        str(repos.distro),
        "--catalog",
        str(catalog),
        "--rev",
        repos.before_backports,
        "--patchset",
        "test-fixes",
        "--upstream",
        str(repos.upstream),
    )
    assert code == ExitCode.NOT_READY
    assert [p["name"] for p in report["patchsets"]] == ["test-fixes"]
    statuses = [c["status"] for c in report["patchsets"][0]["commits"]]
    assert statuses == ["ancestor", "missing", "missing", "missing", "missing"]
    assert report["commit"] == repos.before_backports


def test_text_output_is_a_plain_table(repos, tmp_path):
    catalog = main_catalog(repos, tmp_path / "catalog")
    result = run_kcheck("audit", str(repos.distro), "--catalog", str(catalog))
    assert result.returncode == ExitCode.UNDECIDED
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"kcheck audit: {repos.distro} at HEAD (")
    assert lines[0].endswith("kernel 3.18.0")
    assert lines[2].split() == ["PATCHSET", "COMMIT", "STATUS", "EVIDENCE"]
    rows = {line.split()[1]: line.split()[2] for line in lines[3:] if line.startswith(("test-", "old-"))}
    assert rows[repos.shas["picked"][:12]] == "backported"
    assert rows["ab" * 6] == "not-needed"
    assert "result: 3 present, 0 missing, 2 unknown, 1 not needed (exit 2)" in result.stdout
    assert "--upstream" in result.stdout  # the unknowns say how to decide them
    assert "\x1b[" not in result.stdout


def test_wrong_subject_for_an_abbreviated_sha_names_both(repos, tmp_path):
    catalog = main_catalog(repos, tmp_path / "catalog", by_hand_subject="ovl: some other change")
    before = tree_state(repos.distro)
    result = run_kcheck(
        "audit", str(repos.distro), "--catalog", str(catalog), "--upstream", str(repos.upstream)
    )
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kcheck: error: ")
    assert repos.subjects["by_hand"] in result.stderr and "ovl: some other change" in result.stderr
    assert repos.shas["by_hand"][:10] in result.stderr
    assert result.stdout == ""
    assert tree_state(repos.distro) == before


def bare_repo_with(tmp_path: Path, files: dict[str, str]) -> str:
    """A bare clone of a one-commit repo holding `files`."""
    repo = init_repo(tmp_path / "plain")
    commit(repo, "not a kernel", T0, files)
    git.Repo.clone_from(str(tmp_path / "plain"), tmp_path / "plain.git", bare=True).close()
    return str(tmp_path / "plain.git")


BAD_INPUTS = {
    "not-a-repo": (lambda repos, tmp: [str(tmp)], "not a git repository"),
    "missing-path": (lambda repos, tmp: [str(tmp / "nowhere")], "not a git repository"),
    "bare-no-makefile": (
        lambda repos, tmp: [bare_repo_with(tmp, {"README": "hi\n"})],
        "no top-level Makefile",
    ),
    "not-a-kernel-makefile": (
        lambda repos, tmp: [bare_repo_with(tmp, {"Makefile": "all:\n\ttrue\n"})],
        "no numeric VERSION and PATCHLEVEL",
    ),
    "unknown-rev": (lambda repos, tmp: [str(repos.distro), "--rev", "v9.9"], "unknown rev 'v9.9'"),
    "tree-rev": (
        lambda repos, tmp: [str(repos.distro), "--rev", "HEAD^{tree}"],
        "rev 'HEAD^{tree}' is a tree, not a commit",
    ),
    "empty-repo": (
        lambda repos, tmp: [str(init_repo(tmp / "empty").working_tree_dir)],
        "the repository has no commits yet",
    ),
    "option-like-rev": (
        lambda repos, tmp: [str(repos.distro), "--rev=--output=x"],
        "unknown rev '--output=x'",
    ),
    "upstream-path": (
        lambda repos, tmp: [str(repos.distro), "--upstream", str(tmp / "nowhere")],
        "no such directory",
    ),
    "upstream-not-repo": (
        lambda repos, tmp: [str(repos.distro), "--upstream", str(tmp)],
        "not a git repository",
    ),
    "upstream-url": (
        lambda repos, tmp: [str(repos.distro), "--upstream", (tmp / "nowhere").as_uri()],
        "cannot fetch tags",
    ),
    "upstream-unsafe": (
        lambda repos, tmp: [str(repos.distro), "--upstream", "ext::sh -c touch% x"],
        "unsafe git transport",
    ),
    "unknown-patchset": (lambda repos, tmp: [str(repos.distro), "--patchset", "nope"], "--patchset nope"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_3_and_changes_nothing(repos, tmp_path, case):
    make_args, expected = BAD_INPUTS[case]
    catalog = main_catalog(repos, tmp_path / "catalog")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = make_args(repos, scratch)
    before = tree_state(repos.distro)
    result = run_kcheck("audit", *args, "--catalog", str(catalog), cwd=scratch)
    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("kcheck: error: ")
    assert expected in result.stderr
    assert result.stdout == ""
    assert tree_state(repos.distro) == before
    assert not (scratch / "x").exists() and not (scratch / "--output=x").exists()


def test_bad_catalog_is_bad_input(repos, tmp_path):
    result = run_kcheck("audit", str(repos.distro), "--catalog", str(tmp_path / "none"))
    assert result.returncode == ExitCode.BAD_INPUT
    assert "catalog directory not found" in result.stderr


# -- every trailer variant, through the real `git log --grep` pass ------------------------

VARIANTS = {
    # catalog sha -> the message line that backports it; {sha} is the full upstream SHA
    "1" * 40: "(cherry picked from commit {sha})",
    "2" * 40: "[ Upstream commit {sha} ]",
    "3" * 40: "commit {sha} upstream.",
    "4" * 40: "(cherry-picked from commit {sha})",
    "5" * 40: "(backported from commit {sha} linux-next)",
    "6" * 40: "(CHERRY PICKED FROM COMMIT {SHA})",
    "7" * 40: "[ upstream commit {short} ]",
    "8" * 40: "(cherry picked from commit {short7})",
    "9a" * 5: "COMMIT {SHA} UPSTREAM.",  # the catalog knows only 10 hex digits
}
NOT_TRAILERS = {
    "b" * 40: "This fixes commit {sha}, which broke things.",
    "c" * 40: "(cherry picked from commit {short6})",  # 6 hex digits name nothing
}


@pytest.fixture(scope="module")
def variants_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("variants")
    repo = init_repo(root / "tree")
    makefile = (
        MAKEFILE.replace("= 3", "= 4").replace("18", "2").replace("EXTRAVERSION =", "EXTRAVERSION = -rc1")
    )
    commit(repo, "Linux 4.2-rc1", T0, {"Makefile": makefile})
    for day, (catalog_sha, line) in enumerate({**VARIANTS, **NOT_TRAILERS}.items(), start=1):
        sha = catalog_sha.ljust(40, "0")
        text = line.format(sha=sha, SHA=sha.upper(), short=sha[:12], short7=sha[:7], short6=sha[:6])
        commit(
            repo,
            f"backport number {day}\n\n{text}\nSigned-off-by: Dev <dev@example.org>",
            T0 + day * DAY,
            {f"file{day}.c": f"{day}\n"},
        )
    return root / "tree"


def test_every_trailer_variant_is_found_case_insensitively(variants_tree, tmp_path):
    commits = [catalog_commit(sha, f"fix {sha[:4]}") for sha in {**VARIANTS, **NOT_TRAILERS}]
    catalog = write_catalog(tmp_path / "catalog", patchset("variants", commits))
    code, report = audit_json(str(variants_tree), "--catalog", str(catalog))
    assert report["kernel"] == "4.2.0-rc1"  # below 4.2: the patchset is needed
    statuses = {c["sha"]: c["status"] for c in report["patchsets"][0]["commits"]}
    assert statuses == {**{sha: "backported" for sha in VARIANTS}, **{sha: "unknown" for sha in NOT_TRAILERS}}
    assert code == ExitCode.UNDECIDED


# -- the pure helpers --------------------------------------------------------------------


def test_trailer_shas_reads_every_variant():
    message = (
        f"subject\n\ncommit {FULL.upper()} upstream.\n\n[ Upstream commit {FULL[:12]}... ]\n"
        f"(cherry picked from commit {FULL} linux-next)\n(backported from commit {FULL[:10]})\n"
        f"see commit {FULL} for details\n"
    )
    found = trailer_shas(message)
    assert [sha for sha, _ in found] == [FULL, FULL[:12], FULL, FULL[:10]]
    assert found[0][1] == f"commit {FULL.upper()} upstream"


def test_same_commit_accepts_either_side_abbreviated():
    assert same_commit(FULL[:7], FULL)
    assert same_commit(FULL, FULL[:10])
    assert not same_commit(FULL[:7], "4bacc9d" + FULL[7:])


def test_classify_takes_the_strongest_evidence():
    seen = Sighting("c" * 40, "subject", "trailer")
    assert classify(True, seen, seen, True) == AuditStatus.ANCESTOR
    assert classify(False, seen, seen, True) == AuditStatus.BACKPORTED
    assert classify(False, None, seen, True) == AuditStatus.EQUIVALENT
    assert classify(False, None, None, True) == AuditStatus.MISSING
    assert classify(False, None, None, False) == AuditStatus.UNKNOWN


def test_exit_code_missing_outranks_unknown_and_not_needed_counts_for_nothing():
    assert audit_exit_code([AuditStatus.UNKNOWN, AuditStatus.MISSING]) == ExitCode.NOT_READY
    assert audit_exit_code([AuditStatus.UNKNOWN, AuditStatus.ANCESTOR]) == ExitCode.UNDECIDED
    assert audit_exit_code([AuditStatus.NOT_NEEDED, AuditStatus.EQUIVALENT]) == ExitCode.READY


def test_git_failing_mid_audit_is_one_line_not_a_traceback(repos, tmp_path):
    """A blobless clone whose origin is gone cannot fetch the blobs patch-ids need."""
    origin = tmp_path / "origin"
    shutil.copytree(repos.distro, origin)
    with git.Repo(origin) as served, served.config_writer() as config:
        config.set_value("uploadpack", "allowFilter", "true")  # else a local clone ignores the filter
    tree = tmp_path / "partial"
    with git.Repo.clone_from(
        origin.as_uri(), tree, multi_options=["--filter=blob:none", "--no-checkout"]
    ) as clone:
        clone.git.cat_file("blob", "HEAD:Makefile")  # fetched now: the tree still opens
    shutil.rmtree(origin)
    catalog = main_catalog(repos, tmp_path / "catalog")
    done = run_kcheck("audit", str(tree), "--catalog", str(catalog), "--upstream", str(repos.upstream))
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"kcheck: error: {tree}: git failed during the audit: ")
