"""kcheck fleet report on real probe reports: this host live, and offline node images that are
ready, not ready and undecided. The HTML is loaded in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import jsonschema
import pytest
from conftest import NOBODY, kcheck_argv, requires_root, run_kcheck
from test_offline import FULL_CONFIG, NEW, OLD, make_image

from kcheck.core.validate import schema
from kcheck.fleet.merge import read_together, report_paths

CHROMIUM = shutil.which("chromium")


def probe_into(directory: Path, file: str, *args: str) -> Path:
    """A real `kcheck probe --format json` report, written where the fleet reads it."""
    done = run_kcheck("probe", "--format", "json", "--output", str(directory / file), *args)
    assert done.returncode in (0, 1, 2), done.stderr
    return directory / file


def image(root: Path, release: str, config: str = FULL_CONFIG) -> Path:
    make_image(root, [release])
    (root / "boot" / f"config-{release}").write_text(config)
    return root


def fleet(*args: str) -> subprocess.CompletedProcess:
    return run_kcheck("fleet", "report", *args)


def fleet_json(*args: str) -> tuple[int, dict]:
    done = fleet(*args, "--format", "json")
    assert done.returncode != 3, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, schema("fleet-1"))
    return done.returncode, document


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    """A fleet: this host live (as root), two ready images of one kernel, one image without
    CONFIG_CHECKPOINT_RESTORE (not ready), one old image with no evidence (undecided)."""
    base = tmp_path_factory.mktemp("fleet")
    directory = base / "reports"
    directory.mkdir()
    no_cr = FULL_CONFIG.replace("CONFIG_CHECKPOINT_RESTORE=y\n", "")
    for name, root, release in (
        ("img-new-1", image(base / "new1", NEW), NEW),
        ("img-new-2", image(base / "new2", NEW), NEW),
        ("img-bad", image(base / "bad", NEW, no_cr), NEW),
        ("img-old", image(base / "old", OLD), OLD),
    ):
        probe_into(directory, f"{name}.json", "--name", name, "--root", str(root), "--release", release)
    return directory


@pytest.fixture(scope="module")
def live_report(tmp_path_factory) -> Path:
    return probe_into(tmp_path_factory.mktemp("live"), "live.json", "--name", "live-1")


def ready_only(reports: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "ready"
    directory.mkdir()
    for name in ("img-new-1", "img-new-2"):
        shutil.copy(reports / f"{name}.json", directory)
    return directory


def test_exit_codes_follow_the_worst_host(reports, tmp_path):
    assert fleet(str(ready_only(reports, tmp_path))).returncode == 0
    assert fleet(str(reports / "img-new-1.json"), str(reports / "img-old.json")).returncode == 2
    assert fleet(str(reports)).returncode == 1


def test_json_names_each_hosts_verdict_and_failing_checks(reports):
    code, document = fleet_json(str(reports))
    assert code == 1 and document["exit_code"] == 1
    assert document["counts"] == {"ready": 2, "not-ready": 1, "undecided": 1}
    hosts = {h["name"]: h for h in document["hosts"]}
    # not ready first, then undecided, then ready
    assert [h["name"] for h in document["hosts"]] == ["img-bad", "img-old", "img-new-1", "img-new-2"]
    bad = hosts["img-bad"]
    assert [f["id"] for f in bad["failing"]] == ["config.CHECKPOINT_RESTORE"]
    assert bad["failing"][0]["status"] == "fail" and "CHECKPOINT_RESTORE" in bad["failing"][0]["remedy"]
    assert {f["id"] for f in hosts["img-old"]["failing"]} == {"overlayfs.mnt_id", "overlayfs.fd_path"}
    assert {f["status"] for f in hosts["img-old"]["failing"]} == {"unknown"}
    assert hosts["img-new-1"]["failing"] == []
    assert document["checks"]["config.CHECKPOINT_RESTORE"] == {"pass": 3, "fail": 1, "unknown": 0, "skip": 0}


def test_hosts_are_keyed_by_label_and_image_root(reports, tmp_path):
    """Every offline report carries this machine's hostname; the --name label and the image
    root tell them apart."""
    _, document = fleet_json(str(reports))
    keys = {h["name"]: h["key"] for h in document["hosts"]}
    assert keys["img-new-1"] == f"img-new-1:{reports.parent / 'new1'}:{NEW}"
    assert len({h["hostname"] for h in document["hosts"]}) == 1 and len(keys) == 4


def test_a_newer_report_of_the_same_host_replaces_the_older(reports, tmp_path):
    older = json.loads((reports / "img-bad.json").read_text())
    older["generated_at"] = "2020-01-01T00:00:00Z"
    (tmp_path / "a-older.json").write_text(json.dumps(older))
    shutil.copy(reports / "img-bad.json", tmp_path / "b-newer.json")
    newer_first = tmp_path / "newer-first"
    newer_first.mkdir()
    shutil.copy(reports / "img-bad.json", newer_first / "a-newer.json")
    (newer_first / "b-older.json").write_text(json.dumps(older))
    for directory, kept, dropped in (
        (tmp_path, "b-newer.json", "a-older.json"),
        (newer_first, "a-newer.json", "b-older.json"),
    ):
        _, document = fleet_json(str(directory))
        assert len(document["hosts"]) == 1
        assert document["hosts"][0]["report"] == str(directory / kept)
        assert document["replaced"] == [
            {
                "key": document["hosts"][0]["key"],
                "kept": str(directory / kept),
                "dropped": str(directory / dropped),
            }
        ]
        assert "two reports, kept the newer" in fleet(str(directory)).stdout
        assert f"kept the newer {directory / kept} over" in fleet(str(directory), "--format", "html").stdout


def test_classes_group_identical_hosts_and_the_matrix_follows_cr_compare(reports, live_report):
    _, document = fleet_json(str(reports), str(live_report))
    classes = {c["id"]: c for c in document["classes"]}
    by_host = {key: c["id"] for c in document["classes"] for key in c["hosts"]}
    assert len(classes) == 4  # the two ready images are one class
    assert classes["C1"]["hosts"] == sorted(k for k in by_host if k.startswith(("img-new-1", "img-new-2")))
    assert len(document["matrix"]) == len(classes) ** 2
    # The same answer as `kcheck cr compare` on one report of each class...
    report_of = {h["class"]: h["report"] for h in document["hosts"]}
    for pair in document["matrix"]:
        compared = run_kcheck("cr", "compare", report_of[pair["source"]], report_of[pair["target"]])
        assert compared.returncode == (0 if pair["compatible"] else 1), (pair, compared.stdout)
        assert bool(pair["problems"]) != pair["compatible"]
    # ...and the one expected: an offline report has no architecture, so nothing moves to or
    # from an image; this host to itself works when it is ready and has a criu.
    live = next(h for h in document["hosts"] if h["name"] == "live-1")
    for pair in document["matrix"]:
        if live["class"] in (pair["source"], pair["target"]) and pair["source"] != pair["target"]:
            assert not pair["compatible"]
        if pair["source"] != live["class"] or pair["target"] != live["class"]:
            assert any("no architecture (offline)" in p["message"] for p in pair["problems"]), pair
    live_to_live = next(p for p in document["matrix"] if p["source"] == p["target"] == live["class"])
    assert live_to_live["compatible"] == (live["verdict"] == "ready" and live["criu"] is not None)


def test_text_lists_not_ready_first_with_fixes_and_folds_ready_hosts(reports):
    done = fleet(str(reports))
    text = done.stdout
    assert text.startswith("kcheck fleet: 4 hosts: 2 ready, 1 not ready, 1 undecided (exit 1)\n")
    assert text.index("NOT-READY (1)") < text.index("UNDECIDED (1)") < text.index("READY (2)")
    assert "    FAIL config.CHECKPOINT_RESTORE: " in text
    assert "      fix: rebuild the kernel with CONFIG_CHECKPOINT_RESTORE=y" in text
    folded = f"  2 on kernel {NEW} (?), criu none: img-new-1:"
    assert folded in text
    assert "\x1b[" not in text  # not a tty: no colour, no rich table


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "x.json").write_text("{}"), "not a kcheck.probe/1 probe report"),
        (lambda d: (d / "x.json").write_text("[1,"), "not readable JSON"),
        (lambda d: (d / "x.json").write_text('{"schema": "kcheck.probe/1"}'), "a malformed kcheck.probe/1"),
        (lambda d: None, "no *.json probe reports in this directory"),
    ],
    ids=["other-json", "broken-json", "malformed-report", "empty-dir"],
)
def test_bad_input_is_exit_3_naming_the_file(reports, tmp_path, make, message):
    make(tmp_path)
    done = fleet(str(reports / "img-new-1.json"), str(tmp_path))
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr and str(tmp_path) in done.stderr


def test_a_missing_path_is_bad_input(tmp_path):
    done = fleet(str(tmp_path / "nowhere.json"))
    assert done.returncode == 3 and "nowhere.json: no such file or directory" in done.stderr


def test_probe_name_is_recorded_and_checked(tmp_path):
    report = probe_into(
        tmp_path, "r.json", "--name", "node-7.example", "--release", NEW, "--check", "kernel.*"
    )
    assert json.loads(report.read_text())["name"] == "node-7.example"
    done = run_kcheck("probe", "--name", "two words")
    assert done.returncode == 3 and "is not a host label" in done.stderr


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def chromium(*args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: chromium refuses to run as root with its sandbox, and CI runs as root
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="scripts/test installs Debian's chromium")
def test_html_report_renders_in_a_real_browser(reports, tmp_path):
    page = tmp_path / "fleet.html"
    done = fleet(str(reports), "--format", "html", "--output", str(page))
    assert done.returncode == 1 and done.stdout == ""
    html = page.read_text()
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")  # self-contained
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        """Counts what the browser built: grid rows, cells by status, matrix marks."""

        def __init__(self):
            super().__init__()
            self.classes: list[str] = []
            self.ids: list[str] = []

        def handle_starttag(self, tag, attrs):
            found = dict(attrs)
            self.classes.append(f"{tag}.{found.get('class', '')}")
            if "id" in found:
                self.ids.append(found["id"])

    parsed = Cells()
    parsed.feed(dom.stdout)
    assert {"headline", "summary", "not-ready", "grid", "classes", "matrix"} <= set(parsed.ids)
    assert parsed.classes.count("tr.host") == 4
    checks = len(json.loads((reports / "img-bad.json").read_text())["checks"])
    cells = [c for c in parsed.classes if c.startswith("td.cell ")]
    assert len(cells) == 4 * checks
    assert cells.count("td.cell fail") >= 1 and cells.count("td.cell unknown") >= 2
    assert parsed.classes.count("tr.finding") == 3  # img-bad's one failure, img-old's two unknowns
    assert parsed.classes.count("td.pair yes") + parsed.classes.count("td.pair no") == 3 * 3
    assert {"span.not-ready", "span.undecided", "span.ready"} <= set(parsed.classes)
    shot = tmp_path / "fleet.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert done.returncode == 0, done.stderr
    assert png_size(shot) == (1200, 900)


@requires_root
def test_a_live_report_joins_the_fleet(live_report, reports):
    code, document = fleet_json(str(live_report), str(reports / "img-new-1.json"))
    live = next(h for h in document["hosts"] if h["name"] == "live-1")
    assert live["mode"] == "live" and live["key"] == "live-1" and live["machine"]
    assert code == {"ready": 0, "undecided": 2, "not-ready": 1}[live["verdict"]]


def test_a_terminal_gets_rich_tables_coloured_unless_no_color(reports):
    from kcheck.fleet.merge import load_fleet
    from kcheck.fleet.render import render_text

    fleet_view = load_fleet([reports])
    plain = render_text(fleet_view, table=True, color=False)
    assert "┃" in plain and "\x1b[" not in plain  # a table, no escape codes
    assert "not-ready" in plain and "ready, by kernel and criu" in plain
    assert "source class -> target class" in plain
    assert "\x1b[" in render_text(fleet_view, table=True, color=True)


def test_report_text_is_never_read_as_rich_markup(reports, tmp_path):
    """A label or detail with brackets ('[/b]', '/[aio]') is shown as it is, not parsed."""
    from kcheck.fleet.merge import load_fleet
    from kcheck.fleet.render import render_text

    document = json.loads((reports / "img-bad.json").read_text())
    document["name"] = "w[/b]"
    (tmp_path / "r.json").write_text(json.dumps(document))
    assert "w[/b]" in render_text(load_fleet([tmp_path]), table=True, color=True)


def test_a_candidate_kernel_of_a_host_is_not_the_host(live_report, tmp_path):
    """The same --name probed live and offline for another release: two fleet entries."""
    probe_into(tmp_path, "candidate.json", "--name", "live-1", "--release", NEW)
    shutil.copy(live_report, tmp_path / "live.json")
    _, document = fleet_json(str(tmp_path))
    assert sorted(h["key"] for h in document["hosts"]) == ["live-1", f"live-1:offline:{NEW}"]
    assert document["replaced"] == []


def test_a_big_fleet_read_by_a_process_pool_gives_the_same_answers(reports, tmp_path):
    """2,400 reports: enough for read_hosts' pool on a machine with two cores or more."""
    template = json.loads((reports / "img-bad.json").read_text())
    for number in range(2400):
        (tmp_path / f"node-{number:04d}.json").write_text(
            json.dumps({**template, "name": f"node-{number:04d}"})
        )
    code, document = fleet_json(str(tmp_path))
    assert code == 1 and document["counts"] == {"ready": 0, "not-ready": 2400, "undecided": 0}
    assert [h["key"] for h in document["hosts"][:2]] == [
        f"node-0000:{reports.parent / 'bad'}:{NEW}",
        f"node-0001:{reports.parent / 'bad'}:{NEW}",
    ]
    assert len(document["classes"]) == 1 and len(document["matrix"]) == 1
    (tmp_path / "node-1234.json").write_text('{"schema": "kcheck.probe/1", "mode": "live"}')
    done = fleet(str(tmp_path))
    assert done.returncode == 3 and f"{tmp_path / 'node-1234.json'}: a malformed" in done.stderr


def test_hosts_read_together_share_their_equal_parts_and_keep_their_own(reports, tmp_path):
    """What lets 10,000 hosts fit in memory and cross from the pool's readers cheaply: equal
    statuses, details and findings are one object; different ones stay apart."""
    shutil.copy(reports / "img-bad.json", tmp_path / "img-bad-again.json")
    paths = [reports / "img-new-1.json", reports / "img-new-2.json", reports / "img-bad.json"]
    new1, new2, bad, again = read_together([*paths, tmp_path / "img-bad-again.json"])
    assert new1.report.statuses is new2.report.statuses  # the details name each image's path
    assert new1.report.details != new2.report.details and new1.report.details is not new2.report.details
    assert bad.failing and bad.failing is again.failing
    assert bad.report.details is again.report.details and bad.report.statuses is again.report.statuses
    assert bad.report.statuses != new1.report.statuses and bad.report.statuses is not new1.report.statuses
    assert [host.report.path for host in (bad, again)] == [
        str(paths[2]),
        str(tmp_path / "img-bad-again.json"),
    ]


def test_a_directory_is_read_as_its_json_files_only(reports, tmp_path):
    """As glob("*.json"): hidden ones too, no other names, no subdirectories; sorted."""
    for name in ("img-new-1.json", ".img-bad.json", "img-bad.json.bak"):
        shutil.copy(reports / name.lstrip(".").removesuffix(".bak"), tmp_path / name)
    (tmp_path / "sub.json").mkdir()
    assert report_paths([tmp_path]) == [str(tmp_path / ".img-bad.json"), str(tmp_path / "img-new-1.json")]


@requires_root
def test_a_directory_nobody_may_list_is_bad_input_naming_it(reports, open_dir):
    locked = open_dir / "locked"
    locked.mkdir(mode=0o700)
    shutil.copy(reports / "img-new-1.json", locked)
    done = subprocess.run(
        [*NOBODY, *kcheck_argv(), "fleet", "report", str(locked)], capture_output=True, text=True
    )
    assert done.returncode == 3, done.stderr
    assert (
        done.stderr
        == f"kcheck: error: {locked}: cannot list this directory (Permission denied); check its permissions\n"
    )


def test_a_report_without_checks_is_read_beside_others(reports, tmp_path):
    """An empty statuses dict and an empty findings tuple are different parts, never shared."""
    empty = {**json.loads((reports / "img-new-1.json").read_text()), "checks": [], "name": "empty"}
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    ready, bare, again = read_together(
        [reports / "img-new-1.json", tmp_path / "empty.json", tmp_path / "empty.json"]
    )
    assert ready.failing == () and bare.failing == ()
    assert bare.report.statuses == {} and bare.report.details == {} and bare.status_pairs == ()
    assert again.report.statuses is bare.report.statuses
