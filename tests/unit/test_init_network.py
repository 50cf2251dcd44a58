"""Which settings an interface gets, and the resolver file (no netlink here)."""

from __future__ import annotations

import os
from pathlib import Path

from kurma.init._network import match_interfaces, render_resolv_conf, write_resolv_conf
from kurma.init.config import Dns, Interface


def test_an_exact_name_wins_over_patterns() -> None:
    """eth0 has its own entry; eth1 takes the first matching pattern in config order."""
    static = Interface(addresses=("169.254.1.2/16",))
    dhcp, other = Interface(dhcp=True), Interface(mtu=9000)
    configured = {"eth*": dhcp, "eth0": static, "e*": other}
    found = match_interfaces(["lo", "eth0", "eth1", "enp3s0", "wlan0"], configured)
    assert found == {"eth0": static, "eth1": dhcp, "enp3s0": other}


def test_loopback_only_by_its_own_name() -> None:
    """`*` does not reconfigure lo; an entry named `lo` does."""
    assert match_interfaces(["lo", "veth1"], {"*": Interface(dhcp=True)}) == {
        "veth1": Interface(dhcp=True)
    }
    lo = Interface(mtu=1500)
    assert match_interfaces(["lo"], {"lo": lo}) == {"lo": lo}


def test_glob_classes_match() -> None:
    found = match_interfaces(["eth0", "eth7", "ethx"], {"eth[0-3]": Interface()})
    assert list(found) == ["eth0"]


def test_resolv_conf_lists_search_then_servers(tmp_path: Path) -> None:
    dns = Dns(servers=("169.254.0.53", "fdfe::53"), search=("example.test",))
    path = tmp_path / "etc" / "resolv.conf"
    assert write_resolv_conf(dns, str(path))
    lines = path.read_text().splitlines()
    assert lines[1:] == ["search example.test", "nameserver 169.254.0.53", "nameserver fdfe::53"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert os.listdir(path.parent) == ["resolv.conf"], "no temp file left behind"
    assert render_resolv_conf(dns) == path.read_text()


def test_no_dns_settings_leave_resolv_conf_to_dhcp(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 169.254.0.1\n")
    assert not write_resolv_conf(Dns(), str(path))
    assert path.read_text() == "nameserver 169.254.0.1\n"


def test_iproute_is_imported_without_pyroute2s_package_init() -> None:
    """PID 1's way in: IPRoute and NetlinkError load, pyroute2/__init__.py (which imports
    NDB, IPDB, nftables, ... and sqlite3) never runs. In a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys; from kurma.init._network import import_without_package_init as f; f(); "
        "from pyroute2.iproute.linux import IPRoute; "
        "from pyroute2.netlink.exceptions import NetlinkError; "
        "print(sorted(m for m in ('pyroute2.ndb.main', 'pyroute2.ipdb', 'sqlite3') "
        "if m in sys.modules), hasattr(sys.modules['pyroute2'], 'NDB'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
