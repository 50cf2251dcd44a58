"""Just enough HTTP/1.x for the metadata service: an incremental request parser, responses.

http.server would need a thread (or a blocked handler) per connection; here a selector
loop feeds whatever bytes arrive into a `RequestParser` and gets a whole `Request` back or
an `HttpError` carrying the status to answer with. Every connection answers one request
and closes (`Connection: close`), so there is no keep-alive or pipelining state to get
wrong, and size limits are checked as bytes arrive, before anything is buffered past them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

TEXT = "text/plain; charset=us-ascii"
JSON = "application/json"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
_TARGET = re.compile(r"/[\x21-\x7e]*")


@dataclass(frozen=True)
class Limits:
    """Size limits for one request: the head (request line and headers) and the body."""

    max_head_bytes: int = 8192
    max_body_bytes: int = 64 * 1024


@dataclass(frozen=True)
class Request:
    """A parsed request. Header names are lowercase; the query string is split off."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """A response to send; extra `headers` go after the standard ones."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())

    def encode(self, head_only: bool = False) -> bytes:
        """The response on the wire (without its body for HEAD, with the same length)."""
        reason = HTTPStatus(self.status).phrase
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            *(f"{k}: {v}" for k, v in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def text(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """A text/plain; charset=us-ascii response, newline-terminated."""
    return Response(status, TEXT, (message + "\n").encode("ascii", "replace"), headers)


class HttpError(Exception):
    """The request cannot be served; answer with `status` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return text(self.status, self.message)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestParser:
    """Accumulates bytes of one request; `feed` returns the Request once it is complete."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._head: tuple[str, str, str, dict[str, str]] | None = None
        self._length = 0
        self.wants_continue = False  # the client waits for "100 Continue" before its body

    def feed(self, data: bytes) -> Request | None:
        """Add received bytes; raises HttpError for a malformed or oversized request."""
        self._buffer += data
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._limits.max_head_bytes:
                    raise HttpError(431, "request head too large")
                return None
            if end + 4 > self._limits.max_head_bytes:
                raise HttpError(431, "request head too large")
            self._head = _parse_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
            self._length = self._body_length(self._head[3])
            expect = self._head[3].get("expect", "").lower()
            self.wants_continue = expect == "100-continue" and len(self._buffer) < self._length
        if len(self._buffer) < self._length:
            return None
        method, path, query, headers = self._head
        return Request(method, path, query, headers, bytes(self._buffer[: self._length]))

    def _body_length(self, headers: Mapping[str, str]) -> int:
        if "transfer-encoding" in headers:
            raise HttpError(411, "send the body with a Content-Length, not chunked")
        value = headers.get("content-length", "0")
        lengths = {v.strip() for v in value.split(",")}
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise HttpError(400, "bad Content-Length header")
        length = int(lengths.pop())
        if length > self._limits.max_body_bytes:
            raise HttpError(413, f"request body too large (limit {self._limits.max_body_bytes})")
        return length


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Request line and headers; names lowercased, repeated headers joined with ", "."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or _TOKEN.fullmatch(parts[0]) is None:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if _VERSION.fullmatch(version) is None:
        raise HttpError(505 if version.startswith("HTTP/") else 400, "only HTTP/1.0 and 1.1")
    if _TARGET.fullmatch(target) is None:
        raise HttpError(400, "request target must be an absolute path")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or _TOKEN.fullmatch(name) is None:
            # Also rejects obsolete line folding (a line starting with whitespace).
            raise HttpError(400, "malformed header line")
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return method, path, query, headers
