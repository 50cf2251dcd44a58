"""The parts of layer application that need no tree: media types, digests, compression."""

from __future__ import annotations

import io

import pytest

from kurma.aci import Compression
from kurma.errors import ArchiveError
from kurma.oci._layers import LAYER_MEDIA_TYPES, _check_compression, apply_layer


@pytest.mark.parametrize(
    ("media_type", "kind"),
    [
        ("application/vnd.oci.image.layer.v1.tar", Compression.NONE),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Compression.GZIP),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Compression.ZSTD),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", Compression.ZSTD),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", Compression.GZIP),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Compression.GZIP),
    ],
)
def test_media_types_name_their_compression(media_type: str, kind: Compression) -> None:
    assert LAYER_MEDIA_TYPES[media_type] is kind
    assert _check_compression(media_type, kind) is kind


def test_no_media_type_trusts_the_magic() -> None:
    assert _check_compression(None, Compression.ZSTD) is Compression.ZSTD
    with pytest.raises(ArchiveError, match="bzip2-compressed"):
        _check_compression(None, Compression.BZIP2)


def test_plain_media_type_with_gzip_content_is_refused() -> None:
    with pytest.raises(ArchiveError, match="names none, but the blob's first bytes say gzip"):
        _check_compression("application/vnd.oci.image.layer.v1.tar", Compression.GZIP)


@pytest.mark.parametrize("bad", ["md5:abc", "sha256", "sha256:", "abc"])
def test_unsupported_expected_digest_is_refused_before_reading(bad: str) -> None:
    """A malformed expectation is the caller's mistake: refused before the tree is opened
    (the root given here does not even exist)."""
    stream = io.BytesIO(b"not read")
    with pytest.raises(ArchiveError, match="unsupported digest"):
        apply_layer(stream, "/nonexistent/root", media_type=None, expected_digest=bad)
    assert stream.tell() == 0
