"""Parsers for /proc text (fdinfo, mountinfo, maps).

All pure and total: malformed input yields fewer records, never an exception, so the
verdicts built on them can turn "nothing usable" into an honest FAIL or UNKNOWN.
"""

from __future__ import annotations

import re
from collections import namedtuple


def parse_fdinfo(text: str) -> dict[str, str]:
    """`/proc/PID/fdinfo/FD` as a dict of its `key:<tab>value` lines."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            fields.setdefault(key, value.strip())
    return fields


def fdinfo_mnt_id(text: str) -> int | None:
    value = parse_fdinfo(text).get("mnt_id", "")
    return int(value) if value.isdigit() else None


_OCTAL_ESCAPE = r"\\([0-7]{3})"  # patterns compile on first use (re's cache), not at import


def unescape_proc_path(path: str) -> str:
    """Undo the octal escaping (`\\040` for space) that mountinfo and maps apply to paths."""
    return re.sub(_OCTAL_ESCAPE, lambda m: chr(int(m.group(1), 8)), path) if "\\" in path else path


class Mount(
    namedtuple(
        "Mount", ("mount_id", "parent_id", "major", "minor", "root", "mount_point", "fstype", "source")
    )
):
    """One line of /proc/PID/mountinfo: ids and device numbers are ints, the rest text."""

    __slots__ = ()


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, tail_fields = head.split(), tail.split()
        if not sep or len(fields) < 6 or len(tail_fields) < 2:
            continue
        majmin = fields[2].split(":")
        if not (fields[0].isdigit() and fields[1].isdigit() and len(majmin) == 2):
            continue
        if not (majmin[0].isdigit() and majmin[1].isdigit()):
            continue
        mounts.append(
            Mount(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                major=int(majmin[0]),
                minor=int(majmin[1]),
                root=unescape_proc_path(fields[3]),
                mount_point=unescape_proc_path(fields[4]),
                fstype=tail_fields[0],
                source=unescape_proc_path(tail_fields[1]),
            )
        )
    return mounts


def mount_by_id(mounts: list[Mount], mount_id: int) -> Mount | None:
    return next((m for m in mounts if m.mount_id == mount_id), None)


def mount_at(mounts: list[Mount], mount_point: str) -> Mount | None:
    """The topmost mount at a mount point (the last one listed wins, as in the kernel)."""
    found = [m for m in mounts if m.mount_point == mount_point]
    return found[-1] if found else None


_MAPS_LINE = r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+)\s*(.*)$"


class Mapping(namedtuple("Mapping", ("start", "end", "perms", "offset", "major", "minor", "inode", "path"))):
    """One line of /proc/PID/maps: perms and path are text, the rest ints."""

    __slots__ = ()

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_maps(text: str) -> list[Mapping]:
    mappings = []
    line_pattern = re.compile(_MAPS_LINE)
    for line in text.splitlines():
        match = line_pattern.match(line)
        if not match:
            continue
        start, end, perms, offset, major, minor, inode, path = match.groups()
        mappings.append(
            Mapping(
                start=int(start, 16),
                end=int(end, 16),
                perms=perms,
                offset=int(offset, 16),
                major=int(major, 16),
                minor=int(minor, 16),
                inode=int(inode),
                path=path,
            )
        )
    return mappings


def mapping_at(mappings: list[Mapping], address: int) -> Mapping | None:
    """The mapping that starts exactly at `address`."""
    return next((m for m in mappings if m.start == address), None)
