"""A failed mutual-TLS connection says which certificate check failed (kurma.client._tlsdiag):
a real grpc server on 127.0.0.1 with kurmad's credentials; the client connects as
kurma.client does and the Unavailable it raises names the problem. No root: loopback only.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from kurma.api._authz import server_credentials
from kurma.api._pki import CertPaths, init_ca, issue_client, issue_server
from kurma.client import Client, Unavailable
from kurma.client._tlsdiag import diagnose


def expired_copy(ca_dir: Path, paths: CertPaths, out: Path) -> CertPaths:
    """`paths`' certificate re-signed by the CA with a validity that ended yesterday."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca_cert.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=3))
        .not_valid_after(now - datetime.timedelta(days=1))
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    out.mkdir(parents=True, exist_ok=True)
    crt = out / paths.cert.name
    crt.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return CertPaths(crt, paths.key, paths.ca)


class Pki:
    def __init__(self, base: Path) -> None:
        self.ca_dir = base / "ca"
        init_ca(self.ca_dir)
        self.server = issue_server(self.ca_dir, base / "server", ["localhost"], ["127.0.0.1"], 1)
        self.other_name = issue_server(self.ca_dir, base / "other", ["example.org"], [], 1)
        self.expired_server = expired_copy(self.ca_dir, self.server, base / "expired-server")
        self.client = issue_client(self.ca_dir, base / "clients", "ann", "operator", 1)
        self.expired_client = expired_copy(self.ca_dir, self.client, base / "expired-client")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("tlsdiag"))


@pytest.fixture
def serve(pki: Pki) -> Iterator:
    servers: list[grpc.Server] = []

    def start(paths: CertPaths) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        servers.append(server)
        port = server.add_secure_port(
            "127.0.0.1:0", server_credentials(paths.cert, paths.key, pki.server.ca)
        )
        server.start()
        return port

    yield start
    for server in servers:
        server.stop(None).wait(5)


def connect(target: str, client: CertPaths, ca: Path) -> None:
    Client.connect(
        target, cert=str(client.cert), key=str(client.key), ca=str(ca), timeout=2
    ).close()


def test_a_good_connection_has_no_diagnosis(pki: Pki, serve) -> None:
    port = serve(pki.server)
    connect(f"tcp://127.0.0.1:{port}", pki.client, pki.server.ca)
    assert diagnose(f"127.0.0.1:{port}", *map(str, pki.client)) is None


def test_hostname_mismatch_is_named(pki: Pki, serve) -> None:
    """kurmad's certificate is for example.org only; we connect to 127.0.0.1."""
    port = serve(pki.other_name)
    with pytest.raises(Unavailable, match=r"is not for 127\.0\.0\.1 \(it names example\.org\)"):
        connect(f"tcp://127.0.0.1:{port}", pki.client, pki.server.ca)


def test_expired_server_certificate_is_named(pki: Pki, serve) -> None:
    port = serve(pki.expired_server)
    with pytest.raises(Unavailable, match=r"kurmad.s server certificate .* expired on"):
        connect(f"tcp://127.0.0.1:{port}", pki.client, pki.server.ca)


def test_expired_client_certificate_is_named(pki: Pki, serve) -> None:
    port = serve(pki.server)
    with pytest.raises(Unavailable, match=r"our client certificate .*ann\.crt .* expired on"):
        connect(f"tcp://127.0.0.1:{port}", pki.expired_client, pki.server.ca)


def test_nobody_listening_is_no_certificate_problem(pki: Pki) -> None:
    with pytest.raises(Unavailable, match="no kurmad answers"):
        connect("tcp://127.0.0.1:1", pki.client, pki.server.ca)


def test_a_key_of_another_certificate_is_named(pki: Pki, serve) -> None:
    port = serve(pki.server)
    wrong = CertPaths(pki.client.cert, pki.server.key, pki.client.ca)
    with pytest.raises(Unavailable, match=r"the key .*server\.key does not belong to our"):
        connect(f"tcp://127.0.0.1:{port}", wrong, pki.server.ca)
