"""kurma.network without root: configurations, results, records, and the chain protocol
(run against recording fake plugins, so every environment variable and stdin is checked)."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from kurma.errors import KurmaError, NetworkError, ValidationError
from kurma.network import (
    DNS,
    Attachment,
    AttachmentStore,
    DetachFailed,
    InvalidNetworkConfig,
    NetworkNotFound,
    PluginError,
    PluginNotFound,
    Plugins,
    PortMapping,
    Result,
    attach,
    check,
    detach,
    format_cni_args,
    get_network,
    hosts_entries,
    load_networks,
    parse_network_config,
    render_resolv_conf,
)

RESULT_10 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "br0", "mac": "aa:bb:cc:dd:ee:01"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/x"},
    ],
    "ips": [
        {"address": "169.254.1.5/24", "gateway": "169.254.1.1", "interface": 1},
        {"address": "fdfe:1::5/64", "gateway": "fdfe:1::1", "interface": 1},
        {"address": "169.254.9.1/24", "interface": 0},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fdfe::/16", "gw": "fdfe:1::1"}],
    "dns": {
        "nameservers": ["169.254.1.1"],
        "domain": "x.test",
        "search": ["a.test"],
        "options": ["ndots:2"],
    },
    "mtu": 1400,
}


def conflist(**over: Any) -> bytes:
    doc: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "net1",
        "plugins": [{"type": "bridge"}, {"type": "portmap"}],
    }
    doc.update(over)
    return json.dumps(doc).encode()


# --- configurations ----------------------------------------------------------------------


def test_a_conflist_parses_and_keeps_its_bytes() -> None:
    data = conflist(disableCheck=True)
    net = parse_network_config(data, "f.conflist")
    assert (net.name, net.cni_version, net.disable_check) == ("net1", "1.0.0", True)
    assert [p.type for p in net.plugins] == ["bridge", "portmap"]
    assert net.raw == data
    assert parse_network_config(conflist(cniVersion="0.4.0")).cni_version == "0.4.0"


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        (b"{", ""),
        (b"[]", ""),
        (conflist(cniVersion="0.3.1"), "cniVersion"),
        (conflist(cniVersion=None), "cniVersion"),
        (conflist(name="a b"), "name"),
        (conflist(name=""), "name"),
        (conflist(plugins=[]), "plugins"),
        (conflist(plugins={"type": "x"}), "plugins"),
        (conflist(plugins=[{"type": "bridge"}, "x"]), "plugins[1]"),
        (conflist(plugins=[{"type": "../../bin/sh"}]), "plugins[0].type"),
        (conflist(plugins=[{"type": ".."}]), "plugins[0].type"),
        (conflist(plugins=[{"nope": 1}]), "plugins[0].type"),
        (conflist(plugins=[{"type": "x", "capabilities": []}]), "plugins[0].capabilities"),
        (conflist(disableCheck="yes"), "disableCheck"),
    ],
)
def test_a_bad_conflist_names_the_file_and_key(doc: bytes, key: str) -> None:
    with pytest.raises(InvalidNetworkConfig) as info:
        parse_network_config(doc, "/etc/kurma/net.d/bad.conflist")
    assert info.value.key == key
    assert str(info.value).startswith("/etc/kurma/net.d/bad.conflist")
    assert isinstance(info.value, ValueError) and isinstance(info.value, NetworkError)
    assert not isinstance(info.value, ValidationError)


def test_load_networks_reads_conflists_and_wraps_conf_files(tmp_path: Path) -> None:
    (tmp_path / "10-a.conflist").write_bytes(conflist(name="a"))
    single = {"cniVersion": "1.0.0", "name": "b", "type": "ptp", "ipam": {"type": "host-local"}}
    (tmp_path / "20-b.conf").write_text(json.dumps(single))
    (tmp_path / "README").write_text("not a network")
    nets = load_networks(tmp_path)
    assert sorted(nets) == ["a", "b"]
    b = nets["b"]
    assert [p.type for p in b.plugins] == ["ptp"]
    assert b.plugins[0].conf == {"type": "ptp", "ipam": {"type": "host-local"}}
    assert parse_network_config(b.raw).plugins == b.plugins  # raw is the wrapped list
    assert load_networks(tmp_path / "missing") == {}
    assert get_network(nets, "a") is nets["a"]
    with pytest.raises(NetworkNotFound, match="known: a, b"):
        get_network(nets, "c")


def test_load_networks_refuses_or_skips_bad_and_duplicate_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "10-a.conflist").write_bytes(conflist(name="a"))
    (tmp_path / "20-a.conflist").write_bytes(conflist(name="a"))
    (tmp_path / "30-bad.conflist").write_text("{")
    (tmp_path / "40-c.conflist").write_bytes(conflist(name="c"))
    with pytest.raises(InvalidNetworkConfig) as info:
        load_networks(tmp_path)
    assert info.value.source.endswith("20-a.conflist") and info.value.key == "name"
    assert "10-a.conflist" in str(info.value)
    assert sorted(load_networks(tmp_path, strict=False)) == ["a", "c"]
    assert "30-bad.conflist" in caplog.text


def test_the_errors_belong_to_the_network_branch() -> None:
    err = PluginError("bridge", 11, "try again", "busy")
    assert isinstance(err, NetworkError) and isinstance(err, KurmaError)
    assert str(err) == "CNI plugin 'bridge' failed (code 11): try again (busy)"
    assert isinstance(PluginNotFound("x", ("/a",)), PluginError)


# --- results, DNS, hosts ------------------------------------------------------------------


def test_a_result_parses_and_round_trips_exactly() -> None:
    r = Result.from_json(RESULT_10)
    assert r.interfaces[1].sandbox == "/run/netns/x"
    assert r.ips[0].address == ipaddress.ip_interface("169.254.1.5/24")
    assert r.ips[0].gateway == ipaddress.ip_address("169.254.1.1")
    assert r.ips[0].interface == 1
    assert r.routes[1].gw == ipaddress.ip_address("fdfe:1::1")
    assert r.dns.search == ("a.test",)
    assert r.to_json() == RESULT_10  # unknown fields (mtu) kept for the next plugin
    assert Result.from_json(r.to_json()) == r
    hand = Result(r.cni_version, r.interfaces, r.ips, r.routes, r.dns)
    assert Result.from_json(hand.to_json()) == r
    assert r.first_ip(4) == ipaddress.ip_address("169.254.1.5")  # not the host side's
    assert r.first_ip(6) == ipaddress.ip_address("fdfe:1::5")


def test_a_0_4_0_result_parses() -> None:
    r = Result.from_json(
        {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "169.254.3.2/16"}]}
    )
    assert r.first_ip(4) == ipaddress.ip_address("169.254.3.2") and r.dns.is_empty


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"ips": [{"address": "nope"}]},
        {"ips": [{"address": "169.254.1.1/16", "interface": "0"}]},
        {"interfaces": [{}]},
        {"dns": {"nameservers": "1.2.3.4"}},
    ],
)
def test_a_malformed_result_is_a_value_error(bad: Any) -> None:
    with pytest.raises(ValueError):
        Result.from_json(bad)


def test_resolv_conf_and_hosts_from_a_result() -> None:
    r = Result.from_json(RESULT_10)
    assert render_resolv_conf(r.dns) == ("nameserver 169.254.1.1\nsearch a.test\noptions ndots:2\n")
    assert render_resolv_conf(DNS(("fdfe::53",), domain="d.test")) == (
        "nameserver fdfe::53\ndomain d.test\n"
    )
    assert render_resolv_conf(DNS()) == ""
    assert hosts_entries(r, "web", ["web.x.test"]) == [
        "169.254.1.5\tweb web.x.test",
        "fdfe:1::5\tweb web.x.test",
    ]


# --- port mappings, arguments, records ---------------------------------------------------


def test_port_mappings() -> None:
    assert PortMapping.parse("8080:80") == PortMapping(8080, 80)
    assert PortMapping.parse("169.254.1.1:53:53/udp") == PortMapping(53, 53, "udp", "169.254.1.1")
    assert PortMapping.parse("[fdfe::1]:443:8443") == PortMapping(443, 8443, "tcp", "fdfe::1")
    assert PortMapping(1, 2, "udp", "::1").to_json() == {
        "hostPort": 1,
        "containerPort": 2,
        "protocol": "udp",
        "hostIP": "::1",
    }
    for bad in ("80", "0:80", "70000:80", "1:2/icmp", "x:1:2"):
        with pytest.raises(ValueError):
            PortMapping.parse(bad)


def test_cni_args() -> None:
    assert format_cni_args([]) == ""
    assert format_cni_args([("A", "1")]) == "IgnoreUnknown=1;A=1"
    assert format_cni_args([("IgnoreUnknown", "0"), ("A", "1")]) == "IgnoreUnknown=0;A=1"
    with pytest.raises(ValueError):
        format_cni_args([("A", "1;B=2")])


def test_the_store_round_trips_and_lists_by_container(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "att")
    assert store.list() == []
    net = parse_network_config(conflist())
    a = Attachment(
        net.name,
        net.raw,
        "c1",
        "/run/netns/c1",
        "eth0",
        (PortMapping(8080, 80),),
        (("K", "v"),),
        {"mac": "aa:bb:cc:dd:ee:ff"},
        Result.from_json(RESULT_10),
    )
    b = Attachment(net.name, net.raw, "c2", "/run/netns/c2", "eth0")
    store.save(a)
    store.save(b)
    assert store.list() == [a, b]
    assert store.list("c2") == [b] and store.get("c2", "net1", "eth0") == b
    assert not store.list("c2")[0].complete
    assert a.runtime_config() == {
        "mac": "aa:bb:cc:dd:ee:ff",
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    }
    (tmp_path / "att" / "junk@net1@eth0.json").write_text("{")
    assert store.list() == [a, b]  # an unreadable record is skipped (and logged)
    store.remove(a)
    store.remove(a)
    assert store.list() == [b]
    assert oct(os.stat(tmp_path / "att").st_mode & 0o777) == "0o700"


# --- the chain protocol, against recording fake plugins ----------------------------------

FAKE = f"""#!{sys.executable}
import json, os, sys
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(conf["log"], "a") as f:
    f.write(json.dumps({{"type": os.path.basename(sys.argv[0]), "env": env, "conf": conf}}) + "\\n")
cmd = env["CNI_COMMAND"]
if cmd in conf.get("failOn", []):
    print(json.dumps({{"cniVersion": "1.0.0", "code": 11, "msg": "no " + cmd, "details": "d"}}))
    sys.exit(1)
if cmd == "ADD":
    empty = {{"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}}
    prev = conf.get("prevResult") or empty
    idx = len(prev["interfaces"])
    prev["interfaces"].append({{"name": conf["name"] + str(idx), "sandbox": env["CNI_NETNS"]}})
    prev["ips"].append({{"address": "169.254.7.%d/24" % (idx + 2), "interface": idx}})
    print(json.dumps(prev))
"""


@pytest.fixture
def fakes(tmp_path: Path) -> tuple[Plugins, Path]:
    """Plugins `fa`, `fb`, `fc` that log every call; the log's path."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("fa", "fb", "fc"):
        (bindir / name).write_text(FAKE)
        (bindir / name).chmod(0o755)
    (bindir / "notexec").write_text(FAKE)
    return Plugins([str(tmp_path / "empty"), str(bindir)], timeout=20), tmp_path / "calls.log"


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def fake_net(log: Path, *extra: dict[str, Any], **over: Any) -> Any:
    plugins = [
        {"type": "fa", "log": str(log)},
        {"type": "fb", "log": str(log), "capabilities": {"portMappings": True, "mac": False}},
        *extra,
    ]
    return parse_network_config(conflist(name="fake", plugins=plugins, **over), "fake.conflist")


def test_add_chains_results_and_sets_the_environment(
    fakes: tuple[Plugins, Path], tmp_path: Path
) -> None:
    plugins, log = fakes
    store = AttachmentStore(tmp_path / "att")
    att = attach(
        fake_net(log),
        "c-1",
        "/run/netns/p",
        "net0",
        port_mappings=[PortMapping(80, 8)],
        args=[("POD", "web")],
        capabilities={"mac": "aa:bb:cc:dd:ee:ff"},
        plugins=plugins,
        store=store,
    )
    first, second = calls(log)
    assert first["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c-1",
        "CNI_NETNS": "/run/netns/p",
        "CNI_IFNAME": "net0",
        "CNI_ARGS": "IgnoreUnknown=1;POD=web",
        "CNI_PATH": os.pathsep.join(plugins.paths),
    }
    assert first["conf"]["name"] == "fake" and first["conf"]["cniVersion"] == "1.0.0"
    assert "prevResult" not in first["conf"] and "runtimeConfig" not in first["conf"]
    assert second["conf"]["prevResult"]["ips"] == [{"address": "169.254.7.2/24", "interface": 0}]
    assert second["conf"]["runtimeConfig"] == {  # only what it declares true
        "portMappings": [{"hostPort": 80, "containerPort": 8, "protocol": "tcp"}]
    }
    assert att.result is not None and len(att.result.ips) == 2
    assert store.list() == [att]


def test_del_runs_in_reverse_with_the_last_result_and_collects_errors(
    fakes: tuple[Plugins, Path], tmp_path: Path
) -> None:
    plugins, log = fakes
    store = AttachmentStore(tmp_path / "att")
    net = fake_net(log, {"type": "fc", "log": str(log), "failOn": ["DEL"]})
    att = attach(net, "c-2", "/nonexistent/netns", "eth0", plugins=plugins, store=store)
    log.unlink()
    with pytest.raises(DetachFailed) as info:
        detach(att, plugins=plugins, store=store)
    assert [e.plugin for e in info.value.errors] == ["fc"]
    assert "'fc'" in str(info.value)
    got = calls(log)
    assert [c["type"] for c in got] == ["fc", "fb", "fa"]  # all ran despite fc's failure
    assert all(c["env"]["CNI_COMMAND"] == "DEL" for c in got)
    assert all(c["env"]["CNI_NETNS"] == "" for c in got)  # gone: empty, as the spec allows
    assert all(c["conf"]["prevResult"] == att.result.to_json() for c in got)  # type: ignore[union-attr]
    assert store.list() == [att]  # kept for a retry


def test_a_failed_add_is_undone_in_reverse_and_forgotten(
    fakes: tuple[Plugins, Path], tmp_path: Path
) -> None:
    plugins, log = fakes
    store = AttachmentStore(tmp_path / "att")
    net = fake_net(log, {"type": "fc", "log": str(log), "failOn": ["ADD"]}, {"type": "fa"})
    with pytest.raises(PluginError) as info:
        attach(net, "c-3", "/run/netns/p", "eth0", plugins=plugins, store=store)
    e = info.value
    assert (e.plugin, e.code, e.msg, e.details) == ("fc", 11, "no ADD", "d")
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls(log)] == [
        ("fa", "ADD"),
        ("fb", "ADD"),
        ("fc", "ADD"),
        ("fc", "DEL"),
        ("fb", "DEL"),
        ("fa", "DEL"),
    ]
    assert calls(log)[-1]["conf"]["prevResult"]["ips"][1]["address"] == "169.254.7.3/24"
    assert store.list() == []


def test_a_failed_undo_keeps_the_record(fakes: tuple[Plugins, Path], tmp_path: Path) -> None:
    plugins, log = fakes
    store = AttachmentStore(tmp_path / "att")
    net = fake_net(log, {"type": "fc", "log": str(log), "failOn": ["ADD", "DEL"]})
    with pytest.raises(PluginError) as info:
        attach(net, "c-4", "/run/netns/p", "eth0", plugins=plugins, store=store)
    assert [x.plugin for x in info.value.cleanup_errors] == ["fc"]
    (pending,) = store.list()
    assert not pending.complete  # the reconcile will DEL it


def test_check_runs_in_order_unless_disabled(fakes: tuple[Plugins, Path]) -> None:
    plugins, log = fakes
    att = attach(fake_net(log), "c-5", "/run/netns/p", "eth0", plugins=plugins)
    log.unlink()
    check(att, plugins=plugins)
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls(log)] == [
        ("fa", "CHECK"),
        ("fb", "CHECK"),
    ]
    log.unlink()
    off = attach(fake_net(log, disableCheck=True), "c-6", "/p", "eth0", plugins=plugins)
    log.unlink()
    check(off, plugins=plugins)
    assert calls(log) == []


def test_plugins_are_found_only_as_plain_executables(fakes: tuple[Plugins, Path]) -> None:
    plugins, _ = fakes
    assert plugins.find("fa").endswith("/bin/fa")
    for bad in ("../bin/fa", "/bin/sh", "notexec", "missing", ""):
        with pytest.raises(PluginNotFound):
            plugins.find(bad)


def test_a_plugin_that_hangs_is_killed_and_one_that_babbles_is_an_error(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "hang").write_text("#!/bin/sh\nsleep 30 & sleep 30\n")
    (bindir / "babble").write_text("#!/bin/sh\necho oops >&2\nexit 3\n")
    (bindir / "text").write_text("#!/bin/sh\necho hello\n")
    for p in bindir.iterdir():
        p.chmod(0o755)
    plugins = Plugins([str(bindir)], timeout=0.5)
    with pytest.raises(PluginError, match="timed out"):
        plugins.run("hang", "ADD", b"{}")
    with pytest.raises(PluginError, match=r"exit status 3\): oops") as info:
        plugins.run("babble", "DEL", b"{}")
    assert info.value.code is None
    with pytest.raises(PluginError, match="no JSON"):
        plugins.run("text", "ADD", b"{}")
    with pytest.raises(ValueError):
        attach(parse_network_config(conflist()), "bad/id", "/p", "eth0", plugins=plugins)
    with pytest.raises(ValueError):
        attach(parse_network_config(conflist()), "c", "/p", "a:b", plugins=plugins)
