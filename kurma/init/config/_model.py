"""The boot config's keys: frozen dataclasses, each field with its default, spec and meaning.

`BootConfig()` is the built-in default: a machine with no config file at all boots with it
(hostname `kurma`, DHCP on every `eth*`, a console on ttyS0, no extra services).
The system services come from their own keys (`console`, `ntp`, `log_forwarding`, DHCP from
`network`); `services` adds further pods.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kurma.backoff import Backoff
from kurma.services._spec import HealthCheck, RestartPolicy, ServiceSpec

from . import _values as v
from ._schema import ListOf, MapOf, Optional, Record, Scalar, about, setting

# kurmad settings that hold secrets: refused from the initrd like the keys marked secret
_SECRET_SETTING = re.compile(r".*(cert|key|ca|password|secret|token).*")


class Protocol(enum.Enum):
    """The transport of forwarded logs."""

    TCP = "tcp"
    UDP = "udp"


class DiskRole(enum.Enum):
    """What a disk holds; each role goes to one disk at most."""

    IMAGES = "images"  # the image store (kurmad's state_dir)
    PODS = "pods"  # pods' state and writable layers
    VOLUMES = "volumes"  # host volumes of pods
    OEM = "oem"  # the OEM files: per-machine config and secrets


class FsType(enum.Enum):
    """The filesystems `format` can create."""

    EXT4 = "ext4"
    XFS = "xfs"
    BTRFS = "btrfs"
    VFAT = "vfat"


# --- network ---------------------------------------------------------------------------------


def _route_families(route: Route) -> tuple[str, str] | None:
    if route.via is None or route.to == "default":
        return None
    if ipaddress.ip_network(route.to).version != ipaddress.ip_address(route.via).version:
        return "via", f"{route.via} and {route.to} are not of the same IP version"
    return None


@dataclass(frozen=True)
class Route:
    """A static route through an interface."""

    to: str = setting(
        "", Scalar(v.route_destination), "destination: `default` or a network (CIDR)", required=True
    )
    via: str | None = setting(
        None, Scalar(v.optional(v.ip_address)), "gateway address; null: the network is on the link"
    )
    metric: int = setting(0, Scalar(v.integer(0, (1 << 32) - 1)), "route priority, lower wins")


@dataclass(frozen=True)
class Interface:
    """Settings of the interfaces whose name matches (an exact name wins over patterns)."""

    dhcp: bool = setting(
        False, Scalar(v.boolean), "get an address by DHCP (a client keeps renewing)"
    )
    addresses: tuple[str, ...] = setting(
        (), ListOf(Scalar(v.interface_address), split=True), "static addresses in CIDR form"
    )
    mtu: int | None = setting(
        None, Scalar(v.optional(v.integer(68, 65535))), "MTU in bytes; null: the driver's"
    )
    routes: tuple[Route, ...] = setting(
        (), ListOf(Record(Route, whole=True, check=_route_families)), "static routes"
    )


@dataclass(frozen=True)
class Dns:
    """The resolver configuration written to /etc/resolv.conf (DHCP may add to it)."""

    servers: tuple[str, ...] = setting(
        (), ListOf(Scalar(v.ip_address), split=True), "name server addresses"
    )
    search: tuple[str, ...] = setting((), ListOf(Scalar(v.hostname), split=True), "search domains")


@dataclass(frozen=True)
class Network:
    """The host network (system services share it)."""

    interfaces: Mapping[str, Interface] = setting(
        lambda: {"eth*": Interface(dhcp=True)},
        MapOf(v.interface_pattern, Record(Interface), noun="interface"),
        "by name or glob pattern; loopback is always up",
    )
    dns: Dns = setting(Dns(), Record(Dns), "resolver settings")  # noqa: RUF009


# --- disks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    """A disk found by its filesystem label or UUID."""

    format: bool = setting(
        False,
        Scalar(v.boolean),
        "create a filesystem of type `fs` if the disk has none (never wipes)",
    )
    fs: FsType = setting(FsType.EXT4, Scalar(v.choice(FsType)), "filesystem type to create")  # noqa: RUF009
    mount: str | None = setting(
        None, Scalar(v.optional(v.absolute_path)), "mount point; null: not mounted"
    )
    holds: tuple[DiskRole, ...] = setting(
        (), ListOf(Scalar(v.choice(DiskRole)), split=True), "what it holds: images|pods|volumes|oem"
    )


# --- services --------------------------------------------------------------------------------


# The service model is kurma.services' `ServiceSpec` (one dataclass from the boot config to
# kurmad's supervisor); the boot config describes its keys here, from outside.


def _backoff_order(backoff: Backoff) -> tuple[str, str] | None:
    if backoff.initial > backoff.maximum:
        return "initial", f"{backoff.initial:g} s is more than maximum ({backoff.maximum:g} s)"
    return None


BACKOFF = Record(
    Backoff,
    check=_backoff_order,
    settings={
        "initial": about(Scalar(v.seconds(0, 3600)), "first delay in seconds"),
        "maximum": about(Scalar(v.seconds(0, 86400)), "longest delay in seconds"),
        "factor": about(Scalar(v.factor), "growth of the delay after each failure"),
    },
)
"""Delay before a restart: initial, times factor after each quick failure, up to maximum."""

HEALTH_CHECK = Record(
    HealthCheck,
    settings={
        "command": about(Scalar(v.argv), "the command (list or one string)", required=True),
        "interval": about(Scalar(v.seconds(0.1, 86400)), "seconds between checks"),
        "timeout": about(Scalar(v.seconds(0.1, 3600)), "seconds a check may take"),
        "retries": about(
            Scalar(v.integer(1, 100)), "failures in a row that mean unhealthy (once healthy)"
        ),
        "start_timeout": about(
            Scalar(v.seconds(0.1, 86400)),
            "seconds for the first check to pass after a start; then the pod failed to "
            "start and `restart` applies (it never stays STARTING forever)",
        ),
    },
)
"""A command run inside the service's pod; failing `retries` times in a row restarts it."""


def _dependency(value: Any) -> str:
    """`network`, `clock`, or the name of another service."""
    return v.ac_name(value)


def _check_isolator(name: str, value: Any) -> None:
    from kurma.aci import parse_isolator  # lazily: pays for kurma.aci only when used
    from kurma.errors import ValidationError

    try:
        parse_isolator({"name": name, "value": value}, "")
    except ValidationError as e:
        raise ValueError(str(e).removeprefix("value: ").removeprefix("value")) from None


def _any_json(value: Any) -> Any:
    """An isolator value, as in a pod manifest."""
    return value


SERVICE = Record(
    ServiceSpec,
    settings={
        "image": about(Scalar(v.image_reference), "NAME[:VERSION] or an image ID", required=True),
        "enabled": about(Scalar(v.boolean), "false: defined but not started"),
        "exec": about(Scalar(v.optional(v.exec_argv)), "overrides the image app's exec"),
        "environment": about(
            MapOf(v.env_name, Scalar(v.env_value), noun="variable"),
            "added to the app's environment",
        ),
        "isolators": about(
            MapOf(v.isolator_name, Scalar(_any_json), noun="isolator", check_entry=_check_isolator),
            "isolator name -> value, as in a pod manifest (e.g. host/api-access: {scope: host})",
        ),
        "depends_on": about(
            ListOf(Scalar(_dependency), split=True),
            "started after these: other services, `network`, `clock`",
        ),
        "restart": about(Scalar(v.choice(RestartPolicy)), "always|on-failure|never"),
        "backoff": about(BACKOFF, "restart delays"),
        "health": about(Optional(HEALTH_CHECK), "optional health check"),
    },
)
"""A system service: a pod of one image, kept running by the supervisor (ServiceSpec)."""

Service = ServiceSpec  # the boot config's name for it


# --- console, logs, time, API ----------------------------------------------------------------


@dataclass(frozen=True)
class Console:
    """Login on the serial or virtual consoles (the `console` service)."""

    enabled: bool = setting(True, Scalar(v.boolean), "run the console service")
    ttys: tuple[str, ...] = setting(
        ("ttyS0",), ListOf(Scalar(v.tty), split=True), "terminals with a login prompt"
    )
    password_hash: str | None = setting(
        None,
        Scalar(v.optional(v.password_hash)),
        "root's crypt(3) hash; null: password login refused",
        secret=True,
    )
    autologin: bool = setting(
        False, Scalar(v.boolean), "log root in without a password (development)"
    )


@dataclass(frozen=True)
class LogForwarding:
    """Where the `syslog` service sends the kernel's and every pod's logs (RFC 5424)."""

    target: str | None = setting(
        None,
        Scalar(v.optional(v.host_port(514))),
        "HOST[:PORT] (port 514 by default); null: no forwarding",
    )
    protocol: Protocol = setting(Protocol.TCP, Scalar(v.choice(Protocol)), "tcp|udp")  # noqa: RUF009


@dataclass(frozen=True)
class Ntp:
    """Time servers of the `ntp` service (the `clock` dependency waits for its first sync)."""

    servers: tuple[str, ...] = setting(
        ("pool.ntp.org",),
        ListOf(Scalar(v.host), split=True),
        "NTP server names or addresses; empty: no ntp service",
    )


def _listener_complete(listener: Listener) -> tuple[str, str] | None:
    for name in ("cert", "key", "ca"):
        if getattr(listener, name) is None:
            return name, "is required: the TCP listener is mutual TLS only"
    return None


@dataclass(frozen=True)
class Listener:
    """A TCP listener of kurmad's API (mutual TLS only)."""

    address: str = setting("", Scalar(v.listen_address), "IP:PORT", required=True)
    cert: str | None = setting(
        None, Scalar(v.optional(v.absolute_path)), "server certificate (PEM path)", secret=True
    )
    key: str | None = setting(
        None, Scalar(v.optional(v.absolute_path)), "its private key (PEM path)", secret=True
    )
    ca: str | None = setting(
        None,
        Scalar(v.optional(v.absolute_path)),
        "CA that client certificates must chain to (PEM path)",
        secret=True,
    )


@dataclass(frozen=True)
class Api:
    """kurmad's API beyond its unix socket."""

    listeners: Mapping[str, Listener] = setting(
        dict,
        MapOf(v.ac_name, Record(Listener, check=_listener_complete), noun="listener"),
        "TCP listeners by name",
    )


@dataclass(frozen=True)
class TrustedKey:
    """A public key that image signatures may be made with."""

    path: str = setting("", Scalar(v.absolute_path), "armored public key file", required=True)
    prefix: str = setting(
        "", Scalar(v.ac_identifier_prefix), "images it may sign (name prefix); '': every image"
    )


# --- pod networks ----------------------------------------------------------------------------

NETWORK_CNI_VERSION = "1.0.0"  # given to a network document that names none
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")  # CNI's (kurma.network)


def network_name(value: Any) -> str:
    """A CNI network name: letters, digits, `_`, `.`, `-` (the file is NAME.conflist)."""
    name = v.text(value)
    if not _NETWORK_NAME.fullmatch(name) or name in ("host", "none"):
        raise ValueError(
            f"must be letters, digits, '_', '.' or '-' (and not host or none), got {value!r}"
        )
    return name


def network_document(name: str, value: Any) -> dict[str, Any]:
    """The conflist of network `name`: `value` is a conflist document (its `name` and
    `cniVersion` may be left out) or the list of its plugins."""
    if isinstance(value, list | tuple):
        value = {"plugins": list(value)}
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a conflist (a mapping) or a list of plugins, got {value!r}")
    doc = {"cniVersion": NETWORK_CNI_VERSION, "name": name, **value}
    if doc["name"] != name:
        raise ValueError(f"name: {doc['name']!r} differs from the network's key {name!r}")
    return doc


def _check_network(name: str, value: Any) -> None:
    import json

    from kurma.errors import InvalidNetworkConfig
    from kurma.network._config import parse_network_config  # lazily: only with networks

    doc = network_document(name, value)
    try:
        data = json.dumps(doc).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"not JSON data: {e}") from None
    try:
        parse_network_config(data, name)
    except InvalidNetworkConfig as e:
        raise ValueError(f"{e.key}: {e.message}" if e.key else e.message) from None


# --- the whole ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootConfig:
    """Everything kurma-init is told at boot."""

    hostname: str = setting("kurma", Scalar(v.hostname), "the machine's host name")
    modules: tuple[str, ...] = setting(
        (),
        ListOf(Scalar(v.module_name), split=True),
        "kernel modules to load (their dependencies too)",
    )
    network: Network = setting(Network(), Record(Network), "host network")  # noqa: RUF009
    disks: Mapping[str, Disk] = setting(
        dict,
        MapOf(v.disk_selector, Record(Disk), noun="disk"),
        "by LABEL=<label> or UUID=<uuid>",
    )
    services: Mapping[str, ServiceSpec] = setting(
        dict,
        MapOf(v.ac_name, SERVICE, noun="service", name_field="name"),
        "extra services by name",
    )
    networks: Mapping[str, Any] = setting(
        dict,
        MapOf(network_name, Scalar(_any_json), noun="network", check_entry=_check_network),
        "CNI networks pods may join: name -> a conflist document (`name` and `cniVersion` "
        "may be left out) or the list of its plugins; written as NAME.conflist into "
        "kurmad's networks_dir before kurmad starts",
    )
    default_network: str | None = setting(
        None,
        Scalar(v.optional(network_name)),
        "the network `kurmactl run` pods join without --net (one of `networks`); "
        "null: loopback only",
    )
    console: Console = setting(Console(), Record(Console), "console login")  # noqa: RUF009
    log_forwarding: LogForwarding = setting(LogForwarding(), Record(LogForwarding), "remote syslog")  # noqa: RUF009
    ntp: Ntp = setting(Ntp(), Record(Ntp), "time sync")  # noqa: RUF009
    api: Api = setting(Api(), Record(Api), "kurmad's API")  # noqa: RUF009
    trusted_keys: tuple[TrustedKey, ...] = setting(
        (), ListOf(Record(TrustedKey, whole=True)), "image signing keys to trust", secret=True
    )
    kurmad: Mapping[str, Any] = setting(
        dict,
        MapOf(
            v.snake_key,
            Scalar(v.scalar),
            noun="setting",
            secret_key=lambda name: bool(_SECRET_SETTING.fullmatch(name)),
        ),
        "passed to kurmad as its settings (state_dir, pods_dir, ...); kurmad checks them",
    )
    shutdown_budget: float = setting(
        5.0, Scalar(v.seconds(0, 600)), "seconds to stop every service at power off"
    )


SPEC = Record(BootConfig)
"""The root spec: `SPEC.clean`, `SPEC.build`, `SPEC.plain`, `SPEC.describe`."""
