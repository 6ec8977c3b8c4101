"""Per-architecture facts (arch.toml): the kernel image target, and where bootable images land."""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass
from importlib.resources import files

FALLBACK_IMAGE = "vmlinux"


@dataclass(frozen=True)
class ArchFacts:
    machine: str
    image: str  # the make target of the kernel image
    boot: dict[str, str]  # bootable image target -> its path in the tree

    def boot_image(self, targets: tuple[str, ...]) -> str | None:
        """The tree path of the first bootable image among `targets`."""
        return next((self.boot[target] for target in targets if target in self.boot), None)


@functools.cache
def _table() -> dict[str, dict]:
    return tomllib.loads(files("kcheck.builder").joinpath("arch.toml").read_text())


def arch_facts(machine: str | None = None) -> ArchFacts:
    """The facts of `machine` (default: this host's `uname -m`)."""
    machine = machine or os.uname().machine
    entry = _table().get(machine, {})
    return ArchFacts(machine, entry.get("image", FALLBACK_IMAGE), dict(entry.get("boot", {})))
