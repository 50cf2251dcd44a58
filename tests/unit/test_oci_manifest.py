"""OCI and Docker manifests, indexes, platforms and image configs parse to frozen data;
every refusal names the JSON field or the kind of document."""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import signal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kurma.aci import Compression
from kurma.errors import (
    PlatformNotFound,
    UnsupportedManifest,
    ValidationError,
)
from kurma.oci import (
    DEFAULT_PLATFORM,
    Descriptor,
    ExposedPort,
    Index,
    Manifest,
    Platform,
    digest_of,
    layer_compression,
    offered_platforms,
    parse_descriptor,
    parse_image_config,
    parse_manifest,
    parse_platform,
    parse_stop_signal,
    platform_matches,
    select_manifest,
)


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def descriptor(media_type: str, name: str, size: int = 100, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _sha(name), "size": size, **extra}


OCI_MANIFEST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": descriptor("application/vnd.oci.image.config.v1+json", "config", 1234),
    "layers": [
        descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "l0", 32654),
        descriptor("application/vnd.oci.image.layer.v1.tar+zstd", "l1", 16724),
        descriptor("application/vnd.oci.image.layer.v1.tar", "l2", 73109),
    ],
    "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
}

DOCKER_MANIFEST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": descriptor("application/vnd.docker.container.image.v1+json", "config", 7023),
    "layers": [
        descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", "l0", 32654),
        descriptor(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "l1",
            16724,
            urls=["https://mcr.microsoft.com/v2/windows/blobs/sha256:aa"],
        ),
    ],
}


def _entry(media_type: str, name: str, os: str, arch: str, variant: str = "") -> dict[str, Any]:
    platform = {"os": os, "architecture": arch}
    if variant:
        platform["variant"] = variant
    return descriptor(media_type, name, 500, platform=platform)


OCI_INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        _entry("application/vnd.oci.image.manifest.v1+json", "arm", "linux", "arm", "v7"),
        _entry("application/vnd.oci.image.manifest.v1+json", "arm64", "linux", "arm64", "v8"),
        _entry("application/vnd.oci.image.manifest.v1+json", "amd64", "linux", "amd64"),
        _entry("application/vnd.oci.image.manifest.v1+json", "att", "unknown", "unknown"),
    ],
}

DOCKER_LIST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests": [
        _entry("application/vnd.docker.distribution.manifest.v2+json", "p", "linux", "ppc64le"),
        _entry("application/vnd.docker.distribution.manifest.v2+json", "a", "linux", "amd64"),
    ],
}


# --- manifests ------------------------------------------------------------------------------


def test_oci_manifest_parses_to_frozen_data() -> None:
    manifest = parse_manifest(json.dumps(OCI_MANIFEST).encode())
    assert isinstance(manifest, Manifest) and not manifest.is_docker
    assert manifest.config.size == 1234 and str(manifest.config.digest) == _sha("config")
    assert [layer.size for layer in manifest.layers] == [32654, 16724, 73109]
    assert manifest.annotations["org.opencontainers.image.created"].startswith("2026")
    assert [layer_compression(layer.media_type) for layer in manifest.layers] == [
        Compression.GZIP,
        Compression.ZSTD,
        Compression.NONE,
    ]
    manifest.check_runnable()
    with pytest.raises(AttributeError):
        manifest.layers = ()  # type: ignore[misc]
    assert hash(manifest) == hash(parse_manifest(OCI_MANIFEST))


def test_docker_manifest_with_foreign_layer_urls() -> None:
    manifest = parse_manifest(DOCKER_MANIFEST)
    assert isinstance(manifest, Manifest) and manifest.is_docker
    assert manifest.layers[1].urls == ("https://mcr.microsoft.com/v2/windows/blobs/sha256:aa",)
    manifest.check_runnable()


def test_manifest_without_media_type_is_told_apart_by_shape() -> None:
    """OCI 1.0 made mediaType optional; OCI layouts written then omit it."""
    manifest = dict(OCI_MANIFEST)
    del manifest["mediaType"]
    assert isinstance(parse_manifest(manifest), Manifest)
    index = dict(OCI_INDEX)
    del index["mediaType"]
    assert isinstance(parse_manifest(index), Index)


def test_content_type_used_when_document_has_none() -> None:
    manifest = dict(DOCKER_MANIFEST)
    del manifest["mediaType"]
    parsed = parse_manifest(manifest, DOCKER_MANIFEST["mediaType"])
    assert parsed.media_type == DOCKER_MANIFEST["mediaType"]


def test_media_type_disagreeing_with_content_type_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"mediaType: is .*but the registry sent"):
        parse_manifest(OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")


def test_generic_content_type_is_ignored() -> None:
    assert isinstance(parse_manifest(OCI_MANIFEST, "application/json"), Manifest)


def test_content_type_parameters_are_ignored() -> None:
    header = OCI_MANIFEST["mediaType"] + "; charset=utf-8"
    assert isinstance(parse_manifest(OCI_MANIFEST, header), Manifest)


@pytest.mark.parametrize(
    "document,content_type",
    [
        ({"schemaVersion": 1, "name": "library/ubuntu", "tag": "14.04", "fsLayers": []}, None),
        (
            {"schemaVersion": 1, "name": "x", "fsLayers": []},
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ),
        (
            {
                "schemaVersion": 1,
                "mediaType": "application/vnd.docker.distribution.manifest.v1+json",
            },
            None,
        ),
    ],
)
def test_schema1_refused_with_a_clear_error(document: dict[str, Any], content_type: Any) -> None:
    with pytest.raises(UnsupportedManifest, match="schema 1 is not supported"):
        parse_manifest(document, content_type)


def test_unknown_manifest_media_type_refused() -> None:
    document = dict(OCI_MANIFEST, mediaType="application/vnd.example.thing+json")
    with pytest.raises(UnsupportedManifest, match=r"vnd.example.thing"):
        parse_manifest(document)


def _broken(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(base)
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


_DELETE = object()

# (path to change, new value, JSON path in the error, fragment of the message)
BROKEN = [
    (["schemaVersion"], 3, "schemaVersion", "must be 2"),
    (["schemaVersion"], _DELETE, "schemaVersion", "is required"),
    (["schemaVersion"], "2", "schemaVersion", "must be an integer"),
    (["config"], _DELETE, "config", "is required"),
    (["layers"], _DELETE, "layers", "is required"),
    (["layers"], {}, "layers", "must be an array"),
    (["layers", 1, "size"], -1, "layers[1].size", "got -1"),
    (["layers", 1, "size"], 1.5, "layers[1].size", "must be an integer"),
    (["layers", 1, "size"], _DELETE, "layers[1].size", "is required"),
    (["layers", 2, "digest"], "sha256:abc", "layers[2].digest", "64 hex digits, got 3"),
    (["layers", 2, "digest"], "md5:" + "a" * 32, "layers[2].digest", "unsupported digest"),
    (["layers", 2, "digest"], "sha256:" + "A" * 64, "layers[2].digest", "lowercase hex"),
    (["layers", 2, "digest"], "nonsense", "layers[2].digest", "algorithm:encoded"),
    (["layers", 0, "mediaType"], "not a type", "layers[0].mediaType", "is not a media type"),
    (["layers", 0, "mediaType"], _DELETE, "layers[0].mediaType", "is required"),
    (["layers", 0, "urls"], ["ftp://x"], "layers[0].urls[0]", "not an http(s) URL"),
    (["layers", 0, "annotations"], {"a": 1}, "layers[0].annotations.a", "must be a string"),
    (["config", "platform"], {"os": "linux"}, "config.platform.architecture", "is required"),
    (["annotations"], [], "annotations", "must be an object"),
    (["manifests"], [], "manifests", "is not allowed"),
    (["subject"], {"mediaType": "a/b"}, "subject.digest", "is required"),
]


@pytest.mark.parametrize("path,value,where,fragment", BROKEN)
def test_invalid_manifest_names_the_field(
    path: list[Any], value: Any, where: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_manifest(_broken(OCI_MANIFEST, path, value))
    assert info.value.path == where
    assert fragment in info.value.message


@pytest.mark.parametrize(
    "data,fragment",
    [(b"\xff", "not valid UTF-8"), (b"{", "not valid JSON"), (b"[]", "must be a JSON object")],
)
def test_undecodable_documents(data: bytes, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        parse_manifest(data)


def test_embedded_data_must_match_its_digest() -> None:
    payload = b"{}"
    good = descriptor("application/vnd.oci.empty.v1+json", "x", 2)
    good["digest"] = str(digest_of(payload))
    good["data"] = base64.b64encode(payload).decode()
    assert parse_descriptor(good, "config").data == payload
    with pytest.raises(ValidationError, match=r"config.data: does not match"):
        parse_descriptor(dict(good, data=base64.b64encode(b"[]").decode()), "config")
    with pytest.raises(ValidationError, match=r"config.data: is not valid base64"):
        parse_descriptor(dict(good, data="!!"), "config")


def test_artifact_is_parsed_but_not_runnable() -> None:
    """A signature or SBOM is a valid manifest; Kurma refuses to run it, naming the field."""
    artifact = _broken(OCI_MANIFEST, ["config", "mediaType"], "application/vnd.oci.empty.v1+json")
    with pytest.raises(UnsupportedManifest, match=r"config.mediaType"):
        parse_manifest(artifact).check_runnable()  # type: ignore[union-attr]
    layer = _broken(OCI_MANIFEST, ["layers", 1, "mediaType"], "application/vnd.example.sbom")
    with pytest.raises(UnsupportedManifest, match=r"layers\[1\].mediaType"):
        parse_manifest(layer).check_runnable()  # type: ignore[union-attr]


def test_json_keys_match_case_insensitively_as_in_go() -> None:
    document = {"SchemaVersion": 2, "CONFIG": OCI_MANIFEST["config"], "layers": []}
    manifest = parse_manifest(document)
    assert isinstance(manifest, Manifest) and manifest.layers == ()


# --- indexes and platforms ------------------------------------------------------------------


def test_oci_index_parses_with_platforms() -> None:
    index = parse_manifest(OCI_INDEX)
    assert isinstance(index, Index) and not index.is_docker
    assert index.manifests[1].platform == Platform("linux", "arm64", "v8")
    assert offered_platforms(index.manifests) == ("linux/arm/v7", "linux/arm64", "linux/amd64")


def test_default_platform_is_linux_amd64() -> None:
    index = parse_manifest(OCI_INDEX)
    assert isinstance(index, Index)
    assert str(DEFAULT_PLATFORM) == "linux/amd64"
    assert (
        select_manifest(index.manifests).digest
        == parse_descriptor(OCI_INDEX["manifests"][2], "").digest
    )


@pytest.mark.parametrize(
    "wanted,chosen",
    [
        ("linux/amd64", "amd64"),
        ("linux/x86_64", "amd64"),
        ("amd64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),
        ("linux/aarch64", "arm64"),
        ("linux/arm", "arm"),
        ("linux/arm/v7", "arm"),
        ("linux/armhf", "arm"),
        ("linux/arm/v8", "arm"),  # a v8 CPU in 32-bit mode runs v7 code
    ],
)
def test_platform_selection(wanted: str, chosen: str) -> None:
    index = parse_manifest(OCI_INDEX)
    assert isinstance(index, Index)
    assert select_manifest(index.manifests, parse_platform(wanted)).digest.hex == (
        hashlib.sha256(chosen.encode()).hexdigest()
    )


def test_exact_variant_preferred_over_older_one() -> None:
    entries = tuple(
        parse_descriptor(e, f"manifests[{i}]")
        for i, e in enumerate(
            [
                _entry("application/vnd.oci.image.manifest.v1+json", "v6", "linux", "arm", "v6"),
                _entry("application/vnd.oci.image.manifest.v1+json", "v7", "linux", "arm", "v7"),
            ]
        )
    )
    assert select_manifest(entries, parse_platform("linux/arm/v7")).digest.hex == (
        hashlib.sha256(b"v7").hexdigest()
    )
    assert select_manifest(entries, parse_platform("linux/arm/v6")).digest.hex == (
        hashlib.sha256(b"v6").hexdigest()
    )
    with pytest.raises(PlatformNotFound):
        select_manifest(entries, parse_platform("linux/arm/v5"))


@pytest.mark.parametrize("bad", ["SIGNOPE", "999", "SIGRTMIN+999", "", "\u0663"])
def test_unknown_stop_signals(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_stop_signal(bad)


@pytest.mark.parametrize(
    "offered,wanted,ok",
    [
        (Platform("linux", "amd64"), "linux/amd64", True),
        (Platform("linux", "aarch64"), "linux/arm64/v8", True),
        (Platform("linux", "arm", "v6"), "linux/arm/v7", True),
        (Platform("linux", "arm", "v7"), "linux/arm/v6", False),
        (Platform("linux", "arm64"), "linux/amd64", False),
        (Platform("windows", "amd64"), "linux/amd64", False),
    ],
)
def test_platform_matches_for_a_config(offered: Platform, wanted: str, ok: bool) -> None:
    """A pull by digest has no index: the config's platform is checked against the host's."""
    assert platform_matches(offered, parse_platform(wanted)) is ok


def test_no_matching_platform_lists_what_is_offered() -> None:
    index = parse_manifest(DOCKER_LIST)
    assert isinstance(index, Index) and index.is_docker
    with pytest.raises(PlatformNotFound) as info:
        select_manifest(index.manifests, parse_platform("linux/s390x"))
    assert info.value.offered == ("linux/ppc64le", "linux/amd64")
    assert str(info.value) == (
        "no image for platform linux/s390x; the index offers: linux/ppc64le, linux/amd64"
    )
    assert isinstance(info.value, LookupError)


def test_empty_index_offers_none() -> None:
    index = parse_manifest(dict(OCI_INDEX, manifests=[]))
    assert isinstance(index, Index)
    with pytest.raises(PlatformNotFound, match="offers: none"):
        select_manifest(index.manifests)


def test_index_requires_manifests() -> None:
    with pytest.raises(ValidationError, match="manifests: is required"):
        parse_manifest({"schemaVersion": 2, "mediaType": OCI_INDEX["mediaType"]})


@pytest.mark.parametrize(
    "text,expected",
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/arm64", Platform("linux", "arm64")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/armel", Platform("linux", "arm", "v6")),
        ("linux/i386", Platform("linux", "386")),
        ("Linux/AMD64", Platform("linux", "amd64")),
        ("arm64", Platform("linux", "arm64")),
        ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
    ],
)
def test_parse_platform_normalises(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["", "/", "linux/", "linux/amd64/v8/x", "linux/am d64", "a//b"])
def test_parse_platform_refuses(text: str) -> None:
    with pytest.raises(ValidationError, match="platform"):
        parse_platform(text)


# --- image configs --------------------------------------------------------------------------

CONFIG: dict[str, Any] = {
    "created": "2026-01-01T00:00:00Z",
    "author": "kurma tests",
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "config": {
        "User": "app:app",
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "9000": {}},
        "Env": ["PATH=/usr/bin:/bin", "EMPTY=", "A=b=c"],
        "Entrypoint": ["/bin/server"],
        "Cmd": ["--port", "8080"],
        "Volumes": {"/data": {}, "/cache": {}},
        "WorkingDir": "/srv",
        "Labels": {"org.opencontainers.image.title": "server"},
        "StopSignal": "SIGQUIT",
    },
    "rootfs": {"type": "layers", "diff_ids": [_sha("d0"), _sha("d1")]},
    "history": [
        {"created": "2026-01-01T00:00:00Z", "created_by": "ADD rootfs /"},
        {"created_by": "ENV PATH=...", "empty_layer": True},
        {"created_by": "COPY server /bin/"},
    ],
}


def test_image_config_maps_every_run_field() -> None:
    image = parse_image_config(json.dumps(CONFIG))
    run = image.config
    assert image.platform == Platform("linux", "arm64", "v8")
    assert [str(d) for d in image.diff_ids] == [_sha("d0"), _sha("d1")]
    assert run.user == "app:app"
    assert run.exposed_ports == (ExposedPort(53, "udp"), ExposedPort(8080), ExposedPort(9000))
    assert run.env_map == {"PATH": "/usr/bin:/bin", "EMPTY": "", "A": "b=c"}
    assert run.entrypoint == ("/bin/server",) and run.cmd == ("--port", "8080")
    assert run.argv == ("/bin/server", "--port", "8080")
    assert run.volumes == ("/data", "/cache")
    assert run.working_dir == "/srv"
    assert dict(run.labels) == {"org.opencontainers.image.title": "server"}
    assert parse_stop_signal(run.stop_signal) == signal.SIGQUIT
    assert [h.empty_layer for h in image.history] == [False, True, False]
    assert image.history[0].created_by == "ADD rootfs /"


def test_docker_config_members_are_ignored_and_null_means_absent() -> None:
    """Docker's own members (container_config, Healthcheck) are not Kurma's business."""
    document = copy.deepcopy(CONFIG)
    document["container_config"] = {"Cmd": ["/bin/sh", "-c", "#(nop)"]}
    document["docker_version"] = "27.0.0"
    document["config"]["Healthcheck"] = {"Test": ["CMD", "true"]}
    document["config"]["Entrypoint"] = None
    document["config"]["Volumes"] = None
    image = parse_image_config(document)
    assert image.config.entrypoint is None and image.config.volumes == ()
    assert image.config.argv == ("--port", "8080")


def test_config_without_run_config() -> None:
    minimal = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    image = parse_image_config(minimal)
    assert image.config.argv == () and image.config.cmd is None and image.diff_ids == ()


BROKEN_CONFIG = [
    (["os"], _DELETE, "os", "is required"),
    (["architecture"], 5, "architecture", "must be a string"),
    (["rootfs"], _DELETE, "rootfs", "is required"),
    (["rootfs", "type"], "tarball", "rootfs.type", "must be 'layers'"),
    (["rootfs", "diff_ids", 1], "sha256:zz", "rootfs.diff_ids[1]", "64 hex digits"),
    (["rootfs", "diff_ids", 0], 7, "rootfs.diff_ids[0]", "must be a string"),
    (["config", "Env", 1], 3, "config.Env[1]", "must be a string"),
    (["config", "Cmd"], "/bin/sh", "config.Cmd", "must be an array"),
    (["config", "ExposedPorts"], {"http/tcp": {}}, "config.ExposedPorts.http/tcp", "port"),
    (["config", "ExposedPorts"], {"0/tcp": {}}, "config.ExposedPorts.0/tcp", "1 to 65535"),
    (["config", "ExposedPorts"], {"80/icmp": {}}, "config.ExposedPorts.80/icmp", "protocol"),
    (["config", "ExposedPorts"], ["80/tcp"], "config.ExposedPorts", "must be an object"),
    (["config", "StopSignal"], "SIGNOPE", "config.StopSignal", "unknown signal"),
    (["config", "Labels"], {"a": None}, "config.Labels.a", "must be a string"),
    (["config", "User"], "ro\0ot", "config.User", "NUL"),
    (["history", 1, "empty_layer"], "yes", "history[1].empty_layer", "must be a boolean"),
]


@pytest.mark.parametrize("path,value,where,fragment", BROKEN_CONFIG)
def test_invalid_config_names_the_field(
    path: list[Any], value: Any, where: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_image_config(_broken(CONFIG, path, value))
    assert info.value.path == where
    assert fragment in info.value.message


def test_config_must_have_one_diff_id_per_layer() -> None:
    manifest = parse_manifest(OCI_MANIFEST)
    assert isinstance(manifest, Manifest)
    with pytest.raises(ValidationError, match=r"rootfs.diff_ids: has 2 entries, but the manifest"):
        parse_image_config(CONFIG).check_layers(manifest)


@pytest.mark.parametrize(
    "text,number",
    [
        ("SIGTERM", signal.SIGTERM),
        ("TERM", signal.SIGTERM),
        ("9", signal.SIGKILL),
        ("sigint", signal.SIGINT),
        ("SIGRTMIN+3", signal.SIGRTMIN + 3),
        ("RTMAX-1", signal.SIGRTMAX - 1),
    ],
)
def test_stop_signal_spellings(text: str, number: int) -> None:
    assert parse_stop_signal(text) == number


# --- robustness -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "schemaVersion",
                    "mediaType",
                    "config",
                    "layers",
                    "manifests",
                    "digest",
                    "size",
                    "platform",
                    "os",
                    "architecture",
                    "rootfs",
                    "diff_ids",
                    "type",
                    "Env",
                    "urls",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_only_documented_errors_escape(value: Any) -> None:
    """Arbitrary JSON never crashes the parsers: ValidationError or UnsupportedManifest."""
    for parse in (parse_manifest, parse_image_config):
        with contextlib.suppress(ValidationError, UnsupportedManifest):
            parse(value if isinstance(value, dict) else {"v": value})


def test_descriptors_compare_by_value() -> None:
    a = parse_descriptor(OCI_MANIFEST["layers"][0], "")
    b = parse_descriptor(copy.deepcopy(OCI_MANIFEST["layers"][0]), "x")
    assert a == b and isinstance(a, Descriptor)
