"""pod/hmac/sign and pod/hmac/verify: HMAC-SHA512 bound to the signing pod's UUID."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from kurma.runtime.metadata import MetadataService, PodSigner, load_or_create_key
from tests.unit.test_metadata_support import (
    TEXT,
    images,
    new_uuid,
    pod_manifest,
    request,
    service,
)

__all__ = ["service"]


def sign(url: str, content: str | bytes) -> str:
    reply = request(url, "pod/hmac/sign", "POST", form={"content": content})
    assert (reply.status, reply.content_type) == (200, TEXT)
    return reply.body.decode("ascii")


def verify(url: str, **form: str | bytes) -> int:
    return request(url, "pod/hmac/verify", "POST", form=form).status


def test_sign_returns_base64_hmac_sha512(service: MetadataService) -> None:
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    signature = sign(url, "Old MacDonald Had A Farm")
    assert len(base64.b64decode(signature, validate=True)) == 64
    assert signature == service.sign(pod, b"Old MacDonald Had A Farm")


def test_round_trip_like_the_ace_validator(service: MetadataService) -> None:
    """Sign, then verify with the pod's own uuid: 200, text/plain; charset=us-ascii."""
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    signature = sign(url, "Old MacDonald Had A Farm")
    reply = request(
        url,
        "pod/hmac/verify",
        "POST",
        form={"content": "Old MacDonald Had A Farm", "uuid": pod, "signature": signature},
    )
    assert (reply.status, reply.content_type) == (200, TEXT)


def test_any_pod_verifies_another_pods_signature(service: MetadataService) -> None:
    signer, pod_b = new_uuid(), new_uuid()
    url_a = service.register_pod(signer, pod_manifest(), images())
    url_b = service.register_pod(pod_b, pod_manifest(), images())
    signature = sign(url_a, "hello")
    assert verify(url_b, content="hello", uuid=signer, signature=signature) == 200
    assert verify(url_b, content="hello", uuid=pod_b, signature=signature) == 403


@pytest.mark.parametrize(
    "change",
    [
        "other uuid",
        "tampered content",
        "garbage signature",
        "flipped bit",
        "empty signature",
        "bad uuid",
    ],
)
def test_verify_refuses(service: MetadataService, change: str) -> None:
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    form = {"content": "payload", "uuid": pod, "signature": sign(url, "payload")}
    raw = bytearray(base64.b64decode(form["signature"]))
    raw[10] ^= 1
    form.update(
        {
            "other uuid": {"uuid": new_uuid()},
            "tampered content": {"content": "payloaD"},
            "garbage signature": {"signature": "%%%not base64"},
            "flipped bit": {"signature": base64.b64encode(bytes(raw)).decode()},
            "empty signature": {"signature": ""},
            "bad uuid": {"uuid": "nope"},
        }[change]
    )
    reply = request(url, "pod/hmac/verify", "POST", form=form)
    assert (reply.status, reply.content_type) == (403, TEXT)


def test_binary_content_is_signed_exactly(service: MetadataService) -> None:
    """Form values are percent-decoded to the exact bytes, whatever their encoding."""
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    content = bytes(range(256))
    assert sign(url, content) == service.sign(pod, content)


def test_legacy_uid_field_is_accepted(service: MetadataService) -> None:
    """ace.md before v0.6 called the field `uid`."""
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    assert verify(url, content="x", uid=pod, signature=sign(url, "x")) == 200


def test_missing_fields_and_wrong_encoding(service: MetadataService) -> None:
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    assert request(url, "pod/hmac/sign", "POST", form={}).status == 400
    assert verify(url, content="x", uuid=pod) == 400
    reply = request(
        url,
        "pod/hmac/sign",
        "POST",
        form={"content": "x"},
        headers={"Metadata-Flavor": "AppContainer", "Content-Type": "application/json"},
    )
    assert reply.status == 415


def test_signatures_differ_per_key_and_per_uuid() -> None:
    pod = new_uuid()
    a, b = PodSigner(), PodSigner()
    assert a.sign(pod, b"x") != b.sign(pod, b"x")
    assert a.sign(pod, b"x") != a.sign(new_uuid(), b"x")
    assert a.verify(pod.upper(), b"x", a.sign(pod, b"x"))
    with pytest.raises(ValueError):
        PodSigner(b"short")


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    """A restarted daemon keeps verifying the signatures its pods made before."""
    path = tmp_path / "metadata-hmac.key"
    key = load_or_create_key(path)
    assert len(key) == 64
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    assert os.listdir(tmp_path) == ["metadata-hmac.key"]
    pod = new_uuid()
    assert PodSigner(load_or_create_key(path)).verify(pod, b"c", PodSigner(key).sign(pod, b"c"))
