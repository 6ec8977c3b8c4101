"""Parsers of /proc text and kernel configs: correct on real text, total on garbage."""

import re

import pytest
from conftest import load_capture
from hypothesis import given
from hypothesis import strategies as st

from kcheck.core.kconfig import parse_kconfig
from kcheck.core.procparse import (
    Mapping,
    Mount,
    fdinfo_mnt_id,
    mapping_at,
    mount_at,
    mount_by_id,
    parse_fdinfo,
    parse_maps,
    parse_mountinfo,
    unescape_proc_path,
)

OVERLAY = load_capture("overlay-fixed-6.18.json")


def test_fdinfo():
    text = (
        "pos:\t0\nflags:\t02100000\nmnt_id:\t66\nino:\t7\n"
        "inotify wd:1 ino:2 sdev:3\n"  # a key with a space is a record, not a field
        "tfd:        5 events:       19 data: 0\n"  # the first colon ends the key
        "no-colon\n"
        ":no key\n"
        "pos:\t9\n"  # the first of a repeated key counts
    )
    assert parse_fdinfo(text) == {
        "pos": "0",
        "flags": "02100000",
        "mnt_id": "66",
        "ino": "7",
        "tfd": "5 events:       19 data: 0",
    }


@pytest.mark.parametrize(
    ("text", "mnt_id"),
    [
        ("pos:\t0\nmnt_id:\t 66 \n", 66),
        ("pos:\t0\nflags:\t0\n", None),
        ("mnt_id:\tx\n", None),
        ("mnt_id:\t-1\n", None),
    ],
)
def test_fdinfo_mnt_id(text, mnt_id):
    assert fdinfo_mnt_id(text) == mnt_id


def test_mountinfo_real_capture():
    mounts = parse_mountinfo(OVERLAY["mountinfo"])
    assert [m.mount_id for m in mounts] == [43, 45, 58, 63, 66]
    overlay = Mount(66, 63, 0, 40, "/", "/tmp/kcheck/merged", "overlay", "overlay")
    assert mount_at(mounts, "/tmp/kcheck/merged") == overlay
    assert mount_by_id(mounts, 66) == overlay
    assert mount_at(mounts, "/nowhere") is None
    assert mount_by_id(mounts, 99) is None


def test_mountinfo_escapes_and_optional_fields():
    line = "36 35 98:0 /mnt1 /mnt/my\\040dir rw,noatime master:1 shared:2 - ext3 /dev/my\\040root rw\n"
    assert parse_mountinfo(line) == [Mount(36, 35, 98, 0, "/mnt1", "/mnt/my dir", "ext3", "/dev/my root")]
    assert unescape_proc_path("a\\134b") == "a\\b"


def test_mountinfo_skips_malformed_lines_and_reads_on():
    good = "30 1 0:20 / /a rw - tmpfs none rw"
    malformed = [
        "31 1 0:21 / /b rw tmpfs none rw",  # no separator
        "32 1 0:22 / /c - tmpfs none rw",  # no mount options
        "33 1 0:23 / /d rw - tmpfs",  # no source
        "x 1 0:24 / /e rw - tmpfs none rw",
        "35 y 0:25 / /f rw - tmpfs none rw",
        "36 1 25 / /g rw - tmpfs none rw",
        "37 1 a:26 / /h rw - tmpfs none rw",
        "38 1 0:b / /i rw - tmpfs none rw",
    ]
    text = "\n".join([good, *malformed, good.replace("/a", "/z")])
    assert [m.mount_point for m in parse_mountinfo(text)] == ["/a", "/z"]


def test_mountinfo_minimal_tail_and_first_separator():
    # The source is the last field the parser needs; the first " - " ends the optional fields.
    text = "40 1 0:50 / /m rw - tmpfs src\n41 1 0:51 / /n rw - fuse.x host:/ rw,opt - more\n"
    assert parse_mountinfo(text) == [
        Mount(40, 1, 0, 50, "/", "/m", "tmpfs", "src"),
        Mount(41, 1, 0, 51, "/", "/n", "fuse.x", "host:/"),
    ]


def test_mount_at_takes_the_topmost_mount():
    text = "50 1 0:60 / /t rw - tmpfs a rw\n51 50 0:61 / /t rw - overlay b rw\n"
    assert mount_at(parse_mountinfo(text), "/t") == Mount(51, 50, 0, 61, "/", "/t", "overlay", "b")


def test_maps_hex_device_numbers():
    mappings = parse_maps(OVERLAY["maps"])
    address = OVERLAY["files"][0]["map_address"]
    mapping = mapping_at(mappings, address)
    assert mapping is not None
    assert (mapping.major, mapping.minor) == (0, 0x28)
    assert mapping.length == 4096
    assert mapping_at(mappings, address + 1) is None


def test_maps_fields_and_malformed_lines():
    text = (
        "7f00-7f10 r-xp 0001a000 fd:1b 1234   /usr/lib/libx.so\n"
        "not a mapping\n"
        "7f10-7f20 rw-s 00000010 10:02 5359 /[aio] (deleted)\n"
        "7f20-7f30 rw-p 00000000 00:00 0\n"
    )
    assert parse_maps(text) == [
        Mapping(0x7F00, 0x7F10, "r-xp", 0x1A000, 0xFD, 0x1B, 1234, "/usr/lib/libx.so"),
        Mapping(0x7F10, 0x7F20, "rw-s", 0x10, 0x10, 0x2, 5359, "/[aio] (deleted)"),
        Mapping(0x7F20, 0x7F30, "rw-p", 0, 0, 0, 0, ""),
    ]


def test_kconfig():
    text = '# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S="x y"\n'
    assert parse_kconfig(text) == {"CONFIG_A": "y", "CONFIG_B": "m", "CONFIG_C": "n", "CONFIG_S": '"x y"'}
    assert parse_kconfig("just some text\n") == {}


proc_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=400) | st.lists(
    st.sampled_from(
        [
            "36",
            "35",
            "0:40",
            "/",
            "-",
            "overlay",
            " ",
            "\n",
            "mnt_id:",
            "\t",
            "7f00-7f01",
            "r--s",
            "00:28",
            "CONFIG_X=y",
            "# CONFIG_Y is not set",
            "\\040",
        ]
    ),
    max_size=60,
).map("".join)


@given(proc_text)
def test_parsers_never_crash(text):
    parse_fdinfo(text)
    fdinfo_mnt_id(text)
    for mount in parse_mountinfo(text):
        assert re.search(rf"0*{mount.mount_id} 0*{mount.parent_id} 0*{mount.major}:0*{mount.minor}", text)
    for mapping in parse_maps(text):
        assert re.search(rf"0*{mapping.start:x}-0*{mapping.end:x} {re.escape(mapping.perms)}", text)
    assert all(k.startswith("CONFIG_") for k in parse_kconfig(text))
