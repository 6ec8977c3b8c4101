"""The fast structural check (kcheck.core.validate) gives jsonschema's answer on every
schema kcheck ships, for real documents and for hypothesis's mutations of them."""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
from conftest import run_kcheck
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kcheck.core.report import model_problem, report_from_dict
from kcheck.core.validate import first_problem, schema
from kcheck.cr.external import MANIFEST_SCHEMA, Manifest
from kcheck.fleet.merge import read_host

SCHEMAS = sorted(
    p.name.removesuffix(".json") for p in files("kcheck.schemas").iterdir() if p.name.endswith(".json")
)


def real_probe_report() -> dict:
    done = run_kcheck("probe", "--format", "json", "--release", "6.1.0-28-amd64", "--check", "kernel.release")
    return json.loads(done.stdout)


def real_image_report() -> dict:
    """An offline report of an image root (kernel.image set), with every check."""
    with tempfile.TemporaryDirectory(prefix="kcheck-test-image-") as root:
        Path(root, "boot").mkdir()
        Path(root, "boot/vmlinuz-6.1.0-28-amd64").write_bytes(b"MZ")
        Path(root, "boot/config-6.1.0-28-amd64").write_text("CONFIG_CHECKPOINT_RESTORE=y\n")
        done = run_kcheck("probe", "--format", "json", "--root", root, "--release", "6.1.0-28-amd64")
    return json.loads(done.stdout)


IMAGE_REPORT = real_image_report()


def real_fleet_report() -> dict:
    """`kcheck fleet report` of two real probe reports: one ready, one undecided (an old kernel)."""
    with tempfile.TemporaryDirectory(prefix="kcheck-test-fleet-") as directory:
        for name, release in (("new", "6.1.0-28-amd64"), ("old", "3.19.0")):
            run_kcheck(
                "probe", "--format", "json", "--name", name, "--release", release,
                "--check", "kernel.release", "--check", "overlayfs.*", "--output", f"{directory}/{name}.json",
            )  # fmt: skip
        done = run_kcheck("fleet", "report", "--format", "json", directory)
    return json.loads(done.stdout)


SAMPLES = {
    "probe-1": real_probe_report(),
    "fleet-1": real_fleet_report(),
    # the shapes kcheck writes (audit.py to_json, builder/records.py metadata and
    # write_build_record, builder/criu.py build); test_build and test_audit check real ones
    "build-record-1": {
        "schema": "kcheck.build-record/1",
        "release": "4.1.0-kcheck",
        "commit": "ab" * 20,
        "source": "https://example.invalid/linux.git",
        "patchsets": [
            {"name": "overlayfs-mnt-id", "commits": [{"upstream": "4bacc9c923", "sha": "cd" * 20}]}
        ],
        "installed": "2026-12-02T10:00:00Z",
        "metadata": "/var/tmp/kcheck-build/metadata.json",
    },
    "audit-1": {
        "schema": "kcheck.audit/1",
        "tree": "/usr/src/linux",
        "rev": "HEAD",
        "commit": "ab" * 20,
        "kernel": "4.1.5",
        "upstream": None,
        "exit_code": 1,
        "summary": {
            "ancestor": 0,
            "backported": 1,
            "equivalent": 0,
            "missing": 1,
            "unknown": 0,
            "not-needed": 0,
        },
        "patchsets": [
            {
                "name": "overlayfs-mnt-id",
                "needed": True,
                "range": ">=3.18, <4.2",
                "commits": [
                    {
                        "sha": "4bacc9c9234c7c8eec44f5ed4e960d9f96fa0f01",
                        "upstream_sha": "4bacc9c9234c7c8eec44f5ed4e960d9f96fa0f01",
                        "subject": "overlayfs: Make f_path always point to the overlay",
                        "status": "backported",
                        "match": "cd" * 20,
                        "evidence": "(cherry picked from commit 4bacc9c923)",
                    },
                    {
                        "sha": "9391dd00d1",
                        "upstream_sha": None,
                        "subject": "fix a braino in ovl_d_select_inode()",
                        "status": "missing",
                        "match": None,
                        "evidence": "no backport trailer names it",
                    },
                ],
            }
        ],
    },
    "build-1": {
        "schema": "kcheck.build/1",
        "source": {
            "tree": "/var/tmp/kcheck-build/linux",
            "url": "https://salsa.debian.org/kernel-team/linux.git",
            "branch": "debian/6.1/bookworm",
            "commit": "ab" * 20,
            "partial_clone": True,
        },
        "upstream": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
        "patchsets": ["aio-ring-remap"],
        "patches": [
            {
                "patchset": "aio-ring-remap",
                "upstream_sha": "e4a0d3e7" * 5,
                "subject": "aio: fix",
                "status": "picked",
                "commit": "cd" * 20,
            }
        ],
        "branch": "kcheck/20261202-aio-ring-remap",
        "tag": "kcheck-built/20261202-aio-ring-remap",
        "commit": "cd" * 20,
        "config": {
            "source": "/proc/config.gz",
            "base": "/var/tmp/kcheck-build/base.config",
            "sha256": "3a" * 32,
            "localversion": "-kcheck",
            "settings": ["CONFIG_CHECKPOINT_RESTORE=y"],
            "cleared": [],
            "not_kept": [],
            "localmodconfig": False,
        },
        "release": "6.1.192-kcheck",
        "build": {
            "command": "make -j3 bzImage modules",
            "targets": ["bzImage", "modules"],
            "jobs": 3,
            "variables": ["KBUILD_BUILD_TIMESTAMP=x"],
            "env": {},
        },
        "stages": {
            "pick": {"status": "done", "duration": 1.5},
            "build": {"status": "running", "duration": None},
        },
        "verify": {"verdict": "ready", "detail": "kernel 6.1.192-kcheck booted; every required check passes"},
        "tools": {"kcheck": "0.1.0", "ccache": None},
        "log": "/var/tmp/kcheck-build/build.log",
        "reproducer": "/var/tmp/kcheck-build/reproducer.sh",
        "distcc": {
            "given": "127.0.0.1:3632/2 127.0.0.1:3633/2 10.0.0.9/8",
            "hosts": "127.0.0.1:3632/2 127.0.0.1:3633/2",
            "compilers": {"localhost": "GCC: (Debian 12.2.0-14) 12.2.0 (x86-64)"},
            "left_out": {"10.0.0.9/8": "does not answer (no reply in 10 s)"},
            "jobs": {"127.0.0.1:3632/2": 211, "127.0.0.1:3633/2": 198, "localhost": 3},
            "moved": 2,
            "fell_back": 0,
            "log": "/var/tmp/kcheck-build/distcc.log",
        },
    },
    "build-state-1": {
        "schema": "kcheck.build-state/1",
        "options": {"tree": "/usr/src/linux", "jobs": 3},
        "stages": {
            "fetch": {
                "status": "done",
                "inputs": {"patchsets": ["overlayfs-mnt-id"]},
                "outputs": {},
                "started": 1.5,
                "duration": 2.0,
            },
            "build": {"status": "running", "inputs": {}, "outputs": {}, "started": 3, "duration": None},
        },
    },
    "criu-build-1": {
        "schema": "kcheck.criu-build/1",
        "version": "4.2",
        "source": {
            "kind": "tarball",
            "location": "/src/criu-4.2.tar.xz",
            "tag": None,
            "commit": None,
            "sha256": "3a" * 32,
        },
        "prefix": "/usr/local",
        "binary": "/usr/local/sbin/criu",
        "installed": ["/usr/local/sbin/criu"],
        "check": {"passed": True, "returncode": 0, "version": "4.2", "summary": "Looks good."},
        "kernel": "6.18.44",
        "built_at": "2026-12-02T10:00:00Z",
    },
    "cr-manifest-2": {
        "schema": MANIFEST_SCHEMA,
        **asdict(
            Manifest(
                "ab" * 32, "web", 4242, "/m", "/l", "/u", "/w", {"/etc/hosts": "/h"}, False, "6.1.0", "now"
            )
        ),
    },
}

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def test_every_schema_has_a_sample():
    assert sorted(SAMPLES) == SCHEMAS


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_documents_kcheck_writes_conform(name):
    jsonschema.validate(SAMPLES[name], schema(name))
    assert first_problem(SAMPLES[name], name) is None


def paths(document, prefix=()):
    """Every place in the document: (container path, key or index)."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield prefix, key
            yield from paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield prefix, index
            yield from paths(value, (*prefix, index))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(SCHEMAS), data=st.data())
def test_mutations_are_judged_as_jsonschema_judges_them(name, data):
    document = copy.deepcopy(SAMPLES[name])
    for _ in range(data.draw(st.integers(1, 3))):
        places = list(paths(document))
        if not places:
            break
        where, key = data.draw(st.sampled_from(places))
        container = document
        for step in where:
            container = container[step]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            container[key] = data.draw(JSON)
        elif action == "delete" and isinstance(container, dict):
            del container[key]
        elif isinstance(container, dict):
            container[data.draw(st.text(max_size=5))] = data.draw(JSON)
    valid = jsonschema.Draft202012Validator(schema(name)).is_valid(document)
    problem = first_problem(document, name)
    assert (problem is None) == valid, (problem, document)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_models_fast_check_accepts_what_the_schema_accepts_and_only_what_it_can_read(data):
    """model_problem (the fleet's check, one per report) against jsonschema: it never refuses
    a valid report, and what it lets through, the model and the compare rules can read."""
    document = copy.deepcopy(data.draw(st.sampled_from([SAMPLES["probe-1"], IMAGE_REPORT])))
    for _ in range(data.draw(st.integers(1, 3))):
        where, key = data.draw(st.sampled_from(list(paths(document))))
        container = document
        for step in where:
            container = container[step]
        if data.draw(st.booleans()):
            container[key] = data.draw(JSON)
        elif isinstance(container, dict):
            del container[key]
    if jsonschema.Draft202012Validator(schema("probe-1")).is_valid(document):
        assert model_problem(document) is None, document
    if model_problem(document) is None:
        report_from_dict(document)
        with tempfile.TemporaryDirectory(prefix="kcheck-test-report-") as directory:
            path = Path(directory, "r.json")
            path.write_text(json.dumps(document))
            read_host(path)  # the fleet's reader: every field it takes, without a traceback
