"""The appc string types and value checks of kurma.aci._names."""

from __future__ import annotations

import pytest

from kurma.aci import is_ac_identifier, is_ac_name
from kurma.aci._names import (
    is_env_name,
    is_http_url,
    is_image_id,
    is_ipv4,
    is_rfc3339,
    semver_core,
)

GOOD_IDENTIFIERS = [
    "database",
    "example.com/database",
    "example.com/user/app_v1",
    "sub-domain.example.com/org/product/release",
    "a",
    "0",
    "coreos.com/etcd",
]
BAD_IDENTIFIERS = [
    "",
    "Database",
    "example.com/",
    "/db",
    "-db",
    "db-",
    "a//b",
    "a..b",
    "a b",
    "a\n",
    "é",
    "a+b",
    "a:b",
    "a_",
    "a__b",
    "\uff41",
    # types.md lists this as an example, but its own RE2 pattern (which we follow, like the
    # brief) allows no two separators in a row; actool, checking characters and edges only,
    # accepts it.
    "example.com/~user/app_v1",
]


@pytest.mark.parametrize("s", GOOD_IDENTIFIERS)
def test_ac_identifier_accepts(s: str) -> None:
    """The spec's examples and single characters are AC Identifiers."""
    assert is_ac_identifier(s)


@pytest.mark.parametrize("s", BAD_IDENTIFIERS)
def test_ac_identifier_rejects(s: str) -> None:
    """Empty, uppercase, doubled or edge separators, other characters, a trailing newline."""
    assert not is_ac_identifier(s)


@pytest.mark.parametrize("s", ["database", "product-database", "a", "a1-b2-c3"])
def test_ac_name_accepts(s: str) -> None:
    """Lowercase alphanumerics joined by single hyphens."""
    assert is_ac_name(s)


@pytest.mark.parametrize(
    "s", ["", "a.b", "a/b", "a_b", "-a", "a-", "a--b", "A", "a\n", "a~b", "\u0661"]
)
def test_ac_name_rejects(s: str) -> None:
    """AC Names have no `._~/`, no edge or doubled hyphens, no Unicode digits."""
    assert not is_ac_name(s)


def test_names_reject_non_strings() -> None:
    """A non-string is never a name (the parsers may pass decoded JSON through)."""
    assert not is_ac_identifier(1)  # type: ignore[arg-type]
    assert not is_ac_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        ("PATH", True),
        ("_x", True),
        ("a.b-c", True),
        ("A1", True),
        ("1A", False),
        ("", False),
        ("A B", False),
        ("A=B", False),
        ("-A", False),
        ("A\n", False),
    ],
)
def test_env_name(s: str, ok: bool) -> None:
    """`^[A-Za-z_][A-Za-z_0-9.-]*$`."""
    assert is_env_name(s) is ok


@pytest.mark.parametrize(
    ("s", "core"),
    [
        ("0.8.11", (0, 8, 11)),
        ("1.0.0-rc.1+git.abc", (1, 0, 0)),
        ("0.8.11+git", (0, 8, 11)),
        ("0.8", None),
        ("01.2.3", None),
        ("1.2.3-", None),
        ("v1.2.3", None),
        ("1.2.3\n", None),
    ],
)
def test_semver(s: str, core: tuple[int, int, int] | None) -> None:
    """SemVer 2.0.0: three numbers without leading zeros, optional pre-release and build."""
    assert semver_core(s) == core


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        ("2014-10-27T19:32:27.67021798Z", True),
        ("2015-05-18T13:49:28.351729952-04:00", True),
        ("2016-02-29T00:00:00Z", True),
        ("2014-10-27 19:32:27Z", False),
        ("2014-10-27T19:32:27", False),
        ("2015-02-29T00:00:00Z", False),
        ("2014-13-01T00:00:00Z", False),
        ("2014-10-27T24:00:00Z", False),
        ("2014-10-27T19:32:27+24:00", False),
        ("2014-10-27", False),
    ],
)
def test_rfc3339(s: str, ok: bool) -> None:
    """RFC 3339 date-time with `T`, a zone, and real calendar values."""
    assert is_rfc3339(s) is ok


@pytest.mark.parametrize(
    ("s", "ok"),
    [
        ("https://example.com", True),
        ("http://example.com:8080/docs?x=1", True),
        ("HTTPS://EXAMPLE.COM", True),
        ("ftp://example.com", False),
        ("http:docs", False),
        ("example.com", False),
        ("http://", False),
        ("http://exa mple.com", False),
        ("http://example.com:99999", False),
        ("", False),
    ],
)
def test_http_url(s: str, ok: bool) -> None:
    """Absolute http(s) URLs with a host."""
    assert is_http_url(s) is ok


def test_image_id() -> None:
    """`sha512-` and 128 lowercase hex digits, nothing else."""
    assert is_image_id("sha512-" + "0a" * 64)
    for bad in ["sha512-" + "0A" * 64, "sha512-" + "0a" * 16, "sha256-" + "0a" * 64, "sha512-"]:
        assert not is_image_id(bad)


@pytest.mark.parametrize(
    ("s", "ok"), [("203.0.113.23", True), ("::1", False), ("1.2.3", False), ("01.2.3.4", False)]
)
def test_ipv4(s: str, ok: bool) -> None:
    """Dotted-quad IPv4 only."""
    assert is_ipv4(s) is ok
