"""The build record document (kcheck.build-record/1, kcheck/schemas/build-record-1.json): which
patchsets an installed kernel carries.

`kcheck build-kernel --install` writes it to STATE/builds/RELEASE.json (STATE is
/var/lib/kcheck, or $KCHECK_STATE_DIR); `--install-root IMG` writes it to the same place
inside the image. The offline probe reads it back as evidence: from the image with --root,
else from this host's state directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from typing import Any

RECORD_SCHEMA = "kcheck.build-record/1"
BUILD_RECORD_DIR = "var/lib/kcheck/builds"  # inside a root: the host's or an image's
DEFAULT_STATE_DIR = Path("/var/lib/kcheck")


def state_dir() -> Path:
    """kcheck's records on this host; KCHECK_STATE_DIR moves them (tests, image builders)."""
    return Path(os.environ.get("KCHECK_STATE_DIR", DEFAULT_STATE_DIR))


def host_records_dir() -> Path:
    """Where this host's kernel build records are."""
    return state_dir() / "builds"


def record_file(directory: Path, release: str) -> Path:
    return directory / f"{release}.json"


def dump_record(record: dict[str, Any]) -> str:
    return json.dumps({"schema": RECORD_SCHEMA, **record}, indent=2) + "\n"


def load_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the record, None), or (None, why it is no evidence): unreadable, or not matching its
    schema. A malformed record is never half-trusted."""
    from kcheck.core.files import read_json
    from kcheck.core.validate import first_problem

    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        return None, f"{path}: {exc}"
    if problem := first_problem(record, "build-record-1"):
        return None, f"{path}: not a kcheck build record ({problem})"
    return record, None
