"""Who may call what over kurmad's TCP listener: mutual TLS only, and a role per method.

A client certificate carries its role as one URI subjectAltName `kurma:role:<role>` (see
kurma/api/_pki.py); `METHOD_ROLES` gives the least role each RPC needs, and `RoleInterceptor`
enforces it: PERMISSION_DENIED when the caller's role is too low, UNAUTHENTICATED when its
certificate carries no role (or the call did not come over TLS at all). A method missing from
the table is refused for everyone (fail closed); tests/unit/test_authz.py checks that the table
covers every method of every service kurmad serves.

What a role means beyond the method table is one row of `_policy.TABLE` (the same table
decides for pods' own sockets): a `reader` reads; an `operator` creates, starts and execs into
pods only within the operator policy (no privileged, host namespaces, devices, extra
capabilities..., host volumes only under kurmad.yml's `operator_host_volumes`) and imports no
image under a name the system services run; an `admin` may do everything, including granting
`host/api-access` `host-read`/`host`. Servicers read the caller's role with
`role_from_context(context)`.

How kurmad wires it (the unix sockets have their own model, by socket, not by certificate):

    # Preferred: a separate server for TCP, sharing the servicer objects with the unix one.
    tcp = grpc.server(pool, interceptors=[RoleInterceptor()])    # first: outermost
    add_servicers(tcp)                                            # the same servicer objects
    tcp.add_secure_port(address, server_credentials(cert, key, ca))
    # Nothing but TLS ever reaches that server; a plaintext call would be UNAUTHENTICATED.

    # Or one server for both: RoleInterceptor(allow_unix=True) lets calls whose peer is
    # `unix:...` (context.peer(); TCP peers are `ipv4:...`/`ipv6:...`) through untouched, so
    # the unix-socket model applies to them, and still demands a role of every other call.

Certificates are verified by the TLS handshake against the CA given to `server_credentials`
(require_client_auth): no client certificate, or one from another CA, never gets to a method
(the client sees UNAVAILABLE).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping

import grpc

from ._pki import PkiError, Role, common_name, role_from_certificate
from ._policy import cert_kind, may_call

__all__ = [
    "METHOD_ROLES",
    "Role",
    "RoleInterceptor",
    "channel_credentials",
    "name_from_auth_context",
    "required_role",
    "role_from_auth_context",
    "role_from_context",
    "server_credentials",
]

log = logging.getLogger(__name__)

_R, _O, _A = Role.READER, Role.OPERATOR, Role.ADMIN


def _service(name: str, methods: dict[str, Role]) -> dict[str, Role]:
    return {f"/{name}/{method}": role for method, role in methods.items()}


# The least role for every RPC kurmad serves, by full method name ("/package.Service/Method").
METHOD_ROLES: dict[str, Role] = {
    **_service(
        "kurma.v1.Pods",
        {
            "Create": _O,
            "Start": _O,
            "Stop": _O,
            "Destroy": _O,
            "List": _R,
            "Get": _R,
            "Logs": _R,
            "Exec": _O,
            "Wait": _R,
            "Stats": _R,
        },
    ),
    **_service(
        "kurma.v1.Images",
        {"Import": _O, "Fetch": _O, "List": _R, "Inspect": _R, "Delete": _O, "Export": _R},
    ),
    **_service("kurma.v1.Trust", {"Add": _A, "List": _R, "Remove": _A}),
    **_service(
        "kurma.v1.Host",
        {
            "Info": _R,
            "Events": _R,
            "Services": _R,
            "RestartService": _O,
            "ServiceLogs": _R,
            "Reboot": _A,
            "Poweroff": _A,
            "BootLog": _R,
            "Networks": _R,
        },
    ),
    # Generic tools and probes.
    **_service("grpc.health.v1.Health", {"Check": _R, "Watch": _R, "List": _R}),
    **_service("grpc.reflection.v1alpha.ServerReflection", {"ServerReflectionInfo": _R}),
    **_service("grpc.reflection.v1.ServerReflection", {"ServerReflectionInfo": _R}),
}

del _R, _O, _A


def required_role(method: str, table: Mapping[str, Role] = METHOD_ROLES) -> Role | None:
    """The least role `method` needs, or None when the table does not know it (refused)."""
    return table.get(method)


# --------------------------------------------------------------------------- who is calling


def _first(auth_context: Mapping[str, list[bytes]], key: str) -> bytes | None:
    values = auth_context.get(key) or []
    return values[0] if values else None


def _is_tls(auth_context: Mapping[str, list[bytes]]) -> bool:
    return _first(auth_context, "transport_security_type") == b"ssl"


@functools.lru_cache(maxsize=256)
def _identity(pem: bytes) -> tuple[str | None, Role | None]:
    """(CN, role) of a peer certificate; parsed once per distinct certificate."""
    try:
        return common_name(pem), role_from_certificate(pem)
    except ValueError:
        return None, None


def role_from_auth_context(auth_context: Mapping[str, list[bytes]]) -> Role | None:
    """The role of a TLS peer, from `context.auth_context()`; None without TLS or role.

    grpc 1.85 gives a mutual-TLS call `transport_security_type` [b'ssl'], `x509_pem_cert` (the
    verified leaf), `x509_common_name`, `x509_subject_alternative_name` (every SAN, of every
    type, mixed) and `peer_uri` (URI SANs). The role is read from the PEM certificate itself,
    so that only a URI SAN counts and the clientAuth EKU is required (see _pki).
    """
    if not _is_tls(auth_context):
        return None
    pem = _first(auth_context, "x509_pem_cert")
    return _identity(pem)[1] if pem else None


def name_from_auth_context(auth_context: Mapping[str, list[bytes]]) -> str | None:
    """The subject CN of a TLS peer's certificate, or None."""
    if not _is_tls(auth_context):
        return None
    pem = _first(auth_context, "x509_pem_cert")
    return _identity(pem)[0] if pem else None


def role_from_context(context: grpc.ServicerContext) -> Role | None:
    """The caller's certificate role inside a servicer (None on a unix socket)."""
    return role_from_auth_context(context.auth_context())


def _is_unix_peer(peer: str) -> bool:
    return peer.startswith(("unix:", "unix-abstract:"))


# --------------------------------------------------------------------------- the interceptor


class RoleInterceptor(grpc.ServerInterceptor):
    """Enforces `table` (default METHOD_ROLES) on every call of the server it is given to.

    Put it first in `interceptors=` so it runs before anything else. For a TLS-only server
    construct it plainly; `allow_unix=True` lets plaintext calls from `unix:` peers through
    untouched (for a server that also listens on a unix socket). Every other call must have
    come over TLS with a certificate whose role is at least the method's.
    """

    def __init__(self, table: Mapping[str, Role] = METHOD_ROLES, *, allow_unix: bool = False):
        self._table = dict(table)
        self._allow_unix = allow_unix

    def check(self, method: str, context: grpc.ServicerContext) -> None:
        """Abort the call (context.abort raises) unless the caller may call `method`."""
        auth = context.auth_context()
        if not _is_tls(auth):
            if self._allow_unix and _is_unix_peer(context.peer()):
                return
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"method {method} needs mutual TLS with a client certificate; "
                "this listener accepts nothing else",
            )
        needed = self._table.get(method)
        pem = _first(auth, "x509_pem_cert")
        name, role = _identity(pem) if pem else (None, None)
        who = f"certificate CN={name}" if name else "the client certificate"
        if role is None:
            log.info("refused %s from %s (%s): no role", method, context.peer(), who)
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"method {method} needs a client certificate with a role "
                f"(URI SAN kurma:role:reader|operator|admin); {who} has none",
            )
        if needed is None:
            log.warning(
                "refused %s from %s (%s): not in the role table", method, context.peer(), who
            )
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"method {method} has no role assigned on this listener; refused for everyone",
            )
        if not may_call(cert_kind(role), method, self._table):
            log.info("refused %s from %s (%s has %s)", method, context.peer(), who, role)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"method {method} needs role {needed}, {who} has {role}",
            )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return None
        return _guarded(handler, functools.partial(self.check, handler_call_details.method))


def _guarded(handler: grpc.RpcMethodHandler, check: Callable[[grpc.ServicerContext], None]):
    """`handler` with `check(context)` run before its behaviour, whatever its streaming kind.

    The wrappers are plain functions (not generators), so the check runs when the call
    starts, before a streaming request is read or a streaming response is produced.
    """
    deser, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        inner_ss = handler.stream_stream

        def stream_stream(request_iterator, context):
            check(context)
            return inner_ss(request_iterator, context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, deser, ser)
    if handler.request_streaming:
        inner_su = handler.stream_unary

        def stream_unary(request_iterator, context):
            check(context)
            return inner_su(request_iterator, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, deser, ser)
    if handler.response_streaming:
        inner_us = handler.unary_stream

        def unary_stream(request, context):
            check(context)
            return inner_us(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, deser, ser)
    inner_uu = handler.unary_unary

    def unary_unary(request, context):
        check(context)
        return inner_uu(request, context)

    return grpc.unary_unary_rpc_method_handler(unary_unary, deser, ser)


# --------------------------------------------------------------------------- credentials

PemSource = str | os.PathLike[str] | bytes


def _read_pem(source: PemSource, what: str, marker: bytes) -> bytes:
    """PEM bytes from a path (str/PathLike) or from bytes given as they are."""
    if isinstance(source, bytes):
        data, label = source, f"the {what} given"
    else:
        label = f"{what} {os.fspath(source)}"
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise PkiError(f"cannot read {label}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise PkiError(f"{label} is not a PEM {what}")
    return data


def _cert_key_ca(cert: PemSource, key: PemSource, ca: PemSource) -> tuple[bytes, bytes, bytes]:
    return (
        _read_pem(cert, "certificate", b"CERTIFICATE-----"),
        _read_pem(key, "private key", b"PRIVATE KEY-----"),
        _read_pem(ca, "CA certificate", b"CERTIFICATE-----"),
    )


def _check_pair(cert_pem: bytes, key_pem: bytes, cert: PemSource, key: PemSource) -> None:
    """PkiError naming the files when the key does not belong to the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        public = x509.load_pem_x509_certificate(cert_pem).public_key()
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise PkiError(f"cannot load {_label(cert)} / {_label(key)}: {e}") from None
    pem = serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(pem, spki) != private.public_key().public_bytes(pem, spki):
        raise PkiError(f"the key {_label(key)} does not belong to the certificate {_label(cert)}")


def _label(source: PemSource) -> str:
    return "(given as bytes)" if isinstance(source, bytes) else os.fspath(source)


def server_credentials(cert: PemSource, key: PemSource, ca: PemSource) -> grpc.ServerCredentials:
    """TLS credentials for kurmad's TCP listener that demand and verify a client certificate
    signed by `ca` (require_client_auth). Each argument is a path or the PEM bytes themselves.
    Raises PkiError naming the file when one is unreadable, not PEM, or the key does not match.
    """
    cert_pem, key_pem, ca_pem = _cert_key_ca(cert, key, ca)
    _check_pair(cert_pem, key_pem, cert, key)
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )


def channel_credentials(cert: PemSource, key: PemSource, ca: PemSource) -> grpc.ChannelCredentials:
    """TLS credentials for a client (kurmactl --cert/--key/--ca): present `cert`/`key`, trust
    only `ca` for the server. Paths or PEM bytes. Only cheap checks here (readable, PEM), to
    keep `cryptography` off the CLI's start-up path; a mismatched key fails the handshake.
    """
    cert_pem, key_pem, ca_pem = _cert_key_ca(cert, key, ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )
