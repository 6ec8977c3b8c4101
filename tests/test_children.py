"""The probe's forked children: their report channel (marshal, length-framed), its failure
modes, and their reaping. Real forks; the observations are made up here."""

from __future__ import annotations

import os
import time

import pytest

from kcheck.core.procparse import parse_maps
from kcheck.probe import children
from kcheck.probe.aio import _mapping_length
from kcheck.probe.children import Unavailable, reap_lingering, start_child
from kcheck.probe.criu_check import _Tool

OBSERVATION = {
    "text": "ünïcode\n" * 5000,
    "number": 1 << 40,
    "list": [1, None, True, "x"],
    "nested": {"a": []},
}


def _gone(pid: int) -> bool:
    """Reaped: no such process (a zombie would still be there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _my_children() -> set[int]:
    """This process's children, zombies included."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():
            found.add(int(entry))
    return found


def test_a_report_arrives_whole_and_the_child_is_reaped():
    finish = start_child("test", lambda report: report(OBSERVATION), 10)
    assert finish() == OBSERVATION  # 40 KB: more than a pipe holds at once


def test_a_lingering_child_is_reaped_by_whoever_owns_the_list():
    lingering: list[int] = []

    def work(report):
        report({"ok": True})
        time.sleep(0.2)  # its own cleanup, after the report (as the AIO child's io_destroy)

    assert start_child("test", work, 10, linger=lingering)() == {"ok": True}
    (pid,) = lingering
    assert not _gone(pid)
    reap_lingering(lingering, 10)
    assert lingering == [] and _gone(pid)


@pytest.mark.parametrize(
    ("work", "message"),
    [
        (lambda report: None, "test child failed: no output"),
        (lambda report: 1 / 0, "test child failed: ZeroDivisionError"),
        (lambda report: report({"unavailable": "needs root"}), "needs root"),
        (lambda report: time.sleep(5), "test did not finish within 0.3s; raise --timeout"),
    ],
    ids=["silent", "crash", "unavailable", "timeout"],
)
def test_a_child_that_does_not_report_is_unavailable_and_reaped(work, message):
    before = _my_children()
    finish = start_child("test", work, 0.3)
    assert _my_children() - before  # the child is there
    with pytest.raises(Unavailable, match=message):
        finish()
    assert _my_children() - before == set()  # and reaped, on every path


def test_a_report_already_there_is_not_late_for_a_slow_caller():
    """The caller (an early-started probe importing in an emulated guest) may come back
    after the child's limit: a report waiting in the pipe still counts."""
    finish = start_child("test", lambda report: report({"ok": True}), 1)
    time.sleep(2)
    assert finish() == {"ok": True}


def test_a_tool_still_running_at_its_limit_is_ended_and_reaped():
    before = _my_children()
    tool = _Tool(["/bin/sleep", "5"])
    with pytest.raises(Unavailable, match=r"/bin/sleep 5 did not finish within 0.2s \(--timeout\)"):
        tool.output(0.2)
    assert _my_children() - before == set()


def test_a_cut_short_report_says_so(monkeypatch):
    """A child killed mid-write: its length says more than came."""
    monkeypatch.setattr(children, "_send", lambda fd, obs: os.write(fd, (100).to_bytes(8, "little") + b"ab"))
    finish = start_child("test", lambda report: report({"ok": True}), 10)
    with pytest.raises(Unavailable, match="test child sent a cut-short report"):
        finish()


def test_the_aio_childs_ring_length_agrees_with_procparse():
    with open("/proc/self/maps") as file:
        maps = file.read()
    mappings = parse_maps(maps)
    assert len(mappings) > 10
    for mapping in mappings:
        assert _mapping_length(maps, mapping.start) == mapping.length
    assert _mapping_length(maps, 0x1000) is None
