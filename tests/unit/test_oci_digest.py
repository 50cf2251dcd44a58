"""Digests parse strictly, and the verifying reader refuses bad content as it streams."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kurma.errors import DigestMismatch, IncompleteBlob, InvalidDigest, OciError
from kurma.oci import Digest, Verifier, VerifyingReader, digest_of, parse_digest, verify_bytes

DATA = b"kurma layer " * 10_000
GOOD = digest_of(DATA)


class Trickle(io.RawIOBase):
    """A source returning at most `step` bytes per read, as a socket does."""

    def __init__(self, data: bytes, step: int = 777) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self._data[self._pos : self._pos + min(self._step, len(buffer))]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def test_parse_digest() -> None:
    d = parse_digest("sha256:" + "ab" * 32)
    assert (d.algorithm, d.hex, str(d), d.short) == (
        "sha256",
        "ab" * 32,
        "sha256:" + "ab" * 32,
        "ab" * 6,
    )
    assert parse_digest("sha512:" + "0" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "algorithm:encoded"),
        ("sha256", "algorithm:encoded"),
        (":" + "a" * 64, "algorithm:encoded"),
        ("sha256:", "algorithm:encoded"),
        ("SHA256:" + "a" * 64, "algorithm:encoded"),
        ("sha256:" + "a" * 63, "needs 64 hex digits, got 63"),
        ("sha512:" + "a" * 64, "needs 128 hex digits, got 64"),
        ("sha256:" + "g" * 64, "lowercase hex"),
        ("sha256:" + "A" * 64, "lowercase hex"),
        ("sha384:" + "a" * 96, "unsupported digest algorithm 'sha384'"),
        ("sha256+b64u:LCa0a2j", "unsupported digest algorithm"),
        ("sha256:" + "a" * 64 + "\n", "algorithm:encoded"),
    ],
)
def test_parse_digest_refuses(text: str, fragment: str) -> None:
    with pytest.raises(InvalidDigest) as info:
        parse_digest(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, OciError) and isinstance(info.value, ValueError)


def test_digest_of_and_verify_bytes() -> None:
    assert str(GOOD) == "sha256:" + hashlib.sha256(DATA).hexdigest()
    assert digest_of(DATA, "sha512").hex == hashlib.sha512(DATA).hexdigest()
    verify_bytes(DATA, GOOD)
    with pytest.raises(DigestMismatch) as info:
        verify_bytes(DATA + b"!", GOOD, "manifest")
    assert info.value.expected == str(GOOD)
    assert info.value.actual == str(digest_of(DATA + b"!"))
    assert str(info.value).startswith("manifest does not match its digest: expected sha256:")


def test_reader_passes_good_content_through() -> None:
    reader = VerifyingReader(Trickle(DATA), GOOD, len(DATA))
    assert io.BufferedReader(reader).read() == DATA
    assert reader.verifier.total == len(DATA)


def test_reader_feeds_a_decompressor() -> None:
    """A layer blob is verified compressed while gzip reads from it."""
    blob = gzip.compress(DATA)
    reader = VerifyingReader(io.BytesIO(blob), digest_of(blob), len(blob))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=io.BufferedReader(reader)) as unzipped:
        shutil.copyfileobj(unzipped, out)
    assert out.getvalue() == DATA


def test_reader_raises_at_eof_with_expected_and_actual() -> None:
    bad = bytearray(DATA)
    bad[5000] ^= 1
    reader = io.BufferedReader(VerifyingReader(Trickle(bytes(bad)), GOOD, len(DATA)))
    with pytest.raises(DigestMismatch) as info:
        reader.read()
    assert info.value.expected == str(GOOD)
    assert info.value.actual == str(digest_of(bytes(bad)))
    with pytest.raises(DigestMismatch):  # and again: a caught error never becomes a clean EOF
        reader.raw.finish()  # type: ignore[attr-defined]


def test_reader_stops_as_soon_as_the_size_is_passed() -> None:
    """An endless stream is cut off one byte past the declared size, not at EOF."""
    source = Trickle(DATA + b"x" * 10_000_000, step=1 << 16)
    reader = VerifyingReader(source, GOOD, len(DATA))
    with pytest.raises(DigestMismatch, match="more than the declared"):
        while reader.read(1 << 16):
            pass
    assert source._pos <= len(DATA) + (1 << 16)


def test_short_stream_is_incomplete_not_mismatched() -> None:
    reader = VerifyingReader(io.BytesIO(DATA[:1000]), GOOD, len(DATA))
    with pytest.raises(IncompleteBlob) as info:
        reader.read()
    assert (info.value.expected_size, info.value.actual_size) == (len(DATA), 1000)
    assert "interrupted" in str(info.value)


def test_without_size_only_the_digest_is_checked() -> None:
    assert VerifyingReader(io.BytesIO(DATA), GOOD).read() == DATA
    with pytest.raises(DigestMismatch):
        VerifyingReader(io.BytesIO(DATA[:-1]), GOOD).read()


def test_verifier_resumes_from_bytes_already_on_disk() -> None:
    """A resumed download feeds the partial file first, then streams the rest."""
    verifier = Verifier(GOOD, len(DATA))
    verifier.update(DATA[:4096])
    for i in range(4096, len(DATA), 1000):
        verifier.update(DATA[i : i + 1000])
    verifier.verify()
    assert verifier.actual() == GOOD


def test_finish_checks_what_the_consumer_left_unread() -> None:
    """A tar reader stops at its end-of-archive blocks; finish() reads and checks the rest."""
    reader = VerifyingReader(io.BytesIO(DATA), GOOD, len(DATA))
    assert reader.read(100) == DATA[:100]
    assert reader.finish() == GOOD
    assert reader.finish() == GOOD and reader.read() == b""
    tampered = VerifyingReader(io.BytesIO(DATA[:-1] + b"?"), GOOD, len(DATA))
    tampered.read(100)
    with pytest.raises(DigestMismatch):
        tampered.finish()


def test_reader_does_not_close_the_source() -> None:
    source = io.BytesIO(DATA)
    with VerifyingReader(source, GOOD) as reader:
        reader.read()
    assert not source.closed


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=5000), st.integers(1, 64))
def test_any_content_verifies_against_its_own_digest(data: bytes, step: int) -> None:
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    assert io.BufferedReader(VerifyingReader(Trickle(data, step), digest, len(data))).read() == data
