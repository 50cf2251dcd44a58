"""The endpoints of `$AC_METADATA_URL/acMetadata/v1/` (ace.md, App Container Metadata Service).

Pure functions of (request, registered pods, signer) -> response, so they are tested without
sockets. The first path segment is the pod's token: it alone says which pod asks, and an
app may read only the apps of its own pod (`apps/NAME` must be an app of the token's pod).
Anything that does not name a registered pod answers the same bare 404 as an unknown path,
so a wrong token learns nothing.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Container
from dataclasses import dataclass

from ._hmac import PodSigner, canonical_uuid
from ._http import JSON, TEXT, Request, Response, text
from ._registry import PodRecord

FLAVOR_HEADER = "metadata-flavor"
FLAVOR = "AppContainer"
FORM = "application/x-www-form-urlencoded"
_GET = ("GET", "HEAD")
_MAX_FORM_FIELDS = 16

NOT_FOUND = text(404, "not found")


@dataclass(frozen=True)
class Handled:
    """A response and, for the log line, the pod and endpoint it concerned (never the token)."""

    response: Response
    pod_uuid: str | None = None
    endpoint: str = "-"


def _method_not_allowed(allowed: tuple[str, ...]) -> Response:
    return text(405, "method not allowed", ("Allow", ", ".join(allowed)))


def _form(request: Request) -> dict[str, bytes] | Response:
    """The urlencoded form fields as raw bytes (first value wins, as Go's FormValue)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        return text(415, f"send the fields as {FORM}")
    try:
        # latin-1 maps each byte to one code point, so percent-decoding gives back the exact
        # bytes that were signed, whatever their encoding.
        pairs = urllib.parse.parse_qsl(
            request.body.decode("latin-1"),
            keep_blank_values=True,
            encoding="latin-1",
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except ValueError:
        return text(400, "malformed form")
    fields: dict[str, bytes] = {}
    for name, value in pairs:
        fields.setdefault(name, value.encode("latin-1"))
    return fields


class MetadataHandlers:
    """Routes a request to an endpoint of the pod its token names."""

    def __init__(
        self,
        lookup: Callable[[str], PodRecord | None],
        signer: PodSigner,
        require_flavor: bool = True,
    ) -> None:
        self._lookup = lookup
        self._signer = signer
        self._require_flavor = require_flavor

    def handle(self, request: Request, served: Container[str] | None = None) -> Handled:
        """Answer `request`; `served` (pod UUIDs) limits which pods this listener answers for."""
        segments = [s for s in request.path.split("/") if s]
        record = self._lookup(segments[0]) if segments else None
        if record is None or (served is not None and record.uuid not in served):
            return Handled(NOT_FOUND)
        endpoint = "/".join(segments[1:])
        if segments[1:3] != ["acMetadata", "v1"]:
            return Handled(NOT_FOUND, record.uuid, endpoint)
        if self._require_flavor and request.headers.get(FLAVOR_HEADER) != FLAVOR:
            # ace.md: clients MUST send it. Requiring it keeps a pod's app from being tricked
            # (e.g. by a URL it fetches for someone else) into reading its own metadata.
            response = text(400, f"missing header Metadata-Flavor: {FLAVOR}")
            return Handled(response, record.uuid, endpoint)
        endpoint = "/".join(segments[3:])
        return Handled(self._route(request, record, segments[3:]), record.uuid, endpoint)

    def _route(self, request: Request, record: PodRecord, rest: list[str]) -> Response:
        if rest[:1] == ["pod"]:
            return self._pod(request, record, rest[1:])
        if rest[:1] == ["apps"] and len(rest) >= 3:
            app = record.apps.get(rest[1])
            if app is None:
                return NOT_FOUND
            bodies = {
                ("annotations",): (JSON, app.annotations),
                ("image", "manifest"): (JSON, app.image_manifest),
                ("image", "id"): (TEXT, app.image_id),
            }
            found = bodies.get(tuple(rest[2:]))
            if found is None:
                return NOT_FOUND
            return self._get(request, *found)
        return NOT_FOUND

    def _pod(self, request: Request, record: PodRecord, rest: list[str]) -> Response:
        bodies = {
            ("annotations",): (JSON, record.annotations),
            ("manifest",): (JSON, record.manifest),
            ("uuid",): (TEXT, record.uuid.encode("ascii")),
        }
        found = bodies.get(tuple(rest))
        if found is not None:
            return self._get(request, *found)
        if rest == ["hmac", "sign"]:
            return self._post(request, lambda form: self._sign(record, form))
        if rest == ["hmac", "verify"]:
            return self._post(request, self._verify)
        return NOT_FOUND

    @staticmethod
    def _get(request: Request, content_type: str, body: bytes) -> Response:
        if request.method not in _GET:
            return _method_not_allowed(_GET)
        return Response(200, content_type, body)

    @staticmethod
    def _post(request: Request, endpoint: Callable[[dict[str, bytes]], Response]) -> Response:
        if request.method != "POST":
            return _method_not_allowed(("POST",))
        form = _form(request)
        return form if isinstance(form, Response) else endpoint(form)

    def _sign(self, record: PodRecord, form: dict[str, bytes]) -> Response:
        content = form.get("content")
        if content is None:
            return text(400, "missing form field: content")
        signature = self._signer.sign(record.uuid, content)
        return Response(200, TEXT, signature.encode("ascii"))

    def _verify(self, form: dict[str, bytes]) -> Response:
        # ace.md up to v0.5 named the field `uid`; the ACE validator sends `uuid`.
        pod = form.get("uuid", form.get("uid"))
        content, signature = form.get("content"), form.get("signature")
        if content is None or pod is None or signature is None:
            return text(400, "missing form field: content, uuid and signature are required")
        try:
            pod_uuid = canonical_uuid(pod.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return text(403, "signature does not verify")
        if not self._signer.verify(pod_uuid, content, signature):
            return text(403, "signature does not verify")
        return Response(200, TEXT, b"")
