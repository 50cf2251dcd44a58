"""Every metadata endpoint over a real loopback listener: status, Content-Type, exact body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kurma.aci import parse_image_manifest
from kurma.errors import ValidationError
from kurma.runtime.metadata import MetadataService
from tests.unit.test_metadata_support import (
    DB_ID,
    JSON,
    TEXT,
    WEB_ID,
    image_manifest,
    images,
    new_uuid,
    pairs,
    pod_manifest,
    request,
    service,
)

__all__ = ["service"]  # the fixture, imported for pytest


def test_url_is_address_port_and_a_long_token(service: MetadataService) -> None:
    """AC_METADATA_URL is http://127.0.0.1:PORT/TOKEN with at least 128 bits of token."""
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    prefix, token = url.rsplit("/", 1)
    assert prefix.startswith("http://127.0.0.1:")
    assert len(token) >= 22 and token.replace("-", "").replace("_", "").isalnum()


def test_pod_uuid(service: MetadataService) -> None:
    pod = new_uuid()
    url = service.register_pod(pod.upper(), pod_manifest(), images())
    reply = request(url, "pod/uuid")
    assert (reply.status, reply.content_type, reply.body) == (200, TEXT, pod.encode())


def test_pod_manifest_is_served_byte_for_byte(service: MetadataService) -> None:
    """The manifest as the runtime recorded it: the same bytes, whitespace and all."""
    raw = pod_manifest(pairs(("a", "1")))
    url = service.register_pod(new_uuid(), raw, images())
    reply = request(url, "pod/manifest")
    assert (reply.status, reply.content_type, reply.body) == (200, JSON, raw)


@pytest.mark.parametrize(
    ("annotations", "omit", "served"),
    [
        (pairs(("b", "2"), ("a", "1")), True, pairs(("b", "2"), ("a", "1"))),
        ([], True, []),  # an empty list stays an empty list ...
        (None, True, None),  # ... and an absent field is null: Go's DeepEqual tells them apart
        (None, False, None),
    ],
    ids=["list", "empty", "absent", "null"],
)
def test_pod_annotations_are_the_manifests_own_value(
    service: MetadataService, annotations: Any, omit: bool, served: Any
) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(annotations, omit=omit), images())
    reply = request(url, "pod/annotations")
    assert (reply.status, reply.content_type) == (200, JSON)
    assert json.loads(reply.body) == served


def test_pod_annotations_key_matches_case_insensitively(service: MetadataService) -> None:
    """Like Go's decoder (and the ACE validator), `Annotations` is the annotations field."""
    doc = json.loads(pod_manifest())
    doc["Annotations"] = pairs(("x", "y"))
    url = service.register_pod(new_uuid(), json.dumps(doc), images())
    assert json.loads(request(url, "pod/annotations").body) == pairs(("x", "y"))


def test_app_annotations_merge_in_place_then_append(service: MetadataService) -> None:
    """Image annotations keep their order; the pod app's replace same names, new ones follow."""
    image = pairs(("a", "1"), ("b", "2"), ("c", "3"))
    app = pairs(("d", "4"), ("b", "two"))
    url = service.register_pod(new_uuid(), pod_manifest(web=app), images(image))
    reply = request(url, "apps/web/annotations")
    assert (reply.status, reply.content_type) == (200, JSON)
    assert json.loads(reply.body) == pairs(("a", "1"), ("b", "two"), ("c", "3"), ("d", "4"))


def test_app_without_annotations_serves_an_empty_list(service: MetadataService) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    reply = request(url, "apps/db/annotations")
    assert (reply.status, reply.content_type, reply.body) == (200, JSON, b"[]")


def test_image_manifest_raw_bytes(service: MetadataService) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    reply = request(url, "apps/web/image/manifest")
    assert (reply.status, reply.content_type) == (200, JSON)
    assert reply.body == images()["web"]


def test_image_manifest_object_is_served_as_canonical_json(service: MetadataService) -> None:
    manifest = parse_image_manifest(image_manifest("example.com/web", pairs(("k", "v"))))
    given = {"web": manifest, "db": images()["db"]}
    url = service.register_pod(new_uuid(), pod_manifest(), given)
    assert request(url, "apps/web/image/manifest").body == manifest.to_bytes()
    assert json.loads(request(url, "apps/web/annotations").body) == pairs(("k", "v"))


@pytest.mark.parametrize(("app", "image_id"), [("web", WEB_ID), ("db", DB_ID)])
def test_image_id_of_each_app(service: MetadataService, app: str, image_id: str) -> None:
    """Any app of the pod may read its siblings' data: the pod is the unit of trust."""
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    reply = request(url, f"apps/{app}/image/id")
    assert (reply.status, reply.content_type, reply.body) == (200, TEXT, image_id.encode())


def test_head_sends_headers_only(service: MetadataService) -> None:
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    reply = request(url, "pod/uuid", method="HEAD")
    assert (reply.status, reply.content_type, reply.body) == (200, TEXT, b"")
    assert reply.headers["Content-Length"] == str(len(pod))


@pytest.mark.parametrize(
    "path",
    [
        "apps/cache/image/id",
        "apps/cache/annotations",
        "apps/web/image",
        "apps/web",
        "pod",
        "pod/nothing",
        "pod/hmac",
        "/{token}/acMetadata/v2/pod/uuid",
        "/{token}",
    ],
)
def test_unknown_paths_and_apps_are_404(service: MetadataService, path: str) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    reply = request(url, path.format(token=url.rsplit("/", 1)[1]))
    assert (reply.status, reply.content_type, reply.body) == (404, TEXT, b"not found\n")


def test_another_pods_app_is_404(service: MetadataService) -> None:
    """apps/NAME is looked up in the token's pod only."""
    other = json.loads(pod_manifest())
    other["apps"][1]["name"] = "cache"
    service.register_pod(
        new_uuid(), json.dumps(other), {"web": images()["web"], "cache": images()["db"]}
    )
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    assert request(url, "apps/cache/image/id").status == 404


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_unknown_token_is_a_bare_404(service: MetadataService, method: str) -> None:
    """A wrong token gets exactly the answer of a missing page, with or without the header."""
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    base = url.rsplit("/", 1)[0]
    for headers in (None, {}):
        reply = request(base + "/" + "A" * 32, "pod/uuid", method=method, headers=headers)
        assert (reply.status, reply.content_type, reply.body) == (404, TEXT, b"not found\n")
    assert request(base, "/", headers={}).status == 404


def test_missing_metadata_flavor_header_is_400(service: MetadataService) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    reply = request(url, "pod/uuid", headers={})
    assert (reply.status, reply.content_type) == (400, TEXT)
    assert b"Metadata-Flavor" in reply.body


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "pod/uuid", "GET, HEAD"),
        ("DELETE", "apps/web/image/id", "GET, HEAD"),
        ("GET", "pod/hmac/sign", "POST"),
        ("PUT", "pod/hmac/verify", "POST"),
    ],
)
def test_wrong_method_is_405_with_allow(
    service: MetadataService, method: str, path: str, allow: str
) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    reply = request(url, path, method=method)
    assert (reply.status, reply.content_type, reply.headers["Allow"]) == (405, TEXT, allow)


def test_unregister_makes_the_token_404(service: MetadataService) -> None:
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    assert service.url_of(pod) == url
    assert service.unregister_pod(pod) is True
    assert request(url, "pod/uuid").status == 404
    assert service.unregister_pod(pod) is False
    assert service.url_of(pod) is None


def test_reregistering_with_the_same_token_keeps_the_url(service: MetadataService) -> None:
    """A restarted daemon gives a re-adopted pod the URL its apps already have."""
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    service.unregister_pod(pod)
    token = url.rsplit("/", 1)[1]
    assert service.register_pod(pod, pod_manifest(), images(), token=token) == url
    assert request(url, "pod/uuid").body == pod.encode()


def test_registration_rejects_bad_input(service: MetadataService) -> None:
    pod = new_uuid()
    service.register_pod(pod, pod_manifest(), images())
    with pytest.raises(ValueError, match="already registered"):
        service.register_pod(pod, pod_manifest(), images())
    with pytest.raises(ValueError, match="missing"):
        service.register_pod(new_uuid(), pod_manifest(), {"web": images()["web"]})
    with pytest.raises(ValidationError):
        service.register_pod(new_uuid(), b'{"acKind": "PodManifest"}', images())
    with pytest.raises(ValueError):
        service.register_pod("not-a-uuid", pod_manifest(), images())
    with pytest.raises(ValueError, match="token"):
        service.register_pod(new_uuid(), pod_manifest(), images(), token="short")
    assert len(service.registry) == 1
