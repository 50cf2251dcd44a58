"""The flags of `kurmactl run` and `create` as a RunSpec: volumes, environment, isolators,
host networking, and a command per image.

A command follows its image after `--` and ends at `---` (rkt's convention), so each app of
a multi-app pod can have its own:

    kurmactl run example.com/busybox -- /bin/sh -c 'echo hi'
    kurmactl run example.com/web -- /bin/httpd -f --- example.com/busybox -- /bin/sleep 1d

argparse cannot see these groups (they may hold anything, flags included), so
`extract_commands` lifts them out of argv first and leaves a placeholder token in each one's
place; after parsing, `pair_commands` gives each image the command that followed it. The
placeholders start with NUL, which no real argument can contain.

Everything here is pure and fails with UsageError (exit 2); the daemon checks the rest
(names, paths, isolator values) and its errors name the RunSpec field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._connect import UsageError, subcommand_index

PLACEHOLDER = "\0command:"
POD_COMMANDS = ("run", "create")


def extract_commands(argv: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(argv with each `-- CMD... [---]` group replaced by a placeholder, the groups).
    Only the argv of `run` and `create` is touched."""
    argv = list(argv)
    start = subcommand_index(argv)
    if start is None or argv[start] not in POD_COMMANDS:
        return argv, []
    out, commands = argv[: start + 1], []
    i = start + 1
    while i < len(argv):
        if argv[i] != "--":
            out.append(argv[i])
            i += 1
            continue
        end = argv.index("---", i + 1) if "---" in argv[i + 1 :] else len(argv)
        commands.append(argv[i + 1 : end])
        out.append(f"{PLACEHOLDER}{len(commands) - 1}")
        i = end + 1
    return out, commands


def pair_commands(
    images: Sequence[str], commands: Sequence[Sequence[str]]
) -> list[tuple[str, list[str]]]:
    """[(image, its command or [])] from the parsed positionals and the lifted groups."""
    pairs: list[tuple[str, list[str]]] = []
    for token in images:
        if not token.startswith(PLACEHOLDER):
            pairs.append((token, []))
            continue
        command = list(commands[int(token[len(PLACEHOLDER) :])])
        if not pairs or pairs[-1][1]:
            raise UsageError("a command after -- follows its image: IMAGE -- CMD [ARG...] [---]")
        if not command:
            raise UsageError("-- must be followed by the command to run")
        pairs[-1] = (pairs[-1][0], command)
    return pairs


# --- single flags ------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeFlag:
    """A parsed --volume: an empty volume NAME, or a host directory `source`."""

    name: str
    path: str
    source: str = ""
    read_only: bool = False


_NAME_CHARS = re.compile(r"[^a-z0-9]+")


def parse_volume(text: str, taken: set[str] | None = None) -> VolumeFlag:
    """`NAME:/path[:ro|rw]` (an empty volume) or `/host/dir:/path[:ro|rw]` (a host volume,
    named after its path in the pod: /srv/data -> srv-data)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise UsageError(f"--volume {text!r}: give NAME:/PATH[:ro] or /HOST/DIR:/PATH[:ro]")
    first, path = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise UsageError(f"--volume {text!r}: the mode is ro or rw, not {mode!r}")
    if not path.startswith("/"):
        raise UsageError(f"--volume {text!r}: the path in the pod must be absolute")
    taken = set() if taken is None else taken
    if first.startswith("/"):
        name = _unique(_NAME_CHARS.sub("-", path.lower()).strip("-") or "volume", taken)
        return VolumeFlag(name, path, source=first, read_only=mode == "ro")
    if "/" in first or first.startswith("."):
        raise UsageError(f"--volume {text!r}: a host directory must be an absolute path")
    taken.add(first)
    return VolumeFlag(first, path, read_only=mode == "ro")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def parse_env(items: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """--env K=V (or K alone: its value here, as docker does), later ones winning."""
    environ = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"--env {item!r}: give NAME=VALUE")
        if not sep:
            if key not in environ:
                raise UsageError(f"--env {key}: not set here; give {key}=VALUE")
            value = environ[key]
        env[key] = value
    return env


def parse_isolator(text: str) -> tuple[str, str]:
    """--isolator NAME=JSON, e.g. resource/memory={"limit":"64M"}; the JSON is checked here,
    its meaning by the daemon."""
    name, sep, value = text.partition("=")
    if not (name and sep and value):
        raise UsageError(
            f"--isolator {text!r}: give NAME=JSON, e.g. resource/memory=" + '{"limit":"64M"}'
        )
    try:
        json.loads(value)
    except ValueError as e:
        raise UsageError(f"--isolator {name}: the value is not JSON ({e})") from None
    return name, value


def parse_publish(text: str) -> tuple[int, int, str, str]:
    """`-p [IP:]HOST:CONTAINER[/tcp|udp|sctp]` as (host port, container port, protocol, IP);
    an IPv6 address in brackets, as docker writes it."""
    import re

    m = re.fullmatch(r"(?:(\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(\d+):(\d+)(?:/(tcp|udp|sctp))?", text)
    if m is None or not all(0 < int(n) < 65536 for n in m.group(2, 3)):
        raise UsageError(f"-p {text!r}: give [IP:]HOST:CONTAINER[/tcp|udp], e.g. 8080:80")
    ip, host, container, proto = m.groups()
    return int(host), int(container), proto or "tcp", (ip or "").strip("[]")


@dataclass(frozen=True)
class PodRequest:
    """What `run`/`create` asks kurmad for: a manifest, or apps plus overrides."""

    manifest_json: bytes | None
    apps: tuple[tuple[str, tuple[str, ...]], ...] = ()
    env: Mapping[str, str] | None = None
    volumes: tuple[VolumeFlag, ...] = ()
    isolators: Mapping[str, str] | None = None
    networks: tuple[str, ...] = ()
    ports: tuple[tuple[int, int, str, str], ...] = ()

    def spec(self) -> Any:
        """The RunSpec message (imports the client's builders: grpc and the pb2 modules)."""
        from kurma.client import app_spec, run_spec, volume

        apps = [app_spec(image, exec=cmd, env=dict(self.env or {})) for image, cmd in self.apps]
        volumes = [
            volume(v.name, v.path, source=v.source, read_only=v.read_only) for v in self.volumes
        ]
        spec = run_spec(*apps, volumes=volumes, isolators=dict(self.isolators or {}))
        spec.networks.extend(self.networks)
        for host, container, protocol, ip in self.ports:
            spec.ports.add(host_port=host, container_port=container, protocol=protocol, host_ip=ip)
        return spec


_OVERRIDES = ("env", "volume", "isolator", "net", "publish")


def pod_request(args: Any, commands: Sequence[Sequence[str]]) -> PodRequest:
    """The request the parsed flags describe; UsageError for a combination that makes no
    sense (images and --manifest, overrides with --manifest, no image at all)."""
    if args.manifest is not None:
        if args.images:
            raise UsageError("give images or --manifest FILE, not both")
        given = [f"--{name}" for name in _OVERRIDES if getattr(args, name)]
        if given:
            raise UsageError(
                f"{', '.join(given)} cannot go with --manifest: put them in the manifest"
            )
        return PodRequest(manifest_json=_read_manifest(args.manifest))
    if not args.images:
        raise UsageError("give at least one image (or --manifest FILE)")
    pairs = pair_commands(args.images, commands)
    taken: set[str] = set()
    volumes = tuple(parse_volume(v, taken) for v in args.volume)
    isolators = dict(parse_isolator(i) for i in args.isolator)
    if "pod" in args.net:  # the old spelling of "a network namespace of its own"
        raise UsageError("--net pod is gone: give a network name, or none for loopback only")
    return PodRequest(
        manifest_json=None,
        apps=tuple((image, tuple(cmd)) for image, cmd in pairs),
        env=parse_env(args.env),
        volumes=volumes,
        isolators=isolators,
        networks=tuple(args.net),
        ports=tuple(parse_publish(p) for p in args.publish),
    )


def _read_manifest(path: str) -> bytes:
    import sys

    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        from ._connect import CommandError

        raise CommandError(f"cannot read the manifest {path}: {e.strerror}") from None
