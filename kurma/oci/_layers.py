"""Applying one OCI or Docker image layer (a tar changeset) onto a directory tree.

A layer is *applied*, not merely extracted (OCI image spec, layer.md "Applying Changesets"):
an entry replaces what a lower layer left at its path (a directory over a directory only
takes the new attributes; anything else is removed and created again), `.wh.NAME` removes
NAME of the lower layers, and `.wh..wh..opq` hides all lower contents of its directory.

Strategy: one streaming pass, as in ACI unpacking, and with its rules and helpers
(`kurma.aci._tar` headers, `_entries.normalize_name`, `_tree.SafeTree`, `_stream.ChunkReader`):
every path is resolved beneath the root one component at a time with O_NOFOLLOW, so a
symlink in a parent is refused (ELOOP) and never followed; names with `..` or a leading `/`
are refused; device nodes and fifos are never created (recorded in `skipped`); the
decompressed stream stops at `max_total_bytes`. Both digests are computed while the blob
streams: the compressed digest over the bytes read, the diff_id over the uncompressed tar.

Whiteouts apply to lower layers only, wherever they sit in the tar: the pass remembers which
paths this layer wrote (and their ancestors), and a whiteout or an opaque marker removes only
what this layer did not write. So the result does not depend on the order of the markers.

The caller's contract (how nothing half-applied stays visible): `root` is a staging tree
that no pod sees. A layer that fails (hostile entry, digest mismatch, disk full) leaves the
tree in an undefined state: the caller removes it (`discard_tree`: a layer may nest deeper
than `shutil.rmtree` recurses, so not `kurma.aci._unpack.remove_tree`) and
starts again from the last good state; after the last layer succeeds, the caller renames the
staging tree into place. A digest mismatch is only known at the end of the stream, so this
cannot be avoided by checking first without reading the blob twice.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import queue
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from kurma.aci._compression import (
    Compression,
    detect_compression,
    open_decompressed,
    peek_head,
    translate_decompression_error,
)
from kurma.aci._entries import apply_metadata, normalize_name
from kurma.aci._stream import CHUNK, ChunkReader
from kurma.aci._tar import EntryType, HeaderReader, TarEntry, padding
from kurma.aci._tree import DIR_FLAGS, FILE_FLAGS, SafeTree, path_error
from kurma.aci._unpack import UnpackLimits
from kurma.errors import ArchiveError, DigestMismatch

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# Layer media types and the compression each one names. Docker's "foreign" and OCI's
# "nondistributable" layers are applied like the others (only their upload policy differs).
LAYER_MEDIA_TYPES: dict[str, Compression] = {
    "application/vnd.oci.image.layer.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": Compression.ZSTD,
    "application/vnd.oci.image.layer.nondistributable.v1.tar": Compression.NONE,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": Compression.GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": Compression.ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": Compression.NONE,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": Compression.GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": Compression.GZIP,
}
_LAYER_COMPRESSIONS = (Compression.NONE, Compression.GZIP, Compression.ZSTD)
_ALGORITHMS = ("sha256", "sha512")
_DEFAULT_LIMITS = UnpackLimits()
_QUEUE_DEPTH = 16
WATCH_EVERY = 1 << 20  # a watch hears of the uncompressed bytes about every MiB

_Meta = tuple[str, int, int, int, int, dict[str, bytes]]


@dataclass(frozen=True)
class LayerResult:
    """What applying a layer did. `skipped` lists entries not created, each with why."""

    digest: str  # "sha256:..." of the blob as read (compressed)
    diff_id: str  # "sha256:..." of the uncompressed tar
    compression: Compression
    entries: int
    total_bytes: int  # length of the uncompressed tar
    compressed_bytes: int
    whiteouts: int  # `.wh.` markers applied, opaque ones included
    skipped: tuple[str, ...]


def _parse_digest(digest: str, what: str) -> tuple[str, str]:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm not in _ALGORITHMS or not hexdigest:
        raise ArchiveError(f"unsupported {what} {digest!r} (want sha256:<hex> or sha512:<hex>)")
    return algorithm, hexdigest.lower()


class _HashingReader(io.RawIOBase):
    """Passes reads through from `source`, hashing and counting the bytes (the blob digest)."""

    def __init__(self, source: BinaryIO, algorithm: str) -> None:
        self._source = source
        self.hash = hashlib.new(algorithm)
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._source.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        self.count += n
        return n


class _LayerStream:
    """Decompresses a blob by chunks, hashing both sides, with a limit (run by `_Prefetch`).

    Not the ACI unpacker's `DecompressingHasher`: that one hashes the uncompressed stream
    with sha512 only, and a layer needs sha256 of both the blob and the tar.
    """

    def __init__(
        self,
        source: BinaryIO,
        media_type: str | None,
        limit: int,
        blob_algorithm: str,
        diff_algorithm: str,
        watch: Callable[[int], None] | None = None,
    ) -> None:
        self._raw = _HashingReader(source, blob_algorithm)
        self._watch = watch  # told the uncompressed total after each MiB; may raise
        head, peeked = peek_head(cast(BinaryIO, self._raw))
        self.compression = _check_compression(media_type, detect_compression(head))
        self._reader = open_decompressed(peeked)
        self._diff = hashlib.new(diff_algorithm)
        self._limit = limit
        self.total_bytes = 0
        self._watched = 0

    def next_chunk(self) -> bytes:
        """The next uncompressed chunk, b"" at the end."""
        try:
            chunk = self._reader.read(CHUNK)
        except Exception as exc:
            translated = translate_decompression_error(exc)
            if translated is None:
                raise
            raise translated from exc
        if chunk:
            self.total_bytes += len(chunk)
            if self.total_bytes > self._limit:
                raise ArchiveError(
                    f"uncompressed layer exceeds max_total_bytes={self._limit} "
                    "(decompression bomb?)"
                )
            self._diff.update(chunk)
            if self._watch is not None and self.total_bytes - self._watched >= WATCH_EVERY:
                self._watched = self.total_bytes
                self._watch(self.total_bytes)
        return chunk

    def finish(self) -> tuple[str, str, int]:
        """Read the blob to its end; (blob hex digest, diff hex digest, blob length).

        The decompressor may stop at the end of its last frame: whatever follows still
        belongs to the blob, so it is hashed too (and a gzip trailer of garbage is caught
        by the digest check rather than ignored).
        """
        while self._raw.read(CHUNK):
            pass
        return self._raw.hash.hexdigest(), self._diff.hexdigest(), self._raw.count


class _Prefetch:
    """Runs a `_LayerStream` in a worker thread, so decompressing and hashing overlap with
    writing files (zlib, zstandard and hashlib release the GIL), as ACI unpacking does.

    Bounded: a slow disk holds decompression back instead of memory growing.
    """

    def __init__(self, pipe: _LayerStream) -> None:
        self._pipe = pipe
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oci-layer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._pipe.next_chunk()
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        # Poll the stop flag so an abandoned worker never blocks forever on a full queue.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next_chunk(self) -> bytes:
        """The next uncompressed chunk, b"" at the end; re-raises the worker's error."""
        item = self._queue.get()
        if isinstance(item, BaseException) or not item:
            self._queue.put(item)  # stay at the end (or the error) for further calls
            if isinstance(item, BaseException):
                raise item
        return cast(bytes, item)

    def close(self) -> None:
        """Stop the worker (if still running) and wait for it."""
        self._stop.set()
        self._thread.join()


def _check_compression(media_type: str | None, found: Compression) -> Compression:
    """The compression to use: the media type's, which the magic bytes must confirm."""
    if found not in _LAYER_COMPRESSIONS:
        raise ArchiveError(f"layer is {found.value}-compressed; layers are plain, gzip or zstd")
    if media_type is None:  # docker-archive layers carry no media type: trust the content
        return found
    named = LAYER_MEDIA_TYPES.get(media_type)
    if named is None:
        raise ArchiveError(f"unsupported layer media type {media_type!r}")
    if named is not found:
        raise ArchiveError(
            f"layer media type {media_type!r} names {named.value}, "
            f"but the blob's first bytes say {found.value}"
        )
    return named


class _Tree(SafeTree):
    """A SafeTree whose entries can be removed: cached fds below a removed path are dropped.

    SafeTree keeps directory fds because ACI unpacking never replaces anything; a layer
    does, and an fd kept for a directory that a whiteout removed would write into an
    unlinked inode, silently.
    """

    def forget(self, rel: str) -> None:
        """Drop (close) cached fds of `rel` and everything below it."""
        prefix = rel + "/"
        for path in [p for p in self._cache if p == rel or p.startswith(prefix)]:
            os.close(self._cache.pop(path))

    def find_dir(self, rel: str) -> int | None:
        """An fd of the existing directory `rel` (the caller closes it), None if missing.

        Unlike `dir_fd`, never creates anything: whiteouts and hardlink targets look up,
        they do not build.
        """
        fd = os.dup(self.dir_fd(""))
        try:
            for name in rel.split("/") if rel else ():
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except FileNotFoundError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


_TRASH = WHITEOUT_PREFIX + "kurma-removing."


def _remove_tree(pfd: int, name: str) -> None:
    """Remove directory `name` below `pfd` and all it holds, never following a symlink.

    Not shutil.rmtree: it recurses (RecursionError past ~1000 levels) and holds an fd per
    level, and a layer can nest directories 2048 deep. Here each subdirectory is first
    renamed up beside `name` (under a `.wh.` name, which no tree can hold: the spec
    reserves them), so one directory fd is open at a time and the depth never matters.
    """
    todo, serial = [name], 0
    while todo:
        current = todo.pop()
        fd = os.open(current, DIR_FLAGS, dir_fd=pfd)
        try:
            for child in os.listdir(fd):
                if not stat.S_ISDIR(os.lstat(child, dir_fd=fd).st_mode):
                    os.unlink(child, dir_fd=fd)
                    continue
                serial += 1
                while _lstat(trash := f"{_TRASH}{serial}", pfd) is not None:
                    serial += 1
                os.rename(child, trash, src_dir_fd=fd, dst_dir_fd=pfd)
                todo.append(trash)
        finally:
            os.close(fd)
        os.rmdir(current, dir_fd=pfd)


# A label the host's security module gives; not the image's to remove.
_HOST_XATTRS = frozenset(("security.selinux",))


def _drop_other_xattrs(fd: int, keep: dict[str, bytes]) -> None:
    """Remove the xattrs a lower layer gave a directory that the upper entry does not list.

    A directory over a directory takes the upper entry's attributes (spec), xattrs included,
    as umoci does; a new directory has none, so this costs one listxattr.
    """
    for key in os.listxattr(fd):
        if key not in keep and key not in _HOST_XATTRS:
            try:
                os.removexattr(fd, key)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA):
                    raise


def discard_tree(path: os.PathLike[str] | str) -> None:
    """Remove a staging tree that a failed layer left, however deep it is nested."""
    parent, name = os.path.split(os.path.abspath(path))
    pfd = os.open(parent, DIR_FLAGS)
    try:
        _remove_tree(pfd, name)
    finally:
        os.close(pfd)


class LayerApplier:
    """Applies the entries of one layer below a root, enforcing the safety rules."""

    def __init__(self, root_fd: int, limits: UnpackLimits, *, can_chown: bool) -> None:
        self._tree = _Tree(root_fd)
        self._limits = limits
        self._can_chown = can_chown
        self._written: set[str] = set()  # paths this layer created
        self._touched: set[str] = {""}  # ... and their ancestors: kept by whiteouts
        self._dirs: dict[str, _Meta] = {}  # directory metadata, applied at the end
        # Directories this layer created (empty then): only this layer's entries can be in
        # them, so a new name there needs no lstat. Most of a base layer is in this case.
        self._fresh: set[str] = set() if os.listdir(root_fd) else {""}
        self._consumed = False  # the current entry's data was read
        self.whiteouts = 0
        self.skipped: list[str] = []

    def write(self, entry: TarEntry, stream: ChunkReader) -> None:
        """Apply one entry (consuming its data from `stream`), or raise ArchiveError."""
        path = normalize_name(entry.name, self._limits)
        if any(part.startswith(WHITEOUT_PREFIX) for part in path.split("/")[:-1]):
            # The spec reserves `.wh.` names: no directory can have one, and treating it as
            # one would give a marker's name two meanings.
            raise ArchiveError("whiteout name used as a directory", entry.name)
        size, self._consumed = entry.size, False
        try:
            parent, _, base = path.rpartition("/")
            if base.startswith(WHITEOUT_PREFIX):
                self._whiteout(parent, base, entry)
            elif not path:
                if entry.type is not EntryType.DIR:
                    raise ArchiveError("entry without a name", entry.name)
                self._dirs[""] = self._meta(entry)  # `./`: the root's own attributes
            else:
                self._write_entry(path, entry, stream)
        except OSError as exc:
            translated = path_error(exc, entry.name)
            if translated is not None:
                raise translated from exc
            exc.add_note(f"while applying layer member {entry.name!r}")
            raise
        stream.skip((0 if self._consumed else size) + padding(size), entry.name)

    @staticmethod
    def _meta(entry: TarEntry) -> _Meta:
        return (entry.name, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs)

    def _mark(self, path: str) -> None:
        self._written.add(path)
        while path not in self._touched:
            self._touched.add(path)
            path = path.rpartition("/")[0]

    # --- whiteouts -----------------------------------------------------------------------

    def _whiteout(self, parent: str, base: str, entry: TarEntry) -> None:
        self.whiteouts += 1
        if base == OPAQUE_MARKER:
            fd = os.dup(self._tree.dir_fd(parent))  # an opaque directory exists in this layer
            self._mark(parent)
            try:
                self._prune(fd, parent)
            finally:
                os.close(fd)
            return
        victim = base[len(WHITEOUT_PREFIX) :]
        if victim in ("", ".", "..") or victim.startswith(WHITEOUT_PREFIX):
            # `.wh.`, `.wh..` would remove the directory holding the marker or its parent.
            raise ArchiveError("whiteout names no sibling", entry.name)
        pfd = self._tree.find_dir(parent)
        if pfd is None:
            return  # nothing below to hide
        try:
            rel = f"{parent}/{victim}" if parent else victim
            if rel not in self._touched:
                self._remove(pfd, victim, rel)
            elif self._is_dir(pfd, victim):
                # This layer wrote (below) it: only what lower layers left inside goes.
                cfd = os.open(victim, DIR_FLAGS, dir_fd=pfd)
                try:
                    self._prune(cfd, rel)
                finally:
                    os.close(cfd)
        finally:
            os.close(pfd)

    @staticmethod
    def _is_dir(pfd: int, name: str) -> bool:
        st = _lstat(name, pfd)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def _prune(self, dfd: int, rel: str) -> None:
        """Remove from directory `rel` everything this layer did not write.

        Iterative, one open directory at a time: a layer may nest directories deeper than
        Python's recursion limit, and holding an fd per level could exhaust the fd limit.
        """
        pending: list[str] = []
        self._prune_one(dfd, rel, pending)
        while pending:
            rel = pending.pop()
            fd = self._tree.find_dir(rel)
            if fd is not None:
                try:
                    self._prune_one(fd, rel, pending)
                finally:
                    os.close(fd)

    def _prune_one(self, dfd: int, rel: str, pending: list[str]) -> None:
        for name in os.listdir(dfd):
            child = f"{rel}/{name}" if rel else name
            if child not in self._touched:
                self._remove(dfd, name, child)
            elif self._is_dir(dfd, name):
                pending.append(child)  # this layer wrote below it: prune it as well

    def _remove(self, pfd: int, name: str, rel: str) -> None:
        """Remove `name` (a whole tree if a directory) without following symlinks."""
        st = _lstat(name, pfd)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            self._tree.forget(rel)
            _remove_tree(pfd, name)
            if rel in self._touched:  # else nothing below was written: skip the scans
                prefix = rel + "/"
                for paths in (self._written, self._touched, self._tree.implicit, self._fresh):
                    paths.difference_update([p for p in paths if p.startswith(prefix)])
                self._fresh.discard(rel)
                self._tree.implicit.discard(rel)
                for p in [p for p in self._dirs if p == rel or p.startswith(prefix)]:
                    del self._dirs[p]
        else:
            os.unlink(name, dir_fd=pfd)

    # --- additions and modifications -----------------------------------------------------

    def _write_entry(self, path: str, entry: TarEntry, stream: ChunkReader) -> None:
        kind = entry.type
        if kind not in (EntryType.FILE, EntryType.DIR, EntryType.SYMLINK, EntryType.HARDLINK):
            self.skipped.append(
                f"{entry.name}: {kind.value} not created (images may not carry device nodes "
                "or fifos)"
            )
            return
        parent, _, base = path.rpartition("/")
        pfd = self._tree.dir_fd(parent)
        if path not in self._written and (parent in self._fresh or parent in self._tree.implicit):
            existing = None
        else:
            existing = _lstat(base, pfd)
        if kind is EntryType.HARDLINK:
            self._write_hardlink(path, entry)  # resolves and replaces on its own
        elif kind is EntryType.DIR and existing is not None and stat.S_ISDIR(existing.st_mode):
            self._dirs[path] = self._meta(entry)  # a directory over a directory: attributes
        else:
            if existing is not None:
                self._remove(pfd, base, path)
                pfd = self._tree.dir_fd(parent)  # removal may have closed cached fds
            if kind is EntryType.FILE:
                self._write_file(pfd, base, entry, stream)
            elif kind is EntryType.DIR:
                os.mkdir(base, 0o700, dir_fd=pfd)  # real mode at the end, like ACIs
                self._fresh.add(path)
                self._dirs[path] = self._meta(entry)
            else:
                self._write_symlink(pfd, base, entry)
        self._mark(path)

    def _write_file(self, pfd: int, base: str, entry: TarEntry, stream: ChunkReader) -> None:
        fd = os.open(base, FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            if entry.size:
                stream.copy_to(fd, entry.size, entry.name)
            self._apply(fd, *self._meta(entry))
        finally:
            os.close(fd)
        self._consumed = True  # write() skips only the padding

    def _write_symlink(self, pfd: int, base: str, entry: TarEntry) -> None:
        if not entry.linkname or "\0" in entry.linkname:
            raise ArchiveError("symlink with an empty or NUL-containing target", entry.name)
        if len(entry.linkname.encode("utf-8", "surrogateescape")) > self._limits.max_path_length:
            raise ArchiveError("symlink target too long", entry.name)
        os.symlink(entry.linkname, base, dir_fd=pfd)  # stored verbatim, never followed
        if self._can_chown:
            os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        if entry.xattrs:
            self.skipped.append(f"{entry.name}: xattrs of a symlink not set")

    def _write_hardlink(self, path: str, entry: TarEntry) -> None:
        """Link to a file of this layer or a lower one, resolved beneath the root."""
        try:
            target = normalize_name(entry.linkname, self._limits)
        except ArchiveError:
            target = ""  # reported below, naming this entry rather than its target
        if target == path:
            return  # a link to itself: the file is already there
        tparent, _, tbase = target.rpartition("/")
        tfd = self._tree.find_dir(tparent) if target else None
        try:
            st = _lstat(tbase, tfd) if tfd is not None else None
            if st is None or stat.S_ISDIR(st.st_mode):
                raise ArchiveError(
                    f"hardlink target {entry.linkname!r} is not an existing non-directory "
                    "in the tree",
                    entry.name,
                )
            parent, _, base = path.rpartition("/")
            pfd = self._tree.dir_fd(parent)
            if _lstat(base, pfd) is not None:
                self._remove(pfd, base, path)
                pfd = self._tree.dir_fd(parent)
            # follow_symlinks=False: linkat without AT_SYMLINK_FOLLOW.
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            if tfd is not None:
                os.close(tfd)

    def _apply(
        self, fd: int, name: str, mode: int, uid: int, gid: int, mtime_ns: int,
        xattrs: dict[str, bytes],
    ) -> None:  # fmt: skip
        apply_metadata(fd, name, mode, uid, gid, mtime_ns, xattrs, self._can_chown, self.skipped)

    def finish(self) -> None:
        """Apply directory attributes, now that no child changes their mtimes any more."""
        for rel, meta in self._dirs.items():
            fd = os.dup(self._tree.dir_fd(rel))
            try:
                _drop_other_xattrs(fd, meta[5])
                self._apply(fd, *meta)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Release directory fds (also after an error)."""
        self._tree.close()


def apply_layer(
    stream: BinaryIO,
    root: int | os.PathLike[str] | str,
    *,
    media_type: str | None,
    limits: UnpackLimits = _DEFAULT_LIMITS,
    expected_digest: str | None = None,
    expected_diff_id: str | None = None,
    watch: Callable[[int], None] | None = None,
) -> LayerResult:
    """Apply the layer blob read from `stream` onto the directory `root` (a path or an fd).

    `media_type` names the compression (None: the blob's magic bytes decide, as for
    docker-archive layers); a media type the bytes contradict is refused. The blob's
    digest and the diff_id are checked against `expected_*` when given (DigestMismatch).
    `watch(total)` hears the uncompressed bytes so far about every MiB, while the layer
    streams, and may stop it by raising (a quota, the free-space reserve: a small blob
    that inflates to gigabytes stops near the line, not at the disk's end).
    On any error the tree under `root` is in an undefined state: see the module docstring
    for what the caller must do. The stream is read to its end but not closed.
    """
    blob_alg = _parse_digest(expected_digest, "digest")[0] if expected_digest else "sha256"
    diff_alg = _parse_digest(expected_diff_id, "diff_id")[0] if expected_diff_id else "sha256"
    root_fd = os.dup(root) if isinstance(root, int) else os.open(os.fspath(root), DIR_FLAGS)
    applier = LayerApplier(root_fd, limits, can_chown=os.geteuid() == 0)
    prefetch = None
    try:
        pipe = _LayerStream(stream, media_type, limits.max_total_bytes, blob_alg, diff_alg, watch)
        prefetch = _Prefetch(pipe)
        reader = ChunkReader(prefetch)  # type: ignore[arg-type]  # same next_chunk() protocol
        headers = HeaderReader(reader.read_exact, limits.max_header_bytes)
        entries = 0
        while (entry := headers.next_entry()) is not None:
            entries += 1
            if entries + headers.meta_headers > limits.max_entries:
                raise ArchiveError(
                    f"layer has more than max_entries={limits.max_entries} entries", entry.name
                )
            applier.write(entry, reader)
        reader.drain()  # the diff_id covers the end-of-archive blocks and padding too
        applier.finish()
    finally:
        if prefetch is not None:
            prefetch.close()  # before pipe.finish(): one reader of the source at a time
        applier.close()
    blob_hex, diff_hex, blob_len = pipe.finish()
    digest, diff_id = f"{blob_alg}:{blob_hex}", f"{diff_alg}:{diff_hex}"
    if expected_digest and _parse_digest(expected_digest, "digest")[1] != blob_hex:
        raise DigestMismatch(expected_digest, digest, "layer digest")
    if expected_diff_id and _parse_digest(expected_diff_id, "diff_id")[1] != diff_hex:
        raise DigestMismatch(expected_diff_id, diff_id, "layer diff_id")
    log.debug("applied layer %s (diff_id %s): %d entries", digest, diff_id, entries)
    return LayerResult(
        digest=digest,
        diff_id=diff_id,
        compression=pipe.compression,
        entries=entries,
        total_bytes=pipe.total_bytes,
        compressed_bytes=blob_len,
        whiteouts=applier.whiteouts,
        skipped=tuple(applier.skipped),
    )


def expand_layer(
    stream: BinaryIO,
    dest: BinaryIO,
    *,
    media_type: str | None,
    limits: UnpackLimits = _DEFAULT_LIMITS,
    expected_digest: str | None = None,
    diff_algorithm: str = "sha256",
    watch: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """Decompress a layer blob into `dest` as a plain tar, checking the blob against
    `expected_digest` (DigestMismatch) and its compression against `media_type`, within
    `max_total_bytes`; returns (diff_id, uncompressed size).

    Why: a pull decompresses the upper layers ahead, in other threads (zlib and zstandard
    release the GIL), while the lower ones are still being applied in order; applying a
    plain tar then costs only the file work."""
    blob_alg = _parse_digest(expected_digest, "digest")[0] if expected_digest else "sha256"
    pipe = _LayerStream(stream, media_type, limits.max_total_bytes, blob_alg, diff_algorithm,
                        watch)  # fmt: skip
    while chunk := pipe.next_chunk():
        dest.write(chunk)
    blob_hex, diff_hex, _ = pipe.finish()
    if expected_digest and _parse_digest(expected_digest, "digest")[1] != blob_hex:
        raise DigestMismatch(expected_digest, f"{blob_alg}:{blob_hex}", "layer digest")
    return f"{diff_algorithm}:{diff_hex}", pipe.total_bytes
