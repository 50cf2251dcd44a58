"""The role table and RoleInterceptor (kurma.api._authz), without a network: every RPC has a role,
roles are read only from verified TLS peers, and the interceptor aborts with the right code
before any handler (unary or streaming) runs."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from kurma.api import _authz
from kurma.api._authz import (
    METHOD_ROLES,
    Role,
    RoleInterceptor,
    channel_credentials,
    name_from_auth_context,
    required_role,
    role_from_auth_context,
    server_credentials,
)
from kurma.api._pki import PkiError, init_ca, issue_client, issue_server
from kurma.api.v1 import host_pb2, images_pb2, pods_pb2

KURMA_MODULES = (pods_pb2, images_pb2, host_pb2)
GENERIC_MODULES = (health_pb2, reflection_pb2)


def served_methods() -> set[str]:
    """Every full method name of every service in the generated descriptors kurmad serves."""
    return {
        f"/{service.full_name}/{method.name}"
        for module in (*KURMA_MODULES, *GENERIC_MODULES)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


# --------------------------------------------------------------------------- the table


def test_every_method_of_every_service_has_a_role() -> None:
    methods = served_methods()
    assert {m.split("/")[1] for m in methods} >= {
        "kurma.v1.Pods",
        "kurma.v1.Images",
        "kurma.v1.Trust",
        "kurma.v1.Host",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    missing = sorted(methods - METHOD_ROLES.keys())
    assert not missing, f"methods without a role in METHOD_ROLES: {missing}"
    # Nothing stale either (reflection v1 is what newer grpc tools ask for first).
    extra = (
        METHOD_ROLES.keys()
        - methods
        - {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}
    )
    assert not extra, f"METHOD_ROLES names methods no service has: {sorted(extra)}"
    assert all(isinstance(role, Role) for role in METHOD_ROLES.values())


def test_the_roles_of_the_methods() -> None:
    by_role: dict[Role, set[str]] = {role: set() for role in Role}
    for method, role in METHOD_ROLES.items():
        by_role[role].add(method.removeprefix("/"))
    reader = {
        *(f"kurma.v1.Pods/{m}" for m in ("Get", "List", "Logs", "Wait", "Stats")),
        *(f"kurma.v1.Images/{m}" for m in ("List", "Inspect", "Export")),
        "kurma.v1.Trust/List",
        *(
            f"kurma.v1.Host/{m}"
            for m in ("Info", "Events", "Services", "ServiceLogs", "BootLog", "Networks")
        ),
        *(f"grpc.health.v1.Health/{m}" for m in ("Check", "Watch", "List")),
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
    operator = {
        *(f"kurma.v1.Pods/{m}" for m in ("Create", "Start", "Stop", "Destroy", "Exec")),
        *(f"kurma.v1.Images/{m}" for m in ("Import", "Fetch", "Delete")),
        "kurma.v1.Host/RestartService",
    }
    admin = {
        "kurma.v1.Trust/Add",
        "kurma.v1.Trust/Remove",
        "kurma.v1.Host/Reboot",
        "kurma.v1.Host/Poweroff",
    }
    assert by_role == {Role.READER: reader, Role.OPERATOR: operator, Role.ADMIN: admin}
    assert required_role("/kurma.v1.Pods/Create") is Role.OPERATOR
    assert required_role("/kurma.v1.Pods/Nope") is None


# --------------------------------------------------------------------------- fakes


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class FakeContext:
    """Enough of grpc.ServicerContext for the interceptor."""

    def __init__(self, auth: dict[str, list[bytes]], peer: str = "ipv4:127.0.0.1:40000") -> None:
        self._auth, self._peer = auth, peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def peer(self) -> str:
        return self._peer

    def abort(self, code: grpc.StatusCode, details: str):
        raise Aborted(code, details)


INSECURE = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


def tls_auth(cert_pem: bytes, cn: str = "x") -> dict[str, list[bytes]]:
    """What grpc 1.85 puts in auth_context() for a verified mutual-TLS peer."""
    return {
        "transport_security_type": [b"ssl"],
        "x509_subject": [f"CN={cn}".encode()],
        "x509_common_name": [cn.encode()],
        "x509_pem_cert": [cert_pem],
        "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("pki")
    init_ca(base / "ca")
    certs = {"server": issue_server(base / "ca", base / "out", ["localhost"], [], 1).cert}
    for role in Role:
        certs[role.value] = issue_client(base / "ca", base / "out", f"user-{role}", role, 1).cert
    pems = {name: path.read_bytes() for name, path in certs.items()}
    pems["dir"] = str(base).encode()  # where the files are, for the credentials test
    return pems


def test_role_from_auth_context(pki: dict[str, bytes]) -> None:
    for role in Role:
        auth = tls_auth(pki[role.value])
        assert role_from_auth_context(auth) is role
        assert name_from_auth_context(auth) == f"user-{role}"
    assert role_from_auth_context(tls_auth(pki["server"])) is None
    assert role_from_auth_context(INSECURE) is None
    assert role_from_auth_context({}) is None
    # A certificate's PEM on a connection that is not TLS counts for nothing.
    forged = INSECURE | {"x509_pem_cert": [pki["admin"]]}
    assert role_from_auth_context(forged) is None
    # Only the certificate counts, not grpc's mixed SAN list.
    mixed = tls_auth(pki["reader"]) | {"x509_subject_alternative_name": [b"kurma:role:admin"]}
    assert role_from_auth_context(mixed) is Role.READER
    assert role_from_auth_context(tls_auth(b"not a certificate")) is None
    assert role_from_auth_context({"transport_security_type": [b"ssl"]}) is None


# --------------------------------------------------------------------------- the interceptor


def handlers() -> dict[str, grpc.RpcMethodHandler]:
    """One handler of each streaming kind, recording that its behaviour ran."""
    ran: list[str] = []

    def uu(request, context):
        ran.append("uu")
        return b"uu"

    def us(request, context):
        ran.append("us")
        return iter([b"us"])

    def su(requests, context):
        ran.append("su")
        return b"".join(requests)

    def ss(requests, context):
        ran.append("ss")
        return iter(list(requests))

    made = {
        "/kurma.v1.Pods/List": grpc.unary_unary_rpc_method_handler(uu),
        "/kurma.v1.Pods/Logs": grpc.unary_stream_rpc_method_handler(us),
        "/kurma.v1.Images/Import": grpc.stream_unary_rpc_method_handler(su),
        "/kurma.v1.Pods/Exec": grpc.stream_stream_rpc_method_handler(ss),
        "/kurma.v1.Host/Reboot": grpc.unary_unary_rpc_method_handler(uu),
        "/kurma.v1.Extra/New": grpc.unary_unary_rpc_method_handler(uu),
    }
    made["ran"] = ran  # type: ignore[assignment]
    return made


class Details:
    def __init__(self, method: str) -> None:
        self.method, self.invocation_metadata = method, ()


def call(interceptor: RoleInterceptor, method: str, context: FakeContext):
    """Run `method` through the interceptor as grpc would; returns (result, behaviours that ran)."""
    table = handlers()
    handler = interceptor.intercept_service(lambda d: table.get(d.method), Details(method))
    assert handler is not None
    if handler.request_streaming and handler.response_streaming:
        result = list(handler.stream_stream(iter([b"a", b"b"]), context))
    elif handler.request_streaming:
        result = handler.stream_unary(iter([b"a", b"b"]), context)
    elif handler.response_streaming:
        result = list(handler.unary_stream(b"req", context))
    else:
        result = handler.unary_unary(b"req", context)
    return result, table["ran"]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("/kurma.v1.Pods/List", b"uu"),
        ("/kurma.v1.Pods/Logs", [b"us"]),
        ("/kurma.v1.Images/Import", b"ab"),
        ("/kurma.v1.Pods/Exec", [b"a", b"b"]),
    ],
)
def test_each_streaming_kind_is_checked_before_it_runs(
    pki: dict[str, bytes], method: str, expected
) -> None:
    interceptor = RoleInterceptor()
    result, ran = call(interceptor, method, FakeContext(tls_auth(pki["admin"], "user-admin")))
    assert result == expected and len(ran) == 1
    needed = METHOD_ROLES[method]
    for role in Role:
        context = FakeContext(tls_auth(pki[role.value], f"user-{role}"))
        if role >= needed:
            assert call(interceptor, method, context)[0] == expected
            continue
        table = handlers()
        handler = interceptor.intercept_service(lambda d, t=table: t.get(d.method), Details(method))
        behaviour = (
            handler.stream_stream
            or handler.stream_unary
            or handler.unary_stream
            or handler.unary_unary
        )
        with pytest.raises(Aborted) as exc:
            behaviour(iter([b"a"]) if handler.request_streaming else b"req", context)
        assert exc.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert exc.value.details == (
            f"method {method} needs role {needed}, certificate CN=user-{role} has {role}"
        )
        assert table["ran"] == []  # the servicer never saw the call


def test_refusals(pki: dict[str, bytes]) -> None:
    strict = RoleInterceptor()
    with pytest.raises(Aborted) as exc:
        call(strict, "/kurma.v1.Pods/List", FakeContext(tls_auth(pki["server"], "localhost")))
    assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "certificate CN=localhost has none" in exc.value.details
    with pytest.raises(Aborted) as exc:
        call(strict, "/kurma.v1.Pods/List", FakeContext(INSECURE))
    assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "needs mutual TLS" in exc.value.details
    # A TLS-only interceptor refuses even a unix peer: nothing but TLS belongs there.
    with pytest.raises(Aborted) as exc:
        call(strict, "/kurma.v1.Pods/List", FakeContext(INSECURE, "unix:"))
    assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED
    # A method the table does not know is refused for everyone, admins included.
    with pytest.raises(Aborted) as exc:
        call(strict, "/kurma.v1.Extra/New", FakeContext(tls_auth(pki["admin"])))
    assert exc.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "no role assigned" in exc.value.details
    assert call(strict, "/kurma.v1.Host/Reboot", FakeContext(tls_auth(pki["admin"])))[0] == b"uu"
    # An unknown method stays unknown (grpc answers UNIMPLEMENTED).
    assert strict.intercept_service(lambda d: None, Details("/x.Y/Z")) is None


def test_allow_unix_passes_only_plaintext_unix_peers(pki: dict[str, bytes]) -> None:
    shared = RoleInterceptor(allow_unix=True)
    for peer in ("unix:", "unix:/run/kurma/kurmad.sock", "unix-abstract:kurma"):
        assert call(shared, "/kurma.v1.Host/Reboot", FakeContext(INSECURE, peer))[0] == b"uu"
    for peer in ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000"):
        with pytest.raises(Aborted) as exc:
            call(shared, "/kurma.v1.Pods/List", FakeContext(INSECURE, peer))
        assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED
    # TLS calls are judged by their certificate as always.
    with pytest.raises(Aborted) as exc:
        call(shared, "/kurma.v1.Host/Reboot", FakeContext(tls_auth(pki["operator"])))
    assert exc.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_a_custom_table() -> None:
    interceptor = RoleInterceptor({"/kurma.v1.Pods/List": Role.ADMIN})
    with pytest.raises(Aborted):
        call(interceptor, "/kurma.v1.Pods/Logs", FakeContext(INSECURE, "unix:"))


# --------------------------------------------------------------------------- credentials


def test_credentials_read_paths_or_bytes_and_name_bad_files(
    pki: dict[str, bytes], tmp_path: Path
) -> None:
    out = Path(pki["dir"].decode()) / "out"  # the files the fixture wrote
    cert, key, ca = out / "server.crt", out / "server.key", out / "ca.crt"
    assert isinstance(server_credentials(cert, key, ca), grpc.ServerCredentials)
    assert isinstance(
        server_credentials(cert.read_bytes(), key.read_bytes(), str(ca)), grpc.ServerCredentials
    )
    assert isinstance(
        channel_credentials(out / "user-reader.crt", out / "user-reader.key", ca),
        grpc.ChannelCredentials,
    )
    with pytest.raises(PkiError, match=rf"cannot read private key {tmp_path}/nope\.key"):
        server_credentials(cert, tmp_path / "nope.key", ca)
    (tmp_path / "junk.crt").write_text("junk")
    with pytest.raises(PkiError, match=rf"CA certificate {tmp_path}/junk\.crt is not a PEM"):
        channel_credentials(cert, key, tmp_path / "junk.crt")
    with pytest.raises(PkiError, match=r"user-reader\.key does not belong to the certificate"):
        server_credentials(cert, out / "user-reader.key", ca)
    with pytest.raises(PkiError, match="is not a PEM private key"):
        server_credentials(cert, cert, ca)


def test_module_exports() -> None:
    for name in _authz.__all__:
        assert hasattr(_authz, name), name
