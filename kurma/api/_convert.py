"""Between the API's messages and Kurma's own types: pods, images, events, and RunSpec.

Pure functions (no gRPC, no disk): the servicers pass in whatever has to be looked up.
`manifest_from_spec` turns a docker-run-like RunSpec into a validated PodManifest; its errors
name the RunSpec field (`spec.apps[0].environment[1].name`), not the manifest it builds.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from ..aci import (
    ApiAccessIsolator,
    App,
    FrozenMap,
    ImageManifest,
    Isolator,
    Mount,
    NamespacesIsolator,
    NetworkAttachmentSpec,
    NetworkPort,
    NetworksIsolator,
    PodManifest,
    RuntimeApp,
    RuntimeImage,
    Volume,
    parse_pod_manifest,
)
from ..errors import ImageNotFound, ValidationError
from ..runtime import AppState, PodEvent, PodEventKind, PodRecord, PodState
from .v1 import host_pb2, images_pb2, pods_pb2

if TYPE_CHECKING:
    from ..services import ServiceSpec

POD_STATES: Mapping[PodState, int] = {
    PodState.CREATED: pods_pb2.POD_STATE_CREATED,
    PodState.RUNNING: pods_pb2.POD_STATE_RUNNING,
    PodState.STOPPING: pods_pb2.POD_STATE_STOPPING,
    PodState.EXITED: pods_pb2.POD_STATE_EXITED,
}
APP_STATES: Mapping[AppState, int] = {
    AppState.CREATED: pods_pb2.APP_STATE_CREATED,
    AppState.RUNNING: pods_pb2.APP_STATE_RUNNING,
    AppState.EXITED: pods_pb2.APP_STATE_EXITED,
}
_FROM_PROTO_STATE = {v: k for k, v in POD_STATES.items()}


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def pod_states(values: Any) -> set[PodState]:
    """The runtime states of a List filter; ValidationError for an unknown number."""
    states = set()
    for i, value in enumerate(values):
        if value not in _FROM_PROTO_STATE:
            raise ValidationError(f"states[{i}]", f"unknown pod state {value}")
        states.add(_FROM_PROTO_STATE[value])
    return states


# --- pods ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodFacts:
    """What never changes about a pod, worked out once from its manifest: per-app image
    names and the api-access scope (List shows them for every pod)."""

    image_names: Mapping[str, str]
    api_access: str


def pod_facts(record: PodRecord, image_name: Callable[[str], str]) -> PodFacts:
    """Read the pod's manifest JSON; `image_name(id)` fills in names the manifest leaves out."""
    doc = json.loads(record.manifest)
    names: dict[str, str] = {}
    scope = ""
    for isolator in doc.get("isolators", ()):
        if isolator.get("name") == ApiAccessIsolator.name:
            scope = (isolator.get("value") or {}).get("scope") or "subtree"
    for app in doc.get("apps", ()):
        image = app.get("image", {})
        names[app.get("name", "")] = image.get("name") or image_name(image.get("id", ""))
    return PodFacts(names, scope)


def network_to_proto(attachment: Any) -> pods_pb2.PodNetwork:
    """A stored CNI attachment (`kurma.network.Attachment`) as the API shows it."""
    result = attachment.result
    ips = list(result.ips) if result is not None else []
    routes = list(result.routes) if result is not None else []
    dns = result.dns if result is not None else None
    return pods_pb2.PodNetwork(
        name=attachment.network,
        interface=attachment.ifname,
        addresses=[str(ip.address) for ip in ips],
        gateways=[str(ip.gateway) for ip in ips if ip.gateway is not None],
        routes=[f"{r.dst} via {r.gw}" if r.gw else str(r.dst) for r in routes],
        nameservers=list(dns.nameservers) if dns is not None else [],
        search=list(dns.search) if dns is not None else [],
        ports=[
            pods_pb2.PortSpec(
                host_port=p.host_port,
                container_port=p.container_port,
                protocol=p.protocol,
                host_ip=p.host_ip,
            )
            for p in attachment.port_mappings
        ],
    )


def pod_to_proto(record: PodRecord, facts: PodFacts, networks: Sequence[Any] = ()) -> pods_pb2.Pod:
    return pods_pb2.Pod(
        uuid=record.uuid,
        name=record.name,
        state=POD_STATES[record.state],  # type: ignore[arg-type]
        apps=[
            pods_pb2.App(
                name=app.name,
                image_id=app.image_id,
                image_name=facts.image_names.get(app.name, ""),
                state=APP_STATES[app.state],  # type: ignore[arg-type]
                pid=app.pid or 0,
                exit_code=app.exit_code,
                error=app.error or "",
                started_at=timestamp(app.started_at),
                finished_at=timestamp(app.finished_at),
                post_stop_exit_code=app.post_stop_code,
            )
            for app in record.apps
        ],
        created_at=timestamp(record.created_at),
        started_at=timestamp(record.started_at),
        finished_at=timestamp(record.finished_at),
        api_access=facts.api_access,
        parents=list(record.ancestors),
        isolators=[
            pods_pb2.IsolatorOutcome(
                scope=str(o.get("scope", "")),
                name=str(o.get("name", "")),
                enforced=bool(o.get("enforced")),
                note=str(o.get("note", "")),
            )
            for o in record.isolators
        ],
        manifest_json=record.manifest,
        cgroup=record.cgroup or "",
        networks=[network_to_proto(a) for a in networks],
    )


# --- images -------------------------------------------------------------------------------


class ImageFacts(Protocol):
    """What conversions need of a stored image (kurma.store.ImageRecord has it)."""

    image_id: str
    name: str
    labels: dict[str, str]

    @property
    def manifest(self) -> ImageManifest: ...


def image_to_proto(record: Any, manifest_json: str = "") -> images_pb2.Image:
    """An ImageRecord as the API shows it (the manifest only when asked: Inspect)."""
    return images_pb2.Image(
        id=record.image_id,
        name=record.name,
        labels=dict(record.labels),
        size=record.size,
        imported_at=timestamp(record.imported_at),
        manifest_json=manifest_json,
        skipped=list(record.skipped),
        kind=record.kind,
        **(_oci_fields(record.oci) if record.oci is not None else {}),
    )


def _oci_fields(oci: Any) -> dict[str, Any]:
    layers = [b for b in oci.blobs[2:]]  # manifest, config, then the layers in order
    return {
        "references": list(oci.references),
        "digest": oci.manifest_digest,
        "config_digest": oci.config_digest,
        "platform": oci.platform,
        "layers": layers,
    }


# --- events -------------------------------------------------------------------------------


def event_to_proto(event: PodEvent) -> host_pb2.Event:
    """A runtime PodEvent as a Host.Events message, with a line a person reads."""
    record = event.record
    message = f"pod {record.name} {event.kind.split('.', 1)[1].replace('_', ' ')}"
    if event.kind == PodEventKind.APP_EXITED and event.app is not None:
        app = record.app(event.app)
        how = f"failed to start: {app.error}" if app.error else f"exited with code {app.exit_code}"
        message = f"app {app.name} of pod {record.name} {how}"
    elif event.kind == PodEventKind.EXITED:
        codes = ", ".join(f"{a.name}={a.exit_code}" for a in record.apps)
        message = f"pod {record.name} exited ({codes})"
    return host_pb2.Event(
        time=timestamp(event.time), kind=event.kind, pod=record.uuid, message=message
    )


def image_event(kind: str, image_id: str, name: str, when: float) -> host_pb2.Event:
    verb = kind.split(".", 1)[1]
    return host_pb2.Event(
        time=timestamp(when), kind=kind, image=image_id, message=f"image {name} {verb}"
    )


# --- RunSpec -> PodManifest ---------------------------------------------------------------


def default_app_name(image_name: str) -> str:
    """The last path element of an image name, made an AC Name (`a.b/my_app` -> `my-app`)."""
    last = image_name.rstrip("/").rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9]+", "-", last).strip("-")
    return name or "app"


def manifest_from_spec(
    spec: Any, resolve: Callable[[str], ImageFacts], default_network: str | None = None
) -> PodManifest:
    """Build and validate the pod a RunSpec describes.

    `resolve(ref)` finds an app's image in the store (ImageNotFound, AmbiguousImage). Each
    app starts from a copy of its image's `app` and takes the overrides; every volume with a
    `path` is mounted there in every app, and one without a path at the mount point of the
    same name in each app whose image declares one (as rkt does). Networks become the
    `os/linux/networks` isolator (`spec_networks`).
    """
    if not spec.apps:
        raise ValidationError("spec.apps", "give at least one app")
    volumes = tuple(_volume(v, f"spec.volumes[{k}]") for k, v in enumerate(spec.volumes))
    mounts = tuple(Mount(v.name, v.path) for v in spec.volumes if v.path)
    by_name = {v.name for v in spec.volumes if not v.path}
    apps: list[RuntimeApp] = []
    taken: set[str] = {a.name for a in spec.apps if a.name}
    for i, app_spec in enumerate(spec.apps):
        app = _runtime_app(app_spec, f"spec.apps[{i}]", resolve, mounts, taken)
        points = app.app.mount_points if app.app is not None else ()
        named = tuple(Mount(p.name, p.path) for p in points if p.name in by_name)
        apps.append(replace(app, mounts=app.mounts + named) if named else app)
    isolators = _isolators(spec.isolators, "spec")
    isolators = spec_networks(spec, isolators, default_network)
    manifest = PodManifest(apps=tuple(apps), volumes=volumes, isolators=isolators)
    try:
        return parse_pod_manifest(manifest.to_bytes())  # every cross-check of a manifest
    except ValidationError as e:
        raise ValidationError(_spec_path(e.path), e.message) from e


def spec_networks(
    spec: Any, isolators: tuple[Isolator, ...], default_network: str | None
) -> tuple[Isolator, ...]:
    """A RunSpec's `networks` and `ports` as isolators: names -> `os/linux/networks` (the
    ports on the first), `host` -> the host's net namespace, `none` -> loopback only;
    none given -> `default_network` (when the pod does not share the host's network)."""
    names = list(spec.networks)
    host_net = any(isinstance(i, NamespacesIsolator) and "net" in i.host for i in isolators)
    given = any(isinstance(i, NetworksIsolator) for i in isolators)
    if "host" in names:
        if len(names) > 1:
            raise ValidationError("spec.networks", "host shares the host's network: no other")
        if spec.ports:
            raise ValidationError("spec.ports", "a pod on the host's network publishes none")
        if given:
            raise ValidationError("spec.networks", "host, and an os/linux/networks isolator")
        others = tuple(i for i in isolators if not isinstance(i, NamespacesIsolator))
        shared = next((i for i in isolators if isinstance(i, NamespacesIsolator)), None)
        hosted = tuple(sorted({*(shared.host if shared else ()), "net"}))
        return (*others, NamespacesIsolator(hosted))
    if "none" in names:
        if len(names) > 1:
            raise ValidationError("spec.networks", "none is loopback only: no other network")
        names = []
    elif not names and not given and not host_net and default_network:
        names = [default_network]
    if given and (names or spec.ports):
        raise ValidationError("spec.networks", "networks, and an os/linux/networks isolator")
    if given:
        return isolators
    if spec.ports and not names:
        raise ValidationError("spec.ports", "published ports need a network (give --net NAME)")
    ports = tuple(
        NetworkPort(p.host_port, p.container_port, p.protocol or "tcp", p.host_ip)
        for p in spec.ports
    )
    for i, port in enumerate(ports):
        if not (0 < port.host_port < 65536 and 0 < port.container_port < 65536):
            raise ValidationError(f"spec.ports[{i}]", "ports are numbers in 1..65535")
    if not names and not spec.networks:
        return isolators  # no network asked and no default: loopback only, as before
    networks = tuple(
        NetworkAttachmentSpec(name, ports if k == 0 else ()) for k, name in enumerate(names)
    )
    doc = NetworksIsolator(networks).to_json()
    return (*isolators, *_isolators_of([doc], "spec.networks"))


def _isolators_of(docs: list[dict[str, Any]], path: str) -> tuple[Isolator, ...]:
    return App.parse({"user": "0", "group": "0", "isolators": docs}, path).isolators


def _runtime_app(
    spec: Any,
    path: str,
    resolve: Callable[[str], ImageFacts],
    mounts: tuple[Mount, ...],
    taken: set[str],
) -> RuntimeApp:
    if not spec.image:
        raise ValidationError(f"{path}.image", "give an image name[:version] or an image ID")
    try:
        image = resolve(spec.image)
    except ValidationError as e:
        raise ValidationError(f"{path}.image", e.message) from e
    except ImageNotFound as e:
        raise ImageNotFound(f"{path}.image: {e}") from e
    name = spec.name
    if not name:
        name = _unique(default_app_name(image.name), taken)
    return RuntimeApp(
        name=name,
        image=RuntimeImage(image.image_id, image.name, FrozenMap(dict(image.labels))),
        app=_app(spec, path, image),
        read_only_root_fs=spec.read_only_root_fs,
        mounts=mounts,
    )


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _app(spec: Any, path: str, image: ImageFacts) -> App:
    """The image's app with the spec's overrides (checked where the spec has them)."""
    base = image.manifest.app
    if base is None and not spec.exec:
        raise ValidationError(
            f"{path}.exec", f"image {image.name} has no app to run: give the command (exec)"
        )
    overrides: dict[str, Any] = {
        "user": spec.user or "0",
        "group": spec.group or "0",
        "exec": list(spec.exec),
        "environment": [{"name": kv.key, "value": kv.value} for kv in spec.environment],
        "isolators": [
            _isolator_json(iso, f"{path}.isolators[{j}]") for j, iso in enumerate(spec.isolators)
        ],
    }
    if spec.working_directory:
        overrides["workingDirectory"] = spec.working_directory
    checked = App.parse(overrides, path)  # errors name spec.apps[i].<field>
    app = base or App(user="0", group="0")
    changes: dict[str, Any] = {}
    if spec.user:
        changes["user"] = checked.user
    if spec.group:
        changes["group"] = checked.group
    if spec.exec:
        changes["exec"] = checked.exec
    if spec.working_directory:
        changes["working_directory"] = checked.working_directory
    if spec.environment:
        changes["environment"] = FrozenMap({**app.environment, **checked.environment})
    if spec.isolators:
        replaced = {i.name for i in checked.isolators}
        kept = tuple(i for i in app.isolators if i.name not in replaced)
        changes["isolators"] = kept + checked.isolators
    return replace(app, **changes)


def _isolator_json(isolator: Any, path: str) -> dict[str, Any]:
    try:
        value = json.loads(isolator.value_json) if isolator.value_json else None
    except ValueError as e:
        raise ValidationError(f"{path}.value_json", f"is not valid JSON: {e}") from None
    return {"name": isolator.name, "value": value}


def _isolators(items: Any, path: str) -> tuple[Isolator, ...]:
    """Pod isolators, checked like an app's list (multiplicity, conflicts) at spec paths."""
    docs = [_isolator_json(iso, f"{path}.isolators[{j}]") for j, iso in enumerate(items)]
    return _isolators_of(docs, path)


def _volume(spec: Any, path: str) -> Volume:
    doc: dict[str, Any] = {"name": spec.name, "kind": spec.kind}
    if spec.source:
        doc["source"] = spec.source
    if spec.read_only:
        doc["readOnly"] = True
    if spec.kind == "host" and not spec.source:
        raise ValidationError(f"{path}.source", "a host volume needs the host path (source)")
    if spec.path and not spec.path.startswith("/"):
        raise ValidationError(f"{path}.path", f"must be an absolute path, got {spec.path!r}")
    return Volume.parse(doc, path)


_MANIFEST_APP = re.compile(r"^apps\[(\d+)\]\.app\.")


def _spec_path(path: str) -> str:
    """A path in the built manifest as the RunSpec field it came from, near enough."""
    path = _MANIFEST_APP.sub(r"spec.apps[\1].", path)
    return path if path.startswith("spec") else f"spec.{path}" if path else "spec"


# Which images pods and operators imported (`_quota.Quotas` keeps it):
# <state_dir>/quota/imports.json.
TENANT_IMPORTS = ("quota", "imports.json")


def tenant_imports(state_dir: str | os.PathLike[str]) -> set[str]:
    """The IDs of the images a pod's subtree or an operator imported (none recorded: none)."""
    try:
        doc = json.loads(Path(state_dir, *TENANT_IMPORTS).read_bytes())
        return set(doc.get("images", {}))
    except (FileNotFoundError, ValueError, AttributeError):
        return set()


def service_manifest_builder(
    store: Any, state_dir: str | os.PathLike[str] | None = None
) -> Callable[[ServiceSpec], PodManifest]:
    """How a service becomes a pod: the same RunSpec path as Pods.Create from images, so a
    service's image, overrides and isolators are checked exactly like a user's pod. Here, not
    in `_host`, because it needs no gRPC: kurmad starts its services before it imports that.

    With `state_dir`, a service's image name resolves among the images no pod (and no
    operator) imported: a tenant's `example.com/monitor` version 99, imported before the
    admin made a service of that name, must not become the service (the import check knows
    only services so far)."""

    def build(spec: ServiceSpec) -> PodManifest:
        run = pods_pb2.RunSpec(
            apps=[
                pods_pb2.AppSpec(
                    image=spec.image,
                    exec=list(spec.exec or ()),
                    environment=[
                        pods_pb2.KeyValue(key=k, value=v) for k, v in spec.environment.items()
                    ],
                )
            ],
            volumes=[
                pods_pb2.VolumeSpec(
                    name=name,
                    kind="host",
                    source=v.source,
                    read_only=v.read_only,
                    path=v.path or "",
                )
                for name, v in spec.volumes.items()
            ],
            isolators=[
                pods_pb2.Isolator(name=name, value_json=json.dumps(value))
                for name, value in spec.isolators.items()
            ],
        )
        resolve = store.get
        if state_dir is not None:
            tenants = tenant_imports(state_dir)
            resolve = functools.partial(store.get, visible=lambda i: i not in tenants)
        try:
            return manifest_from_spec(run, resolve)
        except ValidationError as e:
            raise ValidationError(f"services.{spec.name}", str(e)) from e

    return build
