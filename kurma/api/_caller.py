"""Who is calling, as the servicers see it: the host, a pod on its own socket, or a cert.

Every servicer asks for the caller's view (`caller_of(context)` on the system server; a pod's
own server binds the view of that pod, see `_podsockets`) and filters what it shows through
it: a `subtree` pod sees only its descendants, and whatever it cannot see does not exist for
it (NOT_FOUND, never PERMISSION_DENIED, so it cannot probe for other pods). What a caller
may do beyond seeing is its kind's row in `_policy.TABLE` (`_policy.kind_of(view)`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Self

from ..runtime._podrecord import PodRecord

SUBTREE, HOST_READ, HOST = "subtree", "host-read", "host"


@dataclass(frozen=True)
class CallerView:
    """What one caller may see and do."""

    name: str = "host"  # host, a pod UUID, or a certificate's CN
    role: str = "admin"  # admin, operator or reader
    subtree_of: str | None = None  # a pod UUID: only its descendants are visible
    scope: str = HOST  # subtree, host-read or host
    pod: str | None = None  # the pod whose own socket the call came on

    def sees(self, record: PodRecord) -> bool:
        """Whether the pod is visible to this caller: a `subtree` pod sees its descendants
        (not itself); everyone else sees every pod."""
        return self.subtree_of is None or self.subtree_of in record.ancestors

    @property
    def parent(self) -> str | None:
        """The pod that pods created by this caller belong to (None: the host)."""
        return self.subtree_of


HOST_VIEW = CallerView()


def pod_view(uuid: str, scope: str) -> CallerView:
    """The view of calls on a pod's own socket (its `host/api-access` scope)."""
    if scope == HOST_READ:
        return CallerView(name=uuid, role="reader", scope=HOST_READ, pod=uuid)
    if scope == HOST:
        return CallerView(name=uuid, role="operator", scope=HOST, pod=uuid)
    return CallerView(name=uuid, role="operator", subtree_of=uuid, scope=SUBTREE, pod=uuid)


def caller_of(context: Any) -> CallerView:
    """The view of the caller of `context` on the system server: the host for every call on
    the system socket; the certificate's name and role for a call over mutual TLS (the role
    was checked for the method already; a reader sees every pod, read-only)."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return HOST_VIEW
    from ._authz import name_from_auth_context, role_from_auth_context

    role = role_from_auth_context(auth)
    return CallerView(name=name_from_auth_context(auth) or "?", role=str(role or "reader"))


class BindsCaller:
    """A servicer mixin: `bound(view)` is a copy serving every call as `view` (a pod's own
    server); otherwise `_caller(context)` asks `caller_of`. Copies share all other state."""

    _bound: CallerView | None = None

    def bound(self, view: CallerView) -> Self:
        clone = copy.copy(self)
        clone._bound = view
        return clone

    def _caller(self, context: Any) -> CallerView:
        return self._bound if self._bound is not None else caller_of(context)
