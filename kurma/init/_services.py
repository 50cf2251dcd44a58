"""What PID 1 hands kurmad: its settings, the system services, the boot log, as files.

PID 1 has no gRPC (DESIGN.md): it writes these files under the run directory and kurmad
reads them. kurmad re-reads the services file when it changes, so the boot adds the
console in a later step by rewriting the file.

- `kurmad.yml`: kurmad's settings from the boot config (state and pods dirs from the disks
  step, the TCP listener, anything under the `kurmad` key), plus where the two files below are.
- `services.yml`: the system services as data (format: kurma/services/README.md): the
  `ServiceSpec`s of the boot config's own keys (`console`, `ntp`, `log_forwarding`, DHCP
  interfaces from `network`) and of its `services`, written by kurma.services' one writer.
- `boot-log.json`: the steps with their outcomes and durations, and the boot config's problems.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from ..backoff import Backoff
from ..documents import dump_json_document
from ..services import ServicesFile, ServiceSpec, VolumeSpec
from .config import BootConfig, ConfigProblem, DiskRole, network_document

RUN_DIR = "/run/kurma"
IMAGE_PREFIX = "kurma.io/"


@dataclass
class Facts:
    """What the boot steps found that the services need."""

    dhcp_interfaces: list[str] = field(default_factory=list)
    network_ready: bool = True  # the host_network step succeeded


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """One of kurmad's files, atomically (run dir in tmpfs: no fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode, sync=False)


# --- kurmad's settings -----------------------------------------------------------------------


def kurmad_settings(config: BootConfig, run_dir: Path, roles: dict[Any, str]) -> dict[str, Any]:
    """kurmad.yml's content: defaults for a machine, the disks' roles, the boot config's
    `api` listener and `kurmad` key (which wins)."""
    settings: dict[str, Any] = {
        "socket": str(run_dir / "kurmad.sock"),
        "services_file": str(run_dir / "services.yml"),
        "boot_log_file": str(run_dir / "boot-log.json"),
        "shutdown_grace": config.shutdown_budget,
    }
    if DiskRole.IMAGES in roles:
        settings["state_dir"] = os.path.join(roles[DiskRole.IMAGES], "kurma")
    if DiskRole.PODS in roles:
        settings["pods_dir"] = os.path.join(roles[DiskRole.PODS], "pods")
    listeners = list(config.api.listeners.values())
    if listeners:  # kurmad serves one TCP listener; the first by name
        first = config.api.listeners[sorted(config.api.listeners)[0]]
        settings.update(
            listen=first.address, tls_cert=first.cert, tls_key=first.key, tls_ca=first.ca
        )
    if config.networks:
        settings["networks_dir"] = NETWORKS_DIR
    if config.default_network is not None:
        settings["default_network"] = config.default_network
    settings.update(config.kurmad)
    return settings


# --- the networks ----------------------------------------------------------------------------

NETWORKS_DIR = "/etc/kurma/net.d"  # kurmad's default networks_dir too


def write_networks(config: BootConfig, networks_dir: Path) -> list[str]:
    """The boot config's `networks` as NAME.conflist files in kurmad's networks_dir, each
    written atomically; returns their names."""
    for name, value in config.networks.items():
        document = network_document(name, value)
        data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
        write_file(networks_dir / f"{name}.conflist", data)
    return sorted(config.networks)


# --- the services ----------------------------------------------------------------------------


def console_auth(config: BootConfig, auth_dir: Path) -> str:
    """Writes what the console image reads from its `auth` volume; says which login it is."""
    auth_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(auth_dir, 0o700)
    console = config.console
    for name in ("shadow", "autologin"):
        (auth_dir / name).unlink(missing_ok=True)
    if console.autologin:
        write_file(auth_dir / "autologin", b"root\n", 0o600)
        return "autologin"
    hash_ = console.password_hash or "!"  # `!`: no password login at all
    write_file(auth_dir / "shadow", f"root:{hash_}:0:0:99999:7:::\n".encode(), 0o600)
    return "password" if console.password_hash else "locked"


def system_services(
    config: BootConfig, facts: Facts, run_dir: Path, *, console: bool, services: bool = True
) -> ServicesFile:
    """services.yml's content. The console step writes it with the console alone
    (`services` false), before the network is set up; the services step adds the others."""
    if not services:
        return ServicesFile(_console_only(config, run_dir) if console else {})
    return _with_services(config, facts, run_dir, console=console)


def _console_only(config: BootConfig, run_dir: Path) -> dict[str, ServiceSpec]:
    if "console" in config.services:  # a configured service may replace the built-in one
        return {"console": config.services["console"]}
    return {"console": _console_spec(config, run_dir)} if config.console.enabled else {}


CONSOLE_AUTH_DIR = "console-auth"  # under the run dir; written once, by the console step


def _console_spec(config: BootConfig, run_dir: Path) -> ServiceSpec:
    auth = run_dir / CONSOLE_AUTH_DIR
    ttys = list(config.console.ttys)
    return ServiceSpec(
        "console",
        IMAGE_PREFIX + "console",
        environment={"CONSOLE_TTYS": " ".join(ttys)},
        isolators={
            "os/linux/devices": [f"/dev/{t}" for t in ttys],
            "host/api-access": {"scope": "host"},  # granted here, by the boot config
            # The machine's name (`kurma login:`) and network (the operator runs ip, ping
            # ... here; a console pod costs no network namespace of its own to start).
            "os/linux/namespaces": {"uts": "host", "net": "host"},
        },
        volumes={"auth": VolumeSpec(str(auth), read_only=True)},
        backoff=Backoff(initial=0.5, maximum=5.0, factor=2.0),
    )


def _with_services(
    config: BootConfig, facts: Facts, run_dir: Path, *, console: bool
) -> ServicesFile:
    services: dict[str, ServiceSpec] = {}
    ready = ("network",) if facts.network_ready and not facts.dhcp_interfaces else ()
    if facts.dhcp_interfaces:
        resolv = run_dir / "resolv"
        resolv.mkdir(parents=True, exist_ok=True)
        services["dhcp"] = ServiceSpec(
            "dhcp",
            IMAGE_PREFIX + "dhcp",
            environment={"DHCP_INTERFACES": " ".join(facts.dhcp_interfaces)},
            volumes={"resolv": VolumeSpec(str(resolv))},
            provides=("network",),
        )
    if config.ntp.servers:
        services["ntp"] = ServiceSpec(
            "ntp",
            IMAGE_PREFIX + "ntp",
            environment={"NTP_SERVERS": " ".join(config.ntp.servers)},
            depends_on=("network",),
            provides=("clock",),
        )
    if config.log_forwarding.target:
        services["syslog"] = ServiceSpec(
            "syslog",
            IMAGE_PREFIX + "syslog",
            environment={
                "SYSLOG_TARGET": config.log_forwarding.target,
                "SYSLOG_PROTOCOL": config.log_forwarding.protocol.value,
            },
            isolators={"host/api-access": {"scope": "host-read"}},
            depends_on=("network",),
        )
    if console and config.console.enabled:
        services["console"] = _console_spec(config, run_dir)
    services.update(config.services)  # a configured service may replace a built-in one
    return ServicesFile(services, ready)


# --- the boot log ----------------------------------------------------------------------------


def boot_log_document(steps: list[dict[str, Any]], problems: list[ConfigProblem]) -> bytes:
    return (json.dumps({"steps": steps, "problems": [str(p) for p in problems]}) + "\n").encode()


def dump_document(data: dict[str, Any]) -> bytes:
    """kurmad's files as JSON (which is YAML): kurmad reads them without importing PyYAML."""
    return dump_json_document(data)
