"""System services as data: one model from the boot config to kurmad's supervisor.

`ServiceSpec` is the one description of a service: the boot config's `services.<name>`
builds it (kurma/init/config/_model.py describes its keys for the boot config), PID 1 makes
its built-in services (console, dhcp, ntp, syslog) as more of them, hands them all to kurmad
in the services file, and kurmad's supervisor runs them.

The file is JSON, which is YAML too (`ready`: conditions PID 1 already met; `services`:
name -> spec). It is the whole interface between kurma-init and kurmad:
`write_services_file` writes it atomically (kurma.atomic), `load_services_file` reads it
back (JSON-first: kurma.documents). A bad service is reported as a problem naming its key
and left out; the others stand.

No gRPC, no runtime, no boot config here: PID 1 and kurmad import this module.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..atomic import write_atomic
from ..backoff import Backoff

# Conditions services may wait for that PID 1 (or a service's `provides`) satisfies.
KNOWN_CONDITIONS = frozenset({"network", "clock"})
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # an AC Name: it becomes the pod's name


class ServiceSpecError(ValueError):
    """A services file, or one service in it, is malformed; the message names the key."""


class RestartPolicy(enum.Enum):
    """When a service's pod is started again after it ends."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"  # only after a non-zero exit, a signal, or a failed start
    NEVER = "never"


@dataclass(frozen=True)
class HealthCheck:
    """A command run inside the pod every `interval` s; `retries` failures in a row fail it.

    A pod whose first check has not passed within `start_timeout` s of its start failed to
    start: it is stopped and its restart policy applies (it never stays STARTING forever).
    """

    command: tuple[str, ...] = ()
    interval: float = 10.0
    timeout: float = 5.0
    retries: int = 3
    start_timeout: float = 60.0


@dataclass(frozen=True)
class VolumeSpec:
    """A host directory for one of the image's mount points (by its name)."""

    source: str = ""
    read_only: bool = False
    path: str | None = None  # mount it here in the app instead of at the image's mount point


@dataclass(frozen=True)
class ServiceSpec:
    """One system service: a pod of one app from `image`, started when `depends_on` hold.

    Every field has its default, so a simple service is `ServiceSpec("web", "example/web")`.
    """

    name: str = ""  # the pod's name; the boot config's and the file's key
    image: str = ""
    exec: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    isolators: Mapping[str, Any] = field(default_factory=dict)  # name -> appc value
    volumes: Mapping[str, VolumeSpec] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    restart: RestartPolicy = RestartPolicy.ALWAYS
    backoff: Backoff = field(default_factory=Backoff)
    health: HealthCheck | None = None
    enabled: bool = True

    def fingerprint(self) -> str:
        """A short digest of everything that shapes the pod: a changed one is restarted."""
        doc = to_document(self)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ServicesFile:
    """The whole file: conditions already met, and the services by name."""

    services: Mapping[str, ServiceSpec] = field(default_factory=dict)
    ready: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # what was wrong and left out while loading


# --- parsing -------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ServiceSpecError(f"{where}: must be a mapping with string keys")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ServiceSpecError(f"{where}: must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _number(value: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ServiceSpecError(f"{where}: must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ServiceSpecError(f"{where}: must be greater than 0, got {value!r}")
    return float(value)


def _only(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ServiceSpecError(
            f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})"
        )


def _backoff(value: Any, where: str) -> Backoff:
    doc = _mapping(value, where)
    _only(doc, {"initial", "maximum", "factor"}, where)
    b = Backoff(**{k: _number(v, f"{where}.{k}") for k, v in doc.items()})
    if b.factor < 1:
        raise ServiceSpecError(f"{where}.factor: must be at least 1, got {b.factor:g}")
    if b.maximum < b.initial:
        raise ServiceSpecError(f"{where}.maximum: must be at least initial ({b.initial:g})")
    return b


def _health(value: Any, where: str) -> HealthCheck | None:
    if value is None:
        return None
    doc = _mapping(value, where)
    _only(doc, {"command", "interval", "timeout", "retries", "start_timeout"}, where)
    command = _strings(doc.get("command"), f"{where}.command")
    if not command:
        raise ServiceSpecError(f"{where}.command: give the command to run (an argv list)")
    retries = doc.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise ServiceSpecError(f"{where}.retries: must be an integer >= 1, got {retries!r}")
    return HealthCheck(
        command=command,
        interval=_number(doc.get("interval", 10.0), f"{where}.interval"),
        timeout=_number(doc.get("timeout", 5.0), f"{where}.timeout"),
        retries=retries,
        start_timeout=_number(doc.get("start_timeout", 60.0), f"{where}.start_timeout"),
    )


def _volumes(value: Any, where: str) -> dict[str, VolumeSpec]:
    volumes = {}
    for name, raw in _mapping(value, where).items():
        at = f"{where}.{name}"
        doc = _mapping(raw, at)
        _only(doc, {"source", "readOnly", "path"}, at)
        source = doc.get("source")
        if not isinstance(source, str) or not source.startswith("/"):
            raise ServiceSpecError(f"{at}.source: must be an absolute host path, got {source!r}")
        read_only = doc.get("readOnly", False)
        if not isinstance(read_only, bool):
            raise ServiceSpecError(f"{at}.readOnly: must be true or false, got {read_only!r}")
        path = doc.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ServiceSpecError(f"{at}.path: must be an absolute path, got {path!r}")
        volumes[name] = VolumeSpec(source, read_only, path)
    return volumes


_SERVICE_KEYS = {
    "image", "exec", "environment", "isolators", "volumes", "depends_on", "provides",
    "restart", "backoff", "health", "enabled",
}  # fmt: skip


def parse_service(name: Any, raw: Any, where: str = "services") -> ServiceSpec:
    """One service's spec; ServiceSpecError naming the key (`services.ntp.restart: ...`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ServiceSpecError(
            f"{where}.{name}: a service name must be lower-case letters, digits and '-' "
            f"(it names the pod)"
        )
    at = f"{where}.{name}"
    doc = _mapping(raw, at)
    _only(doc, _SERVICE_KEYS, at)
    image = doc.get("image")
    if not isinstance(image, str) or not image:
        raise ServiceSpecError(f"{at}.image: give an image name[:version] or an image ID")
    exec_ = doc.get("exec")
    argv = None if exec_ is None else _strings(exec_, f"{at}.exec")
    if argv is not None and not argv:
        raise ServiceSpecError(f"{at}.exec: an empty command; leave it out for the image's")
    env = _mapping(doc.get("environment"), f"{at}.environment")
    for key, value in env.items():
        if not isinstance(value, str):
            raise ServiceSpecError(f"{at}.environment.{key}: must be a string, got {value!r}")
    try:
        restart = RestartPolicy(doc.get("restart", "always"))
    except ValueError:
        raise ServiceSpecError(
            f"{at}.restart: must be always, on-failure or never, got {doc.get('restart')!r}"
        ) from None
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ServiceSpecError(f"{at}.enabled: must be true or false, got {enabled!r}")
    depends_on = _strings(doc.get("depends_on"), f"{at}.depends_on")
    if name in depends_on:
        raise ServiceSpecError(f"{at}.depends_on: a service cannot depend on itself")
    return ServiceSpec(
        name=name,
        image=image,
        exec=argv,
        environment=dict(env),
        isolators=dict(_mapping(doc.get("isolators"), f"{at}.isolators")),
        volumes=_volumes(doc.get("volumes"), f"{at}.volumes"),
        depends_on=depends_on,
        provides=_strings(doc.get("provides"), f"{at}.provides"),
        restart=restart,
        backoff=_backoff(doc.get("backoff"), f"{at}.backoff"),
        health=_health(doc.get("health"), f"{at}.health"),
        enabled=enabled,
    )


def parse_services(doc: Any, source: str = "services file") -> ServicesFile:
    """The file's document; a bad service becomes a problem and is left out. The whole
    file is refused (ServiceSpecError) only when its shape is wrong."""
    if doc is None:
        return ServicesFile()
    if not isinstance(doc, dict):
        raise ServiceSpecError(f"{source}: must be a mapping with `services` (and `ready`)")
    unknown = sorted(set(doc) - {"services", "ready"})
    if unknown:
        raise ServiceSpecError(f"{source}: {unknown[0]}: unknown key (known: ready, services)")
    ready = _strings(doc.get("ready"), f"{source}: ready")
    services: dict[str, ServiceSpec] = {}
    problems: list[str] = []
    for name, raw in _mapping(doc.get("services"), f"{source}: services").items():
        try:
            services[name] = parse_service(name, raw)
        except ServiceSpecError as e:
            problems.append(str(e))
    return ServicesFile(services, ready, tuple(problems))


def load_services_file(path: str | os.PathLike[str]) -> ServicesFile:
    """Read and parse the services file; ServiceSpecError when it is unreadable or not YAML."""
    from ..documents import DocumentError, load_document

    try:
        with open(path, encoding="utf-8") as f:
            doc = load_document(f.read())
    except OSError as e:
        raise ServiceSpecError(f"{path}: cannot read: {e.strerror}") from None
    except (DocumentError, UnicodeDecodeError) as e:
        raise ServiceSpecError(f"{path}: not valid YAML: {e}") from None
    return parse_services(doc, str(path))


# --- writing -------------------------------------------------------------------------------


def to_document(spec: ServiceSpec) -> dict[str, Any]:
    """A spec as the file holds it (the inverse of `parse_service`, without the name)."""
    doc: dict[str, Any] = {
        "image": spec.image,
        "exec": list(spec.exec) if spec.exec is not None else None,
        "environment": dict(spec.environment),
        "isolators": dict(spec.isolators),
        "volumes": {
            name: {"source": v.source, "readOnly": v.read_only}
            | ({"path": v.path} if v.path else {})
            for name, v in spec.volumes.items()
        },
        "depends_on": list(spec.depends_on),
        "provides": list(spec.provides),
        "restart": spec.restart.value,
        "backoff": {
            "initial": spec.backoff.initial,
            "maximum": spec.backoff.maximum,
            "factor": spec.backoff.factor,
        },
        "health": None,
        "enabled": spec.enabled,
    }
    if spec.health is not None:
        doc["health"] = asdict(spec.health) | {"command": list(spec.health.command)}
    return doc


def dump_services(services: ServicesFile) -> str:
    """The text of a services file: JSON (which is YAML), so that kurmad reads it without
    importing PyYAML (kurma.documents) and `parse_services` gives `services` back."""
    from ..documents import dump_json_document

    doc = {
        "ready": list(services.ready),
        "services": {name: to_document(s) for name, s in services.services.items()},
    }
    return dump_json_document(doc).decode()


def write_services_file(path: str | os.PathLike[str], services: ServicesFile) -> None:
    """Write the file atomically: kurmad never reads half of it."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    write_atomic(path, dump_services(services), 0o644)
