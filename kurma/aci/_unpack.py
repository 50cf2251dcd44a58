"""Safe, streaming unpacking of an ACI into `dest/manifest` and `dest/rootfs/`.

One pass over the archive: a worker decompresses and hashes (`_stream`), this thread
parses headers (`_tar`) and writes entries through `_tree.SafeTree`, which never follows a
symlink. Every member name is normalised and checked before anything is created; any error
removes `dest` entirely, so a caller sees either a complete tree or nothing. The manifest's
content is returned, not validated: that is the store's job (with `parse_image_manifest`).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from kurma.errors import ArchiveError

from ._entries import EntryWriter
from ._ids import image_id_from_digest
from ._stream import ChunkReader, DecompressingHasher, hash_stream
from ._tar import HeaderReader

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds that stop hostile or broken archives (bombs, huge headers, endless entries)."""

    max_total_bytes: int = 16 * GiB  # uncompressed stream, padding included
    max_entries: int = 2_000_000  # members, PAX and GNU long-name headers included
    max_manifest_bytes: int = 1 * MiB
    max_path_length: int = 4096  # bytes of a member or link name
    max_header_bytes: int = 1 * MiB  # one PAX or GNU long-name header's data


@dataclass(frozen=True)
class UnpackResult:
    """What an unpack produced. `skipped` lists entries not created, each with the reason."""

    image_id: str
    manifest_bytes: bytes
    entries: int
    total_bytes: int  # length of the uncompressed stream
    skipped: tuple[str, ...]


def image_id_of(source: BinaryIO | os.PathLike[str] | str) -> str:
    """The image ID of an archive (any supported compression), without extracting it."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return image_id_from_digest(hash_stream(f)[0])
    return image_id_from_digest(hash_stream(source)[0])


def unpack_aci(
    source: BinaryIO | os.PathLike[str] | str,
    dest: os.PathLike[str] | str,
    limits: UnpackLimits = UnpackLimits(),
    watch: Callable[[int], None] | None = None,
) -> UnpackResult:
    """Unpack `source` into the new directory `dest` (its parent must exist).

    `watch(total)` sees the decompressed byte count as the stream goes (see
    `DecompressingHasher`); what it raises stops the unpack, and `dest` is removed.

    Raises ArchiveError for malformed or hostile archives; OSErrors (disk full, ...)
    propagate with a note naming the member. Either way `dest` is gone afterwards.
    """
    dest = os.fspath(dest)
    os.mkdir(dest, 0o700)  # FileExistsError: not ours, so never removed below
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                result = _unpack_into(f, dest, limits, watch)
        else:
            result = _unpack_into(source, dest, limits, watch)
        os.chmod(dest, 0o755)
        return result
    except BaseException:
        remove_tree(dest)
        raise


def _unpack_into(
    source: BinaryIO,
    dest: str,
    limits: UnpackLimits,
    watch: Callable[[int], None] | None = None,
) -> UnpackResult:
    pipe = DecompressingHasher(source, limits.max_total_bytes, watch)
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    writer = EntryWriter(dest_fd, limits, can_chown=os.geteuid() == 0)
    try:
        stream = ChunkReader(pipe)
        headers = HeaderReader(stream.read_exact, limits.max_header_bytes)
        entries = 0
        while (entry := headers.next_entry()) is not None:
            entries += 1
            if entries + headers.meta_headers > limits.max_entries:
                raise ArchiveError(
                    f"archive has more than max_entries={limits.max_entries} entries",
                    entry.name,
                )
            writer.write(entry, stream)
        stream.drain()  # hash everything up to EOF, end-of-archive padding included
        manifest = writer.finish()
        return UnpackResult(
            image_id=image_id_from_digest(pipe.hexdigest()),
            manifest_bytes=manifest,
            entries=entries,
            total_bytes=pipe.total_bytes,
            skipped=tuple(writer.skipped),
        )
    finally:
        writer.close()
        os.close(dest_fd)
        pipe.close()


def remove_tree(path: str) -> None:
    """Remove a partly unpacked tree, even where the image made directories read-only."""

    def retry(func: object, failed: str, exc: BaseException) -> None:
        parent = os.path.dirname(failed)
        st = os.lstat(parent)
        os.chmod(parent, stat.S_IMODE(st.st_mode) | 0o700)
        if os.path.isdir(failed) and not os.path.islink(failed):
            shutil.rmtree(failed)
        else:
            os.unlink(failed)

    shutil.rmtree(path, onerror=lambda f, p, e: retry(f, p, e[1]))
