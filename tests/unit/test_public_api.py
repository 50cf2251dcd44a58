"""The public names of each package: what other layers may rely on.

Implementation lives in `_private` modules; a change to these lists is a change of API.
"""

from __future__ import annotations

import importlib

import pytest

STORE_NAMES = {
    "LayerProgress",
    "OciFacts",
    "OciImport",
    "ImageRecord",
    "ImageRef",
    "ImageStore",
    "ImportResult",
    "StoreFull",
    "Reference",
    "RenderedTree",
    "parse_image_ref",
    "version_key",
}

ACI_NAMES_REQUIRED = {
    # manifests
    "ImageManifest",
    "PodManifest",
    "parse_image_manifest",
    "parse_pod_manifest",
    "parse_manifest",
    "is_ac_identifier",
    "is_ac_name",
    # image IDs and archives
    "Compression",
    "detect_compression",
    "open_decompressed",
    "is_image_id",
    "parse_image_id_ref",
    "image_id_matches",
    "short_image_id",
    "UnpackLimits",
    "UnpackResult",
    "unpack_aci",
    "image_id_of",
    "build_aci",
}


OCI_NAMES_REQUIRED = {
    # references and digests
    "Reference",
    "parse_reference",
    "Digest",
    "parse_digest",
    "digest_of",
    "VerifyingReader",
    "Verifier",
    # manifests, indexes, platforms, configs
    "Descriptor",
    "Manifest",
    "Index",
    "parse_manifest",
    "Platform",
    "parse_platform",
    "select_manifest",
    "ImageConfig",
    "parse_image_config",
    "layer_compression",
    # appc manifests for OCI images
    "appc_manifest",
    "appc_name",
    "appc_version",
    # image archives
    "ArchiveImage",
    "open_archive",
    "write_oci_layout",
    "write_docker_archive",
}


def _public(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    return {n for n in vars(module) if not n.startswith("_") and n != "annotations"}


def test_store_exports_exactly_its_api() -> None:
    assert _public("kurma.store") == STORE_NAMES


@pytest.mark.parametrize("name", sorted(ACI_NAMES_REQUIRED))
def test_aci_exports(name: str) -> None:
    assert name in _public("kurma.aci")


@pytest.mark.parametrize("name", sorted(OCI_NAMES_REQUIRED))
def test_oci_exports(name: str) -> None:
    assert name in _public("kurma.oci")


def test_public_names_come_from_private_modules() -> None:
    """Re-exports only: every public object is defined in a `_private` module."""
    import kurma.aci
    import kurma.oci
    import kurma.store

    for module in (kurma.aci, kurma.oci, kurma.store):
        for name in _public(module.__name__):
            obj = getattr(module, name)
            origin = getattr(obj, "__module__", "") or ""
            if origin.startswith("kurma."):
                assert origin.rsplit(".", 1)[-1].startswith("_"), (module.__name__, name, origin)


def test_every_error_is_drawn_in_the_errors_tree() -> None:
    """kurma.errors draws its hierarchy in the docstring; a new error class joins the drawing."""
    import kurma.errors

    doc = kurma.errors.__doc__ or ""
    for name, obj in vars(kurma.errors).items():
        if isinstance(obj, type) and issubclass(obj, kurma.errors.KurmaError):
            assert f" {name} " in doc, name
