"""Pure verdicts: observations (mostly captured /proc text) in, status and detail out.

Nothing here touches the system, so every branch is tested with text captured from
broken kernels. A verdict that could not observe says so with `unobservable=True`;
the engine may then decide from the kernel version instead.
"""

from __future__ import annotations

from collections import namedtuple

from kcheck.core.criu import criu_first_error, criu_version
from kcheck.core.procparse import (
    fdinfo_mnt_id,
    mapping_at,
    mount_at,
    mount_by_id,
    parse_maps,
    parse_mountinfo,
)
from kcheck.core.release import KernelVersion, parse_release, parse_version
from kcheck.core.result import Evidence, Status

TYPE_CHECKING = False  # importing typing costs the probe's start-up; these names are for annotations
if TYPE_CHECKING:
    from typing import Any

    from kcheck.patchsets.catalog import Patchset


class Outcome(
    namedtuple(
        "Outcome", ("status", "detail", "unobservable", "evidence", "remedy"), defaults=(False, None, None)
    )
):
    """A verdict: its Status and detail; unobservable when it could not look (the engine may
    then judge by version); evidence (an Evidence) when it differs from the check's own kind;
    remedy when this failure has its own fix, beyond the check's."""

    __slots__ = ()


def _overlay_error(obs: dict[str, Any]) -> Outcome | None:
    """A failed overlay setup: no overlayfs at all is a FAIL, anything else UNKNOWN."""
    error = obs.get("error")
    if not isinstance(error, dict):
        return None
    if error.get("stage") == "mount overlay" and error.get("errno") == "ENODEV":
        return Outcome(Status.FAIL, "kernel has no overlayfs (mount: ENODEV); enable CONFIG_OVERLAY_FS")
    return Outcome(Status.UNKNOWN, f"overlay probe failed at {error.get('stage')}: {error.get('message')}")


def _namespace_note(obs: dict[str, Any]) -> str:
    return " (observed in an unprivileged user namespace)" if obs.get("userns") is True else ""


def _overlay_files(obs: dict[str, Any]) -> list[dict[str, Any]]:
    files = obs.get("files")
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def _where(mounts, mount_id: int) -> str:
    mount = mount_by_id(mounts, mount_id)
    return f"{mount.fstype} {mount.mount_point}" if mount else "not in mountinfo"


def overlay_mnt_id(obs: dict[str, Any]) -> Outcome:
    if failed := _overlay_error(obs):
        return failed
    mount_point = str(obs.get("mount_point", ""))
    mounts = parse_mountinfo(str(obs.get("mountinfo", "")))
    overlay = mount_at(mounts, mount_point)
    if overlay is None or overlay.fstype != "overlay":
        return Outcome(Status.UNKNOWN, f"no overlay mount at {mount_point} in mountinfo")
    files = _overlay_files(obs)
    if not files:
        return Outcome(Status.UNKNOWN, "overlay probe reported no files")
    problems = []
    for entry in files:
        mnt_id = fdinfo_mnt_id(str(entry.get("fdinfo", "")))
        if mnt_id is None:
            problems.append(f"{entry.get('name')}: fdinfo has no mnt_id line")
        elif mnt_id != overlay.mount_id:
            problems.append(
                f"{entry.get('name')}: fdinfo mnt_id {mnt_id} ({_where(mounts, mnt_id)}) "
                f"but overlay is mount {overlay.mount_id} ({mount_point})"
            )
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems))
    names = " and ".join(str(f.get("name")) for f in files)
    return Outcome(
        Status.PASS,
        f"fdinfo mnt_id {overlay.mount_id} is the overlay mount for {names}{_namespace_note(obs)}",
    )


def overlay_fd_path(obs: dict[str, Any]) -> Outcome:
    if failed := _overlay_error(obs):
        return failed
    files = _overlay_files(obs)
    if not files:
        return Outcome(Status.UNKNOWN, "overlay probe reported no files")
    problems = [
        f"{f.get('name')}: /proc/self/fd link is {f.get('link')} but the file is {f.get('path')}"
        for f in files
        if f.get("link") != f.get("path")
    ]
    if problems:
        return Outcome(Status.FAIL, "; ".join(problems))
    return Outcome(
        Status.PASS, f"fd links name the overlay path ({files[0].get('path')}, ...){_namespace_note(obs)}"
    )


def overlay_maps(obs: dict[str, Any]) -> Outcome:
    if failed := _overlay_error(obs):
        return failed
    mappings = parse_maps(str(obs.get("maps", "")))
    files = _overlay_files(obs)
    if not files:
        return Outcome(Status.UNKNOWN, "overlay probe reported no files")
    problems = []
    for entry in files:
        address = entry.get("map_address")
        fstat = entry.get("fstat")
        mapping = mapping_at(mappings, address) if isinstance(address, int) else None
        if mapping is None or not (isinstance(fstat, list) and len(fstat) == 3):
            return Outcome(Status.UNKNOWN, f"{entry.get('name')}: mapping not found in /proc/self/maps")
        seen = (mapping.major, mapping.minor, mapping.inode)
        if seen != tuple(fstat):
            problems.append(
                f"{entry.get('name')}: maps shows {seen[0]}:{seen[1]} ino {seen[2]} "
                f"but fstat shows {fstat[0]}:{fstat[1]} ino {fstat[2]}"
            )
    if problems:
        return Outcome(
            Status.FAIL,
            "; ".join(problems)
            + ' (CRIU cannot dump mmapped overlay files: "Can\'t lookup mount=NNN for fd=-3")',
        )
    return Outcome(Status.PASS, f"maps dev:ino of mmapped overlay files equals fstat{_namespace_note(obs)}")


def aio_ring_remap(obs: dict[str, Any]) -> Outcome:
    if setup_error := obs.get("io_setup_errno"):
        hint = {
            "ENOSYS": "the kernel has no AIO (CONFIG_AIO off)",
            "EAGAIN": f"AIO context limit reached (fs.aio-max-nr={obs.get('aio_max_nr')})",
        }.get(setup_error, "")
        return Outcome(Status.FAIL, f"io_setup(16) failed with {setup_error}" + (f": {hint}" if hint else ""))
    if obs.get("error"):
        return Outcome(Status.UNKNOWN, f"AIO probe failed: {obs['error']}")
    context = obs.get("context")
    mappings = parse_maps(str(obs.get("maps", "")))
    ring = mapping_at(mappings, context) if isinstance(context, int) else None
    if ring is None or "[aio]" not in ring.path:
        return Outcome(Status.UNKNOWN, "no /[aio] mapping at the AIO context address in /proc/self/maps")
    if remap_errno := obs.get("remap_errno"):
        return Outcome(Status.FAIL, f"mremap of the {ring.length}-byte AIO ring failed with {remap_errno}")
    moved = obs.get("getevents_moved")
    if not (isinstance(moved, list) and len(moved) == 2 and isinstance(moved[0], int)):
        return Outcome(Status.UNKNOWN, "io_getevents on the moved ring was not run")
    old = obs.get("getevents_old") or [None, None]
    if moved[0] < 0:
        return Outcome(
            Status.FAIL,
            f"io_getevents on the moved AIO ring returned {moved[0]} ({moved[1]}): "
            "the kernel did not follow the remap, so CRIU cannot restore AIO",
        )
    return Outcome(
        Status.PASS,
        f"io_getevents on the moved ring returned {moved[0]}; old address gives {old[1] or old[0]}",
    )


def aio_reopen_enxio(obs: dict[str, Any]) -> Outcome:
    if obs.get("io_setup_errno"):
        return Outcome(Status.UNKNOWN, f"no AIO ring to reopen: io_setup failed with {obs['io_setup_errno']}")
    if "reopen_errno" not in obs:
        why = f": {obs['error']}" if obs.get("error") else ""
        return Outcome(Status.UNKNOWN, f"the AIO ring could not be set up for the reopen test{why}")
    code = obs["reopen_errno"]
    if code == "ENXIO":
        return Outcome(Status.PASS, "reopening the AIO ring via /proc/self/map_files fails with ENXIO")
    if code is None:
        return Outcome(
            Status.FAIL, "reopening the AIO ring via /proc/self/map_files succeeded; expected ENXIO"
        )
    if code in ("EPERM", "EACCES"):
        return Outcome(
            Status.UNKNOWN, f"opening /proc/self/map_files needs CAP_SYS_ADMIN ({code})", unobservable=True
        )
    return Outcome(Status.UNKNOWN, f"reopening the AIO ring failed with {code}, expected ENXIO")


def fdinfo_mnt_id_field(text: str) -> Outcome:
    mnt_id = fdinfo_mnt_id(text)
    if mnt_id is None:
        return Outcome(Status.FAIL, "fdinfo has no mnt_id line (kernel older than 3.15?)")
    return Outcome(Status.PASS, f"fdinfo has mnt_id ({mnt_id} for /)")


def config_option(option: str, obs: dict[str, Any]) -> Outcome:
    """`obs` holds the parsed config ('options', from parse_kconfig) and where it came from."""
    value = obs.get("options", {}).get(option)
    source = obs.get("path", "config")
    if value in ("y", "m"):
        return Outcome(Status.PASS, f"{option}={value} in {source}")
    if value is None:
        return Outcome(Status.FAIL, f"{option} is absent from {source}")
    return Outcome(Status.FAIL, f"{option} is not set in {source}")


PAGE_SIZE = 4096  # the canary's AIO read, one page
INSTALL_CRIU_REMEDY = (
    "install criu: build one that fits this kernel with `kcheck build-criu` (into /usr/local/sbin), "
    "or the distro's package if it is newer than the kernel"
)
BUILD_CRIU_REMEDY = (
    "this criu is older than the kernel: build one that fits with `kcheck build-criu` "
    "(it installs /usr/local/sbin/criu beside the distro's), then put /usr/local/sbin first on PATH"
)


def criu_check(obs: dict[str, Any]) -> Outcome:
    if not obs.get("installed"):
        return Outcome(Status.SKIP, "criu is not installed")
    version = criu_version(str(obs.get("version_output", ""))) or "unknown version"
    which = f"criu {version} ({obs.get('path', 'criu')})"
    output = str(obs.get("output", ""))
    if obs.get("returncode") == 0:
        verdict = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
        return Outcome(Status.PASS, f"{which}: criu check passed ({verdict or 'no output'})")
    first = criu_first_error(output)
    # kerndat is criu's kernel feature detection: failing there means no check ran at all.
    why, remedy = "", None
    if "kerndat" in output or "kernel features detection" in output:
        why = ", before any check (its kernel feature detection failed)"
        if "vdso" in first.lower():  # criu's vDSO parser predates the kernel's layout
            why += "; this criu is too old for the kernel"
            remedy = BUILD_CRIU_REMEDY
    detail = f"{which}: criu check exit {obs.get('returncode')}{why}: {first}"
    return Outcome(Status.FAIL, detail, remedy=remedy)


def criu_trial(obs: dict[str, Any]) -> Outcome:
    """A real dump and restore of a canary: it must go on counting, reap its AIO event,
    and still see its overlay file by the overlay path."""
    if not obs.get("installed"):
        return Outcome(
            Status.FAIL, "criu is not installed, so nothing can be checkpointed", remedy=INSTALL_CRIU_REMEDY
        )
    version = criu_version(str(obs.get("version_output", ""))) or "unknown version"
    which = f"criu {version} ({obs.get('path', 'criu')})"
    stage = obs.get("stage")
    if stage == "canary":
        return Outcome(Status.UNKNOWN, f"{which}: the canary did not start: {obs.get('canary_error')}")
    for step in ("dump", "restore"):
        result = obs.get(step)
        if stage == step and isinstance(result, dict):
            too_old = "vdso" in str(result.get("first_error", "")).lower()
            return Outcome(
                Status.FAIL,
                f"{which}: criu {step} of the canary failed (exit {result.get('returncode')}): "
                f"{result.get('first_error')}",
                remedy=BUILD_CRIU_REMEDY if too_old else None,
            )
    if stage != "done":
        return Outcome(Status.UNKNOWN, f"{which}: the trial stopped at {stage}")
    before, after = obs.get("count_at_dump"), obs.get("count_after_restore")
    if not (isinstance(before, int) and isinstance(after, int) and after > before):
        return Outcome(
            Status.FAIL, f"{which}: the restored canary does not count on (at dump {before}, now {after})"
        )
    report = obs.get("canary_report")
    if not isinstance(report, dict):
        return Outcome(
            Status.FAIL, f"{which}: the restored canary did not answer (counted {before} -> {after})"
        )
    expected, link = obs.get("expected_path"), report.get("fd_link")
    if link != expected:
        return Outcome(
            Status.FAIL, f"{which}: after restore the overlay file's fd link is {link}, not {expected}"
        )
    results = report.get("aio_results")
    if results != [PAGE_SIZE]:
        got = f"errno {report['aio_errno']}" if report.get("aio_errno") else f"events {results}"
        return Outcome(
            Status.FAIL,
            f"{which}: after restore the AIO ring gave {got}, not the one completed {PAGE_SIZE}-byte read",
        )
    dump, restore = obs.get("dump") or {}, obs.get("restore") or {}
    return Outcome(
        Status.PASS,
        f"{which}: dumped and restored a canary (PID namespace, overlay file open and mmapped, AIO ring "
        f"with a completed event) in {dump.get('seconds')}s + {restore.get('seconds')}s; "
        f"it counted on from {before} to {after}, reaped its AIO read, and its fd still names {link}",
    )


def kernel_release(obs: dict[str, Any]) -> Outcome:
    release = parse_release(str(obs.get("release", "")))
    if release is None:
        return Outcome(Status.UNKNOWN, f"cannot parse kernel release {obs.get('release')!r}")
    implied = []
    for patchset in obs.get("patchsets", []):
        below = patchset.needed_below
        if patchset.needed_for(release.version):
            implied.append(f"{patchset.name} needed unless backported (< {below})")
        elif release.version >= below:
            implied.append(f"{patchset.name} fixed (>= {below})")
        else:
            implied.append(f"{patchset.name} not applicable (< {patchset.needed_from})")
    summary = "; ".join(implied) or "no patchsets to compare"
    return Outcome(Status.PASS, f"{release.raw} is version {release.version}: {summary}")


def by_version(release_text: str, min_version: str | None, why_not_observed: str) -> Outcome | None:
    """PASS on version evidence when the release alone carries the fix; None when it does not decide."""
    release = parse_release(release_text)
    if release is None or min_version is None or release.version < parse_version(min_version):
        return None
    return Outcome(
        Status.PASS,
        f"not observed live ({why_not_observed}); kernel {release.version} >= {min_version} "
        "has the fix by version",
        evidence=Evidence.VERSION,
    )


def _tag_version(tag: str) -> KernelVersion | None:
    """The release a catalog tag names (v4.2-rc2); None for a site's other tags (for-linus-4.2),
    which say nothing about which releases hold the commit."""
    try:
        return parse_version(tag.removeprefix("v"))
    except ValueError:
        return None


def _recorded_patchsets(record: Any) -> set[str]:
    """The patchsets a build record (checked against its schema when read) names."""
    return {entry["name"] for entry in record["patchsets"]} if record else set()


def offline_fix(
    release_text: str, patchset: Patchset | None, min_version: str | None, image: dict
) -> Outcome:
    """Judge a live-only check for a kernel that is not running, by the evidence that decides.

    The image's evidence (a kcheck build record, the distro changelog naming commits) counts
    only for commits the release's version does not already imply; when there are none, the
    version decides. What nothing decides stays UNKNOWN, never PASS."""
    not_live = "judged offline"
    release = parse_release(release_text)
    beyond_version = [
        commit
        for commit in (patchset.commits if patchset else ())
        if release is None or (shipped_in := _tag_version(commit.tag)) is None or release.version < shipped_in
    ]
    changelog = image.get("changelog")
    missing: list[str] = []
    if patchset is not None and beyond_version:
        if patchset.name in _recorded_patchsets(image.get("record")):
            return Outcome(
                Status.PASS,
                f"build record {image.get('record_path')} says kcheck build-kernel applied {patchset.name}",
                evidence=Evidence.TREE,
            )
        if release is not None and isinstance(changelog, str):
            text = changelog.lower()
            missing = [
                f"{commit.sha[:10]} {commit.subject!r}"
                for commit in beyond_version
                if not (commit.sha[:10] in text or commit.subject.lower() in text)
            ]
            if not missing:
                return Outcome(
                    Status.PASS,
                    f"changelog {image.get('changelog_path')} names every {patchset.name} commit "
                    f"the {release.version} release lacks",
                    evidence=Evidence.TREE,
                )
    if decided := by_version(release_text, min_version, not_live):
        return decided
    seen = [f"changelog lacks {', '.join(missing)}"] if missing else []
    problems = [f"cannot use {image[key]}" for key in ("record_error", "changelog_error") if image.get(key)]
    seen += problems
    if not (image.get("record") or isinstance(changelog, str) or problems):
        seen.append("no build record or kernel changelog in the image")
    if release is None:
        seen.append(f"kernel release {release_text!r} has no version kcheck can read, so it decides nothing")
    elif min_version:
        seen.append(f"kernel {release_text} is older than {min_version}")
    return Outcome(
        Status.UNKNOWN,
        f"{not_live}: "
        + "; ".join(seen or ["no evidence decides this"])
        + "; boot it with kcheck probe --boot for a live answer",
        evidence=Evidence.VERSION if min_version else None,
    )
