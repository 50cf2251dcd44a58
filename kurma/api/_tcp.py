"""The optional TCP listener: mutual TLS only, with per-method roles (kurma.api._authz).

Client certificates carry their role (`kurmactl pki issue client --role ...`); the
RoleInterceptor checks it for every call that came over TLS, and calls on the unix socket
pass untouched (root on this host, or a pod's own socket, which `_caller` scopes).
"""

from __future__ import annotations

from typing import Any

from ._config import DaemonConfig


def check_tcp_support(config: DaemonConfig) -> None:
    """Before anything starts: fail early (naming the file) when the TLS files are unusable.

    Reads the files without importing gRPC: kurmad forks its launcher before loading it.
    """
    if config.listen is None:
        return
    for name in ("tls_cert", "tls_key", "tls_ca"):
        path = getattr(config, name)
        with open(path, "rb") as f:
            if b"-----BEGIN" not in f.read():
                raise ValueError(f"{name}: {path} is not a PEM file")


def tcp_server_credentials(config: DaemonConfig) -> Any:
    """grpc.ServerCredentials for the TCP listener: client certificates required."""
    from ._authz import server_credentials

    return server_credentials(config.tls_cert, config.tls_key, config.tls_ca)


def interceptors(config: DaemonConfig) -> list[Any]:
    """The role check, first of all interceptors, when a TCP listener is configured."""
    if config.listen is None:
        return []
    from ._authz import RoleInterceptor

    return [RoleInterceptor(allow_unix=True)]


def certificate_budget(config: DaemonConfig) -> Any:
    """An interceptor for the TCP server: one certificate (its subject CN) may hold a
    quarter of the workers at once (streams hold one each), so a reader's streams leave
    room for an admin's calls."""
    import grpc

    from ._authz import _guarded, name_from_auth_context
    from ._podsockets import TreeBudget

    budget = TreeBudget(max(2, config.workers // 4))

    def check(context: grpc.ServicerContext) -> None:
        name = name_from_auth_context(context.auth_context()) or "?"
        budget.acquire(f"certificate {name}", context)

    class CertificateBudget(grpc.ServerInterceptor):
        def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
            handler = continuation(handler_call_details)
            if handler is None:
                return None
            return _guarded(handler, check)

    return CertificateBudget()
