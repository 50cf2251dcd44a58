"""Image archives on disk: docker-archive tars, OCI image layouts, and OCI layouts in a tar.

What `docker save`, `podman save`, `skopeo copy ... docker-archive:|oci:|oci-archive:` and
buildkit's OCI exporter write, read without a store or a network, and written back so
those tools load them. `open_archive` detects the kind:

- an OCI image layout directory (`oci-layout`, `index.json`, `blobs/ALG/HEX`): blobs are
  opened with openat2(RESOLVE_BENEATH) from the directory's fd, so a blob that is a symlink
  leading out of the layout is refused, never read;
- an OCI layout in a tar (`oci-archive`), plain or compressed: blobs are tar members,
  streamed from the tar, never loaded whole or extracted;
- a docker-archive tar (`manifest.json` listing Config, RepoTags, Layers; the old
  `repositories` file is ignored; docker 25's archives hold an OCI layout too and are
  read as one). It has no registry manifest, so one is synthesized: an OCI manifest
  whose layers are the archive's layers *uncompressed* (plain tars, their digests the
  config's diff_ids), which costs one pass over each layer at open to hash it.

References come from RepoTags, or from the index's `io.containerd.image.name` (docker,
containerd) or `org.opencontainers.image.ref.name` annotation. A ref.name without `/` or
`:` (`v1`, as skopeo and umoci write for `oci:DIR:v1`) is a bare tag, not the official
image `docker.io/library/v1`: it is kept apart, in `ArchiveImage.tags`.

Writers (`write_oci_layout`, `write_docker_archive`) go to a temporary name that is renamed
into place, and copy each blob as stored (a gzip layer stays gzip: `docker load`, podman
and skopeo all detect a docker-archive layer's compression), checking its digest on the way.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from kurma.aci import open_decompressed
from kurma.atomic import TEMP_PREFIX, open_atomic
from kurma.errors import ArchiveError, DigestMismatch, InvalidReference, ValidationError
from kurma.runtime._mountapi import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, openat2

from . import _mediatypes as mt
from ._config import ImageConfig, parse_image_config
from ._digest import Digest, Verifier, VerifyingReader, digest_of
from ._manifest import Descriptor, Index, Manifest, parse_manifest
from ._platform import DEFAULT_PLATFORM, Platform, select_manifest
from ._reference import Reference, is_valid_tag, parse_reference

log = logging.getLogger(__name__)

DOCKER_ARCHIVE = "docker-archive"
OCI_LAYOUT = "oci-layout"
OCI_ARCHIVE = "oci-archive"

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
_MAX_DOCUMENT = 4 << 20  # a manifest, an index, a config, manifest.json
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveImage:
    """One image of an archive (or one to write): its manifest, config and blobs.

    `open_blob(descriptor)` streams a blob and checks it against the descriptor's digest
    and size as it goes: DigestMismatch at the latest when the end is read.
    """

    references: tuple[Reference, ...]
    tags: tuple[str, ...]
    manifest_bytes: bytes
    manifest_media_type: str
    manifest_digest: Digest
    manifest: Manifest
    config_bytes: bytes
    config: ImageConfig
    opener: Callable[[Descriptor], BinaryIO] = field(repr=False, compare=False)

    @classmethod
    def build(
        cls,
        manifest_bytes: bytes,
        config_bytes: bytes,
        opener: Callable[[Descriptor], BinaryIO],
        references: Iterable[Reference] = (),
        tags: Iterable[str] = (),
    ) -> ArchiveImage:
        """An image from its documents, checked as an archive's would be (for the writers)."""
        manifest = parse_manifest(manifest_bytes)
        if not isinstance(manifest, Manifest):
            raise ValidationError("manifest", f"is an index ({manifest.media_type}), not an image")
        if digest_of(config_bytes, manifest.config.digest.algorithm) != manifest.config.digest:
            raise DigestMismatch(
                str(manifest.config.digest), str(digest_of(config_bytes)), "image config"
            )
        config = parse_image_config(config_bytes)
        config.check_layers(manifest)
        return cls(
            references=tuple(references),
            tags=tuple(tags),
            manifest_bytes=manifest_bytes,
            manifest_media_type=manifest.media_type,
            manifest_digest=digest_of(manifest_bytes),
            manifest=manifest,
            config_bytes=config_bytes,
            config=config,
            opener=opener,
        )

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        """The manifest's layer descriptors, base first."""
        return self.manifest.layers

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """A verifying stream of one blob of this image (layer or config)."""
        raw = self.opener(descriptor)
        return cast(BinaryIO, _Verified(raw, descriptor.digest, descriptor.size))


class _Verified(VerifyingReader):
    """A VerifyingReader that closes its source."""

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


# --- names and sources ------------------------------------------------------------------------


def _member_name(name: str, what: str) -> str:
    """A path inside an archive, normalised; ArchiveError if it is absolute or climbs out."""
    if not name or name.startswith("/") or "\0" in name:
        raise ArchiveError(f"{what} is not a relative path inside the archive", name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ArchiveError(f"{what} leads out of the archive", name)
    return "/".join(parts)


def _blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


class _Source:
    """Where an archive's files come from: a directory or a tar."""

    def names(self) -> set[str]:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        """A stream of file `name`; FileNotFoundError if there is none."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def read(self, name: str, what: str, limit: int = _MAX_DOCUMENT) -> bytes:
        """A small file, whole; ArchiveError if missing or larger than `limit`."""
        try:
            f = self.open(name)
        except FileNotFoundError:
            raise ArchiveError(f"{what} is missing", name) from None
        with f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ArchiveError(f"{what} is larger than {limit} bytes", name)
        return data


class _DirSource(_Source):
    """An OCI layout directory, every file opened beneath its fd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def names(self) -> set[str]:
        return set(os.listdir(self.fd))

    def open(self, name: str) -> BinaryIO:
        resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
        try:
            pfd = openat2(self.fd, name, os.O_PATH, resolve)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise FileNotFoundError(errno.ENOENT, "not in the layout", name) from None
            if e.errno == errno.EXDEV:
                raise ArchiveError("a symlink leads out of the layout directory", name) from None
            raise ArchiveError(f"cannot open it: {e.strerror}", name) from None
        try:
            st = os.fstat(pfd)
        finally:
            os.close(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError("not a regular file", name)
        fd = openat2(self.fd, name, os.O_RDONLY | os.O_NONBLOCK, resolve)
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise ArchiveError("changed while it was opened", name)
        return os.fdopen(fd, "rb")

    def close(self) -> None:
        os.close(self.fd)


class _TarSource(_Source):
    """A tar (plain or compressed); members are streamed from it, never extracted."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        for info in tar.getmembers():
            name = _member_name(info.name, "member")
            self.members.setdefault(name, info)

    def names(self) -> set[str]:
        return set(self.members)

    def open(self, name: str) -> BinaryIO:
        info = self.members.get(name)
        if info is None:
            raise FileNotFoundError(errno.ENOENT, "not in the archive", name)
        if not (info.isfile() or info.issym() or info.islnk()):
            raise ArchiveError("not a regular file", name)
        try:
            f = self.tar.extractfile(info)  # links resolve to members of this tar only
        except KeyError:
            raise ArchiveError("a link to a member the archive does not hold", name) from None
        if f is None:
            raise ArchiveError("not a regular file", name)
        return cast(BinaryIO, f)

    def close(self) -> None:
        self.tar.close()


# --- reading ------------------------------------------------------------------------------------


class ImageArchive:
    """An open archive: `kind` says which of the three it is, `images()` what it holds.

    Close it (or use `with`) after the last blob is read: blobs stream from it.
    """

    def __init__(self, path: Path, kind: str, source: _Source) -> None:
        self.path = path
        self.kind = kind
        self._source = source

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._source.close()

    def images(self, platform: Platform = DEFAULT_PLATFORM) -> list[ArchiveImage]:
        """Every image of the archive; where an index offers one image for several
        platforms, the one for `platform` (`select_manifest`)."""
        if self.kind == DOCKER_ARCHIVE:
            return _docker_images(self._source)
        return _layout_images(self._source, platform)


def open_archive(path: str | os.PathLike[str]) -> ImageArchive:
    """Open an image archive and detect its kind; ArchiveError if it is none of them."""
    path = Path(path)
    if path.is_dir():
        source: _Source = _DirSource(path)
        names = source.names()
        if "oci-layout" in names:
            return _checked_layout(path, OCI_LAYOUT, source)
        source.close()
        raise ArchiveError(f"not a docker-archive or OCI layout: found {_shown(names)}", str(path))
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such archive", str(path))
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - the archive keeps it open
    except (tarfile.TarError, EOFError) as e:
        raise ArchiveError(
            f"not a docker-archive or OCI layout: found no tar ({e})", str(path)
        ) from None
    try:
        tar_source = _TarSource(tar)
    except BaseException:
        tar.close()
        raise
    names = tar_source.names()
    if "oci-layout" in names and "index.json" in names:
        return _checked_layout(path, OCI_ARCHIVE, tar_source)
    if "manifest.json" in names:
        return ImageArchive(path, DOCKER_ARCHIVE, tar_source)
    tar_source.close()
    raise ArchiveError(f"not a docker-archive or OCI layout: found {_shown(names)}", str(path))


def _shown(names: set[str]) -> str:
    if not names:
        return "nothing"
    top = sorted({n.split("/")[0] for n in names})
    return ", ".join(top[:8]) + (" ..." if len(top) > 8 else "")


def _checked_layout(path: Path, kind: str, source: _Source) -> ImageArchive:
    try:
        layout = _json(source.read("oci-layout", "oci-layout"), "oci-layout")
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise ArchiveError(f"unsupported imageLayoutVersion {version!r}", "oci-layout")
    except BaseException:
        source.close()
        raise
    return ImageArchive(path, kind, source)


def _json(data: bytes, name: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"is not valid JSON ({e})", name) from None


def _open_blob(source: _Source, descriptor: Descriptor) -> BinaryIO:
    name = _blob_path(descriptor.digest)
    try:
        return source.open(name)
    except FileNotFoundError:
        raise ArchiveError(f"blob {descriptor.digest} is missing", name) from None


def _read_blob(source: _Source, descriptor: Descriptor, what: str) -> bytes:
    if descriptor.data is not None:
        return descriptor.data
    if descriptor.size > _MAX_DOCUMENT:
        raise ArchiveError(f"{what} is larger than {_MAX_DOCUMENT} bytes", str(descriptor.digest))
    with _open_blob(source, descriptor) as f:
        data = f.read(descriptor.size + 1)
    verifier = Verifier(descriptor.digest, descriptor.size)
    verifier.update(data)
    verifier.verify()
    return data


def _names_of(descriptor: Descriptor) -> tuple[tuple[Reference, ...], tuple[str, ...]]:
    """References and bare tags an index entry is annotated with (module docstring)."""
    references: list[Reference] = []
    tags: list[str] = []
    full = descriptor.annotations.get(CONTAINERD_NAME)
    ref_name = descriptor.annotations.get(REF_NAME)
    for value in (full, ref_name):
        if not value:
            continue
        if "/" not in value and ":" not in value and "@" not in value:
            if full is None and is_valid_tag(value):
                tags.append(value)
            elif full is None:
                log.warning("index entry %s: ref.name %r is no tag", descriptor.digest, value)
            continue
        try:
            ref = parse_reference(value)
        except InvalidReference as e:
            log.warning("index entry %s: %s", descriptor.digest, e)
            continue
        if ref not in references:
            references.append(ref)
    return tuple(references), tuple(tags)


def _layout_images(source: _Source, platform: Platform) -> list[ArchiveImage]:
    index = parse_manifest(source.read("index.json", "index.json"))
    if not isinstance(index, Index):
        raise ArchiveError("index.json is not an image index", "index.json")
    chosen: list[tuple[Descriptor, Descriptor]] = []  # (entry naming it, manifest descriptor)
    groups: dict[tuple[str | None, str | None], list[Descriptor]] = {}
    for entry in index.manifests:
        if entry.media_type in mt.INDEX_TYPES:
            nested = parse_manifest(_read_blob(source, entry, f"index {entry.digest}"))
            if not isinstance(nested, Index):
                raise ArchiveError(
                    "an image manifest where an index belongs", _blob_path(entry.digest)
                )
            chosen.append((entry, select_manifest(nested.manifests, platform)))
        elif entry.media_type in mt.MANIFEST_TYPES:
            key = (entry.annotations.get(REF_NAME), entry.annotations.get(CONTAINERD_NAME))
            groups.setdefault(key, []).append(entry)
        else:
            log.info("index.json: skipping %s of type %s", entry.digest, entry.media_type)
    for entries in groups.values():
        if len(entries) > 1 and all(e.platform is not None for e in entries):
            best = select_manifest(entries, platform)  # one image for several platforms
            chosen.append((best, best))
        else:
            chosen.extend((e, e) for e in entries)
    merged: dict[Digest, tuple[Descriptor, list[Reference], list[str]]] = {}
    for entry, descriptor in chosen:
        references, tags = _names_of(entry)
        _, refs, tag_list = merged.setdefault(descriptor.digest, (descriptor, [], []))
        refs.extend(r for r in references if r not in refs)
        tag_list.extend(t for t in tags if t not in tag_list)
    return [_layout_image(source, d, tuple(r), tuple(t)) for d, r, t in merged.values()]


def _layout_image(
    source: _Source,
    descriptor: Descriptor,
    references: tuple[Reference, ...],
    tags: tuple[str, ...],
) -> ArchiveImage:
    manifest_bytes = _read_blob(source, descriptor, f"manifest {descriptor.digest}")
    manifest = parse_manifest(manifest_bytes)
    if not isinstance(manifest, Manifest):
        raise ArchiveError(
            "an index where an image manifest belongs", _blob_path(descriptor.digest)
        )
    config_bytes = _read_blob(source, manifest.config, "config")
    config = parse_image_config(config_bytes)
    config.check_layers(manifest)
    return ArchiveImage(
        references=references,
        tags=tags,
        manifest_bytes=manifest_bytes,
        manifest_media_type=manifest.media_type,
        manifest_digest=descriptor.digest,
        manifest=manifest,
        config_bytes=config_bytes,
        config=config,
        opener=lambda d: _open_blob(source, d),
    )


def _docker_images(source: _Source) -> list[ArchiveImage]:
    listing = _json(source.read("manifest.json", "manifest.json"), "manifest.json")
    if not isinstance(listing, list) or not listing:
        raise ArchiveError("manifest.json lists no images", "manifest.json")
    layers: dict[str, tuple[Digest, int]] = {}  # member -> (uncompressed digest, size)
    by_digest: dict[Digest, str] = {}
    images = []
    for i, item in enumerate(listing):
        where = f"manifest.json[{i}]"
        if not isinstance(item, dict):
            raise ArchiveError(f"{where} is not an object", "manifest.json")
        config_name = item.get("Config")
        layer_names = item.get("Layers")
        tags = item.get("RepoTags") or []
        if not isinstance(config_name, str) or not isinstance(layer_names, list):
            raise ArchiveError(f"{where} needs Config and Layers", "manifest.json")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveError(f"{where}.RepoTags is not a list of strings", "manifest.json")
        config_bytes = source.read(_member_name(config_name, f"{where}.Config"), "config")
        config = parse_image_config(config_bytes)
        if len(config.diff_ids) != len(layer_names):
            raise ArchiveError(
                f"{where} lists {len(layer_names)} layers, its config {len(config.diff_ids)}",
                config_name,
            )
        descriptors = []
        for j, (layer_name, diff_id) in enumerate(zip(layer_names, config.diff_ids, strict=True)):
            if not isinstance(layer_name, str):
                raise ArchiveError(f"{where}.Layers[{j}] is not a string", "manifest.json")
            name = _member_name(layer_name, f"{where}.Layers[{j}]")
            if name not in layers:
                layers[name] = _hash_layer(source, name, diff_id)
            digest, size = layers[name]
            if digest != diff_id:
                raise DigestMismatch(str(diff_id), str(digest), f"layer {name}")
            by_digest[digest] = name
            descriptors.append({"mediaType": mt.OCI_LAYER, "digest": str(digest), "size": size})
        config_digest = digest_of(config_bytes)
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": str(config_digest),
                "size": len(config_bytes),
            },
            "layers": descriptors,
        }
        manifest_bytes = json.dumps(manifest_doc, separators=(",", ":")).encode()
        manifest = parse_manifest(manifest_bytes)
        assert isinstance(manifest, Manifest)
        references = []
        for tag in tags:
            try:
                references.append(parse_reference(tag))
            except InvalidReference as e:
                raise ArchiveError(f"{where}.RepoTags: {e}", "manifest.json") from None

        def opener(
            d: Descriptor, config_name: str = config_name, config_digest: Digest = config_digest
        ) -> BinaryIO:
            if d.digest == config_digest:
                return source.open(_member_name(config_name, "Config"))
            name = by_digest.get(d.digest)
            if name is None:
                raise ArchiveError(f"blob {d.digest} is missing", "manifest.json")
            return open_decompressed(source.open(name))

        images.append(
            ArchiveImage(
                references=tuple(references),
                tags=(),
                manifest_bytes=manifest_bytes,
                manifest_media_type=mt.OCI_MANIFEST,
                manifest_digest=digest_of(manifest_bytes),
                manifest=manifest,
                config_bytes=config_bytes,
                config=config,
                opener=opener,
            )
        )
    return images


def _hash_layer(source: _Source, name: str, diff_id: Digest) -> tuple[Digest, int]:
    """The digest (diff_id's algorithm) and size of a layer member, uncompressed."""
    try:
        raw = source.open(name)
    except FileNotFoundError:
        raise ArchiveError("layer is missing from the archive", name) from None
    hasher = diff_id.new_hash()
    size = 0
    with raw, open_decompressed(raw) as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return Digest(diff_id.algorithm, hasher.hexdigest()), size


# --- writing ------------------------------------------------------------------------------------


class _Sink:
    """Where a writer puts files: a tar stream or a directory."""

    def __init__(self, tar: tarfile.TarFile | None, root: Path | None) -> None:
        self.tar = tar
        self.root = root
        self.written: set[str] = set()

    def add(self, name: str, source: BinaryIO, size: int) -> None:
        if name in self.written:
            return
        self.written.add(name)
        if self.tar is not None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = size, 0o644, 0
            self.tar.addfile(info, source)
            return
        assert self.root is not None
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            shutil.copyfileobj(source, out, _CHUNK)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add(name, io.BytesIO(data), len(data))


def _copy_blob(sink: _Sink, image: ArchiveImage, descriptor: Descriptor, name: str) -> None:
    """Copy a blob as stored; the reader checks digest and size (finish: tar reads exactly
    `size` bytes, so the check at EOF is forced here)."""
    if name in sink.written:
        return
    with image.open_blob(descriptor) as f:
        sink.add(name, cast(BinaryIO, f), descriptor.size)
        cast(_Verified, f).finish()


@contextlib.contextmanager
def _sink(dest: str | os.PathLike[str] | BinaryIO, directory: bool) -> Iterator[_Sink]:
    """A sink writing `dest` atomically: a tar file, a tar stream, or a directory."""
    if not isinstance(dest, (str, os.PathLike)):
        with tarfile.open(fileobj=dest, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            yield _Sink(tar, None)
        return
    path = Path(dest)
    if not directory:
        with (
            open_atomic(path) as f,
            tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            yield _Sink(tar, None)
        return
    if path.exists():
        raise FileExistsError(errno.EEXIST, "the layout directory exists already", str(path))
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{path.name}-", dir=path.parent))
    try:
        yield _Sink(None, tmp)
        tmp.chmod(0o755)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_oci_layout(
    dest: str | os.PathLike[str] | BinaryIO,
    images: Sequence[ArchiveImage],
    *,
    directory: bool = False,
) -> None:
    """Write `images` as an OCI image layout: a tar (`oci-archive`; `dest` a path or a
    stream) or, with `directory`, a layout directory at `dest` (which must not exist).

    index.json gets one entry per reference and bare tag of each image (one without a name
    if it has none): `ref.name` is the tag, as skopeo and umoci look images up
    (`oci:DIR:TAG`), or the full reference when it has no tag; the full reference is also
    in `io.containerd.image.name`, as docker and containerd write it.
    """
    entries: list[dict[str, object]] = []
    with _sink(dest, directory) as sink:
        for image in images:
            for layer in image.layers:
                _copy_blob(sink, image, layer, _blob_path(layer.digest))
            sink.add_bytes(_blob_path(image.manifest.config.digest), image.config_bytes)
            sink.add_bytes(_blob_path(image.manifest_digest), image.manifest_bytes)
            base = {
                "mediaType": image.manifest_media_type,
                "digest": str(image.manifest_digest),
                "size": len(image.manifest_bytes),
            }
            names: list[dict[str, str]] = [
                {REF_NAME: ref.tag or str(ref), CONTAINERD_NAME: str(ref)}
                for ref in image.references
            ]
            names += [{REF_NAME: tag} for tag in image.tags]
            for annotations in names or [{}]:
                entries.append({**base, "annotations": annotations} if annotations else base)
        sink.add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        sink.add_bytes("index.json", json.dumps(index, separators=(",", ":")).encode())


def write_docker_archive(
    dest: str | os.PathLike[str] | BinaryIO, images: Sequence[ArchiveImage]
) -> None:
    """Write `images` as a docker-archive tar (`docker load`, `podman load`): manifest.json
    with Config `blobs/sha256/HEX`, RepoTags (the references with a tag; bare tags and
    digest-only references cannot be loaded by name and are left out) and Layers, each
    blob stored under its digest as the image holds it (compressed layers stay compressed).
    """
    listing = []
    with _sink(dest, directory=False) as sink:
        for image in images:
            config_name = _blob_path(image.manifest.config.digest)
            sink.add_bytes(config_name, image.config_bytes)
            layer_names = []
            for layer in image.layers:
                name = _blob_path(layer.digest)
                _copy_blob(sink, image, layer, name)
                layer_names.append(name)
            repo_tags = [f"{ref.familiar_name}:{ref.tag}" for ref in image.references if ref.tag]
            listing.append({"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names})
        sink.add_bytes("manifest.json", json.dumps(listing, separators=(",", ":")).encode())
