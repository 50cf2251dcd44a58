"""Image configs (OCI `application/vnd.oci.image.config.v1+json` and Docker's), as frozen data.

The config says how to run the image (its `config` member: Entrypoint, Cmd, Env, User, ...)
and what its layers unpack to (`rootfs.diff_ids`, the digests of the *uncompressed* layer
tars, which is what a pull checks each applied layer against). Docker and OCI share the
format; Docker's extra members (container_config, docker_version, Healthcheck ...) are
ignored. Members are read as Go reads them: case-insensitively, null meaning absent.

Strictness follows what the rendering step needs: a port or a signal Kurma could not
honour is refused here with the path of the member, not when a pod starts.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

from kurma.aci import FrozenMap
from kurma.aci._manifest_json import JSON, Node, decode_document, join
from kurma.errors import InvalidDigest, ValidationError

from ._digest import Digest, parse_digest
from ._manifest import Manifest
from ._platform import Platform

_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True, order=True)
class ExposedPort:
    """One `ExposedPorts` key, `8080/tcp`; a key without a protocol means tcp."""

    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class HistoryEntry:
    """One build step; `empty_layer` steps (ENV, CMD ...) produced no layer."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False


@dataclass(frozen=True)
class RunConfig:
    """How to run the image: the config's `config` member.

    `entrypoint` and `cmd` are None when absent, which differs from empty: a pod's own
    exec replaces Cmd but keeps Entrypoint, as `docker run IMAGE ARGS` does.
    """

    user: str = ""
    exposed_ports: tuple[ExposedPort, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: FrozenMap = field(default_factory=FrozenMap)
    stop_signal: str = ""

    @property
    def argv(self) -> tuple[str, ...]:
        """What runs when nothing overrides it: Entrypoint followed by Cmd."""
        return (self.entrypoint or ()) + (self.cmd or ())

    @property
    def env_map(self) -> dict[str, str]:
        """Env as a mapping; a later entry wins, an entry without `=` has an empty value."""
        pairs = (entry.partition("=") for entry in self.env)
        return {name: value for name, _, value in pairs}


@dataclass(frozen=True)
class ImageConfig:
    """A parsed image config."""

    platform: Platform
    diff_ids: tuple[Digest, ...]
    config: RunConfig = field(default_factory=RunConfig)
    created: str | None = None
    author: str | None = None
    history: tuple[HistoryEntry, ...] = ()

    def check_layers(self, manifest: Manifest) -> None:
        """Raise ValidationError unless the config has one diff_id per manifest layer."""
        if len(self.diff_ids) != len(manifest.layers):
            raise ValidationError(
                "rootfs.diff_ids",
                f"has {len(self.diff_ids)} entries, but the manifest has "
                f"{len(manifest.layers)} layers",
            )


def parse_exposed_port(key: str, path: str) -> ExposedPort:
    """Parse `PORT[/PROTO]`, PORT 1-65535 and PROTO tcp, udp or sctp."""
    number, _, protocol = key.partition("/")
    protocol = protocol.lower() or "tcp"
    if not number.isascii() or not number.isdigit() or not 0 < int(number) < 65536:
        raise ValidationError(path, f"{key!r}: port must be a number from 1 to 65535")
    if protocol not in _PROTOCOLS:
        raise ValidationError(path, f"{key!r}: protocol must be one of {', '.join(_PROTOCOLS)}")
    return ExposedPort(int(number), protocol)


def parse_stop_signal(text: str) -> int:
    """The signal a StopSignal names: `SIGTERM`, `TERM`, `15` or `SIGRTMIN+3` (docker accepts
    all of these), as a number: real-time signals have no `signal.Signals` member. ValueError
    for anything else."""
    name = text.strip().upper()
    if name.isascii() and name.isdigit():
        return int(signal.Signals(int(name)))  # ValueError for a number that is no signal
    if not name.startswith("SIG"):
        name = "SIG" + name
    base, sign, offset = name.partition("+") if "+" in name else name.partition("-")
    if base in ("SIGRTMIN", "SIGRTMAX") and sign and offset.isascii() and offset.isdigit():
        number = signal.SIGRTMIN + int(offset) if sign == "+" else signal.SIGRTMAX - int(offset)
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
            return int(number)
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


def _keys(node: Node, key: str) -> list[tuple[str, str]]:
    """The (path, key) pairs of an object used as a set (`{"80/tcp": {}}`)."""
    value = node.raw(key)
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise ValidationError(node.at(key), "must be an object")
    return [(join(node.at(key), k), k) for k in value]


def _run_config(node: Node | None) -> RunConfig:
    if node is None:
        return RunConfig()
    stop_signal = node.text("StopSignal") or ""
    if stop_signal:
        try:
            parse_stop_signal(stop_signal)
        except ValueError as e:
            raise ValidationError(node.at("StopSignal"), str(e)) from e
    return RunConfig(
        user=node.text("User") or "",
        exposed_ports=tuple(
            sorted({parse_exposed_port(k, p) for p, k in _keys(node, "ExposedPorts")})
        ),
        env=node.strings("Env"),
        entrypoint=node.strings("Entrypoint") if node.raw("Entrypoint") is not None else None,
        cmd=node.strings("Cmd") if node.raw("Cmd") is not None else None,
        volumes=tuple(k for _, k in _keys(node, "Volumes")),
        working_dir=node.text("WorkingDir") or "",
        labels=FrozenMap(node.string_map("Labels")),
        stop_signal=stop_signal,
    )


def _history(path: str, value: JSON) -> HistoryEntry:
    node = Node.of(value, path)
    return HistoryEntry(
        created=node.text("created"),
        created_by=node.text("created_by"),
        author=node.text("author"),
        comment=node.text("comment"),
        empty_layer=bool(node.flag("empty_layer")),
    )


def _diff_ids(rootfs: Node) -> tuple[Digest, ...]:
    kind = rootfs.text("type", required=True)
    if kind != "layers":
        raise ValidationError(rootfs.at("type"), f"must be 'layers', got {kind!r}")
    rootfs.array("diff_ids", required=True)
    digests = []
    for path, item in rootfs.array("diff_ids"):
        if not isinstance(item, str):
            raise ValidationError(path, "must be a string")
        try:
            digests.append(parse_digest(item))
        except InvalidDigest as e:
            raise ValidationError(path, e.reason) from e
    return tuple(digests)


def parse_image_config(data: bytes | str | Mapping[str, JSON]) -> ImageConfig:
    """Parse and validate an image config; ValidationError names the offending member."""
    root = Node.of(decode_document(data), "")
    platform = Platform(
        os=root.text("os", required=True) or "",
        architecture=root.text("architecture", required=True) or "",
        variant=root.text("variant") or "",
        os_version=root.text("os.version") or "",
        os_features=root.strings("os.features"),
    )
    rootfs = root.obj("rootfs", required=True)
    assert rootfs is not None
    return ImageConfig(
        platform=platform,
        diff_ids=_diff_ids(rootfs),
        config=_run_config(root.obj("config")),
        created=root.text("created"),
        author=root.text("author"),
        history=tuple(_history(p, v) for p, v in root.array("history")),
    )
