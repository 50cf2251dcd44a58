"""What kurma-init hands kurmad: settings, the system services as data, the boot log."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from kurma.init._services import (
    Facts,
    boot_log_document,
    console_auth,
    dump_document,
    kurmad_settings,
    system_services,
    write_networks,
)
from kurma.init.config import DiskRole, load_boot_config
from kurma.services import ServicesFile, load_services_file, write_services_file


def config_from(tmp_path: Path, text: str):
    oem = tmp_path / "oem.yml"
    oem.write_text(text)
    config, problems = load_boot_config(None, oem, None)
    assert problems == []
    return config


def test_defaults_give_ntp_and_console_and_wait_for_dhcp(tmp_path: Path) -> None:
    """A machine with the default config: ntp after the network that dhcp provides; the
    console only when asked for; no syslog without a target."""
    config = config_from(tmp_path, "hostname: a\n")
    facts = Facts(dhcp_interfaces=["eth0"])
    data = system_services(config, facts, tmp_path, console=False)
    assert sorted(data.services) == ["dhcp", "ntp"]
    assert data.ready == ()  # the network comes from the dhcp service
    assert data.services["dhcp"].provides == ("network",)
    assert data.services["dhcp"].environment == {"DHCP_INTERFACES": "eth0"}
    assert data.services["ntp"].depends_on == ("network",)
    with_console = system_services(config, facts, tmp_path, console=True)
    assert "console" in with_console.services


def test_the_console_step_hands_over_the_console_alone(tmp_path: Path) -> None:
    """Before the network is set up, the file holds the console and nothing that may need
    the network; the services step then adds the others beside the same console entry."""
    config = config_from(tmp_path, "hostname: a\nservices:\n  extra: {image: kurma.io/busybox}\n")
    facts = Facts(dhcp_interfaces=["eth0"])
    early = system_services(config, facts, tmp_path, console=True, services=False)
    assert list(early.services) == ["console"] and early.ready == ()
    later = system_services(config, facts, tmp_path, console=True)
    assert sorted(later.services) == ["console", "dhcp", "extra", "ntp"]
    assert later.services["console"] == early.services["console"]
    assert system_services(config, facts, tmp_path, console=False, services=False) == (
        ServicesFile()
    )


def test_static_network_is_ready_and_syslog_follows_the_target(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        "log_forwarding: {target: '169.254.100.100:6514', protocol: udp}\nntp: {servers: []}\n",
    )
    data = system_services(config, Facts(), tmp_path, console=False)
    assert data.ready == ("network",)
    assert sorted(data.services) == ["syslog"]
    assert data.services["syslog"].environment == {
        "SYSLOG_TARGET": "169.254.100.100:6514",
        "SYSLOG_PROTOCOL": "udp",
    }


def test_the_services_file_is_what_kurmad_reads(tmp_path: Path) -> None:
    """The file PID 1 writes (JSON) loads with kurmad's own loader, every service intact:
    the same `ServiceSpec`s, the boot config's health check and its start timeout too."""
    config = config_from(
        tmp_path,
        "console: {password_hash: '$6$salt$abc'}\n"
        "log_forwarding: {target: '169.254.100.100:6514'}\n"
        "services:\n  web: {image: example.com/web, restart: on-failure, depends_on: [ntp],\n"
        "    health: {command: /bin/check, start_timeout: 30}}\n",
    )
    data = system_services(config, Facts(dhcp_interfaces=["eth0"]), tmp_path, console=True)
    path = tmp_path / "services.yml"
    write_services_file(path, data)
    assert json.loads(path.read_text())["services"]["web"]["health"]["start_timeout"] == 30
    loaded = load_services_file(path)
    assert sorted(loaded.services) == ["console", "dhcp", "ntp", "syslog", "web"]
    assert loaded.problems == ()
    assert loaded.services == data.services and loaded.ready == data.ready
    web = loaded.services["web"]
    assert web.name == "web" and web.health is not None and web.health.start_timeout == 30


def test_console_auth_writes_shadow_or_autologin(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    config = config_from(tmp_path, "console: {password_hash: '$6$salt$abc'}\n")
    assert console_auth(config, auth) == "password"
    assert (auth / "shadow").read_text() == "root:$6$salt$abc:0:0:99999:7:::\n"
    assert (auth / "shadow").stat().st_mode & 0o777 == 0o600
    config = config_from(tmp_path, "console: {autologin: true}\n")
    assert console_auth(config, auth) == "autologin"
    assert not (auth / "shadow").exists()
    config = config_from(tmp_path, "hostname: a\n")
    assert console_auth(config, auth) == "locked"
    assert (auth / "shadow").read_text().startswith("root:!:")


def test_kurmad_settings_take_disks_listeners_and_the_kurmad_key(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        "api:\n  listeners:\n    tcp: {address: '0.0.0.0:7443', cert: /oem/s.pem, key: /oem/s.key,"
        " ca: /oem/ca.pem}\nkurmad: {log_level: debug}\n",
    )
    s = kurmad_settings(config, Path("/run/kurma"), {DiskRole.IMAGES: "/mnt/data"})
    assert s["state_dir"] == "/mnt/data/kurma"
    assert s["services_file"] == "/run/kurma/services.yml"
    assert (s["listen"], s["tls_cert"]) == ("0.0.0.0:7443", "/oem/s.pem")
    assert s["log_level"] == "debug"
    assert yaml.safe_load(dump_document(s)) == s


def test_boot_log_document_carries_steps_and_problems(tmp_path: Path) -> None:
    oem = tmp_path / "oem.yml"
    oem.write_text("hostname: [not, a, name]\n")
    _, problems = load_boot_config(None, oem, None)
    doc = json.loads(boot_log_document([{"name": "x", "outcome": "ok"}], problems))
    assert doc["steps"] == [{"name": "x", "outcome": "ok"}]
    assert len(doc["problems"]) == 1 and "hostname" in doc["problems"][0]


def test_writing_the_services_file_leaves_the_console_auth_alone(tmp_path: Path) -> None:
    """The console step writes the auth volume once; the services step, which runs while
    the console pod may be (re)starting, rewrites only the services file."""
    config = config_from(tmp_path, "hostname: a\n")
    auth = tmp_path / "console-auth"
    console_auth(config, auth)
    shadow = (auth / "shadow").stat()
    data = system_services(config, Facts(dhcp_interfaces=["eth0"]), tmp_path, console=True)
    assert data.services["console"].volumes["auth"].source == str(auth)
    after = (auth / "shadow").stat()
    assert (after.st_ino, after.st_mtime_ns) == (shadow.st_ino, shadow.st_mtime_ns)


def test_networks_are_written_as_conflists_and_named_in_kurmads_settings(tmp_path: Path) -> None:
    config = config_from(
        tmp_path,
        "networks:\n  b0: [{type: bridge, bridge: b0}, {type: portmap}]\ndefault_network: b0\n",
    )
    settings = kurmad_settings(config, tmp_path, {})
    assert settings["networks_dir"] == "/etc/kurma/net.d"
    assert settings["default_network"] == "b0"
    assert write_networks(config, tmp_path / "net.d") == ["b0"]
    doc = json.loads((tmp_path / "net.d/b0.conflist").read_text())
    assert doc == {
        "cniVersion": "1.0.0",
        "name": "b0",
        "plugins": [{"type": "bridge", "bridge": "b0"}, {"type": "portmap"}],
    }
    from kurma.network import load_networks

    assert list(load_networks(tmp_path / "net.d")) == ["b0"]
    # the kurmad key still wins
    config = config_from(tmp_path, "networks: {b0: [{type: bridge}]}\nkurmad: {networks_dir: /x}\n")
    assert kurmad_settings(config, tmp_path, {})["networks_dir"] == "/x"
