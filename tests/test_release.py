import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kcheck.core.release import KernelVersion, parse_release, parse_version, version_from_makefile


@pytest.mark.parametrize(
    ("raw", "version", "local"),
    [
        ("6.18.44-fc-v782", KernelVersion(6, 18, 44), "-fc-v782"),
        ("6.1.0-28-amd64", KernelVersion(6, 1, 0), "-28-amd64"),
        ("3.19.0-15-generic", KernelVersion(3, 19, 0), "-15-generic"),
        ("4.2", KernelVersion(4, 2, 0), ""),
        ("5.15.0-1051-azure\n", KernelVersion(5, 15, 0), "-1051-azure"),
    ],
)
def test_parse_release(raw, version, local):
    release = parse_release(raw)
    assert release is not None
    assert release.version == version
    assert release.local == local


def test_release_candidate_sorts_before_final():
    rc2 = parse_release("4.2.0-rc2").version
    assert rc2.rc == 2
    assert rc2 < parse_version("4.2")
    assert rc2 > parse_version("4.1.99")
    assert str(rc2) == "4.2.0-rc2"


@pytest.mark.parametrize("bad", ["", "linux", "v4.2", "4", "4.2-foo"])
def test_parse_version_rejects(bad):
    message = f"not a kernel version: {bad!r} (expected e.g. 4.2 or 3.19.0)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_version(bad)


def test_parse_release_none_for_garbage():
    assert parse_release("not-a-kernel") is None


@pytest.mark.parametrize(
    ("text", "raw", "version"),
    [
        (
            "# SPDX\nVERSION = 3\nPATCHLEVEL = 19\nSUBLEVEL = 8\nEXTRAVERSION = -rc1\nNAME = x\n",
            "3.19.8-rc1",
            KernelVersion(3, 19, 8, 1),
        ),
        ("VERSION = 4\nPATCHLEVEL = 2\n", "4.2.0", KernelVersion(4, 2, 0)),  # SUBLEVEL, EXTRAVERSION optional
        ("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL =\nEXTRAVERSION =\n", "6.1.0", KernelVersion(6, 1, 0)),
    ],
)
def test_version_from_makefile(text, raw, version):
    release = version_from_makefile(text)
    assert (release.raw, release.version) == (raw, version)


@pytest.mark.parametrize(
    "text",
    ["all:\n\techo hi\n", "VERSION = 3\n", "PATCHLEVEL = 19\n", "VERSION = 3\nPATCHLEVEL = x\n"],
)
def test_version_from_makefile_rejects_non_kernel(text):
    with pytest.raises(
        ValueError, match="^Makefile has no numeric VERSION and PATCHLEVEL: not a kernel tree$"
    ):
        version_from_makefile(text)


def test_version_from_makefile_rejects_a_version_it_cannot_read():
    with pytest.raises(ValueError, match=r"^Makefile declares an unreadable version '12345\.1\.0'$"):
        version_from_makefile("VERSION = 12345\nPATCHLEVEL = 1\n")


@given(st.text())
def test_parse_release_is_total(text):
    release = parse_release(text)
    if release is not None:
        assert release.raw == text.strip()
        assert release.raw.endswith(release.local)
        assert parse_version(str(release.version)) == release.version  # the version round-trips
