"""read_maybe_gzipped: gzip read with zlib directly (the gzip module costs the probe's start-up),
so each case the gzip module handles is checked here against it."""

from __future__ import annotations

import gzip

import pytest

from kcheck.core.files import CorruptGzip, InputRefused, read_maybe_gzipped

TEXT = b"CONFIG_AIO=y\n" * 1000


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(TEXT),
        gzip.compress(TEXT[:5000]) + gzip.compress(TEXT[5000:]),  # two members, as `cat a.gz b.gz`
        gzip.compress(TEXT) + b"\0" * 512,  # zero padding after the member (tape blocks)
        gzip.compress(TEXT[:5000]) + b"\0" * 7 + gzip.compress(TEXT[5000:]),  # and between members
        b"".join(gzip.compress(TEXT[i : i + 13]) for i in range(0, len(TEXT), 13)),  # 1,000 members
        TEXT,  # not gzip: read as it is
    ],
    ids=["one-member", "two-members", "zero-padded", "padded-between", "many-members", "plain"],
)
def test_what_gzip_reads_is_read_alike(tmp_path, data):
    (tmp_path / "config").write_bytes(data)
    assert read_maybe_gzipped(tmp_path / "config", max(len(TEXT), len(data))) == TEXT
    if data != TEXT:
        assert gzip.decompress(data) == TEXT


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(TEXT)[:-20],  # cut short
        gzip.compress(TEXT) + b"trailing garbage",
        b"\x1f\x8b\x08\x00garbage",
    ],
    ids=["truncated", "trailing-garbage", "bad-header"],
)
def test_what_gzip_refuses_is_corrupt(tmp_path, data):
    (tmp_path / "config").write_bytes(data)
    with pytest.raises(CorruptGzip):
        read_maybe_gzipped(tmp_path / "config", len(TEXT))
    with pytest.raises((OSError, EOFError)):
        gzip.decompress(data)


def test_the_limit_counts_decompressed_bytes_across_members(tmp_path):
    (tmp_path / "config").write_bytes(gzip.compress(TEXT) * 2)
    assert read_maybe_gzipped(tmp_path / "config", 2 * len(TEXT)) == TEXT * 2
    with pytest.raises(InputRefused, match="decompresses to more than"):
        read_maybe_gzipped(tmp_path / "config", 2 * len(TEXT) - 1)
