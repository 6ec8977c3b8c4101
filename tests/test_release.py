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
    with pytest.raises(ValueError):
        parse_version(bad)


def test_parse_release_none_for_garbage():
    assert parse_release("not-a-kernel") is None


def test_version_from_makefile():
    text = "# SPDX\nVERSION = 3\nPATCHLEVEL = 19\nSUBLEVEL = 8\nEXTRAVERSION = -rc1\nNAME = x\n"
    release = version_from_makefile(text)
    assert release.version == KernelVersion(3, 19, 8, 1)
    assert release.raw == "3.19.8-rc1"


def test_version_from_makefile_rejects_non_kernel():
    with pytest.raises(ValueError, match="not a kernel tree"):
        version_from_makefile("all:\n\techo hi\n")


@given(st.text())
def test_parse_release_is_total(text):
    release = parse_release(text)
    if release is not None:
        assert release.raw == text.strip()
        assert release.raw.endswith(release.local)
        assert parse_version(str(release.version)) == release.version  # the version round-trips
