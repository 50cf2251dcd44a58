"""Types both manifests share: labels, annotations, the `app` object and its parts (aci.md).

Rules come from the spec text; where the reference implementation (actool) is looser, the
text wins, e.g. label and environment objects "must have two key-value pairs", a port's
`protocol` is required and its `count` "Must be >=1", and names that other objects refer to
(mount points, ports, event handlers) are unique within their list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ..errors import ValidationError
from ._isolators import Isolator, parse_isolators
from ._manifest_json import JSON, FrozenMap, Node, check_int, check_unique, join
from ._names import (
    AC_IDENTIFIER_RULE,
    AC_NAME_RULE,
    VALID_OS_ARCH,
    is_ac_identifier,
    is_ac_name,
    is_env_name,
    is_http_url,
    is_rfc3339,
)

EVENT_HANDLERS = ("pre-start", "post-stop")
MAX_ID = 2**32 - 1
"""The largest uid/gid (uid_t and gid_t are 32 bits)."""


def check_identifier(value: str, path: str) -> str:
    """`value`, which must be an AC Identifier."""
    if not is_ac_identifier(value):
        raise ValidationError(
            path, f"must be an AC Identifier ({AC_IDENTIFIER_RULE}), got {value!r}"
        )
    return value


def check_name(value: str, path: str) -> str:
    """`value`, which must be an AC Name."""
    if not is_ac_name(value):
        raise ValidationError(path, f"must be an AC Name ({AC_NAME_RULE}), got {value!r}")
    return value


_PATH_MAX = 4096  # Linux, with the terminating NUL
_NAME_MAX = 255


def check_absolute(value: str, path: str) -> str:
    """`value`, which must be an absolute path the kernel can take: no NUL byte, valid
    UTF-8 (no lone surrogates), shorter than PATH_MAX, each component at most NAME_MAX."""
    if not value.startswith("/"):
        raise ValidationError(path, f"must be an absolute path, got {value!r}")
    if "\0" in value:
        raise ValidationError(path, f"must not contain a NUL byte, got {value!r}")
    try:
        data = value.encode()
    except UnicodeEncodeError:
        raise ValidationError(path, f"must be valid UTF-8, got {value!r}") from None
    if len(data) >= _PATH_MAX or any(len(part) > _NAME_MAX for part in data.split(b"/")):
        raise ValidationError(path, f"is too long for a path ({len(data)} bytes)")
    return value


def required_text(node: Node, key: str) -> str:
    """Member `key`: a string that must be present."""
    value = node.text(key, required=True)
    assert value is not None
    return value


def _name_value_pairs(node: Node, key: str, name_check: str) -> list[tuple[str, str, str]]:
    """A list of {name, value} objects: (path, name, value), names checked and unique."""
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for path, item in node.array(key):
        pair = Node.of(item, path)
        name, value = required_text(pair, "name"), required_text(pair, "value")
        if name_check == "identifier":
            check_identifier(name, pair.at("name"))
        elif name_check == "name":
            check_name(name, pair.at("name"))
        elif not is_env_name(name):
            raise ValidationError(
                pair.at("name"),
                f"must be letters, digits, '_', '.' or '-', not starting "
                f"with a digit, got {name!r}",
            )
        check_unique(pair.at("name"), "name", name, seen)
        out.append((path, name, value))
    return out


def parse_labels(node: Node, key: str = "labels") -> FrozenMap:
    """Labels: unique AC Identifier names other than "name", a known os/arch pair."""
    pairs = _name_value_pairs(node, key, "identifier")
    where = {name: path for path, name, _ in pairs}
    labels = FrozenMap(tuple((name, value) for _, name, value in pairs))
    if "name" in labels:
        raise ValidationError(join(where["name"], "name"), "a label cannot be called 'name'")
    os_name = labels.get("os")
    if os_name is not None:
        if os_name not in VALID_OS_ARCH:
            raise ValidationError(
                join(where["os"], "value"),
                f"unknown os {os_name!r} (one of {sorted(VALID_OS_ARCH)})",
            )
        arch = labels.get("arch")
        if arch is not None and arch not in VALID_OS_ARCH[os_name]:
            raise ValidationError(
                join(where["arch"], "value"),
                f"unknown arch {arch!r} for os {os_name} (one of {list(VALID_OS_ARCH[os_name])})",
            )
    return labels


def parse_annotations(node: Node, key: str = "annotations", names: str = "identifier") -> FrozenMap:
    """Annotations: unique names (AC Identifier or AC Name per `names`), known ones checked."""
    pairs = _name_value_pairs(node, key, names)
    for path, name, value in pairs:
        if name == "created" and not is_rfc3339(value):
            raise ValidationError(
                join(path, "value"), f"must be an RFC 3339 date-time, got {value!r}"
            )
        if name in ("homepage", "documentation") and not is_http_url(value):
            raise ValidationError(
                join(path, "value"), f"must be an absolute http or https URL, got {value!r}"
            )
    return FrozenMap(tuple((name, value) for _, name, value in pairs))


def pairs_json(values: FrozenMap) -> list[dict[str, str]]:
    """A name -> value map as the spec's list of {name, value} objects."""
    return [{"name": k, "value": v} for k, v in values.items()]


@dataclass(frozen=True)
class EventHandler:
    """A command run at a lifecycle event: "pre-start" or "post-stop"."""

    name: str
    exec: tuple[str, ...]

    @classmethod
    def parse(cls, value: JSON, path: str) -> EventHandler:
        node = Node.of(value, path)
        name = required_text(node, "name")
        if name not in EVENT_HANDLERS:
            raise ValidationError(node.at("name"), f"must be one of {EVENT_HANDLERS}, got {name!r}")
        exec_ = node.strings("exec")
        if not exec_ or not exec_[0]:
            raise ValidationError(node.at("exec"), "must name a program to run")
        return cls(name, exec_)

    def to_json(self) -> dict[str, JSON]:
        return {"name": self.name, "exec": list(self.exec)}


@dataclass(frozen=True)
class MountPoint:
    """Where an app expects a volume: an AC Name and an absolute path in its rootfs."""

    name: str
    path: str
    read_only: bool = False

    @classmethod
    def parse(cls, value: JSON, path: str) -> MountPoint:
        node = Node.of(value, path)
        name = check_name(required_text(node, "name"), node.at("name"))
        target = check_absolute(required_text(node, "path"), node.at("path"))
        return cls(name, target, bool(node.flag("readOnly")))

    def to_json(self) -> dict[str, JSON]:
        return {"name": self.name, "path": self.path, "readOnly": self.read_only}


@dataclass(frozen=True)
class Port:
    """A port (or `count` consecutive ports) the app listens on."""

    name: str
    protocol: str
    port: int
    count: int = 1
    socket_activated: bool = False

    @classmethod
    def parse(cls, value: JSON, path: str) -> Port:
        node = Node.of(value, path)
        name = check_name(required_text(node, "name"), node.at("name"))
        protocol = required_text(node, "protocol")
        if not protocol:
            raise ValidationError(node.at("protocol"), "must not be empty")
        port = node.integer("port", 1, 65535, required=True)
        assert port is not None
        count = node.integer("count", 1)
        count = 1 if count is None else count
        if port + count - 1 > 65535:
            raise ValidationError(node.at("count"), f"port range {port}+{count} ends beyond 65535")
        return cls(name, protocol, port, count, bool(node.flag("socketActivated")))

    def to_json(self) -> dict[str, JSON]:
        return {
            "name": self.name,
            "protocol": self.protocol,
            "port": self.port,
            "count": self.count,
            "socketActivated": self.socket_activated,
        }


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_T = TypeVar("_T", bound=_Named)


def unique_named(
    items: list[tuple[str, JSON]], parse: Callable[[JSON, str], _T], what: str
) -> tuple[_T, ...]:
    """Parse each (path, item) with `parse`, rejecting a repeated `.name`."""
    seen: set[str] = set()
    out: list[_T] = []
    for path, item in items:
        parsed = parse(item, path)
        check_unique(join(path, "name"), what, parsed.name, seen)
        out.append(parsed)
    return tuple(out)


@dataclass(frozen=True)
class App:
    """How to run an image: command, identity, environment, isolators, mounts and ports."""

    user: str
    group: str
    exec: tuple[str, ...] = ()
    supplementary_gids: tuple[int, ...] = ()
    event_handlers: tuple[EventHandler, ...] = ()
    working_directory: str | None = None
    environment: FrozenMap = field(default_factory=FrozenMap)
    isolators: tuple[Isolator, ...] = ()
    mount_points: tuple[MountPoint, ...] = ()
    ports: tuple[Port, ...] = ()
    user_annotations: FrozenMap = field(default_factory=FrozenMap)
    user_labels: FrozenMap = field(default_factory=FrozenMap)

    @classmethod
    def parse(cls, value: JSON, path: str) -> App:
        node = Node.of(value, path)
        workdir = node.text("workingDirectory")
        return cls(
            exec=node.strings("exec"),
            user=_identity(node, "user"),
            group=_identity(node, "group"),
            supplementary_gids=tuple(
                check_id(item, item_path) for item_path, item in node.array("supplementaryGIDs")
            ),
            event_handlers=unique_named(
                node.array("eventHandlers"), EventHandler.parse, "event handler"
            ),
            working_directory=None
            if workdir is None
            else check_absolute(workdir, node.at("workingDirectory")),
            environment=FrozenMap(
                tuple((n, v) for _, n, v in _name_value_pairs(node, "environment", "env"))
            ),
            isolators=parse_isolators(node.array("isolators")),
            mount_points=unique_named(node.array("mountPoints"), MountPoint.parse, "mount point"),
            ports=unique_named(node.array("ports"), Port.parse, "port"),
            user_annotations=FrozenMap(node.string_map("userAnnotations")),
            user_labels=FrozenMap(node.string_map("userLabels")),
        )

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"user": self.user, "group": self.group}
        if self.exec:
            out["exec"] = list(self.exec)
        if self.supplementary_gids:
            out["supplementaryGIDs"] = list(self.supplementary_gids)
        if self.working_directory is not None:
            out["workingDirectory"] = self.working_directory
        for key, items in (
            ("eventHandlers", self.event_handlers),
            ("isolators", self.isolators),
            ("mountPoints", self.mount_points),
            ("ports", self.ports),
        ):
            if items:
                out[key] = [item.to_json() for item in items]
        if self.environment:
            out["environment"] = pairs_json(self.environment)
        if self.user_annotations:
            out["userAnnotations"] = dict(self.user_annotations)
        if self.user_labels:
            out["userLabels"] = dict(self.user_labels)
        return out


def _identity(node: Node, key: str) -> str:
    value = required_text(node, key)
    if not value:
        raise ValidationError(node.at(key), "must not be empty")
    return value


def check_id(value: JSON, path: str) -> int:
    """A uid or gid: an integer in 0..2^32-1."""
    checked = check_int(value, path, 0, MAX_ID)
    if checked is None:
        raise ValidationError(path, "must be an integer, got null")
    return checked
