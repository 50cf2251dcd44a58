"""The pull side of the OCI distribution spec 1.1: manifests and blobs over HTTP(S).

`RegistryClient.get_manifest` and `get_blob` try each mirror of the registry in order, then
the registry; any failure of one falls through to the next and the last is reported.
Every request starts anonymous unless the host challenged before (kurma.registry._auth).
Blobs stream into the caller's file while Verifier checks size and digest; a transfer that
breaks off is resumed with `Range: bytes=N-` (restarted when the server answers 200), with
kurma.backoff's delays between attempts, and given up as DownloadInterrupted.

Thread-safety: one client may serve several threads at once (the blobs of one image fetched
in parallel). Each thread has its own connections (keep-alive, per scheme and host); the
token cache, the TLS contexts and what was learnt about hosts are shared under locks.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from kurma.backoff import Backoff
from kurma.errors import (
    DigestMismatch,
    DownloadInterrupted,
    IncompleteBlob,
    OciError,
    RegistryAuthFailed,
    RegistryError,
    RegistryNotFound,
    RegistryUnreachable,
)
from kurma.oci import ACCEPT, Descriptor, Digest, Reference, Verifier, digest_of, parse_digest
from kurma.oci import verify_bytes as _verify_bytes

from ._auth import DEFAULT_EXPIRY, Challenge, TokenCache, parse_challenge
from ._credentials import Credentials
from ._settings import RegistrySettings, api_host, split_host

log = logging.getLogger(__name__)

MAX_MANIFEST_SIZE = 4 << 20  # what distribution and containerd accept for a manifest
_MAX_ERROR_BODY = 64 << 10
_MAX_TOKEN_BODY = 1 << 20
_CHUNK = 256 << 10
_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "kurma (registry client)"
_NOT_FOUND_CODES = frozenset({"NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "TAG_INVALID"})
_NETWORK_ERRORS = (OSError, http.client.HTTPException)

T = TypeVar("T")
CredentialSource = Callable[[str], Credentials | None]


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index as served: its bytes, media type, verified digest, and the
    registry (or mirror) that served it."""

    data: bytes
    media_type: str
    digest: str
    registry: str


@dataclass(frozen=True)
class _Endpoint:
    registry: str  # as configured: docker.io, 127.0.0.1:5000, a mirror's name
    hostport: str  # where its API is: registry-1.docker.io, 127.0.0.1:5000


@dataclass(frozen=True)
class _Url:
    scheme: str
    hostport: str
    path: str  # with the query

    @classmethod
    def parse(cls, text: str) -> _Url:
        parts = urllib.parse.urlsplit(text)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.scheme.lower(), parts.netloc.rpartition("@")[2], path)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.hostport}{self.path}"


class _Interrupted(Exception):
    """A transfer broke off (connection dropped, short read); it may be resumed."""


class RegistryClient:
    """Pulls manifests and blobs from OCI registries (module docstring).

    `credentials(registry)` gives the credentials for a registry or mirror name as written
    in references and settings (`docker.io`, `127.0.0.1:5000`), or None; a DockerConfig is
    such a callable. `retries` is how many times a broken-off blob download is resumed,
    waiting `backoff.delay(n)` before attempt n; `timeout` is each socket operation's.
    """

    def __init__(
        self,
        settings: RegistrySettings | None = None,
        credentials: CredentialSource | None = None,
        *,
        retries: int = 4,
        backoff: Backoff | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.settings = settings or RegistrySettings()
        self._credentials = credentials
        self.retries = retries
        self.backoff = backoff or Backoff(initial=0.5, maximum=8.0)
        self.timeout = timeout
        self._tokens = TokenCache()
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}  # hostport -> its last challenge
        self._plain_http: set[str] = set()  # insecure hosts found speaking plain HTTP
        self._contexts: dict[tuple[tuple[str, ...], bool], ssl.SSLContext] = {}
        self._local = threading.local()
        self._all_connections: list[http.client.HTTPConnection] = []

    # --- public API ---------------------------------------------------------------------------

    def get_manifest(self, ref: Reference, accept: Iterable[str] = ACCEPT) -> FetchedManifest:
        """The manifest or index `ref` names (its digest if it has one, else its tag, else
        `latest`), verified against the digest of the reference, else against the
        registry's `Docker-Content-Digest`. At most MAX_MANIFEST_SIZE bytes."""
        accept_header = ", ".join(accept)
        return self._each_endpoint(
            ref, f"manifest {ref}", lambda ep: self._manifest_from(ep, ref, accept_header)
        )

    def get_blob(
        self,
        ref: Reference,
        descriptor: Descriptor,
        dest: BinaryIO,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Stream the blob `descriptor` names, from `ref`'s repository, into `dest` (written
        from its current position), verifying size and digest as it streams. `progress(done,
        total)` follows the bytes. Broken-off transfers are resumed (module docstring); if
        one must restart, `dest` is truncated back to where it started (it must be seekable
        then). Returns only when every byte is verified; raises otherwise, and what was
        written to `dest` must then be discarded."""
        try:
            start: int | None = dest.tell()
        except (OSError, AttributeError):
            start = None
        state = _BlobState(descriptor, dest, start, progress)

        def attempt(ep: _Endpoint) -> None:
            try:
                self._blob_from(ep, ref, state)
            except DigestMismatch:
                state.restart()  # the next mirror must not resume from bad bytes
                raise

        self._each_endpoint(ref, f"blob {descriptor.digest}", attempt)

    def close(self) -> None:
        """Close every connection this client opened (in any thread)."""
        with self._lock:
            connections, self._all_connections = self._all_connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- mirrors ----------------------------------------------------------------------------

    def _endpoints(self, registry: str) -> list[_Endpoint]:
        mirrors = [_Endpoint(m, api_host(m)) for m in self.settings.mirrors_for(registry)]
        return [*mirrors, _Endpoint(registry, api_host(registry))]

    def _each_endpoint(self, ref: Reference, what: str, fetch: Callable[[_Endpoint], T]) -> T:
        endpoints = self._endpoints(ref.domain)
        last: Exception | None = None
        for ep in endpoints:
            try:
                return fetch(ep)
            except (RegistryError, OciError) as e:
                last = e
                if ep is not endpoints[-1]:
                    log.warning(
                        "%s from mirror %s failed, trying the next: %s", what, ep.registry, e
                    )
        assert last is not None
        raise last

    # --- manifests ------------------------------------------------------------------------------

    def _manifest_from(self, ep: _Endpoint, ref: Reference, accept: str) -> FetchedManifest:
        repo = ref.path
        resp = self._request(ep, repo, f"/v2/{repo}/manifests/{ref.target}", {"Accept": accept})
        with self._finishing(resp):
            if resp.status != 200:
                raise self._status_error(ep, ref, resp, what="manifest")
            length = resp.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                raise RegistryError(
                    f"manifest {ref} from {ep.registry} is {length} bytes, more than the "
                    f"{MAX_MANIFEST_SIZE} a manifest may have"
                )
            try:
                data = _read_limited(resp, MAX_MANIFEST_SIZE + 1)
            except _NETWORK_ERRORS as e:
                raise RegistryUnreachable(
                    f"registry {ep.registry} broke off sending manifest {ref}: {e}"
                ) from e
            if len(data) > MAX_MANIFEST_SIZE:
                raise RegistryError(
                    f"manifest {ref} from {ep.registry} is larger than {MAX_MANIFEST_SIZE} bytes"
                )
            header_digest = resp.getheader("Docker-Content-Digest")
            content_type = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        what = f"manifest {ref} from {ep.registry}"
        if ref.digest is not None:
            _verify_bytes(data, ref.digest, what)
            digest = ref.digest
        elif header_digest:
            digest = parse_digest(header_digest.strip())
            _verify_bytes(data, digest, what)
        else:
            digest = digest_of(data)
        return FetchedManifest(
            data, _media_type(content_type, data, accept), str(digest), ep.registry
        )

    # --- blobs -------------------------------------------------------------------------------

    def _blob_from(self, ep: _Endpoint, ref: Reference, state: _BlobState) -> None:
        repo, digest = ref.path, state.descriptor.digest
        failures = 0
        got_here = False  # whether this endpoint has answered at all (then it is worth retries)
        while True:
            offset = state.verifier.total
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                try:
                    resp = self._request(ep, repo, f"/v2/{repo}/blobs/{digest}", headers)
                except RegistryUnreachable:
                    if not got_here:
                        raise
                    raise _Interrupted("cannot reconnect") from None
                got_here = True
                with self._finishing(resp) as finish:
                    self._check_blob_response(ep, ref, resp, state, offset)
                    state.stream(resp)
                    finish.complete = True
                state.verifier.verify()  # IncompleteBlob when the body ended short
                return
            except (_Interrupted, IncompleteBlob) as e:
                failures += 1
                if failures > self.retries:
                    raise DownloadInterrupted(
                        f"download of blob {digest} from {ep.registry} broke off {failures} "
                        f"times; gave up at {state.verifier.total} of {state.descriptor.size} "
                        f"bytes ({e})"
                    ) from e
                delay = self.backoff.delay(failures)
                log.warning(
                    "blob %s from %s broke off at %d of %d bytes (%s); resuming in %.1f s",
                    digest,
                    ep.registry,
                    state.verifier.total,
                    state.descriptor.size,
                    e,
                    delay,
                )
                time.sleep(delay)

    def _check_blob_response(
        self,
        ep: _Endpoint,
        ref: Reference,
        resp: http.client.HTTPResponse,
        state: _BlobState,
        offset: int,
    ) -> None:
        if resp.status == 206 and offset:
            content_range = resp.getheader("Content-Range") or ""
            first = content_range.removeprefix("bytes ").split("-", 1)[0].strip()
            if first != str(offset):
                raise RegistryError(
                    f"registry {ep.registry} answered a request for bytes {offset}- of blob "
                    f"{state.descriptor.digest} with {content_range or 'no Content-Range'}"
                )
            log.info("resuming blob %s at byte %d", state.descriptor.digest, offset)
            return
        if resp.status == 200:
            if offset:
                log.info(
                    "%s ignored the Range request; restarting blob %s",
                    ep.registry,
                    state.descriptor.digest,
                )
                state.restart()
            return
        raise self._status_error(ep, ref, resp, what="blob", digest=state.descriptor.digest)

    # --- requests, auth -------------------------------------------------------------------

    def _request(
        self, ep: _Endpoint, repo: str, path: str, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        """GET `path` from `ep` with the auth it asks for; 401/403 become RegistryAuthFailed.
        The caller reads the response (or closes it with _finishing)."""
        authorization, tried, token_key = self._authorization(ep, repo, fresh=False)
        resp = self._registry_get(ep, path, headers, authorization)
        if resp.status == 401:
            challenge = parse_challenge(resp.getheader("WWW-Authenticate"))
            detail = self._error_detail(resp)
            if challenge is None:
                raise RegistryAuthFailed(ep.registry, tried, detail)
            with self._lock:
                self._challenges[ep.hostport] = challenge
            if token_key is not None and authorization is not None:
                self._tokens.drop(token_key, authorization.removeprefix("Bearer "))
            retry, retry_tried, _ = self._authorization(ep, repo, fresh=True)
            if retry is None or (retry == authorization and challenge.scheme == "basic"):
                raise RegistryAuthFailed(ep.registry, tried, detail)
            tried = retry_tried
            resp = self._registry_get(ep, path, headers, retry)
            if resp.status == 401:
                raise RegistryAuthFailed(ep.registry, tried, self._error_detail(resp))
        if resp.status == 403:
            raise RegistryAuthFailed(ep.registry, tried, self._error_detail(resp))
        return resp

    def _creds(self, registry: str) -> Credentials | None:
        return self._credentials(registry) if self._credentials is not None else None

    def _authorization(
        self, ep: _Endpoint, repo: str, fresh: bool
    ) -> tuple[str | None, str, tuple[str, ...] | None]:
        """(Authorization header or None, the auth in words, the token cache key)."""
        with self._lock:
            challenge = self._challenges.get(ep.hostport)
        if challenge is None:
            return None, "anonymous", None
        creds = self._creds(ep.registry)
        if challenge.scheme == "basic":
            if creds is None:
                return None, "anonymous", None
            return _basic(creds), f"basic as {creds.username}", None
        realm = challenge.get("realm") or ""
        service = challenge.get("service") or ""
        scope = f"repository:{repo}:pull"
        who = f" as {creds.username}" if creds else " (anonymous)"
        tried = f"bearer token from {realm} with scope {scope}{who}"
        key = (realm, service, scope, creds.username if creds else "")
        token = None if fresh else self._tokens.get(key)
        if token is None:
            with self._tokens.fetching:
                token = self._tokens.get(key)  # another thread may have fetched it meanwhile
                if token is None:
                    token = self._fetch_token(ep, realm, service, scope, creds, tried, key)
        return f"Bearer {token}", tried, key

    def _fetch_token(
        self,
        ep: _Endpoint,
        realm: str,
        service: str,
        scope: str,
        creds: Credentials | None,
        tried: str,
        key: tuple[str, ...],
    ) -> str:
        url = _Url.parse(realm)
        if url.scheme not in ("https", "http") or not url.hostport:
            raise RegistryAuthFailed(ep.registry, tried, f"the token realm {realm!r} is no URL")
        if url.scheme == "http" and not (
            self.settings.is_insecure(url.hostport) or self.settings.is_insecure(ep.hostport)
        ):
            raise RegistryAuthFailed(
                ep.registry, tried, "the token realm is plain HTTP and the registry is not insecure"
            )
        query = {"scope": scope, **({"service": service} if service else {})}
        sep = "&" if "?" in url.path else "?"
        url = _Url(url.scheme, url.hostport, url.path + sep + urllib.parse.urlencode(query))
        headers = {"Authorization": _basic(creds)} if creds else {}
        log.debug("fetching a token from %s for %s", realm, scope)
        resp = self._get(url, headers, trust=(url.hostport, ep.hostport), origin=url)
        with self._finishing(resp):
            if resp.status in (401, 403):
                raise RegistryAuthFailed(
                    ep.registry, tried, f"the token server answered {resp.status} {resp.reason}"
                )
            if resp.status != 200:
                raise RegistryError(
                    f"token server {realm} for {ep.registry} answered {resp.status} {resp.reason}"
                )
            try:
                body = json.loads(_read_limited(resp, _MAX_TOKEN_BODY))
            except (ValueError, *_NETWORK_ERRORS) as e:
                raise RegistryError(f"token server {realm} sent no JSON: {e}") from e
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryAuthFailed(ep.registry, tried, "the token server sent no token")
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = DEFAULT_EXPIRY
        self._tokens.put(key, token, float(expires_in))
        return token

    def _error_detail(self, resp: http.client.HTTPResponse) -> str:
        with self._finishing(resp):
            errors = _registry_errors(_read_quietly(resp))
        return "; ".join(f"{code}: {message}" if message else code for code, message in errors)

    def _status_error(
        self,
        ep: _Endpoint,
        ref: Reference,
        resp: http.client.HTTPResponse,
        what: str,
        digest: Digest | None = None,
    ) -> RegistryError:
        errors = _registry_errors(_read_quietly(resp))
        codes = {code for code, _ in errors}
        where = f"{ep.registry}/{ref.path}"
        if "NAME_UNKNOWN" in codes:
            return RegistryNotFound(f"registry {ep.registry} has no repository {ref.path}")
        if resp.status == 404 or codes & _NOT_FOUND_CODES:
            if what == "blob":
                return RegistryNotFound(f"no blob {digest} in {where}")
            if ref.digest is None:
                if self._repository_missing(ep, ref.path):
                    return RegistryNotFound(f"registry {ep.registry} has no repository {ref.path}")
                return RegistryNotFound(f"no tag {ref.target} in {where}")
            return RegistryNotFound(f"no manifest {ref.digest} in {where}")
        detail = "; ".join(f"{c}: {m}" if m else c for c, m in errors)
        text = f"registry {ep.registry} answered {resp.status} {resp.reason} for {what} of {where}"
        text += f": {detail}" if detail else ""
        if resp.status >= 500 or resp.status == 429:
            return RegistryUnreachable(text)
        return RegistryError(text)

    def _repository_missing(self, ep: _Endpoint, repo: str) -> bool:
        """Whether the registry says NAME_UNKNOWN for `repo` (some registries answer only
        MANIFEST_UNKNOWN for a tag of a repository they do not have)."""
        try:
            resp = self._request(ep, repo, f"/v2/{repo}/tags/list?n=1", {})
        except RegistryError:
            return False
        with self._finishing(resp):
            codes = {code for code, _ in _registry_errors(_read_quietly(resp))}
        return resp.status == 404 and "NAME_UNKNOWN" in codes

    # --- HTTP ----------------------------------------------------------------------------------

    def _registry_get(
        self, ep: _Endpoint, path: str, headers: dict[str, str], authorization: str | None
    ) -> http.client.HTTPResponse:
        """GET from the registry's own host (HTTPS; plain HTTP only for an insecure one)."""
        headers = {**headers, **({"Authorization": authorization} if authorization else {})}
        insecure = self.settings.is_insecure(ep.hostport)
        with self._lock:
            scheme = "http" if ep.hostport in self._plain_http else "https"
        url = _Url(scheme, ep.hostport, path)
        try:
            return self._get(url, headers, trust=(ep.hostport,), origin=url, verify=not insecure)
        except RegistryUnreachable as e:
            if not (insecure and scheme == "https" and isinstance(e.__cause__, ssl.SSLError)):
                raise
        log.info("registry %s does not speak TLS; using plain HTTP (it is insecure)", ep.hostport)
        with self._lock:
            self._plain_http.add(ep.hostport)
        url = _Url("http", ep.hostport, path)
        return self._get(url, headers, trust=(ep.hostport,), origin=url)

    def _get(
        self,
        url: _Url,
        headers: dict[str, str],
        trust: tuple[str, ...],
        origin: _Url,
        verify: bool = True,
    ) -> http.client.HTTPResponse:
        """GET `url`, following redirects; Authorization goes only to `origin`'s host."""
        for _ in range(_MAX_REDIRECTS + 1):
            sent = dict(headers)
            if (url.scheme, url.hostport) != (origin.scheme, origin.hostport):
                sent.pop("Authorization", None)
            resp = self._send(url, sent, trust, verify)
            if resp.status not in _REDIRECTS:
                return resp
            location = resp.getheader("Location")
            with self._finishing(resp):
                _read_quietly(resp)
            if not location:
                raise RegistryError(f"{url.hostport} redirected without a Location")
            target = _Url.parse(urllib.parse.urljoin(str(url), location))
            if target.scheme not in ("http", "https"):
                raise RegistryError(f"{url.hostport} redirected to {target.scheme}: URL")
            log.debug("redirected from %s to %s", url.hostport, target.hostport)
            if target.hostport != url.hostport:
                verify = not self.settings.is_insecure(target.hostport)
                trust = (target.hostport, *trust)
            url = target
        raise RegistryError(f"more than {_MAX_REDIRECTS} redirects from {origin.hostport}")

    def _send(
        self, url: _Url, headers: dict[str, str], trust: tuple[str, ...], verify: bool
    ) -> http.client.HTTPResponse:
        """One GET on this thread's connection to url's host (a fresh one if a kept-alive
        connection turns out closed). Network failures become RegistryUnreachable."""
        connections: dict[tuple[str, str], http.client.HTTPConnection] = (
            self._local.__dict__.setdefault("connections", {})
        )
        key = (url.scheme, url.hostport)
        headers = {"User-Agent": _USER_AGENT, **headers}
        for attempt in (1, 2):
            conn = connections.get(key)
            reused = conn is not None
            if conn is None:
                conn = self._connect(url, trust, verify)
                connections[key] = conn
            try:
                conn.request("GET", url.path, headers=headers)
                resp = conn.getresponse()
                resp._kurma_key = key  # type: ignore[attr-defined]
                return resp
            except _NETWORK_ERRORS as e:
                conn.close()
                connections.pop(key, None)
                if reused and attempt == 1 and not isinstance(e, ssl.SSLError | TimeoutError):
                    continue  # the server closed a kept-alive connection: one fresh try
                raise _unreachable(url.hostport, e, self.settings.certs_dir) from e
        raise AssertionError("unreachable")

    def _connect(
        self, url: _Url, trust: tuple[str, ...], verify: bool
    ) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            context = self._context(trust, verify)
            conn = http.client.HTTPSConnection(url.hostport, timeout=self.timeout, context=context)
        else:
            conn = http.client.HTTPConnection(url.hostport, timeout=self.timeout)
        with self._lock:
            self._all_connections.append(conn)
        return conn

    def _context(self, trust: tuple[str, ...], verify: bool) -> ssl.SSLContext:
        """A TLS context trusting the system CAs plus the certs.d `*.crt` of each host in
        `trust`, with the first client certificate found there (NAME.cert + NAME.key)."""
        key = (trust, verify)
        with self._lock:
            context = self._contexts.get(key)
        if context is not None:
            return context
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        has_client_cert = False
        for folder in _cert_dirs(self.settings.certs_dir, trust):
            for path in sorted(folder.glob("*.crt")):
                try:
                    context.load_verify_locations(cafile=str(path))
                except (ssl.SSLError, OSError) as e:
                    raise RegistryError(f"cannot load the CA certificate {path}: {e}") from e
            for cert in sorted(folder.glob("*.cert")):
                key_file = cert.with_suffix(".key")
                if has_client_cert or not key_file.exists():
                    continue
                try:
                    context.load_cert_chain(str(cert), str(key_file))
                except (ssl.SSLError, OSError) as e:
                    raise RegistryError(f"cannot load the client certificate {cert}: {e}") from e
                has_client_cert = True
        with self._lock:
            return self._contexts.setdefault(key, context)

    def _finishing(self, resp: http.client.HTTPResponse) -> _Finish:
        return _Finish(self, resp)

    def _discard(self, resp: http.client.HTTPResponse) -> None:
        """Close the connection `resp` came on (its body was not read to the end)."""
        key = getattr(resp, "_kurma_key", None)
        connections = self._local.__dict__.get("connections", {})
        conn = connections.pop(key, None)
        if conn is not None:
            conn.close()
        resp.close()


class _Finish:
    """`with client._finishing(resp) as f:` reads what is left of a small body, or closes the
    connection when the body was left unread (set `f.complete` after reading it all)."""

    def __init__(self, client: RegistryClient, resp: http.client.HTTPResponse) -> None:
        self.client = client
        self.resp = resp
        self.complete = False

    def __enter__(self) -> _Finish:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if self.resp.isclosed() or (self.complete and kind is None):
            return
        self.client._discard(self.resp)


class _BlobState:
    """A blob download across attempts and endpoints: its verifier, where it started."""

    def __init__(
        self,
        descriptor: Descriptor,
        dest: BinaryIO,
        start: int | None,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.descriptor = descriptor
        self.dest = dest
        self.start = start
        self.progress = progress
        self.verifier = Verifier(descriptor.digest, descriptor.size)

    def restart(self) -> None:
        """Throw away what was written: back to the start of `dest`, with a new hash."""
        if self.verifier.total == 0:
            return
        if self.start is None:
            raise DownloadInterrupted(
                f"blob {self.descriptor.digest} must restart and the file cannot seek back"
            )
        self.dest.seek(self.start)
        self.dest.truncate()
        self.verifier = Verifier(self.descriptor.digest, self.descriptor.size)
        if self.progress is not None:
            self.progress(0, self.descriptor.size)

    def stream(self, resp: http.client.HTTPResponse) -> None:
        """Copy the body into dest through the verifier; _Interrupted if it breaks off."""
        for chunk in _chunks(resp):
            self.verifier.update(chunk)  # DigestMismatch at once past the declared size
            self.dest.write(chunk)
            if self.progress is not None:
                self.progress(self.verifier.total, self.descriptor.size)


def _chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    while True:
        try:
            chunk = resp.read1(_CHUNK) if hasattr(resp, "read1") else resp.read(_CHUNK)
        except _NETWORK_ERRORS as e:
            raise _Interrupted(f"{type(e).__name__}: {e}") from e
        if not chunk:
            return
        yield chunk


def _read_limited(resp: http.client.HTTPResponse, limit: int) -> bytes:
    """The body, up to `limit` bytes (fewer only at its end)."""
    parts, total = [], 0
    while total < limit:
        chunk = resp.read(limit - total)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def _read_quietly(resp: http.client.HTTPResponse) -> bytes:
    """A small body (an error's), or b"" when it cannot be had; never raises."""
    try:
        return _read_limited(resp, _MAX_ERROR_BODY)
    except _NETWORK_ERRORS:
        return b""


def _registry_errors(body: bytes) -> list[tuple[str, str]]:
    """(code, message) of a registry's `{"errors": [{"code", "message", "detail"}]}` body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    found = []
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            found.append((str(error.get("code", "")), str(error.get("message", "") or "")))
    return found


def _media_type(content_type: str, data: bytes, accept: str) -> str:
    """The Content-Type, unless it is generic: then the document's own `mediaType`."""
    if content_type and content_type in accept:
        return content_type
    try:
        doc = json.loads(data)
    except ValueError:
        return content_type
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    return declared if isinstance(declared, str) and declared else content_type


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def _cert_dirs(certs_dir: str, hosts: tuple[str, ...]) -> Iterator[Path]:
    """certs.d/HOST:PORT, then certs.d/HOST, of each host, those that exist."""
    seen = set()
    for hostport in hosts:
        host, _ = split_host(hostport)
        for name in (hostport, host):
            folder = Path(certs_dir, name)
            if name not in seen and folder.is_dir():
                seen.add(name)
                yield folder


def _unreachable(hostport: str, error: BaseException, certs_dir: str) -> RegistryUnreachable:
    if isinstance(error, ssl.SSLCertVerificationError):
        return RegistryUnreachable(
            f"TLS to {hostport} failed: its certificate is not trusted: "
            f"{error.verify_message or error.reason} (put the CA that signed it in "
            f"{certs_dir}/{hostport}/ca.crt)"
        )
    if isinstance(error, ssl.SSLError):
        hint = ""
        if error.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"):
            hint = " (it speaks plain HTTP? list it in registries.insecure to allow that)"
        return RegistryUnreachable(f"TLS to {hostport} failed: {error.reason or error}{hint}")
    if isinstance(error, TimeoutError):
        return RegistryUnreachable(f"registry {hostport} did not answer in time")
    if isinstance(error, OSError):
        return RegistryUnreachable(f"cannot connect to {hostport}: {error.strerror or error}")
    return RegistryUnreachable(f"connection to {hostport} failed: {type(error).__name__}: {error}")
