"""Real registries on loopback for tests: a CA, docker-registry processes, a token issuer,
OCI image layouts, and skopeo pushes. No mocks: the client talks to distribution itself.

Everything binds 127.0.0.1 on a free port and needs no root. Typical use:

    ca = CA(tmp_path / "ca")                                  # cryptography-made CA
    with RegistryProcess.start(tmp_path / "reg", ca=ca) as reg:   # TLS, no auth
        layout = build_layout(tmp_path / "img", [{"hello.txt": b"hi"}], tag="v1")
        push(layout, reg, "test/app:v1", ca=ca)               # skopeo copy oci:... docker://...
        certs = ca.certs_dir(tmp_path / "certs.d", reg.host)  # certs.d/127.0.0.1:PORT/ca.crt
        settings = RegistrySettings(certs_dir=str(certs))
        ...

API (all paths are pathlib.Path):

- `require_tools(*names)`: pytest.skip naming what is missing (docker-registry, skopeo).
- `free_port() -> int`.
- `CA(dir)`: `.cert_path` (ca.crt), `.cert_pem`; `.issue(dir, name, hosts=("127.0.0.1",))
  -> (cert_path, key_path)` a server certificate for those hosts (IPs or DNS names);
  `.certs_dir(root, host) -> root` with `root/HOST:PORT/ca.crt` written (docker's certs.d);
  `.context() -> ssl.SSLContext` a client context trusting only this CA.
- `write_htpasswd(path, {user: password}) -> path` (bcrypt `$2b$`, which distribution takes).
- `RegistryProcess.start(dir, ca=None, htpasswd=None, token=None, port=None)`: docker-registry
  serving filesystem storage in `dir/storage`, TLS with a certificate from `ca` (plain HTTP
  when `ca` is None), htpasswd basic auth or token auth (`token`: a TokenIssuer). Waits until
  it answers; `.stop()` (also the context manager's exit) kills it. Attributes: `.host`
  (`127.0.0.1:PORT`), `.url`, `.port`, `.storage`, `.log_path`, `.tls`.
- `TokenIssuer(dir, ca, users=None, expires_in=300)`: an HTTPS token server (a thread) that
  signs ES256 JWTs with an `x5c` chain (a key certified by `ca`), as distribution's token
  auth expects; `users={name: password}` makes it demand basic auth (anonymous otherwise).
  `.realm`, `.service`, `.issuer`, `.bundle` (the CA file for `rootcertbundle`),
  `.requests` (a list of `{"scope", "service", "user"}`, one per token handed out or
  refused), `.close()`; a context manager.
- `Layout`, `build_layout(dir, layers, tag="latest", media_type=OCI gzip layer)`: an OCI
  image layout (oci-layout, index.json, blobs/sha256) with one gzip layer per dict
  `{path: bytes}` in `layers`. `Layout` has `.path`, `.tag`, `.manifest` (bytes),
  `.manifest_digest`, `.config` and `.layers` (Blob: `.digest`, `.size`, `.data`,
  `.media_type`, `.descriptor()` -> kurma.oci.Descriptor).
- `push(layout, registry, "repo:tag", ca=None, creds=None)`: `skopeo copy` the layout's tag
  into the registry (TLS verified with `ca`, plain HTTP when the registry has no TLS).
- `RegistryProxy(registry, drop_first=, drop_always=, strip_range=, redirect_to=, corrupt=,
  corrupt_manifest=)`: a plain-HTTP proxy in front of a real registry that injects faults
  (dropped connections, ignored Range, redirects of blobs, corrupted bytes); `.host`,
  `.seen` (path, headers), `.answers` (path, status). See its docstring.
- `BlobStore({digest: bytes})`: plain-HTTP blob storage to redirect to; `.url`, `.seen`.
- `HttpServer(handler_class)`: a ThreadingHTTPServer on 127.0.0.1 in a thread; `.host`,
  `.url`, `.close()`, a context manager; `handler_class` may read `self.server.state`
  (a dict given as `state=`).
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.client
import http.server
import io
import ipaddress
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def require_tools(*names: str) -> None:
    """Skip the test (with the reason) unless every program in `names` is on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (Debian packages docker-registry, skopeo)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- certificates ---------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CA:
    """A test certificate authority made with `cryptography` (EC P-256), kept in `dir`."""

    def __init__(self, dir: Path, name: str = "Kurma registry test CA") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_path = dir / "ca.crt"
        self.cert_path.write_bytes(self.cert_pem)

    def issue_key(self, name: str, hosts: tuple[str, ...] = (), server: bool = True) -> tuple:
        """(certificate, private key) objects for `name`, with `hosts` as subjectAltNames."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if server:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256()), key

    def issue(
        self, dir: Path, name: str, hosts: tuple[str, ...] = ("127.0.0.1",)
    ) -> tuple[Path, Path]:
        """A server certificate for `hosts`, written as dir/NAME.crt and dir/NAME.key."""
        from cryptography.hazmat.primitives import serialization

        cert, key = self.issue_key(name, hosts)
        dir.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = dir / f"{name}.crt", dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path

    def certs_dir(self, root: Path, *hosts: str) -> Path:
        """docker's certs.d layout trusting this CA for each HOST:PORT: root/HOST:PORT/ca.crt."""
        for host in hosts:
            (root / host).mkdir(parents=True, exist_ok=True)
            (root / host / "ca.crt").write_bytes(self.cert_pem)
        root.mkdir(parents=True, exist_ok=True)
        return root

    def context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this CA only."""
        return ssl.create_default_context(cadata=self.cert_pem.decode())


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file of bcrypt hashes (`$2b$`, which distribution's bcrypt accepts)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated since 3.11; the stdlib's one way to bcrypt here

    lines = [f"{u}:{crypt.crypt(p, crypt.mksalt(crypt.METHOD_BLOWFISH))}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- HTTP servers in threads -------------------------------------------------------------------


class HttpServer:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) served from a daemon thread; TLS when
    `tls=(cert_path, key_path)`. `state` is reachable from handlers as self.server.state."""

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler],
        state: dict[str, Any] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.state = state if state is not None else {}  # type: ignore[attr-defined]
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{self.scheme}://{self.host}"
        self.state = self.server.state  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A handler base that logs nothing and speaks HTTP/1.1 (keep-alive)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_body(
        self, status: int, body: bytes, content_type: str = "application/json", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)


# --- token auth ----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenHandler(QuietHandler):
    def do_GET(self) -> None:
        issuer: TokenIssuer = self.server.state["issuer"]  # type: ignore[attr-defined]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        user = ""
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if issuer.users is not None and issuer.users.get(user) != password:
                user = "!" + user
        scopes = query.get("scope", [])
        record = {"scope": " ".join(scopes), "service": query.get("service", [""])[0], "user": user}
        with issuer.lock:
            issuer.requests.append(record)
        if user.startswith("!") or (issuer.users is not None and not user):
            self.send_body(401, b'{"details": "bad credentials"}')
            return
        token = issuer.sign(user, scopes)
        body = {"token": token, "expires_in": issuer.expires_in, "issued_at": _now().isoformat()}
        if issuer.access_token_only:
            body = {"access_token": token, "expires_in": issuer.expires_in}
        self.send_body(200, json.dumps(body).encode())


class TokenIssuer:
    """A token server for distribution's `auth.token` (module docstring)."""

    def __init__(
        self,
        dir: Path,
        ca: CA,
        users: dict[str, str] | None = None,
        expires_in: int = 300,
        access_token_only: bool = False,
    ) -> None:
        from cryptography.hazmat.primitives import serialization

        dir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.expires_in = expires_in
        self.access_token_only = access_token_only
        self.service = "kurma-test-registry"
        self.issuer = "kurma-test-issuer"
        self.lock = threading.Lock()
        self.requests: list[dict[str, str]] = []
        self.bundle = ca.cert_path
        cert, self._key = ca.issue_key("token signer", server=False)
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        tls = ca.issue(dir, "token-server")
        self._http = HttpServer(_TokenHandler, {"issuer": self}, tls=tls)
        self.host = self._http.host
        self.realm = f"{self._http.url}/token"

    def sign(self, user: str, scopes: list[str]) -> str:
        """An ES256 JWT granting every action asked for in `scopes` (repository:NAME:ACTIONS)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TokenIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- docker-registry processes ---------------------------------------------------------------


@dataclass
class RegistryProcess:
    """A running docker-registry (module docstring)."""

    port: int
    dir: Path
    tls: bool
    process: subprocess.Popen[bytes]
    ca: CA | None = None
    log_path: Path = field(default=Path())

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def storage(self) -> Path:
        return self.dir / "storage"

    @classmethod
    def start(
        cls,
        dir: Path,
        ca: CA | None = None,
        htpasswd: Path | None = None,
        token: TokenIssuer | None = None,
        port: int | None = None,
    ) -> RegistryProcess:
        require_tools("docker-registry")
        dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {dir / 'storage'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{port}",
        ]
        if ca is not None:
            cert, key = ca.issue(dir, "registry")
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if htpasswd is not None:
            lines += ["auth:", "  htpasswd:", "    realm: kurma-test", f"    path: {htpasswd}"]
        if token is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {token.realm}",
                f"    service: {token.service}",
                f"    issuer: {token.issuer}",
                f"    rootcertbundle: {token.bundle}",
            ]
        config = dir / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        log_path = dir / "registry.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        registry = cls(port, dir, ca is not None, process, ca, log_path)
        try:
            registry._wait()
        except BaseException:
            registry.stop()
            raise
        return registry

    def _wait(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self.process.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                if self.tls:
                    assert self.ca is not None
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        self.host, timeout=2, context=self.ca.context()
                    )
                else:
                    conn = http.client.HTTPConnection(self.host, timeout=2)
                conn.request("GET", "/v2/")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry on {self.host} did not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> RegistryProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- image layouts and pushes ------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> Any:
        """This blob as a kurma.oci.Descriptor."""
        from kurma.oci import Descriptor, parse_digest

        return Descriptor(self.media_type, parse_digest(self.digest), self.size)

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layout:
    path: Path
    tag: str
    manifest: bytes
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def _tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(gzip of a tar of `files`, the diff ID: sha256 of the tar), reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def build_layout(
    dir: Path, layers: list[dict[str, bytes]], tag: str = "latest", media_type: str = OCI_LAYER_GZIP
) -> Layout:
    """An OCI image layout in `dir` holding one image (linux/amd64) tagged `tag`."""
    blobs_dir = dir / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    layer_blobs, diff_ids = [], []
    for files in layers:
        data, diff_id = _tar_gz(files)
        layer_blobs.append(Blob(media_type, data))
        diff_ids.append(diff_id)
    config = Blob(
        OCI_CONFIG,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode(),
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.as_json(),
            "layers": [b.as_json() for b in layer_blobs],
        }
    ).encode()
    for blob in (config, *layer_blobs, Blob(OCI_MANIFEST, manifest)):
        (blobs_dir / blob.digest.split(":")[1]).write_bytes(blob.data)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **Blob(OCI_MANIFEST, manifest).as_json(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (dir / "index.json").write_text(json.dumps(index))
    (dir / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return Layout(dir, tag, manifest, config, tuple(layer_blobs))


def push(
    layout: Layout,
    registry: RegistryProcess,
    target: str,
    ca: CA | None = None,
    creds: tuple[str, str] | None = None,
) -> None:
    """`skopeo copy oci:LAYOUT:TAG docker://HOST/TARGET` (TARGET is `repo:tag`); the
    manifest and blobs arrive byte for byte (no conversion is asked for)."""
    require_tools("skopeo")
    command = ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests", "--all"]
    if registry.tls:
        ca = ca or registry.ca
        assert ca is not None, "a TLS registry needs its CA to push"
        command += [
            "--dest-cert-dir",
            str(ca.certs_dir(registry.dir / "push-certs", registry.host) / registry.host),
        ]
    else:
        command += ["--dest-tls-verify=false"]
    if creds is not None:
        command += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    command += [f"oci:{layout.path}:{layout.tag}", f"docker://{registry.host}/{target}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")


# --- a loopback proxy in front of a real registry, for faults and redirects -------------------


class _ProxyHandler(QuietHandler):
    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        proxy: RegistryProxy = state["proxy"]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        is_blob = "/blobs/" in self.path
        with proxy.lock:
            proxy.seen.append((self.path, dict(headers)))
            blob_number = sum(1 for p, _ in proxy.seen if "/blobs/" in p)
        if is_blob and proxy.redirect_to is not None:
            digest = self.path.rsplit("/", 1)[1]
            self.send_body(307, b"", Location=f"{proxy.redirect_to}/storage/{digest}?sig=x")
            return
        if is_blob and proxy.strip_range:
            headers.pop("Range", None)
        upstream = proxy.upstream
        if upstream.tls:
            assert upstream.ca is not None
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                upstream.host, timeout=10, context=upstream.ca.context()
            )
        else:
            conn = http.client.HTTPConnection(upstream.host, timeout=10)
        conn.request("GET", self.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if is_blob and resp.status in (200, 206) and proxy.corrupt:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if "/manifests/" in self.path and resp.status == 200 and proxy.corrupt_manifest:
            body += b"\n"  # still the same JSON document, but other bytes
        with proxy.lock:
            proxy.answers.append((self.path, resp.status))
        self.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop = (
            is_blob
            and resp.status in (200, 206)
            and (proxy.drop_always or (proxy.drop_first and blob_number == 1))
        )
        if drop:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class RegistryProxy:
    """A plain-HTTP proxy on 127.0.0.1 in front of a real registry (list its `.host` as
    insecure in the client's settings). Options, all off by default:

    - `drop_first`: the first blob answer sends half its body, then the connection drops;
      `drop_always`: every blob answer does;
    - `strip_range`: Range headers are not passed on (the registry answers 200, not 206);
    - `redirect_to`: blob requests are answered `307 Location: REDIRECT_TO/storage/DIGEST`;
    - `corrupt`: the first byte of each blob is flipped; `corrupt_manifest`: manifest bytes
      are changed (their Docker-Content-Digest no longer matches).

    `.seen` lists (path, request headers) of every request, `.answers` (path, status) of
    each the registry answered; `.close()`, or use it as a context manager.
    """

    def __init__(self, upstream: RegistryProcess, **options: Any) -> None:
        self.upstream = upstream
        self.drop_first = options.pop("drop_first", False)
        self.drop_always = options.pop("drop_always", False)
        self.strip_range = options.pop("strip_range", False)
        self.redirect_to: str | None = options.pop("redirect_to", None)
        self.corrupt = options.pop("corrupt", False)
        self.corrupt_manifest = options.pop("corrupt_manifest", False)
        assert not options, f"unknown options {sorted(options)}"
        self.lock = threading.Lock()
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.answers: list[tuple[str, int]] = []
        self._http = HttpServer(_ProxyHandler, {"proxy": self})
        self.host = self._http.host
        self.url = self._http.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BlobStoreHandler(QuietHandler):
    def do_GET(self) -> None:
        store: BlobStore = self.server.state["store"]  # type: ignore[attr-defined]
        with store.lock:
            store.seen.append((self.path, dict(self.headers.items())))
        digest = urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[1]
        data = store.blobs.get(digest)
        if data is None:
            self.send_body(404, b"no such blob", "text/plain")
            return
        self.send_body(200, data, "application/octet-stream")


class BlobStore:
    """Blob storage on another loopback port (plain HTTP): GET /storage/DIGEST serves
    `blobs[DIGEST]`; `.seen` lists (path, headers) of each request (to check that no
    Authorization header arrives). `.url`, `.host`, `.close()`; a context manager."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.lock = threading.Lock()
        self.seen: list[tuple[str, dict[str, str]]] = []
        self._http = HttpServer(_BlobStoreHandler, {"store": self})
        self.host = self._http.host
        self.url = self._http.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
