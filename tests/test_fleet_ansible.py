"""The Ansible playbook and role (kcheck/fleet/ansible) for real: ansible-core from PyPI over a real
sshd on loopback, as root, against two inventory hosts that are both this machine: `live` probes
the running kernel (ready), `image` an offline image of kernel 3.19.0 without
CONFIG_CHECKPOINT_RESTORE (not ready). Everything lands in temp dirs; the hosts use no package
index (the wheelhouse is built once, by the playbook, on the controller)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest
from conftest import kcheck_argv, requires_root
from sshd import SSHD, running_sshd
from test_offline import FULL_CONFIG, make_image

import kcheck.fleet
from kcheck.core.validate import schema

PLAYBOOK = Path(kcheck.fleet.__file__).parent / "ansible" / "probe.yml"
REPO = Path(__file__).resolve().parent.parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
DEFAULT_FACT = Path("/etc/ansible/facts.d/kcheck.fact")
IMAGE_RELEASE = "3.19.0"
# What the probe reports offline for that image: the config it lacks, and the overlayfs fixes of
# 4.2 that neither its version nor any build record or changelog shows.
IMAGE_FAILING = {"config.CHECKPOINT_RESTORE", "overlayfs.mnt_id", "overlayfs.fd_path"}

pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed (test extra)"
)


def over_ssh(test):
    """The whole playbook over sshd as root: about two minutes (a wheelhouse build, two venvs)."""
    needs_sshd = pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed")
    return pytest.mark.slow(requires_root(needs_sshd(test)))


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host: {"live": {"ok": 14, "changed": 5, "failed": 0, ...}}."""
    return {
        host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counts)}
        for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE)
    }


class Site:
    """The controller's and the hosts' temp dirs, and ansible-playbook run against them."""

    def __init__(self, base: Path, ssh) -> None:
        self.base = base
        self.reports = base / "reports"
        self.fleet = base / "fleet"
        self.wheelhouse = base / "wheelhouse"
        self.image = base / "image"
        make_image(self.image, [IMAGE_RELEASE])
        config = FULL_CONFIG.replace("CONFIG_CHECKPOINT_RESTORE=y\n", "")
        (self.image / "boot" / f"config-{IMAGE_RELEASE}").write_text(config)
        # The wheelhouse is built from a copy: pip writes build/ and *.egg-info into its source.
        self.source = base / "source"
        shutil.copytree(
            REPO,
            self.source,
            ignore=shutil.ignore_patterns(
                ".git", "build", "*.egg-info", "__pycache__", ".venv*", ".*_cache", ".hypothesis", "mutants"
            ),
        )
        (base / "ansible.cfg").write_text("")  # neither ./ansible.cfg nor /etc/ansible/ansible.cfg
        self.inventory = base / "inventory.ini"
        self.inventory.write_text(
            f"live {self.host_vars('live')}\n"
            f"image {self.host_vars('image')} kcheck_root={self.image} kcheck_release={IMAGE_RELEASE}\n"
            "[all:vars]\n"
            f"ansible_host={ssh.host}\nansible_port={ssh.port}\nansible_user=root\n"
            f"ansible_ssh_private_key_file={ssh.user_key}\n"
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n"
            "ansible_python_interpreter=/usr/bin/python3\n"
        )
        # Lists and paths the inventory's INI would read as strings: extra vars as JSON.
        self.extra_vars = base / "vars.json"
        self.extra_vars.write_text(
            json.dumps(
                {
                    "kcheck_source": str(self.source),
                    "kcheck_wheelhouse_build_dir": str(self.wheelhouse),
                    "kcheck_reports_dir": str(self.reports),
                    "kcheck_fleet_dir": str(self.fleet),
                    "kcheck_controller_command": kcheck_argv(),
                }
            )
        )

    @property
    def control_dir(self) -> Path:
        return self.base / "ssh-control"

    def close(self) -> None:
        """End the ssh masters Ansible keeps for reuse (ControlPersist), so none outlives the test."""
        for socket_path in self.control_dir.glob("*") if self.control_dir.exists() else ():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "kcheck-test"], capture_output=True
            )

    def prefix(self, host: str) -> Path:
        return self.base / "hosts" / host / "opt-kcheck"

    def facts_dir(self, host: str) -> Path:
        return self.base / "hosts" / host / "facts.d"

    def host_vars(self, host: str) -> str:
        """Both hosts are this machine: each gets its own prefix and facts dir, as separate hosts would."""
        return f"kcheck_prefix={self.prefix(host)} kcheck_facts_dir={self.facts_dir(host)}"

    def fact(self, host: str) -> dict:
        return json.loads((self.facts_dir(host) / "kcheck.fact").read_text())

    def playbook(self, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.base / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.base / "ansible-home"),  # not ~/.ansible
            "ANSIBLE_REMOTE_TEMP": str(self.base / "remote-tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_dir),  # ssh masters, closed by close()
            "ANSIBLE_PIPELINING": "true",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
        }
        argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory or self.inventory), "-e", f"@{self.extra_vars}"]
        started = time.monotonic()
        done = subprocess.run(
            [*argv, *args, str(PLAYBOOK)], cwd=self.base, env=env, capture_output=True, text=True, timeout=600
        )
        print(f"ansible-playbook {' '.join(args)}: {time.monotonic() - started:.1f}s")
        return done


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An sshd and the two hosts behind it; afterwards, nothing left in /etc or /usr/local."""
    assert not DEFAULT_FACT.exists()
    local_bin = set(os.listdir("/usr/local/bin"))
    with running_sshd(tmp_path_factory.mktemp("sshd")) as ssh:
        site = Site(tmp_path_factory.mktemp("ansible"), ssh)
        try:
            yield site
        finally:
            site.close()
    assert not DEFAULT_FACT.exists()
    assert set(os.listdir("/usr/local/bin")) == local_bin


@pytest.fixture(scope="module")
def first_run(site) -> subprocess.CompletedProcess:
    """The playbook builds the wheelhouse, installs kcheck on both hosts, probes, merges."""
    return site.playbook("-e", "kcheck_fail_on=never")


@over_ssh
def test_playbook_probes_fetches_writes_facts_and_merges(site, first_run):
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    assert {host: counts["failed"] for host, counts in recap(first_run.stdout).items()} == {
        "live": 0,
        "image": 0,
        "localhost": 0,
    }

    # The playbook built the wheelhouse, and the kcheck wheel carries the playbook and role.
    (wheel,) = site.wheelhouse.glob("kcheck-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    role = "kcheck/fleet/ansible/roles/kcheck_probe"
    for name in ("probe.yml", "inventory.example.ini"):
        assert f"kcheck/fleet/ansible/{name}" in shipped
    for name in (
        "tasks/main.yml",
        "tasks/gate.yml",
        "tasks/report.yml",
        "defaults/main.yml",
        "vars/main.yml",
    ):
        assert f"{role}/{name}" in shipped
    assert (site.prefix("live") / "bin/kcheck").is_file()

    reports = {path.stem: json.loads(path.read_text()) for path in site.reports.glob("*.json")}
    assert {host: report["name"] for host, report in reports.items()} == {"live": "live", "image": "image"}
    assert reports["image"]["kernel"]["release"] == IMAGE_RELEASE

    live, image = site.fact("live"), site.fact("image")
    assert (live["verdict"], live["exit_code"], live["failing"]) == ("ready", 0, [])
    assert live["release"] == os.uname().release
    assert (image["verdict"], image["exit_code"], image["release"]) == ("not-ready", 1, IMAGE_RELEASE)
    assert set(image["failing"]) == IMAGE_FAILING
    assert image["generated_at"] == reports["image"]["generated_at"]

    document = json.loads((site.fleet / "fleet.json").read_text())
    jsonschema.validate(document, schema("fleet-1"))
    assert document["counts"] == {"ready": 1, "not-ready": 1, "undecided": 0}
    hosts = {host["name"]: host for host in document["hosts"]}
    assert {name: host["verdict"] for name, host in hosts.items()} == {"live": "ready", "image": "not-ready"}
    assert {finding["id"] for finding in hosts["image"]["failing"]} == IMAGE_FAILING
    assert "image" in (site.fleet / "fleet.txt").read_text()
    assert "<html" in (site.fleet / "fleet.html").read_text().lower()


@over_ssh
def test_a_prebuilt_wheelhouse_is_reused_and_fail_on_not_ready_fails_only_that_host(site, first_run):
    installed = site.prefix("live") / "bin/kcheck"
    installed_before = installed.stat().st_mtime_ns
    wheels_before = {path: path.stat().st_mtime_ns for path in site.wheelhouse.iterdir()}
    fleet_before = (site.fleet / "fleet.json").stat().st_mtime_ns

    run = site.playbook("-e", "kcheck_fail_on=not-ready", "-e", f"kcheck_wheelhouse={site.wheelhouse}")

    assert run.returncode != 0, run.stdout + run.stderr
    counts = recap(run.stdout)
    assert (counts["image"]["failed"], counts["live"]["failed"], counts["localhost"]["failed"]) == (1, 0, 0)
    assert "image is not-ready" in run.stdout and "kcheck_fail_on is not-ready" in run.stdout
    # Nothing was rebuilt or reinstalled; the fleet report was written before the gate failed a host.
    assert {path: path.stat().st_mtime_ns for path in site.wheelhouse.iterdir()} == wheels_before
    assert installed.stat().st_mtime_ns == installed_before
    assert (site.fleet / "fleet.json").stat().st_mtime_ns > fleet_before


@over_ssh
def test_bad_input_to_the_probe_fails_the_host(site, first_run):
    """Exit 3 is no verdict: an image root that does not exist fails the task, naming kcheck's error."""
    inventory = site.base / "broken.ini"
    missing = site.base / "no-such-image"
    inventory.write_text(
        site.inventory.read_text().replace(f"kcheck_root={site.image}", f"kcheck_root={missing}")
    )
    run = site.playbook("--limit", "image", "-e", f"kcheck_wheelhouse={site.wheelhouse}", inventory=inventory)
    assert run.returncode != 0
    assert recap(run.stdout)["image"]["failed"] == 1
    assert str(missing) in run.stdout


@pytest.mark.parametrize(
    ("fail_on", "failed"),
    [("never", set()), ("not-ready", {"bad"}), ("undecided", {"bad", "unsure"})],
)
def test_fail_on_names_the_verdicts_that_fail_a_host(tmp_path, fail_on, failed):
    """The gate alone, on local facts as the role writes them (no ssh, no install)."""
    verdicts = {"good": ("ready", 0), "bad": ("not-ready", 1), "unsure": ("undecided", 2)}
    inventory = tmp_path / "inventory.yml"
    hosts = {
        name: {
            "ansible_connection": "local",
            "ansible_local": {
                "kcheck": {
                    "verdict": verdict,
                    "exit_code": code,
                    "release": "6.1.0-28-amd64",
                    "failing": [] if code == 0 else ["overlayfs.mnt_id"],
                    "generated_at": "2025-01-01T00:00:00Z",
                }
            },
        }
        for name, (verdict, code) in verdicts.items()
    }
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    playbook = tmp_path / "gate.yml"
    gate = {"ansible.builtin.import_role": {"name": "kcheck_probe", "tasks_from": "gate"}}
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [gate]}]))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_ROLES_PATH": str(PLAYBOOK.parent / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), "-e", f"kcheck_fail_on={fail_on}", str(playbook)]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert {host for host, counts in recap(done.stdout).items() if counts["failed"]} == failed, done.stdout
    assert (done.returncode == 0) == (not failed)
