"""The pod identity endpoint's HMAC: HMAC-SHA512 with one secret key per runtime.

ace.md: `pod/hmac/sign` returns "a base64 hmac-sha512 signature" and `pod/hmac/verify`
checks a signature "from another pod" given that pod's UUID. A signature must verify only
for the UUID that made it, so the UUID is part of the signed message. The key outlives
kurmad restarts (pods are re-adopted and keep their signatures valid) when it is kept in a
file: `load_or_create_key` makes that file once, mode 0600, and never rewrites it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import uuid as uuidlib
from pathlib import Path

from ...atomic import write_atomic

KEY_BYTES = 64  # the SHA-512 block size is 128; 64 random bytes is the digest's strength
# Domain separation: these bytes and the fixed-width UUID come before the content, so no
# (uuid, content) pair can collide with another and no other use of the key can forge one.
_DOMAIN = b"kurma acMetadata v1 pod hmac\x00"


def canonical_uuid(value: str) -> str:
    """The canonical lowercase form of a UUID; raises ValueError if `value` is not one."""
    return str(uuidlib.UUID(value.strip()))


class PodSigner:
    """Signs content on behalf of a pod UUID and checks such signatures."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            key = secrets.token_bytes(KEY_BYTES)
        if len(key) < 32:
            raise ValueError(f"HMAC key must be at least 32 bytes, got {len(key)}")
        self._key = bytes(key)

    def _digest(self, pod_uuid: str, content: bytes) -> bytes:
        message = _DOMAIN + canonical_uuid(pod_uuid).encode("ascii") + b"\x00" + content
        return hmac.new(self._key, message, hashlib.sha512).digest()

    def sign(self, pod_uuid: str, content: bytes) -> str:
        """The base64 (standard alphabet, padded) HMAC-SHA512 of `content` for `pod_uuid`."""
        return base64.b64encode(self._digest(pod_uuid, content)).decode("ascii")

    def verify(self, pod_uuid: str, content: bytes, signature: str | bytes) -> bool:
        """Whether `signature` was made by `sign(pod_uuid, content)`; never raises on bad input."""
        try:
            expected = self._digest(pod_uuid, content)
            if isinstance(signature, str):
                signature = signature.encode("ascii")
            given = base64.b64decode(signature.strip(), validate=True)
        except (ValueError, binascii.Error, UnicodeError):
            return False
        return hmac.compare_digest(expected, given)


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The key stored at `path`, made (random, mode 0600) if the file does not exist yet.

    Creation links a fully written temporary file into place, so a crash or a concurrent
    caller never sees a short key: whoever links first wins and the other reads its key.
    """
    target = Path(path)
    with contextlib.suppress(FileNotFoundError):
        return _read_key(target)
    write_atomic(target, secrets.token_bytes(KEY_BYTES), 0o600, replace=False)
    return _read_key(target)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < 32:
        raise ValueError(f"{path}: HMAC key file holds {len(key)} bytes, need at least 32")
    return key
