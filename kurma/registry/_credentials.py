"""Registry credentials kept as docker keeps them: `~/.docker/config.json`'s `auths`.

    {"auths": {"https://index.docker.io/v1/": {"auth": "<base64 user:password>"},
               "127.0.0.1:5000": {"username": "u", "password": "p"}}}

Keys are normalised as docker normalises them: docker.io (and its other names) is
`https://index.docker.io/v1/`; any other key is matched by its host (`https://HOST/path`
finds HOST). Only `auths` is read and written; other keys of the file (credsStore,
credHelpers, proxies) are kept as they are. The file is written atomically, mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kurma.atomic import write_atomic
from kurma.errors import ValidationError

log = logging.getLogger(__name__)

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry. repr hides the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def config_key(registry: str) -> str:
    """The `auths` key docker uses for `registry` (docker.io: https://index.docker.io/v1/)."""
    host = _hostname(registry)
    return DOCKER_HUB_KEY if host.lower() in _DOCKER_HUB_NAMES else host


def _hostname(key: str) -> str:
    """docker's ConvertToHostname: drop a scheme and anything after the host."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
            break
    return key.split("/", 1)[0]


class DockerConfig:
    """Credentials in a docker `config.json` at `path` (which need not exist yet)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise ValidationError("", f"{self.path} is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ValidationError("", f"{self.path} does not hold a JSON object")
        auths = doc.get("auths", {})
        if not isinstance(auths, dict):
            raise ValidationError("auths", f"{self.path}: expected an object")
        return doc

    def _find(self, auths: dict[str, Any], registry: str) -> str | None:
        wanted = config_key(registry)
        if wanted in auths:
            return wanted
        for key in auths:
            if config_key(key) == wanted:
                return key
        return None

    def get(self, registry: str) -> Credentials | None:
        """The credentials for `registry` (HOST[:PORT] or a docker key), or None."""
        auths = self._load().get("auths", {})
        key = self._find(auths, registry)
        entry = auths.get(key) if key is not None else None
        if not isinstance(entry, dict):
            return None
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError, TypeError):
                raise ValidationError(
                    f"auths[{key!r}].auth", f"{self.path}: not base64 of user:password"
                ) from None
            user, sep, password = decoded.partition(":")
            if not sep:
                raise ValidationError(
                    f"auths[{key!r}].auth", f"{self.path}: expected user:password"
                )
            return Credentials(user, password)
        user, password = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(password, str) and user:
            return Credentials(user, password)
        return None

    __call__ = get  # a DockerConfig is the `credentials` callable RegistryClient takes

    def set(self, registry: str, username: str, password: str) -> None:
        """Store credentials for `registry` (the `auth` form docker writes)."""
        if ":" in username:
            raise ValidationError("username", "a user name cannot contain ':'")
        doc = self._load()
        auths = doc.setdefault("auths", {})
        old = self._find(auths, registry)
        if old is not None:
            del auths[old]
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        auths[config_key(registry)] = {"auth": token}
        self._save(doc)
        log.info("stored credentials for %s as %s", config_key(registry), username)

    def remove(self, registry: str) -> bool:
        """Forget the credentials of `registry`; whether there were any."""
        doc = self._load()
        auths = doc.get("auths", {})
        key = self._find(auths, registry)
        if key is None:
            return False
        del auths[key]
        self._save(doc)
        return True

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(doc, indent="\t") + "\n", mode=0o600)
