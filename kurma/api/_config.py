"""kurmad's configuration: defaults <- /etc/kurma/kurmad.yml (or --config) <- flags.

Every key is declared once in `KEYS` with its default, its parser and its help; the YAML file
and the command line go through the same parsers, so a bad value is reported the same way
from both, naming the key (or the flag) and what was expected. Unknown keys are errors: a
misspelt `stop_pods_on_exti: true` must not silently leave pods to die.

The TCP listener and what its certificates may do, in kurmad.yml:

    listen: 127.0.0.1:7443          # mutual TLS only (kurmactl pki issue server prints these)
    tls_cert: /etc/kurma/pki/server.crt
    tls_key: /etc/kurma/pki/server.key
    tls_ca: /etc/kurma/pki/ca.crt
    operator_host_volumes:          # default: none
      - /srv/shared

A `reader` certificate reads; an `admin` one may do everything the system socket may; an
`operator` one manages pods and images within the operator policy (kurma.api._policy): no
privileged pods, host namespaces, host devices, capabilities beyond the default set, seccomp
off or loosened, negative oom-score-adj or api-access above `subtree`, and host volumes only
inside `operator_host_volumes` (symlinks resolved). It may start and exec into only pods
within that policy, and imports no image under a name the system services run.

No gRPC here: the daemon reads its configuration before it forks the launcher.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

DEFAULT_CONFIG = "/etc/kurma/kurmad.yml"
# Each pod, even created and never started, costs kurmad a mount, and with api-access a
# server (a thread, a socket) of its own: a subtree pod may not make pods without end.
DEFAULT_SUBTREE_PODS = 128
DEFAULT_SUBTREE_IMAGE_BYTES = 1 << 30
DEFAULT_SUBTREE_LOG_BYTES = 256 << 20
DEFAULT_STATE_MIN_FREE = 0.10

_LOG_LEVELS = ("debug", "info", "warning", "error")
_CGROUP_PART = re.compile(r"[A-Za-z0-9_.:@-]+")


class ConfigError(ValueError):
    """The configuration file or a flag is unreadable or has a bad key or value."""


@dataclass(frozen=True)
class DaemonConfig:
    """Everything kurmad is told; see `KEYS` for what each field means."""

    socket: str = "/run/kurma/kurmad.sock"
    state_dir: str = "/var/lib/kurma"
    pods_dir: str = "/run/kurma/pods"
    stop_pods_on_exit: bool = False
    log_level: str = "info"
    stop_grace: float = 10.0
    shutdown_grace: float = 5.0
    cgroup_parent: str = "kurma"
    workers: int = 64
    log_max_bytes: int = 2 << 20  # in RAM with pods_dir on a tmpfs: 2 MiB x (1 + keep)
    log_keep: int = 2
    warm_pods: int = 1
    listen: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    services_file: str | None = None
    stop_services_on_exit: bool | None = None  # None: yes when there is a services_file
    boot_log_file: str | None = None
    init_pid: int = 1
    # Quotas of a `subtree` pod whose host/api-access gives none (None: unlimited); see _quota.
    # Bounded by default: 1 GiB of imported images and 256 MiB of logs per subtree.
    subtree_max_pods: int | None = DEFAULT_SUBTREE_PODS
    subtree_max_image_bytes: int | None = DEFAULT_SUBTREE_IMAGE_BYTES
    subtree_max_log_bytes: int | None = DEFAULT_SUBTREE_LOG_BYTES
    # The share of the state filesystem an image import must leave free (0: no reserve).
    state_min_free: float = DEFAULT_STATE_MIN_FREE
    # Where an operator certificate's pods may have host volumes (see _policy); none by default.
    operator_host_volumes: tuple[str, ...] = ()
    # How images are pulled (kurma.registry.RegistrySettings; None: the defaults) and the
    # credentials kurmad itself pulls with for the host and admins (docker's config.json).
    registries: Any = None
    registry_auth_file: str | None = "/etc/kurma/auth.json"
    # CNI networks (`.conflist` files) pods may join, and the one `kurmactl run` pods join
    # without --net (None: loopback only).
    networks_dir: str | None = "/etc/kurma/net.d"
    default_network: str | None = None
    # Host ports that pods below the host (operators' and pods' pods) may publish: LO-HI.
    tenant_publish_ports: tuple[int, int] | None = None

    @property
    def log_level_number(self) -> int:
        return int(getattr(logging, self.log_level.upper()))

    @property
    def stops_services(self) -> bool:
        """Whether shutting down stops the system services (kurmad under kurma-init)."""
        if self.stop_services_on_exit is None:
            return self.services_file is not None
        return self.stop_services_on_exit


# --- value parsers: raw value (YAML scalar or flag text) -> value, or ValueError ------------


def _absolute_path(value: Any) -> str:
    text = _text(value)
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path, got {text!r}")
    return posixpath.normpath(text)


def _optional_path(value: Any) -> str | None:
    return None if value in (None, "") else _absolute_path(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__} {value!r}")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be true or false, got {value!r}")


def _seconds(value: Any) -> float:
    number = _number(value, float)
    if not 0 <= number <= 86400:
        raise ValueError(f"must be a number of seconds in 0..86400, got {value!r}")
    return number


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = _number(value, int)
        if not lo <= number <= hi:
            raise ValueError(f"must be an integer in {lo}..{hi}, got {value!r}")
        return number

    return parse


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    if isinstance(value, int | float) and (kind is float or isinstance(value, int)):
        return kind(value)
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    what = "an integer" if kind is int else "a number"
    raise ValueError(f"must be {what}, got {value!r}")


def _log_level(value: Any) -> str:
    level = _text(value).lower()
    if level not in _LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return level


def _cgroup_parent(value: Any) -> str:
    """A relative cgroup path below kurmad's own cgroup: parts of [A-Za-z0-9_.:@-], no '..'."""
    text = _text(value).strip("/")
    parts = text.split("/")
    if not text or any(p in (".", "..") or not _CGROUP_PART.fullmatch(p) for p in parts):
        raise ValueError(
            f"must be a relative cgroup path like 'kurma' or 'kurma/pods' "
            f"(letters, digits, '_.:@-'; no '..'), got {value!r}"
        )
    return text


def _listen_address(value: Any) -> str | None:
    """HOST:PORT with an IP address (IPv6 in brackets); '' or null: no TCP listener."""
    if value in (None, ""):
        return None
    text = _text(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT with a port in 1..65535, got {text!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(
            f"must be an IP address and port like 127.0.0.1:7443 or [::1]:7443, got {text!r}"
        ) from None
    if address.version == 6 and bare == host:
        raise ValueError(f"put an IPv6 address in brackets, like [{bare}]:{port}")
    return text


def _optional_count(value: Any) -> int | None:
    """A number of pods, or null / '' for unlimited."""
    if value in (None, ""):
        return None
    return _int_range(0, 1_000_000)(value)


def _optional_bytes(value: Any) -> int | None:
    """A byte quantity as in resource isolators ("64M", "1Gi", 4096), or null / '' for none."""
    if value in (None, ""):
        return None
    from ..aci._manifest_quantity import Quantity
    from ..errors import ValidationError

    if isinstance(value, str) and value.isdigit():
        value = int(value)
    try:
        return Quantity.parse(value, "").value
    except ValidationError as e:
        raise ValueError(e.message) from None


def _share(value: Any) -> float:
    """A share of a filesystem: 0.1, "10%" or 0 (none); at most 0.9."""
    text = value.strip() if isinstance(value, str) else value
    percent = isinstance(text, str) and text.endswith("%")
    number = _number(text[:-1] if percent else text, float)
    if percent:
        number /= 100
    if not 0 <= number <= 0.9:
        raise ValueError(f"must be a share in 0..0.9 (or 0%..90%), got {value!r}")
    return number


def _path_prefixes(value: Any) -> tuple[str, ...]:
    """Absolute directories: a YAML list, or one string of them separated by commas."""
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"must be a list of absolute paths, got {value!r}")
    prefixes = []
    for item in items:
        path = _absolute_path(item)
        if ".." in _text(item).split("/"):
            raise ValueError(f"must not contain '..', got {item!r}")
        prefixes.append(path)
    return tuple(dict.fromkeys(prefixes))


def _port_range(value: Any) -> tuple[int, int] | None:
    """`LO-HI` (1..65535), or '' / null for none."""
    if value in (None, ""):
        return None
    text = str(value)
    lo, sep, hi = text.partition("-")
    if not (sep and lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 65535):
        raise ValueError(f"must be a port range LO-HI in 1..65535, like 30000-32767, got {text!r}")
    return int(lo), int(hi)


def _optional_name(value: Any) -> str | None:
    """A CNI network's name, or '' / null for none."""
    if value in (None, ""):
        return None
    text = _text(value)
    if not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError(f"must be a network name (letters, digits, '-_.'), got {text!r}")
    return text


def _registries(value: Any) -> Any:
    """The `registries:` mapping (default registry, mirrors, insecure, certs_dir)."""
    from ..errors import ValidationError
    from ..registry import parse_registry_settings

    if isinstance(value, str):  # a flag: the same mapping as JSON
        import json

        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as e:
            raise ValueError(f"must be a mapping (JSON on the command line): {e}") from None
    try:
        return parse_registry_settings(value)
    except ValidationError as e:
        raise ValueError(str(e)) from None


@dataclass(frozen=True)
class Key:
    """One configuration key: its parser and what it means (the flag's help)."""

    name: str
    parse: Callable[[Any], Any]
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


KEYS: tuple[Key, ...] = (
    Key("socket", _absolute_path, "the API's unix socket (mode 0600)"),
    Key("state_dir", _absolute_path, "images, trees, refs and locks live here"),
    Key("pods_dir", _absolute_path, "running pods' state, logs and writable layers (a tmpfs)"),
    Key("stop_pods_on_exit", _boolean, "stop every pod when kurmad exits (default: keep them)"),
    Key("log_level", _log_level, "debug, info, warning or error"),
    Key("stop_grace", _seconds, "seconds from SIGTERM to SIGKILL when stopping a pod"),
    Key("shutdown_grace", _seconds, "seconds in-flight calls get when kurmad shuts down"),
    Key("cgroup_parent", _cgroup_parent, "pods' cgroups go below this, below kurmad's own"),
    Key("workers", _int_range(4, 1024), "threads serving calls (streams hold one each)"),
    Key("log_max_bytes", _int_range(4096, 1 << 40), "rotate an app's log at this size"),
    Key("log_keep", _int_range(0, 99), "rotated logs kept per app"),
    Key("warm_pods", _int_range(0, 16), "pre-forked pod zygotes kept ready"),
    Key("listen", _listen_address, "TCP listener HOST:PORT (mutual TLS only)"),
    Key("tls_cert", _optional_path, "the TCP listener's server certificate (PEM)"),
    Key("tls_key", _optional_path, "the server certificate's private key (PEM)"),
    Key("tls_ca", _optional_path, "the CA that client certificates must chain to (PEM)"),
    Key("services_file", _optional_path, "system services to run (YAML written by kurma-init)"),
    Key(
        "stop_services_on_exit",
        _boolean,
        "stop the system services when kurmad exits (default: yes with a services file)",
    ),
    Key("boot_log_file", _optional_path, "kurma-init's boot log (JSON), served by Host.BootLog"),
    Key("init_pid", _int_range(1, 1 << 22), "the pid of kurma-init, told to reboot/power off"),
    Key(
        "subtree_max_pods",
        _optional_count,
        "live pods a subtree pod's subtree may hold (default 128; '' or null: unlimited)",
    ),
    Key(
        "subtree_max_image_bytes",
        _optional_bytes,
        "bytes of images a subtree pod's subtree may import (default 1Gi; '' or null: unlimited)",
    ),
    Key(
        "subtree_max_log_bytes",
        _optional_bytes,
        "log bytes a subtree pod's subtree may keep (default 256Mi; '' or null: unlimited)",
    ),
    Key(
        "state_min_free",
        _share,
        "share of the state filesystem an image import leaves free (default 10%; 0: none)",
    ),
    Key(
        "operator_host_volumes",
        _path_prefixes,
        "host directories whose paths an operator certificate may mount as host volumes "
        "(comma-separated; default none); everything else of the operator policy is fixed",
    ),
    Key(
        "registries",
        _registries,
        "image registries: default, mirrors {HOST: [MIRROR...]}, insecure [HOST:PORT...] "
        "(plain HTTP), certs_dir (HOST:PORT/ca.crt); JSON on the command line",
    ),
    Key("networks_dir", _optional_path, "CNI network configurations (.conflist) pods may join"),
    Key(
        "default_network",
        _optional_name,
        "the network `kurmactl run` pods join without --net (default: none, loopback only)",
    ),
    Key(
        "tenant_publish_ports",
        _port_range,
        "host ports pods below the host may publish, LO-HI (default none: only the host's)",
    ),
    Key(
        "registry_auth_file",
        _optional_path,
        "credentials kurmad pulls with for the host and admins (docker's config.json form)",
    ),
)
_BY_NAME = {k.name: k for k in KEYS}
assert set(_BY_NAME) == {f.name for f in fields(DaemonConfig)}


def apply(config: DaemonConfig, values: Mapping[str, Any], source: str) -> DaemonConfig:
    """`config` with `values` parsed and applied; ConfigError names the source and the key."""
    changes: dict[str, Any] = {}
    for name, raw in values.items():
        key = _BY_NAME.get(name) if isinstance(name, str) else None
        if key is None:
            known = ", ".join(sorted(_BY_NAME))
            raise ConfigError(f"{source}: unknown key {name!r} (known keys: {known})")
        try:
            changes[name] = key.parse(raw)
        except ValueError as e:
            where = key.flag if source == "command line" else key.name
            raise ConfigError(f"{source}: {where}: {e}") from None
    return replace(config, **changes)


def load_file(path: str, *, required: bool) -> dict[str, Any]:
    """The YAML mapping in `path`; {} when it is absent and not `required`."""
    from ..documents import DocumentError, load_document

    try:
        with open(path, encoding="utf-8") as f:
            doc = load_document(f.read())
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such configuration file") from None
        return {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except (DocumentError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values, got {type(doc).__name__}")
    return doc


def check(config: DaemonConfig) -> DaemonConfig:
    """Rules between keys: the TLS files go with `listen`, and must exist."""
    tls = {"tls_cert": config.tls_cert, "tls_key": config.tls_key, "tls_ca": config.tls_ca}
    if config.listen is None:
        given = [name for name, value in tls.items() if value]
        if given:
            raise ConfigError(f"{given[0]}: only used with listen (the TCP listener); set both")
        return config
    for name, value in tls.items():
        if not value:
            raise ConfigError(f"{name}: required with listen (the TCP listener is mutual TLS only)")
        if not os.path.isfile(value):
            raise ConfigError(f"{name}: no such file {value!r}")
    return config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kurmad",
        description="Kurma's API daemon: serves pods and images over gRPC.",
        argument_default=argparse.SUPPRESS,  # only what is given overrides the file
    )
    p.add_argument("--config", help=f"configuration file (default {DEFAULT_CONFIG})")
    for key in KEYS:
        if key.parse is _boolean:
            p.add_argument(key.flag, action=argparse.BooleanOptionalAction, help=key.help)
        else:
            p.add_argument(key.flag, metavar=key.name.upper(), help=key.help)
    return p


def load_config(argv: Sequence[str] | None = None) -> DaemonConfig:
    """Defaults, then the file, then the flags; SystemExit(2) for a malformed command line."""
    args = vars(parser().parse_args(argv))
    path = args.pop("config", None)
    config = apply(
        DaemonConfig(),
        load_file(path or DEFAULT_CONFIG, required=path is not None),
        path or DEFAULT_CONFIG,
    )
    return check(apply(config, args, "command line"))
