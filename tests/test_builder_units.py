"""Unit tests of the builder's pieces, below the end-to-end runs: the state file (the ledger
that makes reruns skip finished stages), the git operations on real repositories, the plan,
and the declared-stage loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import git
import pytest
from gitrepos import commit, init_repo

from kcheck.builder import gitops, plan
from kcheck.builder.progress import BuildLog
from kcheck.builder.state import STATE_FILE, BuildState, Stage, StageStatus
from kcheck.builder.steps import FreshLedger, StageStep, run_stage
from kcheck.core import repos
from kcheck.errors import KcheckError, StageFailed
from kcheck.patchsets.catalog import Commit

# --- the state file ---------------------------------------------------------------------------


def new_state(tmp_path: Path) -> BuildState:
    return BuildState(tmp_path / STATE_FILE, {"tree": "/src/linux"})


def test_a_finished_stage_is_done_only_with_the_same_inputs_and_survives_a_reload(tmp_path):
    state = new_state(tmp_path)
    state.start(Stage.CONFIG, {"head": "a"})
    assert state.done_with(Stage.CONFIG, {"head": "a"}) is None  # running is not done
    state.finish(Stage.CONFIG, release="6.1.0-kcheck")
    again = BuildState.load(tmp_path)
    assert again is not None
    record = again.done_with(Stage.CONFIG, {"head": "a"})
    assert record is not None and record.outputs == {"release": "6.1.0-kcheck"}
    assert record.duration is not None and record.duration >= 0
    assert again.done_with(Stage.CONFIG, {"head": "b"}) is None


def test_starting_a_stage_forgets_the_later_ones_built_on_its_old_result(tmp_path):
    state = new_state(tmp_path)
    for stage in (Stage.CONFIG, Stage.BUILD, Stage.INSTALL):
        state.start(stage, {})
        state.finish(stage)
    state.start(Stage.CONFIG, {"head": "new"})
    assert set(state.stages) == {Stage.CONFIG}
    assert state.running_stage() == Stage.CONFIG


def test_a_failed_stage_is_recorded_and_not_done(tmp_path):
    state = new_state(tmp_path)
    state.start(Stage.BUILD, {"targets": ["bzImage"]})
    state.finish(Stage.BUILD, StageStatus.FAILED)
    assert state.get(Stage.BUILD).status == StageStatus.FAILED
    assert state.done_with(Stage.BUILD, {"targets": ["bzImage"]}) is None
    assert state.running_stage() is None


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"schema": "kcheck.build-state/1", "options": {}, "stages": {"pick": {}}})],
)
def test_a_corrupt_state_file_is_bad_input_naming_it(tmp_path, content):
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(KcheckError, match=rf"{tmp_path / STATE_FILE}: unreadable state .*delete it"):
        BuildState.load(tmp_path)


def test_no_state_file_is_a_fresh_start(tmp_path):
    assert BuildState.load(tmp_path) is None


# --- git operations on real repositories -------------------------------------------------------


@pytest.fixture
def tree(tmp_path) -> gitops.TreeGit:
    repo = init_repo(tmp_path / "tree")
    commit(repo, "base", 1_700_000_000, {"fs/aio.c": "int aio;\n"})
    return gitops.TreeGit(repo, BuildLog(tmp_path / "build.log"))  # every command is logged


def test_a_conflicting_pick_stops_mid_cherry_pick_and_an_empty_one_is_skipped(tree):
    repo = tree.repo
    base = tree.head()
    repo.git.checkout("-b", "upstream")
    change = commit(repo, "aio: change", 1_700_000_100, {"fs/aio.c": "int aio = 1;\n"})
    repo.git.checkout("main")
    started = commit(repo, "local: other change", 1_700_000_200, {"fs/aio.c": "int aio = 2;\n"})
    repo.git.checkout("-b", "kcheck/pick")
    outcome = gitops.cherry_pick(tree, change)
    assert outcome.conflicts == ("fs/aio.c",) and outcome.new_sha is None and tree.picking()
    gitops.abort(tree, "main", started, "kcheck/pick")
    assert not tree.picking() and tree.head() == started  # back where the run started
    assert tree.current_branch() == "main" and "kcheck/pick" not in [h.name for h in repo.heads]
    repo.git.reset("--hard", base)
    repo.git.merge("--ff-only", "upstream")  # the tree now has the change
    empty = gitops.cherry_pick(tree, change)
    assert empty == gitops.PickOutcome(None) and not tree.picking()


def test_a_clean_pick_carries_the_backport_trailer(tree):
    repo = tree.repo
    repo.git.checkout("-b", "upstream")
    change = commit(repo, "aio: new file", 1_700_000_100, {"fs/new.c": "x\n"})
    repo.git.checkout("main")
    outcome = gitops.cherry_pick(tree, change)
    assert outcome.new_sha == tree.head() != change
    assert f"(cherry picked from commit {change})" in repo.head.commit.message


def test_fetch_plan_asks_only_for_what_the_tree_lacks(tree):
    have = tree.head()
    commits = [
        Commit(have, "present", "A", "v6.1"),
        Commit("a" * 40, "full", "A", "v6.2"),
        Commit("b" * 12, "abbreviated", "A", "v6.3"),
        Commit("c" * 12, "abbreviated too", "A", "v6.3"),
    ]
    fetch = gitops.plan_fetch(commits, tree.has_commit)
    assert fetch.shas == ("a" * 40,) and fetch.tags == ("v6.3",)
    assert fetch.argv()[:4] == ["git", "fetch", "--no-tags", gitops.REMOTE]
    assert not gitops.plan_fetch(commits[:1], tree.has_commit)


def test_the_remote_is_added_once_then_repointed_only_when_it_moves(tree):
    assert gitops.remote_argv(tree, "https://a.example/linux.git")[:3] == ["git", "remote", "add"]
    tree.repo.create_remote(gitops.REMOTE, "https://a.example/linux.git")
    assert gitops.remote_argv(tree, "https://a.example/linux.git") is None
    assert gitops.remote_argv(tree, "https://b.example/linux.git")[:3] == ["git", "remote", "set-url"]


def test_a_branch_name_taken_gets_a_number(tree):
    tree.repo.git.branch("kcheck/x")
    tree.repo.git.branch("kcheck/x-2")
    assert gitops.unique_branch(tree, "kcheck/x") == "kcheck/x-3"
    assert gitops.unique_branch(tree, "kcheck/y") == "kcheck/y"


def test_the_git_layer_resolves_refuses_and_explains(tree, tmp_path):
    assert repos.resolve_commit(tree.repo, "HEAD") == tree.head()
    assert repos.resolve_commit(tree.repo, "f" * 40) is None
    with pytest.raises(KcheckError, match="nowhere: not a repo; fix it"):
        repos.open_repo(tmp_path / "nowhere", "nowhere: not a repo; fix it")
    with pytest.raises(KcheckError, match="--upstream ext::sh: refused an unsafe git transport"):
        repos.check_url("--upstream", "ext::sh")
    stderr = "\n  stderr: 'warning: x\nfatal: repository not found'"
    assert repos.git_reason(stderr) == "fatal: repository not found"
    with pytest.raises(git.GitCommandError):
        tree.run("no-such-subcommand")
    assert "$ git no-such-subcommand" in tree.log.path.read_text()


# --- the plan -----------------------------------------------------------------------------------


def test_the_plan_branches_picks_and_tags_in_that_order():
    picks = (plan.Pick("aio", "a" * 40, "aio: fix"), plan.Pick("aio", "b" * 12, "aio: more", resolved=False))
    fetch = gitops.FetchPlan(("a" * 40,), ("v6.3",))
    recipe = plan.pick_plan(fetch, ["git", "remote", "add", gitops.REMOTE, "u"], picks, "c" * 40, ["aio"])
    commands = recipe.commands()
    assert commands[0] == ["git", "remote", "add", gitops.REMOTE, "u"]
    assert commands[1] == fetch.argv()
    assert commands[2][:3] == ["git", "checkout", "-b"] and commands[2][3].endswith("-aio")
    assert commands[3:5] == [["git", "cherry-pick", "-x", "a" * 40], ["git", "cherry-pick", "-x", "b" * 12]]
    assert commands[5][:3] == ["git", "tag", "--annotate"]
    nothing = plan.pick_plan(gitops.FetchPlan((), ()), None, (), "c" * 40, [])
    assert nothing.branch is None and nothing.commands() == [nothing.tag_command()]


# --- the stage loop -------------------------------------------------------------------------------


class Recorder:
    """A progress stand-in that keeps what would be shown (the loop's only output)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        self.lines.append(text)

    def stage(self, name: str, what: str):
        from contextlib import nullcontext

        self.lines.append(f"[{name}] {what}")
        return nullcontext()


class KeepingLedger(FreshLedger):
    def __init__(self) -> None:
        self.kept: dict[str, tuple[dict, dict]] = {}
        self.failures: list[str] = []

    def done_with(self, name: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        kept = self.kept.get(name)
        return kept[1] if kept and kept[0] == inputs else None

    def finish(self, name: str, outputs: dict[str, Any]) -> None:
        self.kept[name] = ({"n": 1}, outputs)

    def failed(self, name: str) -> None:
        self.failures.append(name)


class Counting(StageStep):
    name = "count"

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.runs = fail, 0

    def inputs(self) -> dict[str, Any]:
        return {"n": 1}

    def previous(self, outputs: dict[str, Any]) -> str:
        return f"ran {outputs['runs']} time(s)"

    def label(self) -> str:
        return "counting"

    def work(self) -> dict[str, Any]:
        self.runs += 1
        if self.fail:
            raise StageFailed("it broke")
        return {"runs": self.runs}


def test_the_loop_runs_a_stage_once_then_skips_it_and_records_a_failure():
    ledger, shown = KeepingLedger(), Recorder()
    step = Counting()
    assert run_stage(step, ledger, shown) == {"runs": 1}
    assert run_stage(step, ledger, shown) == {"runs": 1} and step.runs == 1
    assert shown.lines == ["[count] counting", "[count] done in a previous run: ran 1 time(s)"]
    broken = Counting(fail=True)
    with pytest.raises(StageFailed, match="it broke"):
        run_stage(broken, KeepingLedger(), shown)
    failing = KeepingLedger()
    with pytest.raises(StageFailed):
        run_stage(Counting(fail=True), failing, shown)
    assert failing.failures == ["count"] and failing.kept == {}
