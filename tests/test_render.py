"""Every output format, rendered from reports built by the real engine."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from importlib.resources import files

import jsonschema
import pytest
from conftest import load_capture
from test_engine import context, unavailable

from kcheck.core import render
from kcheck.core.result import Status
from kcheck.probe.engine import run_probe, select_checks

SCHEMA = json.loads(files("kcheck.schemas").joinpath("probe-1.json").read_text())


def ready_report():
    return run_probe(select_checks(), context(overlay=lambda c: load_capture("overlay-debian-6.1-maps.json")))


def not_ready_report():
    ctx = context(release="3.19.0-15-generic", overlay=lambda c: load_capture("overlay-broken-pre4.2.json"))
    return run_probe(select_checks(), ctx)


def undecided_report():
    return run_probe(select_checks(), context(release="3.19.0", overlay=unavailable("needs root")))


REPORTS = {"ready": ready_report, "not-ready": not_ready_report, "undecided": undecided_report}


@pytest.mark.parametrize("verdict", REPORTS)
def test_json_matches_schema(verdict):
    data = json.loads(render.render_json(REPORTS[verdict]()))
    jsonschema.validate(data, SCHEMA)
    assert data["schema"] == "kcheck.probe/1"
    assert data["verdict"] == verdict
    assert data["exit_code"] == {"ready": 0, "not-ready": 1, "undecided": 2}[verdict]
    assert sum(data["summary"].values()) == len(data["checks"])


def test_schema_rejects_a_wrong_report():
    data = json.loads(render.render_json(ready_report()))
    data["checks"][0]["status"] = "ok"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)


def test_text_plain_has_no_escape_codes_and_shows_fixes():
    text = render.render_text(not_ready_report())
    assert "\x1b[" not in text
    assert "FAIL    overlayfs.mnt_id" in text
    assert "fix: apply patchset overlayfs-mnt-id" in text
    assert text.rstrip().splitlines()[-1].startswith("verdict: not-ready (exit 1)")


def test_text_marks_optional_failures_as_warnings():
    assert "WARN    overlayfs.maps" in render.render_text(ready_report())


def test_text_rich_uses_colour():
    text = render.render_text(not_ready_report(), table=True, color=True)
    assert "\x1b[" in text and "overlayfs.mnt_id" in text


def test_junit_one_testcase_per_check():
    report = not_ready_report()
    root = ET.fromstring(render.render_junit(report))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [c.id for c in report.checks]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == [c.id for c in report.checks if c.required and c.status == Status.FAIL]
    assert suite.get("failures") == str(len(failed))
    assert {c.get("name") for c in cases if c.find("skipped") is not None} >= {"criu.check"}


def test_junit_undecided_required_is_an_error():
    root = ET.fromstring(render.render_junit(undecided_report()))
    errors = [c.get("name") for c in root.iter("testcase") if c.find("error") is not None]
    assert "overlayfs.mnt_id" in errors


def test_prometheus_one_gauge_per_check():
    report = not_ready_report()
    lines = render.render_prometheus(report).splitlines()
    gauges = [line for line in lines if line.startswith("kcheck_check_pass{")]
    assert len(gauges) == len(report.checks)
    assert (
        'kcheck_check_pass{check="overlayfs.mnt_id",required="true",status="fail",evidence="live"} 0' in lines
    )
    assert any(line.startswith('kcheck_ready{verdict="not-ready"') and line.endswith(" 0") for line in lines)
    for line in lines:
        assert line.startswith("#") or line.rsplit(" ", 1)[1].isdigit()


@pytest.mark.parametrize("verdict", REPORTS)
def test_npd_single_line_within_80(verdict):
    text = render.render_npd(REPORTS[verdict]())
    assert text.endswith("\n") and text.count("\n") == 1
    assert len(text.rstrip("\n")) <= 80


def test_npd_truncates_long_lists():
    report = not_ready_report()
    for check in report.checks:
        if check.required:
            check.status = Status.FAIL
    line = render.render_npd(report).rstrip("\n")
    assert len(line) == 80 and line.endswith("...")


def test_github_commands_and_summary():
    report = not_ready_report()
    lines = render.render_github(report).splitlines()
    assert any(line.startswith("::error title=kcheck overlayfs.mnt_id FAIL::") for line in lines)
    skipped_optional = [c.id for c in report.checks if c.status == Status.SKIP and not c.required]
    assert skipped_optional  # the report has one, so the next line can fail
    assert not [line for line in lines if any(f"kcheck {check_id} " in line for check_id in skipped_optional)]
    not_passing = [
        c
        for c in report.checks
        if c.status != Status.PASS and not (c.status == Status.SKIP and not c.required)
    ]
    for check in not_passing:  # every other check that did not pass has its line
        command = "error" if check.required and check.status == Status.FAIL else "warning"
        assert any(line.startswith(f"::{command} title=kcheck {check.id} ") for line in lines), check.id
    assert lines[-1].startswith("::notice title=kcheck verdict::not-ready")
    assert all("\n" not in line for line in lines)
    summary = render.github_step_summary(report)
    assert "| FAIL | `overlayfs.mnt_id` | yes | live |" in summary


def test_github_escapes_workflow_command_data():
    assert render._gh_escape("50%\nnext") == "50%25%0Anext"
    assert render._gh_escape("a:b,c", property_value=True) == "a%3Ab%2Cc"
