"""Put the FAKE docker/podman/criu (fake_tool.py) on a temporary PATH and read what they saw."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

FAKE_TOOL = Path(__file__).with_name("fake_tool.py")
# Directories for real system tools (mount, umount, unshare, sh); never /usr/local/bin,
# where this machine has a daemon-less docker client.
SYSTEM_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass
class FakeHost:
    """A bin directory of FAKE tools, their shared state, and the environment that uses them."""

    root: Path
    tools: tuple[str, ...]
    system_tools: bool = True
    state: dict = field(default_factory=lambda: {"docker": {"containers": []}, "podman": {"containers": []}})

    def __post_init__(self) -> None:
        self.bin.mkdir(parents=True)
        for tool in self.tools:
            (self.bin / tool).symlink_to(FAKE_TOOL)
        self.save()

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def path(self) -> str:
        """Fakes first; the test venv's python (the fakes' interpreter, and kcheck's); then system."""
        dirs = [str(self.bin), str(Path(sys.executable).parent)]
        return os.pathsep.join(dirs + (list(SYSTEM_PATH) if self.system_tools else []))

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": self.path, "KCHECK_FAKE_STATE": str(self.root)}

    def save(self) -> None:
        (self.root / "state.json").write_text(json.dumps(self.state))

    def add_container(self, engine: str, container: dict) -> None:
        self.state[engine]["containers"].append(container)
        self.save()

    def set_running(self, engine: str, name: str, running: bool) -> None:
        """Stop or start a FAKE container, as a checkpoint or restore would."""
        for container in self.state[engine]["containers"]:
            if container["Name"].lstrip("/") == name:
                container["State"]["Running"] = running
        self.save()

    def fail(self, prefix: str, stderr: str, returncode: int = 1, times: int | None = None) -> None:
        """Make the FAKE calls whose `tool argv...` starts with prefix fail this way (only the
        first `times` of them, when given)."""
        answer = {"stderr": stderr, "returncode": returncode}
        self.state.setdefault("fail", {})[prefix] = answer if times is None else {**answer, "times": times}
        self.save()

    def calls(self, tool: str | None = None) -> list[dict]:
        log = self.root / "calls.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [r for r in records if tool is None or r["tool"] == tool]

    def argvs(self, tool: str) -> list[list[str]]:
        return [r["argv"] for r in self.calls(tool)]


def docker_container(name: str) -> dict:
    """Canned `docker container inspect` of a running container (the fields kcheck reads)."""
    return {
        "Id": (name.encode().hex() * 64)[:64],
        "Name": f"/{name}",
        "State": {"Running": True, "Pid": 4242},
    }


def podman_container(name: str) -> dict:
    return {"Id": (name.encode().hex() * 64)[:64], "Name": name, "State": {"Running": True, "Pid": 4343}}
