"""apply_layer: OCI layers applied in sequence, as docker and umoci apply them.

Layers are built with `tarfile` (tests.archives.TarBuilder) and applied one after the other
onto `tmp/root`, beside `tmp/outside/secret`, the target every hostile layer aims at. Root:
owners, trusted.* xattrs and set-id bits need it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from kurma.aci import Compression, UnpackLimits
from kurma.errors import ArchiveError, DigestMismatch
from kurma.oci import LayerResult, apply_layer, discard_tree
from tests.archives import TarBuilder, compress

pytestmark = pytest.mark.root

MEDIA = {
    Compression.NONE: "application/vnd.oci.image.layer.v1.tar",
    Compression.GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    Compression.ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
}


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """tmp/root (empty, the tree layers apply to) and tmp/outside/secret."""
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"secret")
    return tmp_path


def apply(
    sandbox: Path, builder: TarBuilder, kind: Compression = Compression.NONE, **kw: object
) -> LayerResult:
    blob = compress(builder.data(), kind)
    return apply_layer(io.BytesIO(blob), sandbox / "root", media_type=MEDIA[kind], **kw)  # type: ignore[arg-type]


def tree(root: Path) -> dict[str, str]:
    """path -> 'd', 'l:TARGET' or 'f:CONTENT', for comparing whole trees."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "l:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "d"
            else:
                out[rel] = "f:" + p.read_bytes().decode()
    return out


def assert_outside_untouched(sandbox: Path) -> None:
    assert os.listdir(sandbox / "outside") == ["secret"]
    secret = sandbox / "outside" / "secret"
    assert secret.read_bytes() == b"secret" and secret.stat().st_nlink == 1


def base_layer() -> TarBuilder:
    return (TarBuilder().dir("./")
            .dir("etc").file("etc/keep", b"k").file("etc/gone", b"g")
            .dir("a").dir("a/b").dir("a/b/c").file("a/b/c/bar", b"bar").file("a/top", b"t")
            .dir("usr").dir("usr/lib").file("usr/lib/libx", b"x")
            .file("bin", b"a file, later a directory")
            .dir("opt").file("opt/old", b"o"))  # fmt: skip


def test_layers_in_sequence(sandbox: Path) -> None:
    """Whiteout, opaque directory (marker after the new entries), a hardlink to a lower
    file, a symlink replacing a directory, a directory replacing a file."""
    apply(sandbox, base_layer())
    apply(sandbox, TarBuilder()
          .file("etc/.wh.gone")
          .dir("a").dir("a/b").dir("a/b/c").file("a/b/c/foo", b"foo")
          .file("a/.wh..wh..opq")
          .hardlink("etc/keep2", "etc/keep")
          .symlink("usr/lib", "../lib")
          .dir("bin").file("bin/sh", b"sh")
          .file("opt", b"now a file"))  # fmt: skip
    root = sandbox / "root"
    assert tree(root) == {
        "etc": "d", "etc/keep": "f:k", "etc/keep2": "f:k",
        "a": "d", "a/b": "d", "a/b/c": "d", "a/b/c/foo": "f:foo",
        "usr": "d", "usr/lib": "l:../lib",
        "bin": "d", "bin/sh": "f:sh",
        "opt": "f:now a file",
    }  # fmt: skip
    assert os.stat(root / "etc/keep").st_ino == os.stat(root / "etc/keep2").st_ino


def test_whiteout_spares_the_same_layer(sandbox: Path) -> None:
    """A whiteout hides lower layers only: a file this layer wrote before it stays, and a
    directory this layer wrote into loses only its lower contents."""
    apply(sandbox, TarBuilder().dir("d").file("d/lower", b"l").file("f", b"lower"))
    apply(sandbox, TarBuilder().file("f", b"upper").file(".wh.f")
          .file("d/upper", b"u").file(".wh.d"))  # fmt: skip
    assert tree(sandbox / "root") == {"f": "f:upper", "d": "d", "d/upper": "f:u"}


def test_opaque_marker_first(sandbox: Path) -> None:
    """The recommended order (marker before its siblings) gives the same result."""
    apply(sandbox, TarBuilder().dir("a").dir("a/b").file("a/b/bar", b"bar").file("a/x", b"x"))
    apply(sandbox, TarBuilder().dir("a").file("a/.wh..wh..opq").dir("a/b")
          .file("a/b/foo", b"foo"))  # fmt: skip
    assert tree(sandbox / "root") == {"a": "d", "a/b": "d", "a/b/foo": "f:foo"}


def test_whiteout_of_a_missing_path_is_a_no_op(sandbox: Path) -> None:
    result = apply(sandbox, TarBuilder().file("nodir/.wh.x").file(".wh.y"))
    assert tree(sandbox / "root") == {} and result.whiteouts == 2


def test_replaced_directory_gets_later_entries(sandbox: Path) -> None:
    """A directory replaced within a layer is not written through a stale cached fd: the
    entries after the replacement land in the new directory, visible in the tree."""
    apply(sandbox, TarBuilder().dir("d").file("d/lower", b"l"))
    apply(sandbox, TarBuilder().file("d/a", b"a").file("d", b"file").dir("d")
          .file("d/b", b"b"))  # fmt: skip
    assert tree(sandbox / "root") == {"d": "d", "d/b": "f:b"}


def test_symlink_replacing_a_directory_is_not_written_through(sandbox: Path) -> None:
    """After `lib/` became a symlink, a later entry below it is refused, even though
    `lib` was an open, cached directory a moment before."""
    apply(sandbox, TarBuilder().dir("lib").file("lib/x", b"x"))
    with pytest.raises(ArchiveError, match="through a symlink"):
        apply(sandbox, TarBuilder().file("lib/y", b"y").symlink("lib", "../outside")
              .file("lib/evil", b"e"))  # fmt: skip
    assert_outside_untouched(sandbox)


def test_opaque_and_whiteout_handle_deep_trees(sandbox: Path) -> None:
    """An opaque marker prunes below every directory this layer wrote into, and a whiteout
    removes a directory, however deep (no recursion limit, no fd per level)."""
    deep = "/".join(["d"] * 1500)
    try:
        apply(sandbox, TarBuilder().file(f"{deep}/lower", b"l").file("top", b"t")
              .file(f"e/{deep}/f", b"f"))  # fmt: skip
        apply(sandbox, TarBuilder().file(f"{deep}/upper", b"u").file(".wh..wh..opq"))
        assert os.listdir(sandbox / "root" / deep) == ["upper"]
        assert os.listdir(sandbox / "root") == ["d"]
        apply(sandbox, TarBuilder().file(".wh.d"))
        assert os.listdir(sandbox / "root") == []
        apply(sandbox, TarBuilder().file(f"{deep}/again", b"a"))
        discard_tree(sandbox / "root")  # what a caller does with a failed staging tree
        assert not (sandbox / "root").exists()
    finally:  # shutil.rmtree (and so pytest's cleanup) cannot remove 1500 levels
        subprocess.run(["rm", "-rf", str(sandbox / "root")], check=True)


def test_whiteout_name_as_a_directory_is_refused(sandbox: Path) -> None:
    with pytest.raises(ArchiveError, match="whiteout name used as a directory"):
        apply(sandbox, TarBuilder().file(".wh.d/f", b"x"))


def test_duplicate_entries_last_wins(sandbox: Path) -> None:
    """The spec forbids duplicates; docker applies them in order, and so does Kurma."""
    apply(sandbox, TarBuilder().file("f", b"one").file("f", b"two").symlink("l", "a")
          .file("l", b"file"))  # fmt: skip
    assert tree(sandbox / "root") == {"f": "f:two", "l": "f:file"}


def test_metadata_kept(sandbox: Path) -> None:
    """setuid/setgid/sticky, owners, mtimes and trusted./user. xattrs survive; a directory
    over a directory takes the upper attributes (all of them, as umoci) and keeps its lower
    children."""
    apply(sandbox, TarBuilder()
          .dir("tmp", mode=0o1777)
          .file("suid", b"x", mode=0o4755, uid=1234, gid=5678)
          .file("sgid", b"x", mode=0o2711, uid=1, gid=2, mtime=1_111_111_111)
          .file("attrs", b"x", xattrs={"trusted.kurma": b"t\x00v", "user.k": b"u"})
          .dir("d", mode=0o755, uid=0, xattrs={"user.old": b"o"})
          .file("d/child", b"c"))  # fmt: skip
    apply(sandbox, TarBuilder().dir("d", mode=0o700, uid=42, gid=43, mtime=1_222_222_222,
                                    xattrs={"user.new": b"n"}))  # fmt: skip
    root = sandbox / "root"
    checks = {"tmp": (0o1777, 0, 0), "suid": (0o4755, 1234, 5678), "sgid": (0o2711, 1, 2),
              "d": (0o700, 42, 43)}  # fmt: skip
    for rel, want in checks.items():
        st = os.lstat(root / rel)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == want, rel
    assert os.lstat(root / "sgid").st_mtime == 1_111_111_111
    assert os.lstat(root / "d").st_mtime == 1_222_222_222
    assert (root / "d/child").read_bytes() == b"c"
    assert os.getxattr(root / "attrs", "trusted.kurma") == b"t\x00v"
    assert os.getxattr(root / "attrs", "user.k") == b"u"
    assert os.listxattr(root / "d") == ["user.new"]  # attributes replaced, xattrs included


def test_device_nodes_are_skipped(sandbox: Path) -> None:
    """Same policy as ACIs: an image cannot hand a pod a device node or a fifo."""
    result = apply(sandbox, TarBuilder().dir("dev").node("dev/sda", tarfile.BLKTYPE, 8, 0)
                   .node("fifo", tarfile.FIFOTYPE))  # fmt: skip
    assert tree(sandbox / "root") == {"dev": "d"}
    assert len(result.skipped) == 2 and "block device" in result.skipped[0]


HOSTILE = {
    "dotdot": [TarBuilder().file("../outside/evil", b"x")],
    "dotdot-in-middle": [TarBuilder().file("a/../../outside/evil", b"x")],
    "absolute": [TarBuilder().file("/outside/evil", b"x")],
    "symlink-parent-same-layer": [
        TarBuilder().symlink("link", "../outside").file("link/evil", b"x")],
    "symlink-parent-lower-layer": [
        TarBuilder().symlink("link", "/outside"), TarBuilder().file("link/evil", b"x")],
    "whiteout-through-symlink": [
        TarBuilder().symlink("link", "../outside"), TarBuilder().file("link/.wh.secret")],
    "opaque-through-symlink": [
        TarBuilder().symlink("link", "../outside"), TarBuilder().file("link/.wh..wh..opq")],
    "hardlink-dotdot": [TarBuilder().hardlink("evil", "../outside/secret")],
    "hardlink-absolute": [TarBuilder().hardlink("evil", "/outside/secret")],
    "hardlink-through-symlink": [
        TarBuilder().symlink("link", "../outside").hardlink("evil", "link/secret")],
    "whiteout-of-parent": [TarBuilder().file("d/.wh..")],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_layers_are_refused(sandbox: Path, name: str) -> None:
    """Nothing outside the root is written, linked or removed; the error names the entry."""
    # Rebuild from the template: a TarBuilder can be closed only once.
    layers = HOSTILE[name]
    *good, bad = layers
    for layer in good:
        apply(sandbox, layer)
    with pytest.raises(ArchiveError) as err:
        apply(sandbox, bad)
    assert err.value.member is not None
    assert_outside_untouched(sandbox)


@pytest.mark.parametrize("kind", [Compression.NONE, Compression.GZIP, Compression.ZSTD])
def test_digests_and_compressions(sandbox: Path, kind: Compression) -> None:
    """The digest is the blob's sha256, the diff_id the uncompressed tar's."""
    data = TarBuilder().file("f", b"content" * 1000).data()
    blob = compress(data, kind)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    result = apply_layer(io.BytesIO(blob), sandbox / "root", media_type=MEDIA[kind],
                         expected_digest=digest, expected_diff_id=diff_id)  # fmt: skip
    assert (result.digest, result.diff_id, result.compression) == (digest, diff_id, kind)
    assert (result.total_bytes, result.compressed_bytes) == (len(data), len(blob))
    assert (sandbox / "root/f").read_bytes() == b"content" * 1000


def test_magic_decides_without_a_media_type(sandbox: Path) -> None:
    """docker-archive layers have no media type: the content's magic bytes decide."""
    blob = compress(TarBuilder().file("f", b"z").data(), Compression.ZSTD)
    result = apply_layer(io.BytesIO(blob), sandbox / "root", media_type=None)
    assert result.compression is Compression.ZSTD and (sandbox / "root/f").exists()


@pytest.mark.parametrize("which", ["digest", "diff_id"])
def test_digest_mismatch_is_refused(sandbox: Path, which: str) -> None:
    """The error names the expected and the actual digest."""
    wrong = "sha256:" + "0" * 64
    kw = {"expected_digest": wrong} if which == "digest" else {"expected_diff_id": wrong}
    with pytest.raises(DigestMismatch) as err:
        apply(sandbox, TarBuilder().file("f", b"x"), Compression.GZIP, **kw)
    assert err.value.expected == wrong and err.value.actual.startswith("sha256:")
    assert wrong in str(err.value) and err.value.actual in str(err.value)


def test_media_type_contradicted_by_content(sandbox: Path) -> None:
    blob = compress(TarBuilder().file("f").data(), Compression.ZSTD)
    with pytest.raises(ArchiveError, match=r"names gzip.*say zstd"):
        apply_layer(io.BytesIO(blob), sandbox / "root", media_type=MEDIA[Compression.GZIP])
    with pytest.raises(ArchiveError, match="layers are plain, gzip or zstd"):
        apply_layer(io.BytesIO(compress(TarBuilder().data(), Compression.XZ)), sandbox / "root",
                    media_type=None)  # fmt: skip
    with pytest.raises(ArchiveError, match="unsupported layer media type"):
        apply_layer(io.BytesIO(blob), sandbox / "root", media_type="text/plain")


def test_gzip_bomb_stops_at_the_limit(sandbox: Path) -> None:
    """A 1 GiB file of zeros (1 MiB gzipped) stops at max_total_bytes, not at its end."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        info = tarfile.TarInfo("zeros")
        info.size = 1 << 30
        gz.write(info.tobuf(format=tarfile.PAX_FORMAT))
        chunk = bytes(1 << 20)
        for _ in range(1 << 10):
            gz.write(chunk)
    with pytest.raises(ArchiveError, match="max_total_bytes"):
        apply_layer(io.BytesIO(raw.getvalue()), sandbox / "root",
                    media_type=MEDIA[Compression.GZIP],
                    limits=UnpackLimits(max_total_bytes=8 << 20))  # fmt: skip
    assert os.path.getsize(sandbox / "root/zeros") <= 8 << 20


def test_entry_limit(sandbox: Path) -> None:
    builder = TarBuilder()
    for i in range(20):
        builder.file(f"f{i}")
    with pytest.raises(ArchiveError, match="max_entries=10"):
        apply(sandbox, builder, limits=UnpackLimits(max_entries=10))


# --- differential: the same image through umoci ------------------------------------------


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def oci_layout(layout: Path, layers: list[tuple[bytes, Compression]]) -> None:
    """A one-image OCI layout (tag `t`) of `layers` (uncompressed tar, compression)."""
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers",
                         "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest()
                                      for t, _ in layers]}}  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(layout, json.dumps(config).encode())},
        "layers": [{"mediaType": MEDIA[kind], **_blob(layout, compress(t, kind))}
                   for t, kind in layers],
    }  # fmt: skip
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(layout, json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))


def facts(root: Path) -> dict[str, tuple[object, ...]]:
    """What the issue's differential compares: type, mode, owner, size, target, xattrs."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if dirpath == str(root) else dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            xattrs = {} if link else {k: os.getxattr(p, k) for k in os.listxattr(p)}
            out[str(p.relative_to(root))] = (
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                size, link, xattrs, st.st_nlink if size is not None else None,
            )  # fmt: skip
    return out


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed (Debian umoci)")
def test_same_tree_as_umoci(sandbox: Path) -> None:
    """Three layers (plain and gzip: Debian's umoci 0.4.7 refuses zstd layers) give the
    tree `umoci unpack` gives."""
    layers = [
        (base_layer().dir("sbin").file("sbin/su", b"su", mode=0o4755, uid=0)
         .file("x", b"x", xattrs={"user.a": b"1", "trusted.b": b"2"})
         .dir("xd", xattrs={"user.a": b"1", "user.b": b"2"}).data(), Compression.NONE),
        (TarBuilder().file("etc/.wh.gone").dir("a").file("a/.wh..wh..opq").dir("a/n")
         .file("a/n/new", b"n", mode=0o600, uid=7, gid=8).hardlink("etc/keep2", "etc/keep")
         .symlink("usr/lib", "../lib").dir("bin").file("bin/sh", b"sh")
         .file("opt", b"file").data(), Compression.GZIP),
        (TarBuilder().file(".wh.x").dir("tmp", mode=0o1777).file("a/.wh.n")
         .dir("sbin", mode=0o750, uid=3, gid=4).dir("xd", xattrs={"user.b": b"3"})
         .data(), Compression.GZIP),
    ]  # fmt: skip
    layout = sandbox / "layout"
    oci_layout(layout, layers)
    for tar, kind in layers:
        apply_layer(io.BytesIO(compress(tar, kind)), sandbox / "root", media_type=MEDIA[kind])
    bundle = sandbox / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:t", str(bundle)],
                   check=True, capture_output=True)  # fmt: skip
    try:
        ours = facts(sandbox / "root")
        assert ours == facts(bundle / "rootfs")
        seen = {"etc/keep2", "a/.wh..wh..opq", "x", "sbin/su"} & set(ours)
        assert seen == {"etc/keep2", "sbin/su"}  # not vacuous: links there, markers gone
    finally:
        shutil.rmtree(bundle)
