"""unpack_aci: hostile archives are refused without a trace; good ones unpack completely.

Every hostile archive is unpacked into `tmp/dest` beside `tmp/outside` (holding a file
`secret`). Afterwards nothing may have changed outside: `tmp` holds exactly the archive and
`outside`, `outside` holds exactly `secret` with its old content and link count.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from kurma.aci import Compression, UnpackLimits, image_id_of, unpack_aci
from kurma.errors import ArchiveError
from tests.archives import MANIFEST, TarBuilder, compress, hostile_archives

HOSTILE = sorted(hostile_archives("/OUTSIDE"))


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """tmp/outside/secret: the target every attack aims at."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"secret")
    return tmp_path


def assert_untouched(sandbox: Path) -> None:
    """Nothing outside the target exists or changed, and the target itself is gone."""
    assert sorted(os.listdir(sandbox)) == ["img.aci", "outside"]
    assert os.listdir(sandbox / "outside") == ["secret"]
    secret = sandbox / "outside" / "secret"
    assert secret.read_bytes() == b"secret"
    assert secret.stat().st_nlink == 1


def unpack_bytes(sandbox: Path, data: bytes, **limits: int) -> object:
    """Write `data` as tmp/img.aci and unpack it into tmp/dest."""
    (sandbox / "img.aci").write_bytes(data)
    return unpack_aci(sandbox / "img.aci", sandbox / "dest", UnpackLimits(**limits))


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("kind", [Compression.NONE, Compression.GZIP])
def test_hostile_archive_is_refused_and_leaves_nothing(
    sandbox: Path, name: str, kind: Compression
) -> None:
    """Each attack raises ArchiveError naming its entry; dest is removed, outside unchanged."""
    make, member = hostile_archives(str(sandbox / "outside"))[name]
    with pytest.raises(ArchiveError) as err:
        unpack_bytes(sandbox, compress(make(), kind))
    assert (err.value.member or "").rstrip("/") == member, str(err.value)
    assert_untouched(sandbox)


def test_hostile_archive_absolute_name_is_kept_verbatim() -> None:
    """tarfile writes absolute names as given, so the 'absolute' attack is a real one."""
    data = hostile_archives("/x/outside")["absolute"][0]()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "/x/outside/evil" in tar.getnames()


@pytest.mark.parametrize(
    ("builder", "limits", "message"),
    [
        (lambda: TarBuilder().base().file("rootfs/a", b"x" * 5000), {"max_total_bytes": 4096},
         "max_total_bytes"),
        (lambda: _many(TarBuilder().base(), 60), {"max_entries": 50}, "max_entries"),
        (lambda: TarBuilder().base().file("rootfs/" + "a" * 300), {"max_path_length": 256},
         "max_path_length"),
        (lambda: TarBuilder().file("manifest", b"x" * 2000).dir("rootfs"),
         {"max_manifest_bytes": 1000}, "max_manifest_bytes"),
        (lambda: TarBuilder().base().file("rootfs/" + "b" * 3000), {"max_header_bytes": 1024},
         "extended header"),
    ],
)  # fmt: skip
def test_limits_are_enforced(sandbox: Path, builder, limits: dict[str, int], message: str) -> None:
    """Configurable limits stop an archive with ArchiveError and leave nothing behind."""
    with pytest.raises(ArchiveError, match=message):
        unpack_bytes(sandbox, compress(builder().data(), Compression.GZIP), **limits)
    assert_untouched(sandbox)


def _many(builder: TarBuilder, n: int) -> TarBuilder:
    for i in range(n):
        builder.file(f"rootfs/f{i}")
    return builder


def test_decompression_bomb_stops_at_the_limit(sandbox: Path) -> None:
    """1 GiB of zeros after the archive (1 MiB gzipped) stops at max_total_bytes."""
    tar = TarBuilder().base().data()
    zeros = bytes(1 << 20)
    raw = gzip_stream([tar] + [zeros] * 1024)
    assert len(raw) < 4 << 20
    with pytest.raises(ArchiveError, match="decompression bomb"):
        unpack_bytes(sandbox, raw, max_total_bytes=64 << 20)
    assert_untouched(sandbox)


def gzip_stream(parts: list[bytes]) -> bytes:
    """One gzip member of the concatenation of `parts`, compressed incrementally."""
    import zlib

    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(comp.compress(p) for p in parts) + comp.flush()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (TarBuilder().dir("rootfs").file("rootfs/a", b"x").data(), "no manifest"),
        (TarBuilder().manifest().data(), "no rootfs"),
        (b"\x1f\x8b\x08\x00garbage-not-deflate" * 10, "corrupt compressed stream"),
        (TarBuilder().base().file("rootfs/a", b"x" * 5000).data()[:2048], "truncated"),
        (b"x" * 1024, "checksum"),
    ],
)
def test_malformed_archives_are_refused(sandbox: Path, data: bytes, message: str) -> None:
    """Missing manifest or rootfs, corrupt compression, truncation and garbage are errors."""
    with pytest.raises(ArchiveError, match=message):
        unpack_bytes(sandbox, data)
    assert_untouched(sandbox)


def test_existing_dest_is_refused_and_kept(sandbox: Path) -> None:
    """dest must not exist; an existing one is not ours, so it is left alone."""
    (sandbox / "dest").mkdir()
    (sandbox / "dest" / "keep").write_text("mine")
    with pytest.raises(FileExistsError):
        unpack_bytes(sandbox, TarBuilder().base().data())
    assert (sandbox / "dest" / "keep").read_text() == "mine"


DECOMPRESS = {
    Compression.NONE: ["cat"],
    Compression.GZIP: ["gzip", "-dc"],
    Compression.BZIP2: ["bzip2", "-dc"],
    Compression.XZ: ["xz", "-dc"],
    Compression.ZSTD: ["zstd", "-dcq"],
}


@pytest.mark.parametrize("kind", list(Compression))
def test_image_id_is_sha512_of_decompressed_stream(sandbox: Path, kind: Compression) -> None:
    """image_id == sha512 of what the system tool decompresses, end padding included."""
    data = TarBuilder().base().file("rootfs/bin/sh", b"#!" * 1000, mode=0o755).data()
    (sandbox / "img.aci").write_bytes(compress(data, kind))
    plain = subprocess.run(
        [*DECOMPRESS[kind], str(sandbox / "img.aci")], check=True, capture_output=True
    ).stdout
    expected = "sha512-" + hashlib.sha512(plain).hexdigest()
    result = unpack_aci(sandbox / "img.aci", sandbox / "dest")
    assert result.image_id == expected
    assert image_id_of(sandbox / "img.aci") == expected
    assert result.total_bytes == len(plain) and len(plain) % 10240 == 0
    assert result.manifest_bytes == MANIFEST
    assert (sandbox / "dest" / "manifest").read_bytes() == MANIFEST
    assert (sandbox / "dest" / "rootfs" / "bin" / "sh").read_bytes() == b"#!" * 1000


def test_unpack_from_a_pipe(sandbox: Path) -> None:
    """A non-seekable source (a pipe) works: detection peeks without seeking."""
    data = compress(TarBuilder().base().file("rootfs/f", b"hello").data(), Compression.XZ)
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    with os.fdopen(r, "rb", buffering=0) as f:
        result = unpack_aci(f, sandbox / "dest")
    assert result.image_id == image_id_of_bytes(TarBuilder().base().file("rootfs/f", b"hello"))
    assert (sandbox / "dest" / "rootfs" / "f").read_bytes() == b"hello"


def image_id_of_bytes(builder: TarBuilder) -> str:
    return "sha512-" + hashlib.sha512(builder.data()).hexdigest()


def test_legitimate_links_and_implicit_parents(sandbox: Path) -> None:
    """Symlinks (even pointing out) are created verbatim; hardlinks share an inode; missing
    parents appear as 0755; `./` prefixes are accepted."""
    data = (
        TarBuilder().manifest().dir("./rootfs")
        .file("./rootfs/usr/bin/tool", b"tool", mode=0o755)
        .symlink("rootfs/bin", "usr/bin")
        .symlink("rootfs/etc/mtab", "/proc/self/mounts")
        .symlink("rootfs/up", "../../../..")
        .hardlink("rootfs/usr/bin/alias", "rootfs/usr/bin/tool")
        .data()
    )  # fmt: skip
    result = unpack_bytes(sandbox, data)
    root = sandbox / "dest" / "rootfs"
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "etc/mtab") == "/proc/self/mounts"
    assert os.readlink(root / "up") == "../../../.."
    assert (root / "usr/bin/alias").stat().st_ino == (root / "usr/bin/tool").stat().st_ino
    assert (root / "usr").stat().st_mode & 0o7777 == 0o755
    assert result.entries == 7 and result.skipped == ()  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_tar_formats_and_long_names(sandbox: Path, fmt: int) -> None:
    """GNU long names, ustar prefixes and PAX paths all give the same tree."""
    deep = "rootfs/" + "/".join(["d" * 40] * 3) + "/file"  # 130 chars: needs an extension
    long_target = "x" * 150 if fmt != tarfile.USTAR_FORMAT else "short"
    data = TarBuilder(fmt).base().file(deep, b"deep").symlink("rootfs/l", long_target).data()
    unpack_bytes(sandbox, data)
    assert (sandbox / "dest" / deep).read_bytes() == b"deep"
    assert os.readlink(sandbox / "dest" / "rootfs" / "l") == long_target


def test_gnu_tar_of_a_staging_directory(sandbox: Path) -> None:
    """`tar -czf img.aci -C stage .` (entries `./`, `./manifest`, `./rootfs/...`) unpacks;
    the `./` entry is the archive's top, i.e. dest itself."""
    stage = sandbox / "stage"
    (stage / "rootfs" / "etc").mkdir(parents=True)
    (stage / "manifest").write_bytes(MANIFEST)
    (stage / "rootfs" / "etc" / "os-release").write_text("ID=kurma\n")
    subprocess.run(["tar", "-czf", str(sandbox / "img.aci"), "-C", str(stage), "."], check=True)
    result = unpack_aci(sandbox / "img.aci", sandbox / "dest")
    assert result.manifest_bytes == MANIFEST
    assert (sandbox / "dest/rootfs/etc/os-release").read_text() == "ID=kurma\n"
