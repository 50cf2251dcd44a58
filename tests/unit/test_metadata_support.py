"""Helpers for the metadata service tests: documents, a served service, a small client.

No tests here; the unit and root metadata tests import these.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kurma.runtime.metadata import MetadataConfig, MetadataService

FLAVOR = {"Metadata-Flavor": "AppContainer"}
TEXT = "text/plain; charset=us-ascii"
JSON = "application/json"
WEB_ID = "sha512-" + "ab" * 64
DB_ID = "sha512-" + "cd" * 64


def pairs(*items: tuple[str, str]) -> list[dict[str, str]]:
    """An appc name/value list."""
    return [{"name": k, "value": v} for k, v in items]


def image_manifest(name: str, annotations: list[dict[str, str]] | None = None) -> bytes:
    """A small ImageManifest, with irregular whitespace so byte-exact serving shows."""
    doc: dict[str, Any] = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name}
    if annotations is not None:
        doc["annotations"] = annotations
    return json.dumps(doc, indent=3).encode()


def pod_manifest(annotations: Any = None, *, omit: bool = True, **app_annotations: Any) -> bytes:
    """A two-app pod (web, db); `annotations` None with `omit` leaves the field out."""
    doc: dict[str, Any] = {
        "acVersion": "0.8.11",
        "acKind": "PodManifest",
        "apps": [
            {"name": "web", "image": {"name": "example.com/web", "id": WEB_ID}},
            {"name": "db", "image": {"name": "example.com/db", "id": DB_ID}},
        ],
    }
    if app_annotations.get("web") is not None:
        doc["apps"][0]["annotations"] = app_annotations["web"]
    if annotations is not None or not omit:
        doc["annotations"] = annotations
    return json.dumps(doc, indent=1).encode()


def images(web_annotations: list[dict[str, str]] | None = None) -> dict[str, bytes]:
    """Image manifests for the apps of `pod_manifest`."""
    return {
        "web": image_manifest("example.com/web", web_annotations),
        "db": image_manifest("example.com/db"),
    }


@dataclass(frozen=True)
class Reply:
    """What a client saw."""

    status: int
    content_type: str | None
    body: bytes
    headers: dict[str, str]


def request(
    url: str,
    path: str,
    method: str = "GET",
    form: dict[str, str | bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One request to `url` + `/acMetadata/v1/` + `path` (`path` starting with / is absolute)."""
    parts = urllib.parse.urlsplit(url)
    target = path if path.startswith("/") else f"{parts.path}/acMetadata/v1/{path}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        body = None
        all_headers = dict(FLAVOR if headers is None else headers)
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, target, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.getheader("Content-Type"), data, dict(resp.getheaders()))
    finally:
        conn.close()


def new_uuid() -> str:
    """A random pod UUID."""
    return str(uuidlib.uuid4())


@pytest.fixture
def service() -> Iterator[MetadataService]:
    """A serving MetadataService whose host listener is on a free loopback port."""
    svc = MetadataService(MetadataConfig(host_port=0, request_timeout=1.0))
    svc.start()
    try:
        yield svc
    finally:
        svc.close()
