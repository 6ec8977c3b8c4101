"""`kcheck cr compare SOURCE.json TARGET.json` on pairs of probe reports.

The reports are made by the probe's own renderer from Report objects, or are edited
copies of a real `kcheck probe --format json` of this host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_kcheck

from kcheck.core.render import render_json
from kcheck.core.result import CheckResult, Evidence, Report, Status
from kcheck.cr.compare import compare, load_report

# (id, required): a required live check, and an optional one CRIU only needs sometimes.
CHECKS = (
    ("overlayfs.mnt_id", True),
    ("aio.ring_remap", True),
    ("overlayfs.maps", False),
    ("criu.check", False),
)


def report(
    release: str = "6.1.0-28-amd64",
    machine: str = "x86_64",
    criu: str | None = "3.19",
    **statuses: Status,
) -> Report:
    """A probe report where every check passes unless `statuses` says otherwise
    (keyword names use '_' for '.': overlayfs_maps=Status.FAIL)."""
    checks = [
        CheckResult(
            check_id,
            check_id,
            required,
            statuses.get(check_id.replace(".", "_"), Status.PASS),
            Evidence.LIVE,
            f"{check_id} as observed",
        )
        for check_id, required in CHECKS
    ]
    kernel = {
        "release": release,
        "version": release.split("-")[0],
        "machine": machine,
        "fixed_by_version": {},
    }
    return Report(kernel=kernel, checks=checks, tools={"criu": criu})


def write(path: Path, probe: Report) -> Path:
    path.write_text(render_json(probe))
    return path


def problems(tmp_path: Path, source: Report, target: Report) -> list[tuple[str, str | None]]:
    pair = (
        load_report(write(tmp_path / "source.json", source)),
        load_report(write(tmp_path / "target.json", target)),
    )
    return [(p.rule, p.check) for p in compare(*pair)]


def test_identical_ready_hosts_are_compatible(tmp_path):
    assert problems(tmp_path, report(), report()) == []


def test_target_not_ready_is_incompatible(tmp_path):
    found = problems(tmp_path, report(), report(aio_ring_remap=Status.FAIL))
    assert found == [("target-ready", None), ("check", "aio.ring_remap")]


def test_undecided_target_is_incompatible(tmp_path):
    found = problems(tmp_path, report(), report(aio_ring_remap=Status.UNKNOWN))
    assert ("target-ready", None) in found


def test_an_optional_check_passing_on_the_source_must_pass_on_the_target(tmp_path):
    """The target is ready, but the source's images may hold mmapped overlay files."""
    assert problems(tmp_path, report(), report(overlayfs_maps=Status.FAIL)) == [("check", "overlayfs.maps")]


def test_a_check_that_does_not_pass_on_the_source_binds_nothing(tmp_path):
    source = report(overlayfs_maps=Status.FAIL)
    assert problems(tmp_path, source, report(overlayfs_maps=Status.SKIP)) == []


def test_a_check_missing_from_the_target_report_is_incompatible(tmp_path):
    target = report()
    target.checks = [c for c in target.checks if c.id != "overlayfs.maps"]
    pair = load_report(write(tmp_path / "s.json", report())), load_report(write(tmp_path / "t.json", target))
    [problem] = compare(*pair)
    assert problem.message == "overlayfs.maps passes on the source but was not run on the target"


@pytest.mark.parametrize(
    ("source_criu", "target_criu", "compatible"),
    [
        ("3.19", "3.19", True),
        ("3.17.1", "4.0", True),
        ("3.19", "3.9", False),  # numeric, not string, order
        ("3.17.1", "3.17", False),
        ("4.0", None, False),
        (None, "4.0", False),
    ],
)
def test_target_criu_must_be_at_least_the_source_criu(tmp_path, source_criu, target_criu, compatible):
    found = problems(tmp_path, report(criu=source_criu), report(criu=target_criu))
    assert found == ([] if compatible else [("criu", None)])


@pytest.mark.parametrize(
    ("source", "target", "compatible"),
    [
        (("5.15.0-91-generic", "x86_64"), ("6.1.0-28-amd64", "x86_64"), True),
        (("6.1.0-28-amd64", "x86_64"), ("6.1.0-28-amd64", "x86_64"), True),
        (("6.8.0", "x86_64"), ("6.1.0-28-amd64", "x86_64"), False),
        (("6.1.0", "x86_64"), ("6.1.0", "aarch64"), False),
        (("6.1.0", "x86_64"), ("custom", "x86_64"), False),
    ],
)
def test_target_kernel_must_be_as_new_and_the_same_architecture(tmp_path, source, target, compatible):
    found = problems(tmp_path, report(*source), report(*target))
    assert found == ([] if compatible else [("kernel", None)])


def test_cli_text_output_and_exit_codes(tmp_path):
    source = write(tmp_path / "source.json", report())
    good = run_kcheck("cr", "compare", str(source), str(write(tmp_path / "good.json", report(criu="4.0"))))
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines()[-1] == "verdict: compatible (exit 0)"

    bad = run_kcheck("cr", "compare", str(source), str(write(tmp_path / "bad.json", report(criu="3.17"))))
    assert bad.returncode == 1
    assert "  FAIL criu: target criu 3.17 is older than source criu 3.19" in bad.stdout
    assert bad.stdout.splitlines()[-1] == "verdict: not compatible (exit 1): 1 problem(s)"


def test_cli_json_output(tmp_path):
    source = write(tmp_path / "source.json", report())
    target = write(tmp_path / "target.json", report("5.10.0", overlayfs_maps=Status.FAIL))
    done = run_kcheck("cr", "compare", str(source), str(target), "--format", "json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["schema"] == "kcheck.cr.compare/1"
    assert (result["compatible"], result["exit_code"]) == (False, 1)
    assert (result["source"]["kernel"], result["target"]["kernel"]) == ("6.1.0-28-amd64", "5.10.0")
    assert [(p["rule"], p["check"]) for p in result["problems"]] == [
        ("check", "overlayfs.maps"),
        ("kernel", None),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not readable JSON"),
        ('{"schema": "junit"}', "not a kcheck.probe/1 probe report"),
        ("[]", "not a kcheck.probe/1 probe report"),
        (
            '{"schema": "kcheck.probe/1", "verdict": "ready"}',
            "a malformed kcheck.probe/1 report ($ lacks kcheck_version, mode, exit_code, kernel, tools, "
            "summary, checks)",
        ),
    ],
)
def test_a_file_that_is_not_a_probe_report_is_bad_input(tmp_path, content, message):
    source = write(tmp_path / "source.json", report())
    target = tmp_path / "target.json"
    if content is not None:
        target.write_text(content)
    done = run_kcheck("cr", "compare", str(source), str(target))
    assert done.returncode == 3
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"kcheck: error: {target}: {message}")
    assert line.endswith("; make it with `kcheck probe --format json --output FILE`")


def test_a_report_with_an_unknown_status_is_bad_input(tmp_path):
    data = json.loads(render_json(report()))
    data["checks"][0]["status"] = "maybe"
    target = tmp_path / "target.json"
    target.write_text(json.dumps(data))
    done = run_kcheck("cr", "compare", str(write(tmp_path / "source.json", report())), str(target))
    assert done.returncode == 3


def test_edited_copies_of_this_hosts_real_probe_report(tmp_path):
    probe = run_kcheck("probe", "--format", "json")
    data = json.loads(probe.stdout)
    if data["verdict"] != "ready":
        pytest.skip(f"this host is {data['verdict']}: a ready host is needed as the target")
    data["tools"]["criu"] = "4.1"  # this host's criu cannot run here; pretend one that can
    source, target = tmp_path / "source.json", tmp_path / "target.json"
    source.write_text(json.dumps(data))
    target.write_text(json.dumps(data))
    assert run_kcheck("cr", "compare", str(source), str(target)).returncode == 0

    passing = next(c for c in data["checks"] if c["status"] == "pass")
    passing["status"] = "fail"
    target.write_text(json.dumps(data))
    done = run_kcheck("cr", "compare", str(source), str(target))
    assert done.returncode == 1
    assert f"FAIL check: {passing['id']} passes on the source but is failing on the target" in done.stdout


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("[" * 100_000, "nested too deeply"),
        (None, "is a character device, not a regular file"),
    ],
)
def test_a_report_nested_too_deeply_or_endless_is_bad_input(tmp_path, content, why):
    good = write(tmp_path / "good.json", report())
    if content is None:
        bad = Path("/dev/zero")
    else:
        bad = tmp_path / "bad.json"
        bad.write_text(content)
    done = run_kcheck("cr", "compare", str(bad), str(good), timeout=30)
    assert done.returncode == 3
    assert done.stderr.startswith(f"kcheck: error: {bad}: not readable JSON ({why})")
    assert done.stderr.count("\n") == 1
