"""The PodManifest (pods.md, Pod Manifest Schema): apps, volumes, pod isolators and ports.

Cross-references are checked here because only the whole pod sees them: app names are unique,
a mount names a pod volume unless it brings its own `appVolume`, and port names are unique
among the apps of the pod (pods.md: "port names MUST be unique among apps within a pod").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from ..errors import ValidationError
from ._isolators import Isolator, parse_isolators
from ._manifest_image import check_header, check_image_id
from ._manifest_json import (
    JSON,
    FrozenMap,
    Node,
    canonical_bytes,
    decode_document,
)
from ._manifest_types import (
    MAX_ID,
    App,
    Port,
    check_absolute,
    check_identifier,
    check_name,
    pairs_json,
    parse_annotations,
    parse_labels,
    required_text,
    unique_named,
)
from ._names import SPEC_VERSION, is_ipv4

_MODE = re.compile(r"0?[0-7]{1,4}")


class VolumeKind(StrEnum):
    """Where a volume's content comes from."""

    HOST = "host"
    EMPTY = "empty"


@dataclass(frozen=True)
class Volume:
    """A pod volume. Fields the spec says are "only interpreted" for the other kind are dropped."""

    name: str
    kind: VolumeKind
    source: str | None = None
    read_only: bool | None = None
    recursive: bool | None = None
    mode: str | None = None
    uid: int | None = None
    gid: int | None = None

    @classmethod
    def parse(cls, value: JSON, path: str) -> Volume:
        node = Node.of(value, path)
        name = check_name(required_text(node, "name"), node.at("name"))
        kind = required_text(node, "kind")
        read_only = node.flag("readOnly")
        if kind == VolumeKind.HOST:
            try:
                source = check_absolute(required_text(node, "source"), node.at("source"))
            except ValidationError as e:
                raise ValidationError(e.path, f"volume {name!r}: {e.message}") from None
            return cls(name, VolumeKind.HOST, source, read_only, node.flag("recursive"))
        if kind != VolumeKind.EMPTY:
            raise ValidationError(node.at("kind"), f"must be 'host' or 'empty', got {kind!r}")
        mode = node.text("mode")
        if mode is not None and _MODE.fullmatch(mode) is None:
            raise ValidationError(
                node.at("mode"), f"must be an octal mode like '0755', got {mode!r}"
            )
        return cls(
            name,
            VolumeKind.EMPTY,
            read_only=read_only,
            mode=mode,
            uid=node.integer("uid", 0, MAX_ID),
            gid=node.integer("gid", 0, MAX_ID),
        )

    @property
    def mode_bits(self) -> int:
        """The permission bits of an empty volume (default 0755)."""
        return int(self.mode or "0755", 8)

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"name": self.name, "kind": self.kind.value}
        for key, value in (
            ("source", self.source),
            ("readOnly", self.read_only),
            ("recursive", self.recursive),
            ("mode", self.mode),
            ("uid", self.uid),
            ("gid", self.gid),
        ):
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class Mount:
    """A volume (by name, or an inline `appVolume`) mounted at a path of one app."""

    volume: str
    path: str
    app_volume: Volume | None = None

    @classmethod
    def parse(cls, value: JSON, path: str) -> Mount:
        node = Node.of(value, path)
        app_volume = node.raw("appVolume")
        return cls(
            volume=check_name(required_text(node, "volume"), node.at("volume")),
            path=check_absolute(required_text(node, "path"), node.at("path")),
            app_volume=None
            if app_volume is None
            else Volume.parse(app_volume, node.at("appVolume")),
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"volume": self.volume, "path": self.path}
        if self.app_volume is not None:
            out["appVolume"] = self.app_volume.to_json()
        return out


@dataclass(frozen=True)
class RuntimeImage:
    """The image an app runs: its ID (required in a pod), and optionally name and labels."""

    id: str
    name: str | None = None
    labels: FrozenMap = field(default_factory=FrozenMap)

    @classmethod
    def parse(cls, value: JSON, path: str) -> RuntimeImage:
        node = Node.of(value, path)
        name = node.text("name")
        return cls(
            id=check_image_id(required_text(node, "id"), node.at("id")),
            name=None if name is None else check_identifier(name, node.at("name")),
            labels=parse_labels(node),
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"id": self.id}
        if self.name is not None:
            out["name"] = self.name
        if self.labels:
            out["labels"] = pairs_json(self.labels)
        return out


@dataclass(frozen=True)
class RuntimeApp:
    """One app of the pod: a name, its image, an optional `app` override, mounts."""

    name: str
    image: RuntimeImage
    app: App | None = None
    read_only_root_fs: bool = False
    mounts: tuple[Mount, ...] = ()
    annotations: FrozenMap = field(default_factory=FrozenMap)

    @classmethod
    def parse(cls, value: JSON, path: str) -> RuntimeApp:
        node = Node.of(value, path)
        app = node.raw("app")
        return cls(
            name=check_name(required_text(node, "name"), node.at("name")),
            image=RuntimeImage.parse(node.raw("image", required=True), node.at("image")),
            app=None if app is None else App.parse(app, node.at("app")),
            read_only_root_fs=bool(node.flag("readOnlyRootFS")),
            mounts=tuple(Mount.parse(v, p) for p, v in node.array("mounts")),
            # pods.md: app annotation names are "restricted to the AC Name formatting".
            annotations=parse_annotations(node, names="name"),
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"name": self.name, "image": self.image.to_json()}
        if self.app is not None:
            out["app"] = self.app.to_json()
        if self.read_only_root_fs:
            out["readOnlyRootFS"] = True
        if self.mounts:
            out["mounts"] = [m.to_json() for m in self.mounts]
        if self.annotations:
            out["annotations"] = pairs_json(self.annotations)
        return out


@dataclass(frozen=True)
class ExposedPort:
    """A port forwarded from the host: an app port by name, or the given `pod_port`."""

    name: str
    host_port: int
    host_ip: str | None = None
    pod_port: Port | None = None

    @classmethod
    def parse(cls, value: JSON, path: str) -> ExposedPort:
        node = Node.of(value, path)
        host_ip = node.text("hostIP")
        if host_ip is not None and not is_ipv4(host_ip):
            raise ValidationError(
                node.at("hostIP"), f"must be an IPv4 address in dotted-quad form, got {host_ip!r}"
            )
        pod_port = node.raw("podPort")
        host_port = node.integer("hostPort", 1, 65535, required=True)
        assert host_port is not None
        return cls(
            name=check_name(required_text(node, "name"), node.at("name")),
            host_port=host_port,
            host_ip=host_ip,
            pod_port=None if pod_port is None else Port.parse(pod_port, node.at("podPort")),
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"name": self.name, "hostPort": self.host_port}
        if self.host_ip is not None:
            out["hostIP"] = self.host_ip
        if self.pod_port is not None:
            out["podPort"] = self.pod_port.to_json()
        return out


def _check_references(apps_at: list[tuple[str, RuntimeApp]], volumes: tuple[Volume, ...]) -> None:
    """Mounts name existing volumes; app port names are unique across the pod."""
    volume_names = {v.name for v in volumes}
    port_owner: dict[str, str] = {}
    for path, app in apps_at:
        for i, mount in enumerate(app.mounts):
            if mount.app_volume is None and mount.volume not in volume_names:
                raise ValidationError(
                    f"{path}.mounts[{i}].volume", f"no pod volume is named {mount.volume!r}"
                )
        for i, port in enumerate(app.app.ports if app.app else ()):
            owner = port_owner.setdefault(port.name, app.name)
            if owner != app.name:
                raise ValidationError(
                    f"{path}.app.ports[{i}].name",
                    f"port name {port.name!r} is already used by app {owner!r}",
                )


@dataclass(frozen=True)
class PodManifest:
    """A pod: its apps, volumes, pod-wide isolators, annotations and exposed ports."""

    apps: tuple[RuntimeApp, ...] = ()
    volumes: tuple[Volume, ...] = ()
    isolators: tuple[Isolator, ...] = ()
    annotations: FrozenMap = field(default_factory=FrozenMap)
    ports: tuple[ExposedPort, ...] = ()
    user_annotations: FrozenMap = field(default_factory=FrozenMap)
    user_labels: FrozenMap = field(default_factory=FrozenMap)
    ac_version: str = ".".join(map(str, SPEC_VERSION))

    ac_kind: ClassVar[str] = "PodManifest"

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, JSON]) -> PodManifest:
        """Parse and validate a pod manifest; raises ValidationError naming the bad field."""
        node = Node(decode_document(data), "")
        version = check_header(node, cls.ac_kind)
        app_items = node.array("apps", required=True)
        apps = unique_named(app_items, RuntimeApp.parse, "app name")
        volumes = unique_named(node.array("volumes"), Volume.parse, "volume name")
        _check_references([(p, a) for (p, _), a in zip(app_items, apps, strict=True)], volumes)
        return cls(
            apps=apps,
            volumes=volumes,
            isolators=parse_isolators(node.array("isolators")),
            # pods.md: pod annotation names are "restricted to the AC Name formatting".
            annotations=parse_annotations(node, names="name"),
            ports=unique_named(node.array("ports"), ExposedPort.parse, "port name"),
            user_annotations=FrozenMap(node.string_map("userAnnotations")),
            user_labels=FrozenMap(node.string_map("userLabels")),
            ac_version=version,
        )

    def app(self, name: str) -> RuntimeApp | None:
        """The app called `name`, if any."""
        return next((a for a in self.apps if a.name == name), None)

    def to_json(self) -> dict[str, JSON]:
        """The manifest as a JSON object."""
        out: dict[str, JSON] = {
            "acKind": self.ac_kind,
            "acVersion": self.ac_version,
            "apps": [a.to_json() for a in self.apps],
        }
        for key, items in (
            ("volumes", self.volumes),
            ("isolators", self.isolators),
            ("ports", self.ports),
        ):
            if items:
                out[key] = [item.to_json() for item in items]
        # Always present: the metadata service serves the recorded manifest's own value at
        # /pod/annotations, and a pod with none must read `[]` there, not `null`.
        out["annotations"] = pairs_json(self.annotations)
        if self.user_annotations:
            out["userAnnotations"] = dict(self.user_annotations)
        if self.user_labels:
            out["userLabels"] = dict(self.user_labels)
        return out

    def to_bytes(self) -> bytes:
        """The manifest as canonical JSON bytes."""
        return canonical_bytes(self.to_json())


def parse_pod_manifest(data: bytes | str | Mapping[str, JSON]) -> PodManifest:
    """Parse and validate a PodManifest."""
    return PodManifest.from_json(data)
