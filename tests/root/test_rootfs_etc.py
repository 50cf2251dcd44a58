"""Generated /etc/hosts and /etc/resolv.conf content (pure; no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kurma.runtime._etc import (
    hosts_content,
    parse_resolv_conf,
    resolv_conf_content,
    write_pod_etc,
)


def test_hosts_has_localhost_and_the_pod_name() -> None:
    text = hosts_content("web-1.example.com")
    assert text.splitlines() == [
        "127.0.0.1\tlocalhost localhost.localdomain",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "127.0.1.1\tweb-1.example.com web-1",
        "::1\tweb-1.example.com web-1",
    ]


def test_hosts_extra_entries_are_validated() -> None:
    """Extra (address, name) pairs are appended; a name with a newline is refused."""
    assert hosts_content("p", [("169.254.1.2", "db")]).endswith("169.254.1.2\tdb\n")
    with pytest.raises(ValueError):
        hosts_content("p", [("169.254.1.2", "db\n1.2.3.4 evil")])
    with pytest.raises(ValueError):
        hosts_content("p", [("not-an-ip", "db")])


def test_resolv_conf_keeps_at_most_three_nameservers() -> None:
    text = resolv_conf_content(["192.0.2.1", "2001:db8::1", "192.0.2.3", "192.0.2.4"], ["ex.com"])
    assert text == (
        "nameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 192.0.2.3\nsearch ex.com\n"
    )
    assert resolv_conf_content([]) == ""


def test_parse_resolv_conf() -> None:
    """Comments, bad addresses and scope ids are handled; the last search/domain wins."""
    text = (
        "# generated\nnameserver 192.0.2.1 ; x\nnameserver bogus\nnameserver fe80::1%eth0\n"
        "domain a.com\nsearch b.com c.com\noptions ndots:2 edns0\n"
    )
    assert parse_resolv_conf(text) == (
        ["192.0.2.1", "fe80::1"],
        ["b.com", "c.com"],
        ["ndots:2", "edns0"],
    )


def test_write_pod_etc_writes_both_files(tmp_path: Path) -> None:
    files = write_pod_etc(str(tmp_path), "pod-a", ["192.0.2.53"])
    assert "pod-a" in Path(files.hosts).read_text()
    assert Path(files.resolv_conf).read_text() == "nameserver 192.0.2.53\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts", "resolv.conf"]
