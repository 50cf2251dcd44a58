"""Mutual TLS end to end: a real grpc server on 127.0.0.1 with the credentials and the role
interceptor kurmad uses, serving the health service and a stub Pods service.

No client certificate, or one from another CA: the handshake fails (UNAVAILABLE). A reader may
List, Get and follow Logs but not Create or Exec (PERMISSION_DENIED); an operator and an admin
may Create. Needs no root: loopback only.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kurma.api._authz import (
    RoleInterceptor,
    channel_credentials,
    role_from_context,
    server_credentials,
)
from kurma.api._pki import Role, init_ca, issue_client, issue_server
from kurma.api.v1 import pods_pb2, pods_pb2_grpc

TIMEOUT = 10
POD = pods_pb2.Pod(uuid="0f0e0d0c-0000-4000-8000-000000000001", name="web")


class StubPods(pods_pb2_grpc.PodsServicer):
    """Fixed answers; records the caller's role as the servicer sees it."""

    def __init__(self) -> None:
        self.roles: list[Role | None] = []

    def List(self, request, context):
        self.roles.append(role_from_context(context))
        return pods_pb2.ListPodsResponse(pods=[POD])

    def Get(self, request, context):
        return POD

    def Create(self, request, context):
        self.roles.append(role_from_context(context))
        return pods_pb2.Pod(uuid=POD.uuid, name=request.name or "created")

    def Logs(self, request, context):
        yield pods_pb2.LogChunk(app="web", data=b"hello\n")

    def Exec(self, request_iterator, context):
        for _ in request_iterator:
            pass
        yield pods_pb2.ExecResponse(exit_code=0)


class Pki:
    def __init__(self, base: Path) -> None:
        init_ca(base / "ca")
        init_ca(base / "rogue-ca", common_name="Rogue CA")
        self.server = issue_server(base / "ca", base / "server", ["localhost"], ["127.0.0.1"], 1)
        self.clients = {
            role: issue_client(base / "ca", base / "clients", f"user-{role}", role, 1)
            for role in Role
        }
        self.rogue = issue_client(base / "rogue-ca", base / "rogue", "mallory", Role.ADMIN, 1)
        self.ca = base / "ca" / "ca.crt"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("mtls"))


def start_server(
    interceptor: RoleInterceptor, add_ports
) -> tuple[grpc.Server, StubPods, list[str]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[interceptor])
    pods = StubPods()
    pods_pb2_grpc.add_PodsServicer_to_server(pods, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    try:
        targets = add_ports(server)
        server.start()
    except BaseException:
        server.stop(None)
        raise
    return server, pods, targets


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[tuple[str, StubPods]]:
    def ports(server: grpc.Server) -> list[str]:
        creds = server_credentials(pki.server.cert, pki.server.key, pki.server.ca)
        port = server.add_secure_port("127.0.0.1:0", creds)  # 0: the kernel picks a free port
        assert port > 0
        return [f"127.0.0.1:{port}"]

    server, pods, targets = start_server(RoleInterceptor(), ports)
    try:
        yield targets[0], pods
    finally:
        server.stop(None).wait(TIMEOUT)


def client(target: str, pki: Pki, role: Role | None = None, paths=None) -> grpc.Channel:
    paths = paths or (pki.clients[role] if role else None)
    if paths is None:  # trusts the server, presents no certificate
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    else:
        creds = channel_credentials(paths.cert, paths.key, pki.ca)
    return grpc.secure_channel(target, creds)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value.code()


def check_health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status


def test_no_client_certificate_fails_the_handshake(tls_server, pki: Pki) -> None:
    target, _ = tls_server
    with client(target, pki) as channel:
        assert code_of(lambda: check_health(channel)) == grpc.StatusCode.UNAVAILABLE
        stub = pods_pb2_grpc.PodsStub(channel)
        assert (
            code_of(lambda: stub.List(pods_pb2.ListPodsRequest(), timeout=TIMEOUT))
            == grpc.StatusCode.UNAVAILABLE
        )
    with grpc.insecure_channel(target) as channel:  # plaintext to a TLS port
        assert code_of(lambda: check_health(channel)) == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(tls_server, pki: Pki) -> None:
    target, pods = tls_server
    before = len(pods.roles)
    with client(target, pki, paths=pki.rogue) as channel:
        assert code_of(lambda: check_health(channel)) == grpc.StatusCode.UNAVAILABLE
        stub = pods_pb2_grpc.PodsStub(channel)
        request = pods_pb2.CreatePodRequest(name="evil")
        assert code_of(lambda: stub.Create(request, timeout=TIMEOUT)) == (
            grpc.StatusCode.UNAVAILABLE
        )
    assert len(pods.roles) == before


def test_a_client_that_trusts_another_ca_refuses_the_server(tls_server, pki: Pki) -> None:
    target, _ = tls_server
    paths = pki.clients[Role.ADMIN]
    creds = channel_credentials(paths.cert, paths.key, pki.rogue.ca)
    with grpc.secure_channel(target, creds) as channel:
        assert code_of(lambda: check_health(channel)) == grpc.StatusCode.UNAVAILABLE


def test_a_server_certificate_is_no_client_certificate(tls_server, pki: Pki) -> None:
    target, _ = tls_server
    with client(target, pki, paths=pki.server) as channel:
        # TLS (BoringSSL) refuses it: "unsupported certificate purpose" (serverAuth EKU only).
        # Were it let through, the interceptor would find no role (UNAUTHENTICATED).
        assert code_of(lambda: check_health(channel)) == grpc.StatusCode.UNAVAILABLE


def test_a_reader_can_read_but_not_create(tls_server, pki: Pki) -> None:
    target, pods = tls_server
    with client(target, pki, Role.READER) as channel:
        assert check_health(channel) == health_pb2.HealthCheckResponse.SERVING
        stub = pods_pb2_grpc.PodsStub(channel)
        assert list(stub.List(pods_pb2.ListPodsRequest(), timeout=TIMEOUT).pods) == [POD]
        assert pods.roles[-1] is Role.READER  # the servicer sees the role too
        assert stub.Get(pods_pb2.PodRef(pod="web"), timeout=TIMEOUT) == POD
        logs = list(stub.Logs(pods_pb2.LogsRequest(pod="web"), timeout=TIMEOUT))
        assert [c.data for c in logs] == [b"hello\n"]

        calls = len(pods.roles)
        with pytest.raises(grpc.RpcError) as exc:
            stub.Create(pods_pb2.CreatePodRequest(name="x"), timeout=TIMEOUT)
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert exc.value.details() == (
            "method /kurma.v1.Pods/Create needs role operator, "
            "certificate CN=user-reader has reader"
        )
        assert len(pods.roles) == calls  # Create never ran

        start = pods_pb2.ExecRequest(start=pods_pb2.ExecStart(pod="web", argv=["sh"]))
        with pytest.raises(grpc.RpcError) as exc:
            list(stub.Exec(iter([start]), timeout=TIMEOUT))
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs role operator" in exc.value.details()


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.ADMIN])
def test_an_operator_and_an_admin_can_create(tls_server, pki: Pki, role: Role) -> None:
    target, pods = tls_server
    with client(target, pki, role) as channel:
        stub = pods_pb2_grpc.PodsStub(channel)
        pod = stub.Create(pods_pb2.CreatePodRequest(name=f"by-{role}"), timeout=TIMEOUT)
        assert (pod.uuid, pod.name) == (POD.uuid, f"by-{role}")
        assert pods.roles[-1] is role
        start = pods_pb2.ExecRequest(start=pods_pb2.ExecStart(pod="web", argv=["true"]))
        replies = list(stub.Exec(iter([start]), timeout=TIMEOUT))
        assert [r.exit_code for r in replies] == [0]


def test_one_server_for_unix_and_tcp_with_allow_unix(pki: Pki, tmp_path: Path) -> None:
    """The alternative wiring: plaintext unix peers pass untouched, plaintext TCP does not."""
    sock = tmp_path / "kurmad.sock"

    def ports(server: grpc.Server) -> list[str]:
        creds = server_credentials(pki.server.cert, pki.server.key, pki.server.ca)
        tls = server.add_secure_port("127.0.0.1:0", creds)
        plain = server.add_insecure_port("127.0.0.1:0")  # a mistake kurmad must not make
        assert server.add_insecure_port(f"unix:{sock}") == 1
        return [f"127.0.0.1:{tls}", f"127.0.0.1:{plain}", f"unix:{sock}"]

    server, pods, (tls, plain, unix) = start_server(RoleInterceptor(allow_unix=True), ports)
    try:
        with grpc.insecure_channel(unix) as channel:
            pod = pods_pb2_grpc.PodsStub(channel).Create(
                pods_pb2.CreatePodRequest(name="local"), timeout=TIMEOUT
            )
            assert pod.name == "local" and pods.roles[-1] is None
        with grpc.insecure_channel(plain) as channel:
            stub = pods_pb2_grpc.PodsStub(channel)
            with pytest.raises(grpc.RpcError) as exc:
                stub.List(pods_pb2.ListPodsRequest(), timeout=TIMEOUT)
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with client(tls, pki, Role.READER) as channel:
            stub = pods_pb2_grpc.PodsStub(channel)
            assert len(stub.List(pods_pb2.ListPodsRequest(), timeout=TIMEOUT).pods) == 1
            assert (
                code_of(lambda: stub.Create(pods_pb2.CreatePodRequest(), timeout=TIMEOUT))
                == grpc.StatusCode.PERMISSION_DENIED
            )
    finally:
        server.stop(None).wait(TIMEOUT)
    assert not sock.exists()
