"""A small streaming reader of tar headers: ustar, PAX (`x`/`g`) and GNU long names.

Why not `tarfile`: it builds a TarInfo per member with name decoding, sparse probing and
seek bookkeeping we do not need, it decodes PAX values as text (xattrs are bytes), and its
per-member overhead dominated the import profile of a Debian rootfs. This reader only turns
512-byte headers into `TarEntry` values; the caller consumes each entry's data from the same
`ChunkReader` before asking for the next header, so the archive is read exactly once.
"""

from __future__ import annotations

import base64
import enum
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from kurma.errors import ArchiveError

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)


class EntryType(enum.Enum):
    """What a tar entry creates."""

    FILE = "file"
    DIR = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHARDEV = "character device"
    BLOCKDEV = "block device"
    FIFO = "fifo"


_TYPES = {
    b"0": EntryType.FILE,
    b"\0": EntryType.FILE,
    b"7": EntryType.FILE,  # contiguous file: a regular file everywhere but on Masscomp
    b"1": EntryType.HARDLINK,
    b"2": EntryType.SYMLINK,
    b"3": EntryType.CHARDEV,
    b"4": EntryType.BLOCKDEV,
    b"5": EntryType.DIR,
    b"6": EntryType.FIFO,
}


@dataclass(slots=True)
class TarEntry:
    """One archive member, with PAX and GNU long-name overrides already applied."""

    name: str
    type: EntryType
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    linkname: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)


def padding(size: int) -> int:
    """Bytes of zero padding after `size` bytes of member data."""
    return -size % BLOCK


def _decode(raw: bytes) -> str:
    # Names are bytes in a tar; surrogateescape round-trips any of them to the filesystem.
    return raw.decode("utf-8", "surrogateescape")


def _number(field_: bytes, what: str, name: str) -> int:
    """An octal (NUL/space terminated) or GNU base-256 numeric header field."""
    if field_[0] & 0x80:
        value = int.from_bytes(field_, "big")
        if field_[0] == 0xFF:  # negative base-256 (pre-1970 mtimes)
            return value - (1 << (8 * len(field_)))
        return value & ~(0x80 << (8 * (len(field_) - 1)))
    digits = field_.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if not digits.isdigit():
        raise ArchiveError(f"bad {what} field {digits!r} in tar header", name)
    try:
        return int(digits, 8)
    except ValueError:
        raise ArchiveError(f"bad {what} field {digits!r} in tar header", name) from None


def _check_checksum(block: bytes, name: str) -> None:
    stored = _number(block[148:156], "checksum", name)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored == unsigned:
        return
    # Some old tars summed signed chars; accept that too, like GNU tar and tarfile.
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
    if stored != signed:
        raise ArchiveError("tar header checksum mismatch (corrupt or not a tar)", name)


def parse_pax(data: bytes, name: str) -> dict[str, bytes]:
    """The records of a PAX extended header: `"%d %s=%s\\n"`, values kept as bytes."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad the record block with NULs
            break
        space = data.find(b" ", pos, pos + 20)
        length_text = data[pos:space]
        if space < 0 or not length_text.isdigit():
            raise ArchiveError("malformed PAX header record", name)
        end = pos + int(length_text)
        record = data[space + 1 : end]
        if end > len(data) or end <= space or not record.endswith(b"\n") or b"=" not in record:
            raise ArchiveError("malformed PAX header record", name)
        key, _, value = record[:-1].partition(b"=")
        records[_decode(key)] = value
        pos = end
    return records


def _pax_mtime_ns(value: bytes, name: str) -> int:
    text = value.decode("ascii", "replace")
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise ArchiveError(f"bad PAX mtime {text!r}", name)
    return sign * (int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))


def _pax_int(value: bytes, key: str, name: str) -> int:
    if not value.isdigit():
        raise ArchiveError(f"bad PAX {key} {value!r}", name)
    return int(value)


def apply_pax(entry: TarEntry, records: dict[str, bytes]) -> None:
    """Override an entry's header fields with PAX records (empty values mean: keep)."""
    for key, value in records.items():
        if key.startswith("SCHILY.xattr."):
            entry.xattrs[key[len("SCHILY.xattr.") :]] = value
        elif key.startswith("LIBARCHIVE.xattr."):
            xname = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
            entry.xattrs.setdefault(xname, base64.b64decode(value + b"=="))
        elif key.startswith("GNU.sparse."):
            raise ArchiveError("sparse files are not supported", entry.name)
        elif not value:
            continue
        elif key == "path":
            entry.name = _decode(value)
        elif key == "linkpath":
            entry.linkname = _decode(value)
        elif key == "size":
            entry.size = _pax_int(value, key, entry.name)
        elif key in ("uid", "gid"):
            setattr(entry, key, _pax_int(value, key, entry.name))
        elif key == "mtime":
            entry.mtime_ns = _pax_mtime_ns(value, entry.name)


def parse_header(block: bytes) -> tuple[bytes, TarEntry]:
    """The type flag and fields of one 512-byte header block (PAX not yet applied)."""
    raw_name = block[:100].split(b"\0", 1)[0]
    name = _decode(raw_name)
    _check_checksum(block, name)
    if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix extends the name
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = _decode(prefix + b"/" + raw_name)
    flag = block[156:157]
    kind = _TYPES.get(flag, EntryType.FILE)
    if flag == b"\0" and name.endswith("/"):
        kind = EntryType.DIR  # pre-POSIX tars mark directories by a trailing slash
    entry = TarEntry(
        name=name,
        type=kind,
        size=_number(block[124:136], "size", name),
        mode=_number(block[100:108], "mode", name) & 0o7777,
        uid=_number(block[108:116], "uid", name),
        gid=_number(block[116:124], "gid", name),
        mtime_ns=_number(block[136:148], "mtime", name) * 1_000_000_000,
        linkname=_decode(block[157:257].split(b"\0", 1)[0]),
    )
    return flag, entry


class HeaderReader:
    """Yields entries from a tar stream; meta headers (PAX, GNU long names) are folded in.

    `read_exact(n)` must return exactly n bytes, or b"" at a clean end of stream.
    """

    META_FLAGS = frozenset((b"x", b"g", b"L", b"K"))

    def __init__(self, read_exact: Callable[[int], bytes], max_meta_bytes: int) -> None:
        self._read = read_exact
        self._max_meta = max_meta_bytes
        self._global: dict[str, bytes] = {}
        self.meta_headers = 0

    def next_entry(self) -> TarEntry | None:
        """The next member, or None at the end-of-archive marker (or a clean EOF)."""
        pax: dict[str, bytes] = {}
        long_name = long_link = None
        while True:
            block = self._read(BLOCK)
            if not block or block == _ZERO_BLOCK:
                return None
            flag, entry = parse_header(block)
            if flag not in self.META_FLAGS:
                break
            self.meta_headers += 1
            data = self._meta_data(entry)
            if flag == b"x":
                pax.update(parse_pax(data, entry.name))
            elif flag == b"g":
                self._global.update(parse_pax(data, entry.name))
            elif flag == b"L":
                long_name = _decode(data.split(b"\0", 1)[0])
            else:
                long_link = _decode(data.split(b"\0", 1)[0])
        if flag not in _TYPES:
            raise ArchiveError(f"unsupported tar entry type {flag!r}", entry.name)
        if long_name is not None:
            entry.name = long_name
        if long_link is not None:
            entry.linkname = long_link
        if self._global:
            apply_pax(entry, self._global)
        if pax:
            apply_pax(entry, pax)
        if entry.type is not EntryType.FILE:
            entry.size = 0  # only regular files carry data (as in GNU tar and tarfile)
        return entry

    def _meta_data(self, header: TarEntry) -> bytes:
        if header.size > self._max_meta:
            raise ArchiveError(
                f"extended header of {header.size} bytes exceeds the limit of {self._max_meta}",
                header.name,
            )
        data = self._read(header.size + padding(header.size))
        if len(data) < header.size:
            raise ArchiveError("archive is truncated inside an extended header", header.name)
        return data[: header.size]
