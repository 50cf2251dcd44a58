"""Image archives, differential against skopeo (and podman) as installed here, offline."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from kurma.errors import ArchiveError, DigestMismatch, PlatformNotFound
from kurma.oci import (
    DOCKER_ARCHIVE,
    OCI_ARCHIVE,
    OCI_LAYOUT,
    ArchiveImage,
    Platform,
    open_archive,
    parse_reference,
    write_docker_archive,
    write_oci_layout,
)

SKOPEO = shutil.which("skopeo")
PODMAN = shutil.which("podman")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A layer tar; `None` content makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI layout written by hand: blobs, and index entries added as images are."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs/sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.entries: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = _sha(data)
        (self.root / "blobs/sha256" / digest[7:]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def image(self, arch: str = "amd64", marker: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """Three layers: plain, gzip (a whiteout of a file of the first), plain again."""
        plain = [
            _tar([("etc", None), ("etc/passwd", b"root:x:0:0::/:/bin/sh\n"), ("old", b"x")]),
            _tar([(".wh.old", b""), ("data", b"gz" * 1000 + marker)]),
            _tar([("bin", None), ("bin/tool", b"#!/bin/sh\n" + arch.encode())]),
        ]
        stored = [plain[0], gzip.compress(plain[1], mtime=0), plain[2]]
        types = [OCI_LAYER, OCI_LAYER + "+gzip", OCI_LAYER]
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Cmd": ["/bin/tool"], "Labels": {"a": "b"}},
                "rootfs": {"type": "layers", "diff_ids": [_sha(p) for p in plain]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}
                | self.blob(config),
                "layers": [
                    {"mediaType": t} | self.blob(s) for t, s in zip(types, stored, strict=True)
                ],
            }
        ).encode()
        descriptor = {"mediaType": "application/vnd.oci.image.manifest.v1+json"} | self.blob(
            manifest
        )
        return descriptor, config

    def add(self, descriptor: dict[str, Any], **annotations: str) -> None:
        entry = dict(descriptor)
        if annotations:
            entry["annotations"] = {k.replace("_", "."): v for k, v in annotations.items()}
        self.entries.append(entry)
        index = {"schemaVersion": 2, "manifests": self.entries}
        (self.root / "index.json").write_text(json.dumps(index))


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Layout, bytes]:
    lay = Layout(tmp_path / "layout")
    descriptor, config = lay.image()
    lay.add(descriptor, org_opencontainers_image_ref_name="v1")
    return lay, config


def _skopeo(*args: str) -> str:
    assert SKOPEO is not None
    result = subprocess.run(
        [SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _check_layers(image: ArchiveImage) -> None:
    """Each layer, uncompressed, hashes to the config's diff_id."""
    assert len(image.layers) == len(image.config.diff_ids) == 3
    for layer, diff_id in zip(image.layers, image.config.diff_ids, strict=True):
        with image.open_blob(layer) as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        assert _sha(data) == str(diff_id)


# --- reading what skopeo writes ---------------------------------------------------------------


def test_reads_an_oci_layout_directory(layout: tuple[Layout, bytes]) -> None:
    lay, config = layout
    with open_archive(lay.root) as archive:
        assert archive.kind == OCI_LAYOUT
        (image,) = archive.images()
        assert image.references == () and image.tags == ("v1",)  # a bare tag: no repository
        assert image.config_bytes == config
        _check_layers(image)


@needs_skopeo
def test_reads_skopeo_docker_archive(layout: tuple[Layout, bytes], tmp_path: Path) -> None:
    lay, config = layout
    out = tmp_path / "out.tar"
    _skopeo("copy", f"oci:{lay.root}:v1", f"docker-archive:{out}:example.com/app:v1")
    with open_archive(out) as archive:
        assert archive.kind == DOCKER_ARCHIVE
        (image,) = archive.images()
        assert image.references == (parse_reference("example.com/app:v1"),)
        assert json.loads(image.config_bytes) == json.loads(config)
        # synthesized: the layers are the uncompressed tars, digests = diff_ids
        assert [layer.digest for layer in image.layers] == list(image.config.diff_ids)
        assert {layer.media_type for layer in image.layers} == {OCI_LAYER}
        _check_layers(image)


@needs_skopeo
def test_reads_skopeo_oci_archive(layout: tuple[Layout, bytes], tmp_path: Path) -> None:
    lay, config = layout
    out = tmp_path / "out.tar"
    _skopeo("copy", f"oci:{lay.root}:v1", f"oci-archive:{out}:v1")
    with open_archive(out) as archive:
        assert archive.kind == OCI_ARCHIVE
        (image,) = archive.images()
        assert image.tags == ("v1",)
        assert json.loads(image.config_bytes) == json.loads(config)
        _check_layers(image)


# --- skopeo reading what we write --------------------------------------------------------------


def _inspect(transport: str) -> dict[str, Any]:
    return json.loads(_skopeo("inspect", "--raw", transport))


@needs_skopeo
def test_skopeo_reads_our_oci_layout(layout: tuple[Layout, bytes], tmp_path: Path) -> None:
    lay, _ = layout
    with open_archive(lay.root) as archive:
        (image,) = archive.images()
        image = ArchiveImage.build(
            image.manifest_bytes,
            image.config_bytes,
            image.opener,
            references=[parse_reference("example.com/app:v2")],
            tags=["v1"],
        )
        write_oci_layout(tmp_path / "ours", [image], directory=True)
        write_oci_layout(tmp_path / "ours.tar", [image])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    for transport in (f"oci:{tmp_path}/ours:v1", f"oci:{tmp_path}/ours:v2"):
        assert _inspect(transport) == json.loads(image.manifest_bytes)
    assert _inspect(f"oci-archive:{tmp_path}/ours.tar:v1") == json.loads(image.manifest_bytes)
    _skopeo("copy", f"oci:{tmp_path}/ours:v2", f"oci:{tmp_path}/fresh:v2")
    with open_archive(tmp_path / "fresh") as archive:
        (copied,) = archive.images()
        assert copied.config_bytes == image.config_bytes  # skopeo may compress the layers
        _check_layers(copied)
    with open_archive(tmp_path / "ours") as archive:
        (again,) = archive.images()  # two index entries, one image
    assert again.references == (parse_reference("example.com/app:v2"),)
    assert again.tags == ("v1",)


@needs_skopeo
def test_skopeo_reads_our_docker_archive(layout: tuple[Layout, bytes], tmp_path: Path) -> None:
    lay, config = layout
    out = tmp_path / "docker.tar"
    with open_archive(lay.root) as archive:
        (image,) = archive.images()
        image = ArchiveImage.build(
            image.manifest_bytes,
            image.config_bytes,
            image.opener,
            references=[parse_reference("example.com/app:v1")],
        )
        write_docker_archive(out, [image])
    info = json.loads(_skopeo("inspect", f"docker-archive:{out}"))
    assert info["Architecture"] == "amd64"
    # skopeo names a docker-archive's layers by their uncompressed digest
    assert info["Layers"] == [str(diff_id) for diff_id in image.config.diff_ids]
    _skopeo("copy", f"docker-archive:{out}", f"oci:{tmp_path}/fresh:v1")
    with open_archive(tmp_path / "fresh") as archive:
        (copied,) = archive.images()
        assert json.loads(copied.config_bytes) == json.loads(config)
        _check_layers(copied)
    with open_archive(out) as archive:  # and our own reader takes it back
        (ours,) = archive.images()
        assert ours.references == (parse_reference("example.com/app:v1"),)
        assert ours.config_bytes == config
        _check_layers(ours)


def _podman(store: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    assert PODMAN is not None
    return subprocess.run(
        [PODMAN, *store, "--storage-driver", "vfs", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.skipif(PODMAN is None, reason="podman is not installed")
def test_podman_loads_our_docker_archive_and_saves_it_back(
    layout: tuple[Layout, bytes], tmp_path: Path
) -> None:
    """podman load of our archive, podman save of the image, read back: same config and
    layers. podman runs with a store of its own under tmp_path (vfs: no mounts)."""
    lay, config = layout
    ours, saved = tmp_path / "ours.tar", tmp_path / "saved.tar"
    with open_archive(lay.root) as archive:
        (image,) = archive.images()
        image = ArchiveImage.build(
            image.manifest_bytes,
            image.config_bytes,
            image.opener,
            references=[parse_reference("example.com/app:v1")],
        )
        write_docker_archive(ours, [image])
    runroot = Path(tempfile.mkdtemp(prefix="kurma-podman-"))  # at most 50 characters
    store = ["--root", str(tmp_path / "proot"), "--runroot", str(runroot)]
    try:
        loaded = _podman(store, "load", "-i", str(ours))
        if loaded.returncode != 0:
            pytest.skip(f"podman load does not work here: {loaded.stderr.strip()[-300:]}")
        result = _podman(
            store, "save", "--format", "docker-archive", "-o", str(saved), "example.com/app:v1"
        )
        assert result.returncode == 0, result.stderr
    finally:
        _podman(store, "rmi", "-a", "-f")
        shutil.rmtree(runroot, ignore_errors=True)
    with open_archive(saved) as archive:
        (back,) = archive.images()
        assert back.references == (parse_reference("example.com/app:v1"),)
        assert json.loads(back.config_bytes)["rootfs"] == json.loads(config)["rootfs"]
        _check_layers(back)


# --- indexes and platforms ---------------------------------------------------------------------


def test_index_with_several_platforms_selects_one(tmp_path: Path) -> None:
    lay = Layout(tmp_path / "multi")
    amd, _ = lay.image("amd64")
    arm, _ = lay.image("arm64", marker=b"arm")
    amd["platform"] = {"os": "linux", "architecture": "amd64"}
    arm["platform"] = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    nested = json.dumps({"schemaVersion": 2, "manifests": [amd, arm]}).encode()
    lay.add(
        {"mediaType": "application/vnd.oci.image.index.v1+json"} | lay.blob(nested),
        io_containerd_image_name="docker.io/library/multi:1",
        org_opencontainers_image_ref_name="1",
    )
    with open_archive(lay.root) as archive:
        (image,) = archive.images(Platform("linux", "arm64"))
        assert image.config.platform.architecture == "arm64"
        assert image.references == (parse_reference("multi:1"),)
        assert image.tags == ()  # the full name is known: the bare tag adds nothing
        (image,) = archive.images()
        assert image.config.platform.architecture == "amd64"
        with pytest.raises(PlatformNotFound):
            archive.images(Platform("linux", "s390x"))


# --- refusals -----------------------------------------------------------------------------------


def _tar_file(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name", ["../evil", "/abs", "a/../../b"])
def test_member_names_escaping_are_refused(tmp_path: Path, name: str) -> None:
    path = _tar_file(tmp_path / "x.tar", {"manifest.json": b"[]", name: b"x"})
    with pytest.raises(ArchiveError, match=r"member .*: '"):
        open_archive(path)


def test_layer_paths_escaping_are_refused(tmp_path: Path) -> None:
    listing = [{"Config": "../c.json", "RepoTags": [], "Layers": []}]
    path = _tar_file(tmp_path / "x.tar", {"manifest.json": json.dumps(listing).encode()})
    with open_archive(path) as archive, pytest.raises(ArchiveError, match="leads out"):
        archive.images()


def test_empty_manifest_json_is_refused(tmp_path: Path) -> None:
    path = _tar_file(tmp_path / "x.tar", {"manifest.json": b"[]"})
    with open_archive(path) as archive, pytest.raises(ArchiveError, match="lists no images"):
        archive.images()


def test_unknown_formats_are_refused(tmp_path: Path) -> None:
    path = _tar_file(tmp_path / "x.tar", {"hello.txt": b"x", "dir/file": b"y"})
    with pytest.raises(ArchiveError, match="not a docker-archive or OCI layout: found dir, hello"):
        open_archive(path)
    (tmp_path / "plain").write_bytes(b"just text, no tar")
    with pytest.raises(ArchiveError, match="found no tar"):
        open_archive(tmp_path / "plain")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/index.json").write_text("{}")
    with pytest.raises(ArchiveError, match=r"found index\.json"):
        open_archive(tmp_path / "d")


def test_missing_blob_is_named(layout: tuple[Layout, bytes]) -> None:
    lay, _ = layout
    manifest = json.loads((lay.root / "blobs/sha256" / lay.entries[0]["digest"][7:]).read_text())
    layer = manifest["layers"][1]["digest"]
    (lay.root / "blobs/sha256" / layer[7:]).unlink()
    with open_archive(lay.root) as archive:
        (image,) = archive.images()
        with pytest.raises(ArchiveError, match=f"blob {layer} is missing"):
            image.open_blob(image.layers[1])


def test_blob_symlinked_out_of_the_layout_is_refused(
    layout: tuple[Layout, bytes], tmp_path: Path
) -> None:
    lay, _ = layout
    manifest = json.loads((lay.root / "blobs/sha256" / lay.entries[0]["digest"][7:]).read_text())
    blob = lay.root / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    outside = tmp_path / "outside-blob"
    outside.write_bytes(blob.read_bytes())  # same content: only the place is wrong
    blob.unlink()
    blob.symlink_to(outside)
    with open_archive(lay.root) as archive:
        (image,) = archive.images()
        with pytest.raises(ArchiveError, match="leads out of the layout directory"):
            image.open_blob(image.layers[0])


def test_corrupt_blob_fails_its_digest(layout: tuple[Layout, bytes]) -> None:
    lay, _ = layout
    manifest = json.loads((lay.root / "blobs/sha256" / lay.entries[0]["digest"][7:]).read_text())
    blob = lay.root / "blobs/sha256" / manifest["layers"][2]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[600] ^= 1
    blob.write_bytes(bytes(data))
    with open_archive(lay.root) as archive:
        (image,) = archive.images()
        with pytest.raises(DigestMismatch), image.open_blob(image.layers[2]) as f:
            f.read()


def test_docker_archive_layer_not_matching_its_diff_id(tmp_path: Path) -> None:
    layer = _tar([("a", b"1")])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [_sha(b"other")]},
        }
    ).encode()
    listing = [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l.tar"]}]
    members = {"manifest.json": json.dumps(listing).encode(), "c.json": config, "l.tar": layer}
    archive = open_archive(_tar_file(tmp_path / "x.tar", members))
    with archive, pytest.raises(DigestMismatch):
        archive.images()


def test_writing_over_an_existing_layout_directory_is_refused(
    layout: tuple[Layout, bytes], tmp_path: Path
) -> None:
    lay, _ = layout
    (tmp_path / "exists").mkdir()
    with open_archive(lay.root) as archive, pytest.raises(FileExistsError):
        write_oci_layout(tmp_path / "exists", archive.images(), directory=True)


def test_a_failed_write_leaves_nothing(layout: tuple[Layout, bytes], tmp_path: Path) -> None:
    lay, _ = layout
    manifest = json.loads((lay.root / "blobs/sha256" / lay.entries[0]["digest"][7:]).read_text())
    (lay.root / "blobs/sha256" / manifest["layers"][2]["digest"][7:]).unlink()
    out = tmp_path / "out"
    out.mkdir()
    with open_archive(lay.root) as archive:
        images = archive.images()
        with pytest.raises(ArchiveError, match="is missing"):
            write_docker_archive(out / "d.tar", images)
        with pytest.raises(ArchiveError, match="is missing"):
            write_oci_layout(out / "layout", images, directory=True)
    assert os.listdir(out) == []
