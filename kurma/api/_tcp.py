"""The optional TCP listener: mutual TLS with per-method roles, from kurma.api._authz.

Until `_authz` (certificates carrying a role, enforced per method) is wired in, kurmad
refuses a `listen` setting instead of serving the API on TCP without roles.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ._config import DaemonConfig

AUTHZ_MODULE = "kurma.api._authz"
TCP_WIRED = False  # TODO(issue 4, mTLS): True once tcp_server_credentials below is written


class TcpUnavailable(NotImplementedError):
    """The TCP listener was asked for but this build cannot serve it safely."""


def check_tcp_support(config: DaemonConfig) -> None:
    """Before anything starts: TcpUnavailable when `listen` is set and cannot be served.

    Looks for the module without importing it (it may import gRPC, and kurmad must fork
    its launcher before gRPC is loaded).
    """
    if config.listen is None:
        return
    if importlib.util.find_spec(AUTHZ_MODULE) is None:
        raise TcpUnavailable(
            f"listen: the TCP listener serves mutual TLS with roles from {AUTHZ_MODULE}, "
            f"which is not part of this build yet; remove listen/tls_* and use the unix "
            f"socket ({config.socket})"
        )
    if not TCP_WIRED:
        raise TcpUnavailable(
            f"listen: {AUTHZ_MODULE} exists but kurmad does not use it yet (TODO in "
            f"kurma/api/_tcp.py: tcp_server_credentials); use the unix socket ({config.socket})"
        )


def tcp_server_credentials(config: DaemonConfig) -> Any:
    """grpc.ServerCredentials for the TCP listener (client certificates required).

    TODO(issue 4, mTLS): return `_authz.server_credentials(config.tls_cert, config.tls_key,
    config.tls_ca)` and serve TCP on a second grpc.server built with
    `interceptors=[_authz.RoleInterceptor()]` that shares the servicer objects (or give the
    one server `RoleInterceptor(allow_unix=True)`), with `caller_of` reading the role via
    `_authz.role_from_context`. Until then this refuses, so no TCP port ever serves the API
    without role checks.
    """
    check_tcp_support(config)
    raise TcpUnavailable("listen: the TCP listener is not wired yet")
