"""Compression detection by magic bytes and streaming decompression of every format."""

from __future__ import annotations

import io
import os
import subprocess
import threading

import pytest

from kurma.aci import Compression, detect_compression, open_decompressed
from kurma.aci._compression import compressed_writer
from tests.archives import TarBuilder, compress

PAYLOAD = TarBuilder().base().file("rootfs/f", os.urandom(3000) + bytes(200_000)).data()

TOOLS = {
    Compression.GZIP: ["gzip", "-c"],
    Compression.BZIP2: ["bzip2", "-c"],
    Compression.XZ: ["xz", "-c"],
    Compression.ZSTD: ["zstd", "-cq"],
}


@pytest.mark.parametrize("kind", list(Compression))
def test_detect_compression_by_magic(kind: Compression) -> None:
    """Each format is recognised from its first bytes; a plain tar is NONE."""
    assert detect_compression(compress(PAYLOAD, kind)[:6]) is kind


@pytest.mark.parametrize("head", [b"", b"\x1f", b"garbage", PAYLOAD[:512]])
def test_detect_compression_unknown_is_none(head: bytes) -> None:
    """Short, unknown or plain-tar heads are NONE (the tar reader judges them)."""
    assert detect_compression(head) is Compression.NONE


def test_plain_tar_has_ustar_magic() -> None:
    assert PAYLOAD[257:262] == b"ustar"


@pytest.mark.parametrize("kind", list(TOOLS))
def test_open_decompressed_reads_system_tool_output(kind: Compression) -> None:
    """What gzip/bzip2/xz/zstd compress, open_decompressed streams back exactly."""
    packed = subprocess.run(TOOLS[kind], input=PAYLOAD, check=True, capture_output=True).stdout
    assert open_decompressed(io.BytesIO(packed)).read() == PAYLOAD


@pytest.mark.parametrize("kind", list(Compression))
def test_open_decompressed_from_unseekable_pipe(kind: Compression) -> None:
    """A pipe cannot seek back after detection: the peeked head is replayed."""
    r, w = os.pipe()
    data = compress(PAYLOAD, kind)

    def feed() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with os.fdopen(r, "rb", buffering=0) as f:
            assert open_decompressed(f).read() == PAYLOAD
    finally:
        writer.join()


def test_multi_member_gzip_is_read_to_the_end() -> None:
    """Concatenated gzip members (as `cat a.gz b.gz`) decompress as one stream."""
    half = len(PAYLOAD) // 2
    data = compress(PAYLOAD[:half], Compression.GZIP) + compress(PAYLOAD[half:], Compression.GZIP)
    assert open_decompressed(io.BytesIO(data)).read() == PAYLOAD


def test_open_decompressed_does_not_close_the_source() -> None:
    src = io.BytesIO(compress(PAYLOAD, Compression.GZIP))
    reader = open_decompressed(src)
    reader.read()
    reader.close()
    assert not src.closed


@pytest.mark.parametrize("kind", list(Compression))
def test_compressed_writer_round_trip_and_is_deterministic(kind: Compression) -> None:
    """The build side's writer produces what the reader and system tools accept, twice alike."""
    outputs = []
    for _ in range(2):
        raw = io.BytesIO()
        writer = compressed_writer(raw, kind)
        writer.write(PAYLOAD)
        writer.close()
        assert not raw.closed
        outputs.append(raw.getvalue())
    assert outputs[0] == outputs[1]
    assert open_decompressed(io.BytesIO(outputs[0])).read() == PAYLOAD


def test_gzip_writer_header_has_no_name_and_zero_mtime() -> None:
    """RFC 1952 header: FLG (byte 3) without FNAME, MTIME (bytes 4-7) zero."""
    raw = io.BytesIO()
    writer = compressed_writer(raw, Compression.GZIP)
    writer.write(b"x")
    writer.close()
    header = raw.getvalue()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0"
