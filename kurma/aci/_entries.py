"""Turning checked tar entries into files: the per-entry rules of an ACI.

Layout rules: only `manifest` (a regular file) and `rootfs` (a directory) with its contents
may appear; names are relative, without `..`; no name appears twice; a hardlink points to
an earlier regular file in rootfs. Device nodes and fifos are never created: an image must
not hand a pod a device, so they are recorded as skipped. Metadata is applied on the open
fd in the order chown, chmod (chown clears set-id bits), xattrs, times; directory metadata
waits until the end, because creating children changes a directory's mtime.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from kurma.errors import ArchiveError

from ._tar import EntryType, TarEntry, padding
from ._tree import DIR_FLAGS, FILE_FLAGS, SafeTree, path_error

if TYPE_CHECKING:
    from ._stream import ChunkReader
    from ._unpack import UnpackLimits

_ROOTFS = "rootfs"
_MANIFEST = "manifest"
_Meta = tuple[str, int, int, int, int, dict[str, bytes]]


def normalize_name(name: str, limits: UnpackLimits) -> str:
    """A member name as a clean relative path; ArchiveError for escapes and oddities."""
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_path_length:
        raise ArchiveError(f"name longer than max_path_length={limits.max_path_length}", name)
    if "\0" in name:
        raise ArchiveError("name contains a NUL byte", name)
    if name.startswith("/"):
        raise ArchiveError("absolute path", name)
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise ArchiveError("path contains '..'", name)
    return "/".join(parts)


class EntryWriter:
    """Writes entries below `dest_fd`, enforcing the layout and safety rules."""

    def __init__(self, dest_fd: int, limits: UnpackLimits, *, can_chown: bool) -> None:
        self._dest_fd = dest_fd
        self._limits = limits
        self._can_chown = can_chown
        self._tree: SafeTree | None = None
        self._seen: set[str] = set()
        self._files: set[str] = set()  # regular files in rootfs: valid hardlink targets
        self._dirs: list[_Meta] = []
        self._data_bytes = 0
        self.manifest: bytes | None = None
        self.skipped: list[str] = []

    def write(self, entry: TarEntry, stream: ChunkReader) -> None:
        """Create one entry (consuming its data from `stream`), or raise ArchiveError."""
        path = normalize_name(entry.name, self._limits)
        if not path:
            if entry.type is not EntryType.DIR:
                raise ArchiveError("entry without a name", entry.name)
            return  # `./` from `tar -C dir .`: the archive's own top, which is dest
        if path in self._seen:
            raise ArchiveError("duplicate entry", entry.name)
        self._seen.add(path)
        self._data_bytes += entry.size
        if self._data_bytes > self._limits.max_total_bytes:
            raise ArchiveError("entry sizes exceed max_total_bytes", entry.name)
        if path == _MANIFEST:
            self._write_manifest(entry, stream)
        elif path == _ROOTFS or path.startswith(_ROOTFS + "/"):
            rel = path[len(_ROOTFS) + 1 :]
            try:
                self._write_rootfs(rel, entry, stream)
            except OSError as exc:
                translated = path_error(exc, entry.name)
                if translated is not None:
                    raise translated from exc
                exc.add_note(f"while unpacking member {entry.name!r}")
                raise
        else:
            raise ArchiveError(
                "entry outside rootfs/ (only manifest and rootfs/ allowed)", entry.name
            )
        stream.skip(padding(entry.size), entry.name)

    def _rootfs(self) -> SafeTree:
        if self._tree is None:
            os.mkdir(_ROOTFS, 0o755, dir_fd=self._dest_fd)
            self._tree = SafeTree(os.open(_ROOTFS, DIR_FLAGS, dir_fd=self._dest_fd))
        return self._tree

    def _write_manifest(self, entry: TarEntry, stream: ChunkReader) -> None:
        if entry.type is not EntryType.FILE:
            raise ArchiveError(
                f"manifest must be a regular file, not a {entry.type.value}", entry.name
            )
        if entry.size > self._limits.max_manifest_bytes:
            raise ArchiveError(
                f"manifest of {entry.size} bytes exceeds max_manifest_bytes="
                f"{self._limits.max_manifest_bytes}",
                entry.name,
            )
        data = stream.read_exact(entry.size) if entry.size else b""
        if len(data) != entry.size:
            raise ArchiveError("archive is truncated inside the manifest", entry.name)
        fd = os.open(_MANIFEST, FILE_FLAGS, 0o600, dir_fd=self._dest_fd)
        try:
            os.write(fd, data)
            self._apply(
                fd, entry.name, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs
            )
        finally:
            os.close(fd)
        self.manifest = data

    def _write_rootfs(self, rel: str, entry: TarEntry, stream: ChunkReader) -> None:
        kind = entry.type
        if not rel and kind is not EntryType.DIR:
            raise ArchiveError(f"rootfs must be a directory, not a {kind.value}", entry.name)
        tree = self._rootfs()
        if kind is EntryType.FILE:
            self._write_file(tree, rel, entry, stream)
        elif kind is EntryType.DIR:
            tree.make_dir(rel)
            self._dirs.append((rel, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs))
        elif kind is EntryType.SYMLINK:
            self._write_symlink(tree, rel, entry)
        elif kind is EntryType.HARDLINK:
            self._write_hardlink(tree, rel, entry)
        else:
            self.skipped.append(
                f"{entry.name}: {kind.value} not created "
                "(images may not carry device nodes or fifos)"
            )

    def _write_file(self, tree: SafeTree, rel: str, entry: TarEntry, stream: ChunkReader) -> None:
        parent, _, base = rel.rpartition("/")
        fd = os.open(base, FILE_FLAGS, 0o600, dir_fd=tree.dir_fd(parent))
        try:
            if entry.size:
                stream.copy_to(fd, entry.size, entry.name)
            self._apply(
                fd, entry.name, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs
            )
        finally:
            os.close(fd)
        self._files.add(rel)

    def _write_symlink(self, tree: SafeTree, rel: str, entry: TarEntry) -> None:
        if not entry.linkname or "\0" in entry.linkname:
            raise ArchiveError("symlink with an empty or NUL-containing target", entry.name)
        if len(entry.linkname.encode("utf-8", "surrogateescape")) > self._limits.max_path_length:
            raise ArchiveError("symlink target too long", entry.name)
        parent, _, base = rel.rpartition("/")
        pfd = tree.dir_fd(parent)
        # symlinkat never follows anything; the target is stored verbatim.
        os.symlink(entry.linkname, base, dir_fd=pfd)
        if self._can_chown:
            os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
        os.utime(base, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        if entry.xattrs:  # Linux has no fd-based setxattr on a symlink itself
            self.skipped.append(f"{entry.name}: xattrs of a symlink not set")

    def _write_hardlink(self, tree: SafeTree, rel: str, entry: TarEntry) -> None:
        try:
            target = normalize_name(entry.linkname, self._limits)
        except ArchiveError:
            target = ""  # reported below, naming this entry rather than its target
        target_rel = target[len(_ROOTFS) + 1 :] if target.startswith(_ROOTFS + "/") else None
        if target_rel is None or target_rel not in self._files:
            raise ArchiveError(
                f"hardlink target {entry.linkname!r} is not an earlier regular file in rootfs",
                entry.name,
            )
        tparent, _, tbase = target_rel.rpartition("/")
        tfd = os.dup(tree.dir_fd(tparent))  # the cache may close it while resolving below
        try:
            parent, _, base = rel.rpartition("/")
            # follow_symlinks=False: linkat without AT_SYMLINK_FOLLOW.
            os.link(
                tbase, base, src_dir_fd=tfd, dst_dir_fd=tree.dir_fd(parent), follow_symlinks=False
            )
        finally:
            os.close(tfd)

    def _apply(
        self,
        fd: int,
        name: str,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        xattrs: dict[str, bytes],
    ) -> None:
        apply_metadata(fd, name, mode, uid, gid, mtime_ns, xattrs, self._can_chown, self.skipped)

    def finish(self) -> bytes:
        """Check that manifest and rootfs were present, apply directory metadata."""
        if self.manifest is None:
            raise ArchiveError("archive has no manifest")
        if self._tree is None:
            raise ArchiveError("archive has no rootfs/ directory")
        for rel, mode, uid, gid, mtime_ns, xattrs in self._dirs:
            member = f"{_ROOTFS}/{rel}" if rel else _ROOTFS
            fd = os.dup(self._tree.dir_fd(rel))
            try:
                self._apply(fd, member, mode, uid, gid, mtime_ns, xattrs)
            finally:
                os.close(fd)
        return self.manifest

    def close(self) -> None:
        """Release directory fds (also after an error)."""
        if self._tree is not None:
            self._tree.close()
            self._tree = None


def apply_metadata(
    fd: int,
    name: str,
    mode: int,
    uid: int,
    gid: int,
    mtime_ns: int,
    xattrs: dict[str, bytes],
    can_chown: bool,
    skipped: list[str],
) -> None:
    """An entry's owner, mode, xattrs and mtime, in that order: chown before chmod (chown
    clears set-id bits), xattrs after chown (it clears security.capability), times last. An
    xattr the filesystem or the caller cannot set is listed in `skipped`, not fatal. Shared
    by ACI unpacking and OCI layers (kurma.oci._layers)."""
    if can_chown:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    for key, value in xattrs.items():
        try:
            os.setxattr(fd, key, value)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            skipped.append(f"{name}: xattr {key} not set ({exc.strerror})")
    os.utime(fd, ns=(mtime_ns, mtime_ns))
