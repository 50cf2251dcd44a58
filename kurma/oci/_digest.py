"""Content digests (`sha256:<hex>`): parsing, hashing, and a reader that verifies as it streams.

OCI names every blob by the digest of its bytes, so a digest is only useful if Kurma can
recompute it: the grammar accepts any `algorithm:encoded` (OCI image-spec descriptor.md), but
only the registered algorithms Kurma can verify, sha256 and sha512, are accepted. Their
encoded part is lowercase hex of the exact length, as go-digest demands: a digest that
differs only in case would name a different file in a content-addressed store.

Verification happens while the bytes stream (`VerifyingReader`, `Verifier`): a layer is never
held in memory, and a stream that runs past its declared size stops at once instead of
filling the disk.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from kurma.errors import DigestMismatch, IncompleteBlob, InvalidDigest

# Hex length of each algorithm Kurma can verify (OCI image-spec "registered algorithms").
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

# OCI descriptor.md: algorithm-component ([a-z0-9]+) joined by [+._-], ':', encoded.
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated digest. `str()` gives the `algorithm:hex` form used on the wire."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def new_hash(self) -> Any:
        """A fresh hashlib object for this digest's algorithm."""
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        """The first 12 hex digits, as docker shows image and layer IDs."""
        return self.hex[:12]


def parse_digest(text: str) -> Digest:
    """Parse `algorithm:hex`; InvalidDigest says which rule it breaks."""
    if not isinstance(text, str) or _GRAMMAR.fullmatch(text) is None:
        raise InvalidDigest(str(text), "expected algorithm:encoded, such as sha256:<64 hex>")
    algorithm, _, encoded = text.partition(":")
    length = ALGORITHMS.get(algorithm)
    if length is None:
        known = ", ".join(sorted(ALGORITHMS))
        raise InvalidDigest(text, f"unsupported digest algorithm {algorithm!r} (known: {known})")
    if len(encoded) != length:
        raise InvalidDigest(text, f"{algorithm} needs {length} hex digits, got {len(encoded)}")
    if _HEX.fullmatch(encoded) is None:
        raise InvalidDigest(text, f"{algorithm} digits must be lowercase hex")
    return Digest(algorithm, encoded)


def digest_of(data: bytes, algorithm: str = "sha256") -> Digest:
    """The digest of `data` (a manifest or config held in memory)."""
    if algorithm not in ALGORITHMS:
        raise InvalidDigest(f"{algorithm}:", f"unsupported digest algorithm {algorithm!r}")
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


def verify_bytes(data: bytes, expected: Digest, what: str = "content") -> None:
    """Raise DigestMismatch unless `data` hashes to `expected`."""
    actual = digest_of(data, expected.algorithm)
    if actual != expected:
        raise DigestMismatch(str(expected), str(actual), what)


class Verifier:
    """Hashes chunks as they arrive and checks the total against a digest and size.

    Separate from the reader so a resumed download can feed the bytes it already has on
    disk first (`update`), then stream the rest.
    """

    def __init__(self, expected: Digest, size: int | None = None) -> None:
        self.expected = expected
        self.size = size
        self.total = 0
        self._hash = expected.new_hash()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Hash `chunk`; DigestMismatch as soon as the total passes the declared size."""
        self.total += len(chunk)
        if self.size is not None and self.total > self.size:
            raise DigestMismatch(
                str(self.expected),
                f"more than the declared {self.size} bytes",
                f"blob {self.expected}",
            )
        self._hash.update(chunk)

    def actual(self) -> Digest:
        """The digest of what has been fed so far."""
        return Digest(self.expected.algorithm, self._hash.hexdigest())

    def verify(self) -> None:
        """At the end: IncompleteBlob if short of the size, DigestMismatch if the hash differs."""
        if self.size is not None and self.total < self.size:
            raise IncompleteBlob(str(self.expected), self.size, self.total)
        actual = self.actual()
        if actual != self.expected:
            raise DigestMismatch(str(self.expected), str(actual), f"blob {self.expected}")


class VerifyingReader(io.RawIOBase):
    """A read-only stream over `source` that verifies its bytes against a digest.

    The check runs when `source` reports end of file, before the reader returns b"": a
    consumer that reads to the end (tar extraction, a copy to disk) never sees a clean EOF
    for bad content. It stops with DigestMismatch as soon as the stream passes `size`.
    Wrap it in io.BufferedReader, or hand it to gzip/zstd readers, as any raw stream.

    A consumer that stops before EOF (a tar reader stops at the end-of-archive blocks, and
    padding may follow) has verified nothing: call `finish()` after it, which reads the rest
    and checks. Nothing unpacked from the stream may be used before `finish()` returns.
    """

    def __init__(self, source: BinaryIO, expected: Digest, size: int | None = None) -> None:
        super().__init__()
        self._source = source
        self.verifier = Verifier(expected, size)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._done:
            return 0
        view = memoryview(buffer).cast("B")
        want = len(view)
        if want == 0:
            return 0
        if self.verifier.size is not None:
            # Ask for one byte past the size at most, enough to notice an over-long stream.
            want = min(want, self.verifier.size - self.verifier.total + 1)
        chunk = self._source.read(max(want, 1))
        if not chunk:
            self.verifier.verify()  # raises again on every later read: never a clean EOF
            self._done = True
            return 0
        self.verifier.update(chunk)
        view[: len(chunk)] = chunk
        return len(chunk)

    def finish(self) -> Digest:
        """Read whatever is left of `source`, verify, and return the digest (idempotent)."""
        while not self._done:
            chunk = self._source.read(1 << 20)
            if chunk:
                self.verifier.update(chunk)
                continue
            self.verifier.verify()
            self._done = True
        return self.verifier.expected

    def close(self) -> None:
        """Closes this reader only; the caller owns `source`."""
        super().close()
