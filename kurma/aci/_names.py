"""The appc string types (spec/types.md) and the small value checks the manifests share.

Every check here is a pure predicate over `str`; the manifest parsers turn a `False` into a
`ValidationError` naming the field. Patterns use `re.fullmatch` with explicit ASCII classes:
Python's `$` also matches before a trailing newline and `\\d` matches any Unicode digit, both of
which would let through names the spec's RE2 patterns reject.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import urllib.parse

SPEC_VERSION = (0, 8, 11)
"""The appc version we implement: acVersion may not exceed it (types.md, AC Version Type)."""

_AC_IDENTIFIER = re.compile(r"[a-z0-9]+(?:[-._~/][a-z0-9]+)*")
_AC_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9.-]*")
_IMAGE_ID = re.compile(r"sha512-[0-9a-f]{128}")
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"({_NUM})\.({_NUM})\.({_NUM})(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)

VALID_OS_ARCH: dict[str, tuple[str, ...]] = {
    "linux": (
        "amd64",
        "i386",
        "aarch64",
        "aarch64_be",
        "armv6l",
        "armv7l",
        "armv7b",
        "ppc64",
        "ppc64le",
        "s390x",
    ),
    "freebsd": ("amd64", "i386", "arm"),
    "darwin": ("x86_64", "i386"),
}
"""The os -> arch combinations of the spec's `types.ValidOSArch` table."""

AC_IDENTIFIER_RULE = "lowercase letters, digits and -._~/, starting and ending alphanumeric"
AC_NAME_RULE = "lowercase letters, digits and -, starting and ending alphanumeric"


def is_ac_identifier(s: str) -> bool:
    """True if `s` is an AC Identifier: `^[a-z0-9]+([-._~/][a-z0-9]+)*$`."""
    return isinstance(s, str) and _AC_IDENTIFIER.fullmatch(s) is not None


def is_ac_name(s: str) -> bool:
    """True if `s` is an AC Name: `^[a-z0-9]+([-][a-z0-9]+)*$`."""
    return isinstance(s, str) and _AC_NAME.fullmatch(s) is not None


def is_env_name(s: str) -> bool:
    """True if `s` may name an environment variable (POSIX plus `.` and `-`, per aci.md)."""
    return _ENV_NAME.fullmatch(s) is not None


def is_image_id(s: str) -> bool:
    """True if `s` is a full Image ID: `sha512-` and the 128 lowercase hex digits of a digest."""
    return _IMAGE_ID.fullmatch(s) is not None


def semver_core(s: str) -> tuple[int, int, int] | None:
    """The (major, minor, patch) of a SemVer 2.0.0 string, or None if `s` is not one."""
    m = _SEMVER.fullmatch(s)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def is_rfc3339(s: str) -> bool:
    """True if `s` is an RFC 3339 `date-time` with the `T` separator (types.md, Timestamps)."""
    if _RFC3339.fullmatch(s) is None:
        return False
    try:
        datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:  # month 13, Feb 30, hour 24, offset 24:00 ...
        return False
    return True


def is_http_url(s: str) -> bool:
    """True if `s` is an absolute URL with scheme http or https and a host."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        return False
    try:
        parts = urllib.parse.urlsplit(s)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def is_ipv4(s: str) -> bool:
    """True if `s` is an IPv4 address in dotted-quad notation (pods.md, `hostIP`)."""
    try:
        ipaddress.IPv4Address(s)
    except ValueError:
        return False
    return True
