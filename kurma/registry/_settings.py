"""Where and how to reach registries: the `registries:` section of kurmad.yml.

In the spirit of containers-registries.conf(5) and docker's daemon.json:

    registries:
      default: docker.io            # the registry of short names (`ubuntu`, `user/app`)
      mirrors:                      # tried in order before the registry itself, for pulls
        docker.io: [mirror.example.com, 10.0.0.5:5000]
      insecure: [10.0.0.5:5000, build.lan]   # plain HTTP allowed (HOST: any port)
      certs_dir: /etc/kurma/certs.d          # certs.d/HOST[:PORT]/{*.crt, client.cert, client.key}

Every other registry is HTTPS only, verified against the system's CAs plus the `*.crt`
files of its `certs.d` folder (docker's layout: `ca.crt`, and `NAME.cert` with `NAME.key`
for a client certificate). docker.io's API lives at registry-1.docker.io, as docker does it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kurma.errors import ValidationError
from kurma.oci import DEFAULT_DOMAIN, Reference, parse_reference

DEFAULT_CERTS_DIR = "/etc/kurma/certs.d"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# A registry as written in the config: DNS name, IPv4 or [IPv6], optional port; no scheme.
_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    r"(?:" + _COMPONENT + r"(?:\." + _COMPONENT + r")*|\[[a-fA-F0-9:]+\])(?::(?P<port>[0-9]{1,5}))?"
)


def api_host(registry: str) -> str:
    """The HOST[:PORT] the API of `registry` is reached at (docker.io: registry-1.docker.io)."""
    return DOCKER_HUB_API if registry.lower() in _DOCKER_HUB_NAMES else registry


def split_host(hostport: str) -> tuple[str, int | None]:
    """`host:port` -> (host, port); IPv6 keeps its brackets off: `[::1]:5000` -> ("::1", 5000)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return hostport, None


@dataclass(frozen=True)
class RegistrySettings:
    """How kurmad reaches registries (module docstring). Build with parse_registry_settings."""

    default: str = DEFAULT_DOMAIN
    # (registry, (mirror, ...)) pairs: a tuple so the settings stay hashable and frozen.
    mirrors: tuple[tuple[str, tuple[str, ...]], ...] = ()
    insecure: frozenset[str] = frozenset()
    certs_dir: str = DEFAULT_CERTS_DIR

    def mirrors_for(self, registry: str) -> tuple[str, ...]:
        """The mirrors of `registry`, in the order they are tried (docker.io's names alike)."""
        wanted = _canonical(registry)
        for name, mirrors in self.mirrors:
            if _canonical(name) == wanted:
                return mirrors
        return ()

    def is_insecure(self, hostport: str) -> bool:
        """Whether plain HTTP is allowed for HOST[:PORT]: listed as is, or its host alone."""
        if hostport in self.insecure:
            return True
        host, port = split_host(hostport)
        return port is not None and (host in self.insecure or f"[{host}]" in self.insecure)

    def qualify(self, text: str) -> Reference:
        """Parse an image reference, putting a short name (no registry in it) on `default`
        instead of docker.io. On docker.io, `ubuntu` is `library/ubuntu`; elsewhere it is
        just `ubuntu`, as podman's unqualified search does."""
        ref = parse_reference(text)
        if _canonical(self.default) == DEFAULT_DOMAIN or _names_registry(text):
            return ref
        return parse_reference(f"{self.default}/{text}")


def _canonical(registry: str) -> str:
    return DEFAULT_DOMAIN if registry.lower() in _DOCKER_HUB_NAMES else registry


def _names_registry(text: str) -> bool:
    """Whether typed text starts with a registry, by docker's rule (kurma.oci._reference)."""
    first, sep, _ = text.partition("/")
    return bool(sep) and (
        first == "localhost" or "." in first or ":" in first or first.lower() != first
    )


def _host(value: object, key: str) -> str:
    if not isinstance(value, str) or _HOST_RE.fullmatch(value) is None:
        raise ValidationError(
            key, f"expected a registry as HOST or HOST:PORT (no scheme, no path), got {value!r}"
        )
    port = _HOST_RE.fullmatch(value).group("port")  # type: ignore[union-attr]
    if port is not None and not 0 < int(port) < 65536:
        raise ValidationError(key, f"port {port} is out of range")
    return value


def parse_registry_settings(doc: Mapping[str, object] | None) -> RegistrySettings:
    """Read the `registries:` section (a mapping, or None for the defaults). ValidationError
    names the key (`registries.mirrors["docker.io"][1]`) and what is wrong with it."""
    if doc is None:
        return RegistrySettings()
    if not isinstance(doc, Mapping):
        raise ValidationError("registries", f"expected a mapping, got {type(doc).__name__}")
    known = {"default", "mirrors", "insecure", "certs_dir"}
    for key in doc:
        if key not in known:
            listed = ", ".join(sorted(known))
            raise ValidationError(f"registries.{key}", f"unknown key (known: {listed})")
    default = _host(doc.get("default", DEFAULT_DOMAIN), "registries.default")

    mirrors_doc = doc.get("mirrors") or {}
    if not isinstance(mirrors_doc, Mapping):
        raise ValidationError("registries.mirrors", "expected a mapping of HOST: [MIRROR, ...]")
    mirrors: list[tuple[str, tuple[str, ...]]] = []
    for registry, listed in mirrors_doc.items():
        key = f"registries.mirrors[{registry!r}]"
        _host(registry, key)
        if isinstance(listed, str):
            listed = [listed]
        if not isinstance(listed, list | tuple):
            raise ValidationError(key, "expected a list of mirrors (HOST or HOST:PORT)")
        mirrors.append((registry, tuple(_host(m, f"{key}[{i}]") for i, m in enumerate(listed))))

    insecure_doc = doc.get("insecure") or []
    if not isinstance(insecure_doc, list | tuple):
        raise ValidationError("registries.insecure", "expected a list of HOST or HOST:PORT")
    insecure = frozenset(_host(h, f"registries.insecure[{i}]") for i, h in enumerate(insecure_doc))

    certs_dir = doc.get("certs_dir", DEFAULT_CERTS_DIR)
    if not isinstance(certs_dir, str) or not certs_dir.startswith("/"):
        raise ValidationError(
            "registries.certs_dir", f"expected an absolute path, got {certs_dir!r}"
        )
    return RegistrySettings(default, tuple(mirrors), insecure, certs_dir)
