"""Parsers of /proc text and kernel configs: correct on real text, total on garbage."""

import re

from conftest import load_capture
from hypothesis import given
from hypothesis import strategies as st

from kcheck.core.procparse import (
    fdinfo_mnt_id,
    mapping_at,
    mount_at,
    parse_fdinfo,
    parse_kconfig,
    parse_maps,
    parse_mountinfo,
    unescape_proc_path,
)

OVERLAY = load_capture("overlay-fixed-6.18.json")


def test_fdinfo():
    fields = parse_fdinfo("pos:\t0\nflags:\t02100000\nmnt_id:\t66\nino:\t7\n")
    assert fields == {"pos": "0", "flags": "02100000", "mnt_id": "66", "ino": "7"}
    assert fdinfo_mnt_id("pos:\t0\nflags:\t0\n") is None
    assert fdinfo_mnt_id("mnt_id:\tx\n") is None


def test_mountinfo_real_capture():
    mounts = parse_mountinfo(OVERLAY["mountinfo"])
    overlay = mount_at(mounts, "/tmp/kcheck/merged")
    assert overlay is not None
    assert (overlay.mount_id, overlay.fstype, overlay.major, overlay.minor) == (66, "overlay", 0, 40)
    assert mount_at(mounts, "/nowhere") is None


def test_mountinfo_escapes_and_optional_fields():
    line = "36 35 98:0 /mnt1 /mnt/my\\040dir rw,noatime master:1 shared:2 - ext3 /dev/root rw\n"
    (mount,) = parse_mountinfo(line)
    assert mount.mount_point == "/mnt/my dir"
    assert mount.fstype == "ext3"
    assert unescape_proc_path("a\\134b") == "a\\b"


def test_maps_hex_device_numbers():
    mappings = parse_maps(OVERLAY["maps"])
    address = OVERLAY["files"][0]["map_address"]
    mapping = mapping_at(mappings, address)
    assert mapping is not None
    assert (mapping.major, mapping.minor) == (0, 0x28)
    assert mapping.length == 4096


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
