"""Loading the boot config: defaults <- initrd file <- OEM file <- kernel command line.

Nothing here stops the boot. A file that cannot be read or is not a YAML mapping is reported
and skipped; a bad value or an unknown key is reported and left out, so the layer below decides
that key; a secret in the initrd file is reported and ignored. Reading the two files is the only
side effect; finding and mounting the OEM disk is another step's work.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ...documents import DocumentError, load_document
from ._cmdline import parse_cmdline
from ._model import SPEC, BootConfig, DiskRole
from ._problem import CMDLINE, DEFAULTS, ConfigProblem, Path, ProblemKind
from ._schema import DROP, Context, KeyDoc, merge

log = logging.getLogger(__name__)

INITRD_FILE = "/etc/kurma.yml"
"""The boot config inside the initrd: the same for every machine, so it holds no secrets."""


@dataclass(frozen=True)
class Layer:
    """One source of settings: its name in reports, its raw YAML data, and whether it may
    hold secrets (everything but the initrd file may)."""

    source: str
    data: Any
    secrets_allowed: bool = True


def read_layer(
    path: str | os.PathLike[str], *, secrets_allowed: bool
) -> tuple[Layer | None, list[ConfigProblem]]:
    """The YAML file at `path` as a layer; None (and a problem) when it cannot be used.

    A missing file is no problem: a machine may have no config at all.
    """
    source = os.fspath(path)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        data = load_document(text)
    except FileNotFoundError:
        return None, []
    except OSError as e:
        return None, [_unreadable(source, f"cannot read: {e.strerror or e}")]
    except UnicodeDecodeError as e:
        return None, [_unreadable(source, f"not UTF-8 text ({e.reason} at byte {e.start})")]
    except DocumentError as e:
        return None, [_unreadable(source, f"not valid YAML: {' '.join(str(e).split())}")]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [_unreadable(source, f"must be a mapping of keys, got {type(data).__name__}")]
    return Layer(source, data, secrets_allowed), []


def cmdline_layer(cmdline: str) -> tuple[Layer, list[ConfigProblem]]:
    """The `kurma.KEY=VALUE` words of a kernel command line (the text of /proc/cmdline)."""
    tree, problems = parse_cmdline(cmdline)
    return Layer(CMDLINE, tree, secrets_allowed=True), problems


def build_boot_config(layers: Iterable[Layer]) -> tuple[BootConfig, list[ConfigProblem]]:
    """The defaults with `layers` merged over them in order (later wins)."""
    problems: list[ConfigProblem] = []
    cleaned: list[tuple[str, Any]] = []
    for layer in layers:
        ctx = Context(layer.source, layer.secrets_allowed)
        try:
            data = SPEC.clean(layer.data, (), ctx)
        except Exception as e:  # a bug must not cost the machine its boot
            log.exception("boot config: cleaning %s failed", layer.source)
            ctx.problems = [_unreadable(layer.source, f"internal error, layer skipped: {e!r}")]
            data = DROP
        problems += ctx.problems
        if data is not DROP:
            cleaned.append((layer.source, data))
    # the defaults go through `clean` too, so every value is in its typed, normalised form
    merged = SPEC.clean(SPEC.plain(BootConfig()), (), Context(DEFAULTS))
    for _, data in cleaned:
        merged = merge(merged, data)
    ctx = Context(DEFAULTS, source_of=lambda path: _source_of(cleaned, path))
    try:
        config = _check_relations(SPEC.build(merged, (), ctx), ctx)
    except Exception as e:
        log.exception("boot config: building failed")
        ctx.report((), f"internal error, booting with the defaults: {e!r}", ProblemKind.UNREADABLE)
        config = BootConfig()
    return config, problems + ctx.problems


def load_boot_config(
    initrd_file: str | os.PathLike[str] | None = INITRD_FILE,
    oem_file: str | os.PathLike[str] | None = None,
    cmdline: str | None = None,
) -> tuple[BootConfig, list[ConfigProblem]]:
    """Defaults <- `initrd_file` <- `oem_file` <- `cmdline` (/proc/cmdline's text).

    Any of them may be None (or a missing file). Never raises for what the sources contain;
    every fault comes back as a ConfigProblem naming its source and key.
    """
    layers: list[Layer] = []
    problems: list[ConfigProblem] = []
    for path, secrets_allowed in ((initrd_file, False), (oem_file, True)):
        if path is not None:
            layer, found = read_layer(path, secrets_allowed=secrets_allowed)
            problems += found
            if layer is not None:
                layers.append(layer)
    if cmdline is not None:
        layer, found = cmdline_layer(cmdline)
        problems += found
        layers.append(layer)
    config, found = build_boot_config(layers)
    return config, problems + found


def to_plain(config: BootConfig) -> dict[str, Any]:
    """`config` as plain YAML data; loading it back gives an equal config."""
    return SPEC.plain(config)  # type: ignore[no-any-return]


def key_table() -> list[KeyDoc]:
    """Every key, its type, default and meaning, in declaration order."""
    return list(SPEC.describe(""))


# --- rules between keys, after merging -------------------------------------------------------


CONDITIONS = ("network", "clock")
SYSTEM_SERVICES = ("console", "dhcp", "ntp", "syslog")  # from their own keys, not `services`


def _check_relations(config: BootConfig, ctx: Context) -> BootConfig:
    return dataclasses.replace(
        config,
        services=_check_dependencies(config, ctx),
        disks=_check_disk_roles(config, ctx),
        default_network=_check_default_network(config, ctx),
    )


def _check_default_network(config: BootConfig, ctx: Context) -> str | None:
    """The default network is one of `networks`."""
    name = config.default_network
    if name is None or name in config.networks:
        return name
    known = ", ".join(sorted(config.networks)) or "none"
    ctx.report(
        ("default_network",),
        f"{name!r} is not one of networks ({known}); ignored",
        ProblemKind.INCOMPLETE,
    )
    return None


def _check_dependencies(config: BootConfig, ctx: Context) -> dict[str, Any]:
    """Dependencies name `network`, `clock`, a built-in system service or an enabled
    service, and form no cycle."""
    services = dict(config.services)
    for name, service in services.items():
        kept = []
        for i, dep in enumerate(service.depends_on):
            path: Path = ("services", name, "depends_on", i)
            other = services.get(dep)
            if dep in CONDITIONS or (dep in SYSTEM_SERVICES and other is None):
                kept.append(dep)
                continue
            if other is not None and dep != name and other.enabled:
                kept.append(dep)
                continue
            why = (
                "is the service itself"
                if dep == name
                else "is a disabled service"
                if other is not None
                else "is neither network, clock, a system service nor a configured service"
            )
            ctx.report(path, f"{dep!r} {why}; dependency ignored", ProblemKind.INCOMPLETE)
        services[name] = dataclasses.replace(service, depends_on=tuple(kept))
    for name, dep in _cycle_edges(services):
        path = ("services", name, "depends_on")
        ctx.report(
            path, f"{dep!r} closes a dependency cycle; dependency ignored", ProblemKind.INCOMPLETE
        )
        service = services[name]
        services[name] = dataclasses.replace(
            service, depends_on=tuple(d for d in service.depends_on if d != dep)
        )
    return services


def _cycle_edges(services: dict[str, Any]) -> list[tuple[str, str]]:
    """The edges that close a cycle, found depth-first in declaration order."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    back: list[tuple[str, str]] = []

    def visit(name: str) -> None:
        state[name] = 1
        for dep in services[name].depends_on:
            if dep not in services:
                continue
            if state.get(dep) == 1:
                back.append((name, dep))
            elif dep not in state:
                visit(dep)
        state[name] = 2

    for name in services:
        if name not in state:
            visit(name)
    return back


def _check_disk_roles(config: BootConfig, ctx: Context) -> dict[str, Any]:
    """Each role is held by one disk, and a disk holding images, pods or volumes is mounted."""
    holder: dict[DiskRole, str] = {}
    disks = dict(config.disks)
    for selector, disk in disks.items():
        kept = []
        for i, role in enumerate(disk.holds):
            path: Path = ("disks", selector, "holds", i)
            if role in holder:
                ctx.report(
                    path,
                    f"{role.value} is already held by {holder[role]}; ignored",
                    ProblemKind.INCOMPLETE,
                )
            elif disk.mount is None and role is not DiskRole.OEM:
                ctx.report(
                    path,
                    f"a disk holding {role.value} needs a mount point; ignored",
                    ProblemKind.INCOMPLETE,
                )
            else:
                holder[role] = selector
                kept.append(role)
        disks[selector] = dataclasses.replace(disk, holds=tuple(kept))
    return disks


def _source_of(cleaned: Sequence[tuple[str, Any]], path: Path) -> str:
    """The layer that set the most of `path` (the later one on a tie): the one to blame."""
    best, best_depth = DEFAULTS, 0
    for source, data in cleaned:
        depth, node = 0, data
        for part in path:
            if not isinstance(node, dict | list):
                break
            try:
                node = node[part]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                break
            depth += 1
        if depth and depth >= best_depth:
            best, best_depth = source, depth
    return best


def _unreadable(source: str, message: str) -> ConfigProblem:
    return ConfigProblem(source, "", f"{message}; this file is skipped", ProblemKind.UNREADABLE)
