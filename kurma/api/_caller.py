"""Who is calling, as the servicers see it: today always the host; later a pod or a cert.

Every servicer asks `caller_of(context)` and filters what it shows through the view, so the
recursion work (per-pod sockets: a `subtree` caller sees only its descendants) and the mTLS
roles change this module, not the servicers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..runtime._podrecord import PodRecord


@dataclass(frozen=True)
class CallerView:
    """What one caller may see and do."""

    name: str = "host"  # host, a pod UUID, or a certificate's CN
    role: str = "admin"  # admin, operator or reader
    subtree_of: str | None = None  # a pod UUID: only its descendants are visible

    def sees(self, record: PodRecord) -> bool:
        """Whether the pod is visible to this caller (the host sees every pod)."""
        return self.subtree_of is None

    @property
    def parent(self) -> str | None:
        """The pod that pods created by this caller belong to (None: the host)."""
        return self.subtree_of


HOST = CallerView()


def caller_of(context: Any) -> CallerView:
    """The view of the caller of `context`: the host for every call on the system socket;
    the certificate's name and role for a call over mutual TLS (the role was checked for
    the method already; a reader sees every pod, read-only)."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return HOST
    from ._authz import name_from_auth_context, role_from_auth_context

    role = role_from_auth_context(auth)
    return CallerView(name=name_from_auth_context(auth) or "?", role=str(role or "reader"))
