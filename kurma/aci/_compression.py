"""Archive compression: detection by magic bytes and streaming decompression.

appc allows plain, gzip, bzip2 and xz tars; zstd is Kurma's extension. Detection looks at
the content, never at a file name, because images arrive over HTTP and through pipes.
Every reader returned here streams: nothing holds the whole archive in memory, and none of
them closes the caller's file.
"""

from __future__ import annotations

import bz2
import enum
import gzip
import io
import lzma
import zlib
from typing import BinaryIO, cast

from kurma.errors import ArchiveError


class Compression(enum.Enum):
    """How an archive's tar stream is compressed."""

    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


_MAGICS: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", Compression.GZIP),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
)
MAGIC_LENGTH = 6

# Errors the decompressors raise for damaged input. bz2 and lzma raise OSError/EOFError
# without an errno for bad data; an OSError *with* an errno is a real I/O failure and is
# not translated (see `translate_decompression_error`).
_FORMAT_ERRORS: tuple[type[BaseException], ...] = (zlib.error, lzma.LZMAError, EOFError)


def detect_compression(head: bytes) -> Compression:
    """The compression of a stream whose first bytes are `head` (6 bytes suffice).

    Anything without a known magic is NONE: a plain tar (with `ustar` at offset 257, or an
    old v7 tar without it) or garbage, which the tar reader then rejects.
    """
    for magic, kind in _MAGICS:
        if head.startswith(magic):
            return kind
    return Compression.NONE


class _Prefixed(io.RawIOBase):
    """A raw stream that yields `head` and then the rest of `rest` (for unseekable input)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def peek_head(f: BinaryIO) -> tuple[bytes, BinaryIO]:
    """Read the first bytes of `f` and return them with a stream that still starts there."""
    if f.seekable():
        pos = f.tell()
        head = f.read(MAGIC_LENGTH)
        f.seek(pos)
        return head, f
    head = b""
    while len(head) < MAGIC_LENGTH:
        more = f.read(MAGIC_LENGTH - len(head))
        if not more:
            break
        head += more
    return head, cast(BinaryIO, io.BufferedReader(_Prefixed(head, f), 1 << 16))


def open_decompressed(f: BinaryIO) -> BinaryIO:
    """A streaming reader of the uncompressed bytes of `f`, whatever its compression."""
    head, f = peek_head(f)
    kind = detect_compression(head)
    if kind is Compression.GZIP:
        return cast(BinaryIO, gzip.GzipFile(fileobj=f, mode="rb"))
    if kind is Compression.BZIP2:
        return cast(BinaryIO, bz2.BZ2File(f, mode="rb"))
    if kind is Compression.XZ:
        return cast(BinaryIO, lzma.LZMAFile(f, mode="rb"))
    if kind is Compression.ZSTD:
        import zstandard  # imported lazily: only zstd images need it

        reader = zstandard.ZstdDecompressor().stream_reader(
            f, read_across_frames=True, closefd=False
        )
        return cast(BinaryIO, reader)
    return f


def translate_decompression_error(exc: BaseException) -> ArchiveError | None:
    """An ArchiveError for a decompressor's complaint about bad data, else None."""
    bad = isinstance(exc, _FORMAT_ERRORS) or (isinstance(exc, OSError) and exc.errno is None)
    if not bad:
        try:
            import zstandard
        except ImportError:  # pragma: no cover - zstandard is a dependency
            return None
        bad = isinstance(exc, zstandard.ZstdError)
    if not bad:
        return None
    return ArchiveError(f"corrupt compressed stream ({type(exc).__name__}: {exc})")


def compressed_writer(raw: BinaryIO, compression: Compression) -> BinaryIO:
    """A writer that compresses into `raw` deterministically (no names, no timestamps).

    Closing the writer flushes the compressed trailer but leaves `raw` open.
    """
    if compression is Compression.GZIP:
        # mtime=0 and an empty filename keep the gzip header free of host facts.
        return cast(
            BinaryIO, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
        )
    if compression is Compression.BZIP2:
        return cast(BinaryIO, bz2.BZ2File(raw, mode="wb"))
    if compression is Compression.XZ:
        return cast(BinaryIO, lzma.LZMAFile(raw, mode="wb", check=lzma.CHECK_CRC64))
    if compression is Compression.ZSTD:
        import zstandard

        writer = zstandard.ZstdCompressor(level=10).stream_writer(raw, closefd=False)
        return cast(BinaryIO, writer)
    return cast(BinaryIO, _Unclosing(raw))


class _Unclosing(io.RawIOBase):
    """Passes writes through to `raw`; closing it does not close `raw`."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._raw.write(b)
        return len(b)
