"""The Pods service: create, start, stop, destroy, list, get, logs, wait, stats.

Each method resolves the caller's view first (`_caller`): on a `subtree` pod's own socket
only the pod's descendants exist (NOT_FOUND for every other pod, whatever the call), and the
pods it creates become its children, held to what it holds (the runtime's `_confine`)
and counted against the quotas of its subtree and its ancestors' (`_quota`).
Errors become statuses in `_status.rpc`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable

import grpc

from ..aci import NetworksIsolator, PodManifest, parse_pod_manifest
from ..errors import ValidationError
from ..runtime import (
    AppState,
    NotPermitted,
    PodEvent,
    PodEventKind,
    PodNotFound,
    PodRecord,
    PodState,
    Runtime,
)
from ..runtime.cgroups import Version, parse_limit
from ._caller import BindsCaller, CallerView
from ._convert import manifest_from_spec, pod_facts, pod_states, pod_to_proto
from ._exec import serve_exec
from ._logs import stream_logs
from ._policy import TABLE, Action, Policy, kind_of
from ._quota import Quotas
from ._status import ApiError, Code, rpc, status_of
from .v1 import pods_pb2, pods_pb2_grpc

log = logging.getLogger(__name__)

_WAIT_SLICE = 1.0  # Wait re-checks that its caller is still there this often
_CACHE_MAX = 4096


class _PodIndex:
    """Pod names (for unique names) and converted messages (List at scale), kept current by
    a runtime listener: no call has to copy every record to answer for one pod."""

    def __init__(self, runtime: Runtime, image_name: Callable[[str], str]) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._image_name = image_name
        self._names: dict[str, str] = {}  # name -> UUID of every pod
        self._reserved: set[str] = set()  # names of pods being created right now
        self._messages: dict[str, tuple[tuple[object, ...], pods_pb2.Pod]] = {}
        runtime.add_listener(self._on_event)  # first, so nothing falls between the two
        for record in runtime.list_pods():
            self._names.setdefault(record.name, record.uuid)

    def _on_event(self, event: PodEvent) -> None:
        record = event.record
        with self._lock:
            if event.kind == PodEventKind.CREATED:
                self._names[record.name] = record.uuid
            elif event.kind == PodEventKind.DESTROYED:
                if self._names.get(record.name) == record.uuid:
                    del self._names[record.name]
                self._messages.pop(record.uuid, None)

    def reserve(
        self, wanted: str, manifest: PodManifest, kept: Callable[[str], None] | None = None
    ) -> str:
        """A name no other pod has: `wanted` (ALREADY_EXISTS if taken), else the first
        app's name, with -2, -3 ... appended as needed (a pod's name is its hostname).
        `kept(name)` raises for a name the caller may not have (a system service's: see
        `Policy.check_name`); a generated name passes over those."""
        with self._lock:
            taken = self._names.keys() | self._reserved
            if wanted and kept is not None:
                kept(wanted)
            if wanted:
                if wanted in taken:
                    raise ApiError(
                        Code.ALREADY_EXISTS,
                        f"a pod named {wanted!r} exists already; choose another name "
                        f"or destroy that pod first",
                    )
                name = wanted
            else:
                base = manifest.apps[0].name if manifest.apps else "pod"
                name, n = base, 2
                while name in taken or not _may_have(kept, name):
                    name, n = f"{base[:60]}-{n}", n + 1
            self._reserved.add(name)
            return name

    def release(self, name: str) -> None:
        with self._lock:
            self._reserved.discard(name)

    def message(self, record: PodRecord) -> pods_pb2.Pod:
        """The Pod message of a record, converted again only when the record changed."""
        key = _fingerprint(record)
        with self._lock:
            cached = self._messages.get(record.uuid)
        if cached is not None and cached[0] == key:
            return cached[1]
        attached = record.state in (PodState.RUNNING, PodState.STOPPING)
        networks = self._runtime.pod_networks(record.uuid) if attached else ()
        message = pod_to_proto(record, pod_facts(record, self._image_name), networks)
        with self._lock:
            if len(self._messages) >= _CACHE_MAX:
                self._messages.clear()
            self._messages[record.uuid] = (key, message)
        return message


def published_ports(manifest: PodManifest) -> list[int]:
    """Every host port a pod manifest publishes: its networks' ports and its appc ports."""
    ports = [
        p.host_port
        for i in manifest.isolators
        if isinstance(i, NetworksIsolator)
        for n in i.networks
        for p in n.ports
    ]
    return ports + [p.host_port for p in manifest.ports]


def networks_of(manifest: PodManifest) -> list[str]:
    """The names of the CNI networks a pod manifest asks for, in order."""
    return [
        n.name for i in manifest.isolators if isinstance(i, NetworksIsolator) for n in i.networks
    ]


def _fingerprint(r: PodRecord) -> tuple[object, ...]:
    """What may change in a pod's record (the rest is fixed when it is created)."""
    apps = tuple(
        (a.state, a.pid, a.exit_code, a.error, a.started_at, a.finished_at, a.post_stop_code)
        for a in r.apps
    )
    return (r.state, r.started_at, r.finished_at, r.cgroup, len(r.isolators), apps)


class PodsServicer(BindsCaller, pods_pb2_grpc.PodsServicer):
    def __init__(
        self,
        runtime: Runtime,
        on_created: Callable[[PodRecord], None] | None = None,
        quotas: Quotas | None = None,
        policy: Policy | None = None,
        default_network: str | None = None,
        tenant_ports: tuple[int, int] | None = None,
    ) -> None:
        self.runtime = runtime
        self.default_network = default_network  # what `run` pods join without --net
        self.tenant_ports = tenant_ports  # host ports pods below the host may publish
        self.policy = policy or Policy()  # who may create and exec what (_policy.TABLE)
        self.on_created = on_created  # kurmad opens an api-access pod's socket here
        self.quotas = quotas or Quotas(runtime)  # isolators' quotas hold even without defaults
        self._image_names: dict[str, str] = {}
        self._index = _PodIndex(runtime, self._image_name)

    # --- helpers ------------------------------------------------------------------------

    def _visible(self, view: CallerView, ref: str) -> PodRecord:
        """The pod `ref` names, if the caller may see it (else NOT_FOUND, as if absent).
        A scoped caller's UUID prefixes and names are resolved among what it sees only."""
        if view.subtree_of is None:
            return self.runtime.get(ref)
        return _resolve([r for r in self.runtime.list_pods() if view.sees(r)], ref)

    def _proto(self, record: PodRecord) -> pods_pb2.Pod:
        return self._index.message(record)

    def _image_name(self, image_id: str) -> str:
        name = self._image_names.get(image_id)
        if name is None:
            try:
                name = self.runtime.store.get_by_id(image_id).name
            except LookupError:
                return ""
            self._image_names[image_id] = name
        return name

    def _manifest(self, request: pods_pb2.CreatePodRequest, view: CallerView) -> PodManifest:
        source = request.WhichOneof("source")
        if source == "manifest_json":
            if not request.manifest_json:
                raise ValidationError("manifest_json", "is empty: give a pod manifest")
            return parse_pod_manifest(request.manifest_json)
        if source == "spec":
            visible = self.quotas.names_visible(view)
            default = self.default_network
            if default is not None and view.subtree_of is not None:
                default = default if default in self._own_networks(view) else None
            return manifest_from_spec(
                request.spec, functools.partial(self.runtime.store.get, visible=visible), default
            )
        raise ApiError(Code.INVALID_ARGUMENT, "give a pod manifest (manifest_json) or a spec")

    # --- calls --------------------------------------------------------------------------

    # No log lines here: the runtime logs every change of a pod's state once
    # (`pod[NAME](STATE): why`, kurma.runtime._lifecycle).

    def _own_networks(self, view: CallerView) -> set[str]:
        """The networks the calling pod is attached to (by its manifest)."""
        assert view.subtree_of is not None
        record = self.runtime.get(view.subtree_of)
        return set(networks_of(parse_pod_manifest(record.manifest.encode())))

    def _check_networks(self, view: CallerView, manifest: PodManifest) -> None:
        """A pod attaches its children only to networks it is on itself (recursion: it never
        grants more than it holds); below the host, a published port must lie in kurmad's
        `tenant_publish_ports` (portmap takes the host's connections to that port: port 22,
        or kurmad's own API port, would be someone else's). NotPermitted naming either."""
        if not TABLE[kind_of(view)].system_images:  # the host's own callers publish any
            for port in published_ports(manifest):
                lo, hi = self.tenant_ports or (1, 0)
                if not lo <= port <= hi:
                    allowed = f"{lo}-{hi}" if self.tenant_ports else "none"
                    raise NotPermitted(
                        f"host port {port}: below the host, pods publish only ports in "
                        f"kurmad's tenant_publish_ports ({allowed})"
                    )
        wanted = networks_of(manifest)
        if not wanted or view.subtree_of is None:
            return
        own = self._own_networks(view)
        for name in wanted:
            if name not in own:
                held = ", ".join(sorted(own)) or "none"
                raise NotPermitted(
                    f"network {name}: pod {view.subtree_of} attaches its pods only to the "
                    f"networks it is on itself ({held})"
                )

    @rpc
    def Create(self, request: pods_pb2.CreatePodRequest, context: grpc.ServicerContext):
        view = self._caller(context)
        manifest = self.policy.admit(view, self._manifest(request, view))
        self._check_networks(view, manifest)
        name = self._index.reserve(request.name, manifest, self.policy.name_check(view))
        try:
            # A `subtree` pod's pods are its children, held to what it holds; a `host` pod
            # (the console) acts for the machine's operator: its pods are the host's.
            with self.quotas.admitting(view, manifest):
                record = self.runtime.create_pod(
                    manifest,
                    name=name,
                    parent=view.parent,
                    confine_to=self.policy.confine_to(view),
                    check=self.policy.check_create(view),
                    beneath=self.policy.beneath(view, manifest),
                    images_visible=self.quotas.names_visible(view),
                )
        finally:
            self._index.release(name)
        if self.on_created is not None:
            self.on_created(record)
        if request.start:
            try:
                record = self.runtime.start_pod(record.uuid)
            except Exception as e:
                code, message = status_of(e)
                raise ApiError(
                    code,
                    f"pod {record.name} ({record.uuid}) was created but did not start: "
                    f"{message}; start it again or destroy it",
                ) from e
        return self._proto(record)

    @rpc
    def Start(self, request: pods_pb2.PodRef, context: grpc.ServicerContext):
        view = self._caller(context)
        record = self._visible(view, request.pod)
        self.policy.check(view, Action.START, self.runtime.pod_plan(record.uuid))
        record = self.runtime.start_pod(record.uuid)
        return self._proto(record)

    @rpc
    def Stop(self, request: pods_pb2.StopPodRequest, context: grpc.ServicerContext):
        record = self._visible(self._caller(context), request.pod)
        grace = _grace(request.grace_seconds, "grace_seconds")
        record = self.runtime.stop_pod(record.uuid, grace)
        return self._proto(record)

    @rpc
    def Destroy(self, request: pods_pb2.DestroyPodRequest, context: grpc.ServicerContext):
        record = self._visible(self._caller(context), request.pod)
        grace = _grace(request.grace_seconds, "grace_seconds")
        destroyed = self.runtime.destroy_pod(record.uuid, grace)
        return pods_pb2.DestroyPodResponse(destroyed=destroyed)

    @rpc
    def List(self, request: pods_pb2.ListPodsRequest, context: grpc.ServicerContext):
        view = self._caller(context)
        states = pod_states(request.states)
        pods = [
            self._proto(r)
            for r in sorted(self.runtime.list_pods(), key=lambda r: (r.created_at, r.uuid))
            if view.sees(r)
            and (not states or r.state in states)
            and r.name.startswith(request.name_prefix)
        ]
        return pods_pb2.ListPodsResponse(pods=pods)

    @rpc
    def Get(self, request: pods_pb2.PodRef, context: grpc.ServicerContext):
        record = self._visible(self._caller(context), request.pod)
        message = self._proto(record)
        limits = self.quotas.limits(record)
        if limits is None:
            return message
        use = self.quotas.usage(record.uuid)
        shown = pods_pb2.Pod()
        shown.CopyFrom(message)  # the cached message stays without the changing use
        for attr in ("pods", "image_bytes", "log_bytes"):
            limit = getattr(limits, attr)
            getattr(shown.quota, attr).CopyFrom(
                pods_pb2.QuotaUse(
                    limited=limit is not None, limit=limit or 0, used=getattr(use, attr)
                )
            )
        return shown

    @rpc
    def Logs(self, request: pods_pb2.LogsRequest, context: grpc.ServicerContext):
        record = self._visible(self._caller(context), request.pod)
        names = [a.name for a in record.apps]
        if request.app and request.app not in names:
            raise ApiError(
                Code.NOT_FOUND,
                f"pod {record.name} has no app {request.app!r} (its apps: {', '.join(names)})",
            )
        apps = [request.app] if request.app else names
        files = {app: self.runtime.log_file(record.uuid, app) for app in apps}
        uuid = record.uuid

        def state() -> tuple[bool, set[str]]:
            try:
                now = self.runtime.get(uuid)
            except PodNotFound:  # destroyed while we follow: what was read is all there is
                return True, set(apps)
            exited = {a.name for a in now.apps if a.state is AppState.EXITED}
            return now.state is PodState.EXITED, exited

        for app, data in stream_logs(files, request.tail, request.follow, state, context.is_active):
            yield pods_pb2.LogChunk(app=app, data=data)

    @rpc
    def Exec(self, request_iterator, context: grpc.ServicerContext):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("request") != "start":
            raise ApiError(Code.INVALID_ARGUMENT, "exec: the first request must carry `start`")
        view = self._caller(context)
        record = self._visible(view, first.start.pod)
        self.policy.check(view, Action.EXEC, self.runtime.pod_plan(record.uuid))
        yield from serve_exec(self.runtime, record.uuid, first.start, request_iterator, context)

    @rpc
    def Wait(self, request: pods_pb2.WaitPodRequest, context: grpc.ServicerContext):
        record = self._visible(self._caller(context), request.pod)
        timeout = _grace(request.timeout_seconds, "timeout_seconds")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = (
                _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            )
            try:
                return self._proto(self.runtime.wait(record.uuid, max(0.0, left)))
            except TimeoutError:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                now = self.runtime.get(record.uuid)
                raise ApiError(
                    Code.DEADLINE_EXCEEDED,
                    f"pod {now.name} is still {now.state} after {timeout:g} s",
                )
            if not context.is_active():
                raise ApiError(Code.CANCELLED, "the caller went away")

    @rpc
    def Stats(self, request: pods_pb2.PodRef, context: grpc.ServicerContext):
        record = self._visible(self._caller(context), request.pod)
        usage, oom_kills = self.runtime.stats(record.uuid)
        return pods_pb2.PodStats(
            uuid=record.uuid,
            memory_bytes=usage.memory_current or 0,
            memory_limit_bytes=self._memory_limit(record) or 0,
            cpu_usage_ns=usage.cpu_usage_ns or 0,
            pids=usage.pids_current or 0,
            oom_kills=oom_kills,
        )

    def _memory_limit(self, record: PodRecord) -> int | None:
        """The pod cgroup's memory limit, None when it has none or is not running."""
        if record.cgroup is None:
            return None
        cgroups = self.runtime.cgroups
        directory = cgroups.open(record.cgroup).directory("memory")
        if directory is None:
            return None
        name = "memory.max" if cgroups.version("memory") is Version.V2 else "memory.limit_in_bytes"
        try:
            with open(os.path.join(directory, name)) as f:
                return parse_limit(f.read())
        except (FileNotFoundError, ValueError):
            return None


def _resolve(records: list[PodRecord], ref: str) -> PodRecord:
    """`ref` among `records` as the runtime resolves it: UUID, unique prefix, or name."""
    for record in records:
        if record.uuid == ref:
            return record
    matches = [r for r in records if r.uuid.startswith(ref)] if len(ref) >= 4 else []
    if not matches:
        matches = [r for r in records if r.name == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise PodNotFound(f"no pod has the UUID or name {ref!r}")
    raise PodNotFound(f"{ref!r} names {len(matches)} pods; give more of the UUID")


def _may_have(kept: Callable[[str], None] | None, name: str) -> bool:
    if kept is None:
        return True
    try:
        kept(name)
    except NotPermitted:
        return False
    return True


def _grace(seconds: float, field: str) -> float | None:
    """A duration field: 0 means the default (None); negative or absurd values are errors."""
    if seconds < 0 or seconds > 86400 or seconds != seconds:
        raise ValidationError(
            field, f"must be 0 (the default) or seconds up to 86400, got {seconds}"
        )
    return seconds or None
