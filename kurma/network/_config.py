"""Network configurations: CNI 1.0 `.conflist` files (and single-plugin `.conf` files).

A `NetworkConfig` keeps the document's bytes (`raw`) next to what Kurma reads from it, so
that an attachment can store exactly the configuration its ADD ran with and DEL can run
again from it after the file changed or vanished. A `.conf` file (one plugin configuration)
is wrapped into a list, as libcni does; its `raw` is then the wrapped conflist.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidNetworkConfig, NetworkNotFound

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("1.0.0", "0.4.0")
"""The spec versions Kurma runs (0.4.0 is the first with CHECK)."""

LIST_SUFFIX = ".conflist"
SINGLE_SUFFIX = ".conf"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")


@dataclass(frozen=True)
class PluginConfig:
    """One plugin of a chain: its `type` (the binary's file name) and its whole object."""

    type: str
    conf: Mapping[str, Any]

    @property
    def capabilities(self) -> frozenset[str]:
        """The runtime capabilities this plugin declares (`"capabilities": {"x": true}`)."""
        caps = self.conf.get("capabilities") or {}
        return frozenset(k for k, v in caps.items() if v is True)


@dataclass(frozen=True)
class NetworkConfig:
    """A validated CNI network configuration list."""

    name: str
    cni_version: str
    plugins: tuple[PluginConfig, ...]
    disable_check: bool
    raw: bytes
    source: str

    def to_json(self) -> dict[str, Any]:
        """The document itself (parsed from `raw`)."""
        return dict(json.loads(self.raw))


def is_valid_name(name: str) -> bool:
    """True if `name` is a valid CNI network name (alphanumerics, `_`, `.`, `-`)."""
    return bool(_NAME.match(name))


def parse_network_config(
    data: bytes, source: str = "<config>", *, single: bool = False
) -> NetworkConfig:
    """Validate a conflist (or with `single`, a one-plugin `.conf`) given as bytes.

    Raises InvalidNetworkConfig naming `source` and the offending key.
    """

    def bad(key: str, message: str) -> InvalidNetworkConfig:
        return InvalidNetworkConfig(source, key, message)

    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad("", f"not valid UTF-8 JSON: {e}") from None
    if not isinstance(doc, dict):
        raise bad("", "must be a JSON object")
    if single:
        if "plugins" in doc:
            raise bad("plugins", "a .conf file holds one plugin; a list belongs in a .conflist")
        inner = {k: v for k, v in doc.items() if k not in ("name", "cniVersion")}
        doc = {"cniVersion": doc.get("cniVersion"), "name": doc.get("name"), "plugins": [inner]}
        data = json.dumps(doc, separators=(",", ":")).encode()

    version = doc.get("cniVersion")
    if not isinstance(version, str):
        raise bad("cniVersion", "missing or not a string")
    if version not in SUPPORTED_VERSIONS:
        raise bad("cniVersion", f"{version!r} is not supported (use one of {SUPPORTED_VERSIONS})")
    name = doc.get("name")
    if not isinstance(name, str) or not is_valid_name(name):
        raise bad("name", f"{name!r} is not a valid network name (letters, digits, _ . -)")
    disable = doc.get("disableCheck", False)
    if not isinstance(disable, bool):
        raise bad("disableCheck", "must be true or false")
    raw_plugins = doc.get("plugins")
    if not isinstance(raw_plugins, list) or not raw_plugins:
        raise bad("plugins", "must be a non-empty list")
    plugins = []
    for i, p in enumerate(raw_plugins):
        key = f"plugins[{i}]"
        if not isinstance(p, dict):
            raise bad(key, "must be an object")
        ptype = p.get("type")
        if not isinstance(ptype, str) or not is_plain_type(ptype):
            raise bad(f"{key}.type", f"{ptype!r} is not a plugin's plain file name")
        caps = p.get("capabilities", {})
        if not isinstance(caps, dict):
            raise bad(f"{key}.capabilities", "must be an object")
        plugins.append(PluginConfig(ptype, p))
    return NetworkConfig(name, version, tuple(plugins), disable, bytes(data), source)


def is_plain_type(ptype: str) -> bool:
    """True if a plugin type can only name a file directly inside a plugin directory."""
    return bool(ptype) and "/" not in ptype and "\0" not in ptype and ptype not in (".", "..")


def load_network_file(path: str | os.PathLike[str]) -> NetworkConfig:
    """Read one `.conflist` or `.conf` file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvalidNetworkConfig(path, "", f"cannot read: {e.strerror}") from None
    return parse_network_config(data, path, single=path.endswith(SINGLE_SUFFIX))


def load_networks(
    directory: str | os.PathLike[str], *, strict: bool = True
) -> dict[str, NetworkConfig]:
    """Every network in `directory` (`*.conflist`, `*.conf`), by name, in file-name order.

    A bad file, or a second file with a name already taken, raises InvalidNetworkConfig; with
    `strict=False` it is skipped with a warning. A missing directory holds no networks.
    """
    directory = os.fspath(directory)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return {}
    networks: dict[str, NetworkConfig] = {}
    for fname in names:
        if fname.startswith(".") or not fname.endswith((LIST_SUFFIX, SINGLE_SUFFIX)):
            continue
        path = os.path.join(directory, fname)
        try:
            net = load_network_file(path)
            if net.name in networks:
                first = networks[net.name].source
                raise InvalidNetworkConfig(path, "name", f"network {net.name!r} is also in {first}")
        except InvalidNetworkConfig as e:
            if strict:
                raise
            log.warning("skipping network configuration: %s", e)
            continue
        networks[net.name] = net
    return networks


def get_network(networks: Mapping[str, NetworkConfig], name: str) -> NetworkConfig:
    """The network called `name`; raises NetworkNotFound listing the known ones."""
    try:
        return networks[name]
    except KeyError:
        known = ", ".join(sorted(networks)) or "none"
        raise NetworkNotFound(f"no network named {name!r} (known: {known})") from None
