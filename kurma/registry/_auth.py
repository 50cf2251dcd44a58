"""Registry auth: `WWW-Authenticate` challenges, and a cache of bearer tokens.

The distribution spec's flow: a request goes out anonymously; a 401 carries a challenge,
`Basic realm="..."` (send the credentials as HTTP basic) or `Bearer realm="...",
service="...",scope="..."` (fetch a token from the realm, with basic auth to the realm when
there are credentials, and send it as `Authorization: Bearer`). A token is good for one
scope (`repository:NAME:pull`) until it expires (`expires_in`, 60 s when not said).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

# auth-param = token "=" ( token / quoted-string ), RFC 7235.
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
DEFAULT_EXPIRY = 60.0
# A token is refreshed this long before it expires, so it does not run out in flight.
_MARGIN = 5.0


@dataclass(frozen=True)
class Challenge:
    """One parsed `WWW-Authenticate` challenge: scheme (`basic`, `bearer`) and parameters."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


def parse_challenge(header: str | None) -> Challenge | None:
    """The Basic or Bearer challenge of a `WWW-Authenticate` header (Bearer preferred when
    both are offered, as docker does), or None when there is neither."""
    if not header:
        return None
    found: dict[str, Challenge] = {}
    # Challenges are `Scheme params, Scheme params`: split before each scheme name.
    for part in re.split(r",?\s*(?=\b(?:Basic|Bearer)\b\s)", header, flags=re.IGNORECASE):
        scheme, _, rest = part.strip().partition(" ")
        if scheme.lower() not in ("basic", "bearer"):
            continue
        params = []
        for match in _PARAM.finditer(rest):
            value = match.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params.append((match.group(1).lower(), value))
        found.setdefault(scheme.lower(), Challenge(scheme.lower(), tuple(params)))
    return found.get("bearer") or found.get("basic")


class TokenCache:
    """Bearer tokens by (realm, service, scope, user), until they expire. Thread-safe; the
    `fetching` lock lets one thread fetch a token while others wait for it."""

    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.fetching = threading.Lock()

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
            if entry is None:
                return None
            token, expires = entry
            if self._clock() >= expires:  # type: ignore[operator]
                del self._tokens[key]
                return None
            return token

    def put(self, key: tuple[str, ...], token: str, expires_in: float) -> None:
        lifetime = max(0.0, expires_in - min(_MARGIN, expires_in / 10))
        with self._lock:
            self._tokens[key] = (token, self._clock() + lifetime)  # type: ignore[operator]

    def drop(self, key: tuple[str, ...], token: str) -> None:
        """Forget `token` (refused by the registry), unless another thread replaced it."""
        with self._lock:
            if self._tokens.get(key, ("",))[0] == token:
                del self._tokens[key]
