#!/usr/bin/env python3
"""FAKE docker, FAKE podman and FAKE criu for the kcheck cr tests: one script, linked under
each name. They stand in for engine states the real stack here cannot show (an old or
misconfigured daemon, a command failing on demand); test_cr.py says which, and why.

Every call is appended to $KCHECK_FAKE_STATE/calls.jsonl as {"tool", "argv"}; answers come
from $KCHECK_FAKE_STATE/state.json:
  {"docker": {"containers": [inspect objects], "experimental": true, "version": "20.10.24"},
   "podman": {"containers": [...]},
   "criu": {"version": "4.1", "check_output": "Looks good.", "check_returncode": 0},
   "fail": {"docker checkpoint create": {"returncode": 1, "stderr": "...", "times": 1}}}
   # by argv prefix; "times", when given, fails only that many calls
Like the real engines, a checkpoint (without --leave-running / -R) stops the container and a
restore starts it: State.Running changes in state.json.
"""

import json
import os
import sys
from pathlib import Path

STATE = Path(os.environ["KCHECK_FAKE_STATE"])


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def find(containers: list[dict], ref: str) -> dict | None:
    return next((c for c in containers if ref == c["Name"].lstrip("/") or c["Id"].startswith(ref)), None)


def main() -> int:
    tool, argv = Path(sys.argv[0]).name, sys.argv[1:]
    state = json.loads((STATE / "state.json").read_text())
    record = {"tool": tool, "argv": argv}
    with open(STATE / "calls.jsonl", "a") as calls:
        calls.write(json.dumps(record) + "\n")

    command = " ".join([tool, *argv])
    for prefix, answer in state.get("fail", {}).items():
        if command.startswith(prefix) and answer.get("times", 1) > 0:
            if "times" in answer:  # fail only so many times, then answer as usual
                answer["times"] -= 1
                (STATE / "state.json").write_text(json.dumps(state))
            sys.stderr.write(answer["stderr"])
            return answer["returncode"]
    engine = state.get(tool, {})
    if tool == "criu":
        if argv == ["--version"]:
            print(f"Version: {engine.get('version', '4.1')}")
            return 0
        if argv[:1] == ["check"]:
            print(engine.get("check_output", "Looks good."))
            return engine.get("check_returncode", 0)
        return 0
    if argv[:2] in (["container", "inspect"], ["container", "exists"]):
        container = find(engine.get("containers", []), argv[2])
        if container is None:
            print(f"Error: No such container: {argv[2]}", file=sys.stderr)
            return 1
        if argv[1] == "inspect":
            print(json.dumps([container]))
        return 0
    if argv[:1] == ["info"]:
        print(json.dumps(engine.get("experimental", True)))
    if argv[:1] == ["version"]:
        print(engine.get("version", "20.10.24"))
    _change_state(tool, argv, state)
    return 0


def _change_state(tool: str, argv: list[str], state: dict) -> None:
    """What a successful checkpoint or restore does to the container's State.Running."""
    containers = state.get(tool, {}).get("containers", [])
    if argv[:2] in (["checkpoint", "create"], ["container", "checkpoint"]):
        running = "--leave-running" in argv or "-R" in argv
    elif argv[:2] in (["start", "--checkpoint"], ["container", "restore"]):
        running = True
    else:
        return
    if "-i" in argv:  # podman --import: the container comes from the archive; podman prints its id
        name = option(argv, "-n") if "-n" in argv else "imported"
        containers.append({"Id": (name.encode().hex() * 64)[:64], "Name": name, "State": {"Running": True}})
        print(containers[-1]["Id"])
    else:  # `docker checkpoint create CONTAINER NAME`: the container is not the last word
        container = find(containers, argv[-2] if argv[:2] == ["checkpoint", "create"] else argv[-1])
        if container is not None:
            container["State"]["Running"] = running
    (STATE / "state.json").write_text(json.dumps(state))


if __name__ == "__main__":
    sys.exit(main())
