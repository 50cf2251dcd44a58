"""The pod runtime: Linux primitives, cgroups, pods, apps, isolators, metadata service.

Lowest layer beside `kurma.store`: no gRPC, no boot config. The layers above (`kurma.api`,
`kurma.services`) use the names below and the public sub-packages (`cgroups`, `launcher`,
`linux`, `metadata`), never a `_private` module; `tests/unit/test_public_api.py` holds the
list. Where to start reading: `README.md` beside this file, then `_lifecycle.py` (how a pod
starts, from create to the watcher).

The names are loaded on first use (PEP 562): PID 1 (`kurma.init`) imports `kurma.runtime.linux`
and must not pay for the store, the metadata service and the launcher it never runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module (and the attribute there, when it is not the same name)
_EXPORTS: dict[str, str | tuple[str, str]] = {
    "API_DIR": "._poddir",
    "API_VOLUME": "._plan",
    "API_SOCKET_NAME": "._plan",
    "AppRecord": "._podrecord",
    "AppState": "._podrecord",
    "ExecProcess": "._live",
    "NotPermitted": "..errors",
    "PodEvent": "._live",
    "PodEventKind": "._live",
    "PodPlan": "._plan",
    "PodNotFound": "..errors",
    "PodRecord": "._podrecord",
    "PodState": "._podrecord",
    "PodStateError": "..errors",
    "Runtime": "._runtime",
    "RuntimeConfig": "._live",
    "check_quota_within": "._confine",
    "default_seccomp": "._plan",
    "seccomp_within": ("._confine", "_within"),  # a seccomp plan no looser than another's
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    where = _EXPORTS.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from ..errors import NotPermitted as NotPermitted
    from ..errors import PodNotFound as PodNotFound
    from ..errors import PodStateError as PodStateError
    from ._confine import _within as seccomp_within  # noqa: F401
    from ._confine import check_quota_within as check_quota_within
    from ._live import ExecProcess as ExecProcess
    from ._live import PodEvent as PodEvent
    from ._live import PodEventKind as PodEventKind
    from ._live import RuntimeConfig as RuntimeConfig
    from ._plan import API_SOCKET_NAME as API_SOCKET_NAME
    from ._plan import API_VOLUME as API_VOLUME
    from ._plan import PodPlan as PodPlan
    from ._plan import default_seccomp as default_seccomp
    from ._poddir import API_DIR as API_DIR
    from ._podrecord import AppRecord as AppRecord
    from ._podrecord import AppState as AppState
    from ._podrecord import PodRecord as PodRecord
    from ._podrecord import PodState as PodState
    from ._runtime import Runtime as Runtime
