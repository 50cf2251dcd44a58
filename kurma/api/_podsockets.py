"""Pods' own API sockets: one grpc.server per pod with `host/api-access`, on
`<pod_dir>/api/api.sock` (bound into the pod at /run/kurma, see the runtime's plan).

Each server serves the same servicer objects as the system socket, bound to the pod's view
(`_caller.pod_view`: a `subtree` pod acts as itself and sees its descendants; `host-read`
sees everything read-only; `host` has the whole API but grants nothing a host admin alone
grants), behind `ScopeInterceptor`, which refuses per method what the scope never allows
(PERMISSION_DENIED). The pods' servers share a thread pool of their own (never the system
socket's: the host's calls are answered whatever pods hold), and one tree of pods (a top
pod and every pod below it, each with a socket of its own) may hold at most `max_rpcs`
calls at once in all: a stream (events, logs -f) holds a worker for its whole life, and a
subtree pod makes as many sockets as it makes api-access children.

A socket is opened when an api-access pod is created (before it starts, so its apps never
find it missing; a system service's pod started while kurmad still imports gRPC gets its
socket when the server starts, a moment later), again for every such pod when kurmad starts
(re-adoption), and closed
when the pod exits or is destroyed. The runtime tells of those through its listener, which
runs with the runtime's lock held: the closing is handed to a thread of its own.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from ..runtime import (
    API_DIR,
    API_SOCKET_NAME,
    PodEvent,
    PodEventKind,
    PodNotFound,
    PodRecord,
    PodState,
    Runtime,
)
from ._authz import _guarded
from ._caller import CallerView, pod_view
from ._logfmt import fields
from ._policy import may_call, pod_kind

log = logging.getLogger(__name__)


def allowed(scope: str, method: str) -> bool:
    """Whether a pod with api-access `scope` may call `method` at all (fail closed): the
    row of its kind in `_policy.TABLE` (a `subtree` pod never touches the host's trust or
    the machine; Images/Delete is open: the servicer lets it delete only what its subtree
    imported, see `_quota`)."""
    return may_call(pod_kind(scope), method)


class TreeBudget:
    """Calls in flight per key (a tree of pods, a certificate), at most `limit` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, tree: str, context: grpc.ServicerContext) -> None:
        """Count one call of `tree` until it ends, or RESOURCE_EXHAUSTED past the limit."""
        with self._lock:
            held = self._held.get(tree, 0)
            if held >= self.limit:
                full = True
            else:
                full = False
                self._held[tree] = held + 1
        if full:
            log.info("refused a call of %s: %d calls in flight", tree, self.limit)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{tree} holds {self.limit} calls at once already (streams count)",
            )
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                left = self._held.get(tree, 0) - 1
                if left > 0:
                    self._held[tree] = left
                else:
                    self._held.pop(tree, None)

        if not context.add_callback(release):  # the call ended already
            release()


class ScopeInterceptor(grpc.ServerInterceptor):
    """PERMISSION_DENIED for the methods a pod's scope never allows; RESOURCE_EXHAUSTED
    past the calls its tree of pods may hold at once (`budget`)."""

    def __init__(
        self, scope: str, pod: str, tree: str | None = None, budget: TreeBudget | None = None
    ) -> None:
        self.scope = scope
        self.pod = pod
        self.tree = tree or pod
        self.budget = budget

    def check(self, method: str, context: grpc.ServicerContext) -> None:
        if not allowed(self.scope, method):
            log.info("refused %s on the socket of pod %s (scope %s)", method, self.pod, self.scope)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"method {method} is not open to a pod with host/api-access scope {self.scope}",
            )
        if self.budget is not None:
            self.budget.acquire(f"the tree of pod {self.tree}", context)

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _guarded(handler, functools.partial(self.check, handler_call_details.method))


def socket_path(runtime: Runtime, record: PodRecord) -> Path:
    return runtime.pod_dir(record.uuid) / API_DIR / API_SOCKET_NAME


class PodSockets:
    """The pods' servers; `add_servicers(server, view)` puts the bound servicers on one."""

    def __init__(
        self,
        runtime: Runtime,
        executor: ThreadPoolExecutor,
        add_servicers: Callable[[grpc.Server, CallerView], None],
        max_rpcs: int,
    ) -> None:
        self.runtime = runtime
        self.executor = executor
        self.add_servicers = add_servicers
        self.max_rpcs = max_rpcs
        self.budget = TreeBudget(max_rpcs)
        self._lock = threading.Lock()
        self._servers: dict[str, tuple[grpc.Server, Path]] = {}
        self._closing: queue.Queue[str | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._closer, name="kurmad-pod-sockets", daemon=True)
        self._thread.start()
        runtime.add_listener(self._on_event)

    def open_existing(self) -> None:
        """A socket for every api-access pod not yet ended (after a restart: re-adoption)."""
        for record in self.runtime.list_pods():
            if record.state is not PodState.EXITED:
                self.open(record)

    def open(self, record: PodRecord) -> None:
        """Serve the pod's socket, if it has api-access and none is served yet."""
        if record.api_access is None:
            return
        with self._lock:
            if self._closed or record.uuid in self._servers:
                return
            try:
                path = socket_path(self.runtime, record)
            except PodNotFound:
                return  # destroyed meanwhile
            server = grpc.server(
                self.executor,
                interceptors=[
                    ScopeInterceptor(
                        record.api_access,
                        record.uuid,
                        tree=record.ancestors[-1] if record.ancestors else record.uuid,
                        budget=self.budget,
                    )
                ],
                maximum_concurrent_rpcs=self.max_rpcs,
            )
            self.add_servicers(server, pod_view(record.uuid, record.api_access))
            _unlink_socket(path)
            if server.add_insecure_port(f"unix:{path}") == 0:
                log.warning("cannot bind the API socket of pod %s at %s", record.name, path)
                return
            server.start()
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o600)
            self._servers[record.uuid] = (server, path)
        log.info(
            "pod socket serving",
            extra=fields(pod=record.name, uuid=record.uuid, scope=record.api_access),
        )

    def _on_event(self, event: PodEvent) -> None:
        """(runtime lock held) A pod ended or went: close its server, in the closer thread."""
        if event.kind in (PodEventKind.EXITED, PodEventKind.DESTROYED) and event.record.api_access:
            self._closing.put(event.record.uuid)

    def _closer(self) -> None:
        while True:
            uuid = self._closing.get()
            if uuid is None:
                return
            self.close(uuid, grace=0.5)

    def close(self, uuid: str, grace: float = 0.0) -> None:
        with self._lock:
            entry = self._servers.pop(uuid, None)
        if entry is None:
            return
        server, path = entry
        server.stop(grace).wait(grace + 5.0)
        _unlink_socket(path)
        log.info("pod socket closed", extra=fields(uuid=uuid))

    def close_all(self, grace: float) -> None:
        """Stop every pod server (kurmad is shutting down); pods keep their directories."""
        self.runtime.remove_listener(self._on_event)
        with self._lock:
            self._closed = True
            uuids = list(self._servers)
        events = []
        for uuid in uuids:
            with self._lock:
                entry = self._servers.pop(uuid, None)
            if entry is not None:
                events.append((entry[0].stop(grace), entry[1]))
        for done, path in events:
            done.wait(grace + 5.0)
            _unlink_socket(path)
        self._closing.put(None)

    def serving(self) -> list[str]:
        with self._lock:
            return list(self._servers)


def _unlink_socket(path: Path) -> None:
    """Remove a socket file left there (never anything else)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
