"""kurma-init's boot config: defaults <- initrd file <- OEM file <- kernel command line.

Every fault is a ConfigProblem naming its source and key path; the boot always gets a config.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import kurma.init.config as bc
from kurma.init.config import (
    CMDLINE,
    BootConfig,
    ConfigProblem,
    DiskRole,
    FsType,
    Layer,
    ProblemKind,
    Protocol,
    RestartPolicy,
    build_boot_config,
    load_boot_config,
    parse_cmdline,
    split_cmdline,
)
from kurma.init.config._schema import merge

HASH = (
    "$6$salt$Jz1QnOXWvGvb8ikq5D9sxnZtCl2QlSC2H9hgbSXF7cS9iHmwuLFQoXcA5C7ewyKlyHNqHqchFEPS6E6oXjAeA."
)
INITRD = "initrd"
OEM = "oem"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def layers(
    initrd: dict[str, Any] | None = None,
    oem: dict[str, Any] | None = None,
    cmdline: str | None = None,
) -> tuple[BootConfig, list[ConfigProblem]]:
    """Build from in-memory layers, named like the real ones would be in reports."""
    given_layers = []
    if initrd is not None:
        given_layers.append(Layer(INITRD, initrd, secrets_allowed=False))
    if oem is not None:
        given_layers.append(Layer(OEM, oem))
    problems: list[ConfigProblem] = []
    if cmdline is not None:
        layer, problems = bc.cmdline_layer(cmdline)
        given_layers.append(layer)
    config, more = build_boot_config(given_layers)
    return config, problems + more


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# --- the public surface ----------------------------------------------------------------------


def test_public_names() -> None:
    """The package re-exports its API; the boot steps rely on exactly these names."""
    public = {name for name in dir(bc) if not name.startswith("_")}
    assert {
        "load_boot_config",
        "build_boot_config",
        "read_layer",
        "cmdline_layer",
        "parse_cmdline",
        "split_cmdline",
        "to_plain",
        "key_table",
        "BootConfig",
        "ConfigProblem",
        "ProblemKind",
        "Layer",
        "INITRD_FILE",
        "CMDLINE",
    } <= public


def test_importing_does_not_pull_in_the_api() -> None:
    """The init sits below the API: loading a config never imports kurma.api or grpc."""
    code = (
        "import sys; from kurma.init.config import load_boot_config as l; "
        "l(None, None, 'kurma.hostname=x'); "
        "print(sorted(m for m in sys.modules if m.startswith(('kurma.api', 'grpc'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_problem_text_names_source_and_path() -> None:
    """A problem prints as `source: path: message`, the way the boot log shows it."""
    problem = ConfigProblem("/oem/kurma.yml", "network.interfaces.eth0.mtu", "must be ...")
    assert str(problem) == "/oem/kurma.yml: network.interfaces.eth0.mtu: must be ..."
    assert str(ConfigProblem("/x.yml", "", "not valid YAML")) == "/x.yml: not valid YAML"


def test_key_table_documents_every_key() -> None:
    """Every key has a type, a meaning and a unique path; secrets are marked."""
    table = bc.key_table()
    paths = [row.path for row in table]
    assert len(paths) == len(set(paths))
    assert all(row.doc and row.what for row in table)
    secret = {row.path for row in table if row.secret}
    assert secret == {
        "console.password_hash",
        "api.listeners.<listener>.cert",
        "api.listeners.<listener>.key",
        "api.listeners.<listener>.ca",
        "trusted_keys",
    }
    for wanted in (
        "hostname",
        "modules",
        "network.interfaces.<interface>.routes[].via",
        "network.dns.search",
        "disks.<disk>.holds",
        "services.<service>.health.command",
        "services.<service>.backoff.maximum",
        "console.autologin",
        "log_forwarding.protocol",
        "ntp.servers",
        "kurmad",
    ):
        assert wanted in paths


# --- no config at all ------------------------------------------------------------------------


def test_no_config_at_all_boots_with_the_defaults(tmp_path: Path) -> None:
    """No files, no kurma.* words: the defaults, and nothing to report."""
    config, problems = load_boot_config(
        tmp_path / "absent.yml", tmp_path / "absent-too.yml", "console=ttyS0 quiet"
    )
    assert problems == []
    assert config == BootConfig()
    assert load_boot_config(None, None, None) == (BootConfig(), [])


def test_defaults_are_the_documented_ones() -> None:
    """Host name kurma, DHCP on eth*, a console on ttyS0 without autologin, 5 s to shut down."""
    config = BootConfig()
    assert config.hostname == "kurma"
    assert config.network.interfaces["eth*"].dhcp is True
    assert config.console.enabled and config.console.ttys == ("ttyS0",)
    assert config.console.autologin is False and config.console.password_hash is None
    assert config.log_forwarding.target is None
    assert config.log_forwarding.protocol is Protocol.TCP
    assert config.services == {} and config.disks == {} and config.api.listeners == {}
    assert config.shutdown_budget == 5.0


def test_defaults_survive_their_own_round_trip() -> None:
    """The defaults as YAML, loaded as a layer, give the defaults back with no problem."""
    plain = bc.to_plain(BootConfig())
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
    assert layers(oem=plain) == (BootConfig(), [])


# --- layering --------------------------------------------------------------------------------


def test_later_layers_win(tmp_path: Path) -> None:
    """initrd over defaults, OEM over initrd, command line over OEM, key by key."""
    initrd = write(tmp_path, "kurma.yml", "hostname: from-initrd\nntp: {servers: [a.example]}\n")
    oem = write(tmp_path, "oem.yml", "hostname: from-oem\nmodules: [virtio_net]\n")
    config, problems = load_boot_config(initrd, oem, "quiet kurma.hostname=from-cmdline")
    assert problems == []
    assert config.hostname == "from-cmdline"
    assert config.modules == ("virtio_net",)
    assert config.ntp.servers == ("a.example",)
    assert load_boot_config(initrd, oem, "")[0].hostname == "from-oem"
    assert load_boot_config(initrd, None, "")[0].hostname == "from-initrd"


def test_maps_merge_deeply() -> None:
    """A higher layer changes one key of a map and keeps its siblings."""
    config, problems = layers(
        initrd={
            "console": {"ttys": ["tty1"]},
            "network": {"interfaces": {"eth0": {"mtu": 9000, "dhcp": True}}},
            "services": {"web": {"image": "example.com/web:1.0", "restart": "never"}},
        },
        oem={
            "console": {"autologin": True},
            "network": {"interfaces": {"eth0": {"mtu": 1400}, "eth1": {"dhcp": True}}},
        },
        cmdline="kurma.services.web.environment.PORT=8080",
    )
    assert problems == []
    assert config.console.ttys == ("tty1",) and config.console.autologin is True
    interfaces = config.network.interfaces
    assert set(interfaces) == {"eth*", "eth0", "eth1"}
    assert interfaces["eth0"].mtu == 1400 and interfaces["eth0"].dhcp is True
    web = config.services["web"]
    assert web.image == "example.com/web:1.0" and web.restart is RestartPolicy.NEVER
    assert web.environment == {"PORT": "8080"}


def test_lists_are_replaced_whole() -> None:
    """A list in a higher layer replaces the lower one; it is not appended to."""
    config, _ = layers(
        initrd={"modules": ["virtio_net", "ext4"], "console": {"ttys": ["ttyS0", "tty1"]}},
        oem={"modules": ["overlay"]},
        cmdline="kurma.console.ttys=tty2",
    )
    assert config.modules == ("overlay",)
    assert config.console.ttys == ("tty2",)


def test_an_empty_list_clears_the_lower_one() -> None:
    """`[]` (or an empty command-line value) is a value: no ntp servers at all."""
    assert layers(oem={"ntp": {"servers": []}})[0].ntp.servers == ()
    assert layers(cmdline="kurma.ntp.servers=")[0].ntp.servers == ()


def test_null_unsets_an_optional_value() -> None:
    """The command line can take back an OEM file's log target with an empty value."""
    config, problems = layers(
        oem={"log_forwarding": {"target": "logs.example:601"}},
        cmdline="kurma.log_forwarding.target=",
    )
    assert problems == [] and config.log_forwarding.target is None


# --- the kernel command line -----------------------------------------------------------------


def test_cmdline_nests_dotted_keys() -> None:
    """kurma.a.b.c=V sets a.b.c; values are YAML scalars."""
    tree, problems = parse_cmdline(
        "kurma.hostname=box kurma.console.autologin=true "
        "kurma.network.interfaces.eth0.dhcp=true kurma.network.interfaces.eth0.mtu=1500"
    )
    assert problems == []
    assert tree == {
        "hostname": "box",
        "console": {"autologin": True},
        "network": {"interfaces": {"eth0": {"dhcp": True, "mtu": 1500}}},
    }


def test_cmdline_ignores_other_parameters() -> None:
    """console=, quiet, root=, kurmaX.y and words after `--` are not ours."""
    tree, problems = parse_cmdline(
        "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet panic=-1 kurmax.hostname=no "
        "kurma=1 kurma.hostname=yes-ours -- kurma.hostname=init-arg"
    )
    assert problems == [] and tree == {"hostname": "yes-ours"}


def test_cmdline_flag_without_value_is_true() -> None:
    """`kurma.console.autologin` alone means true, like a kernel boolean parameter."""
    config, problems = layers(cmdline="kurma.console.autologin")
    assert problems == [] and config.console.autologin is True


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ('kurma.hostname="a b"', ("kurma.hostname", "a b")),
        ('"kurma.hostname=a b"', ("kurma.hostname", "a b")),
        ("kurma.exec=\"/bin/sh -c 'x y'\"", ("kurma.exec", "/bin/sh -c 'x y'")),
        ("kurma.k='q'", ("kurma.k", "'q'")),
        ("kurma.k=a=b", ("kurma.k", "a=b")),
        ("kurma.k=", ("kurma.k", "")),
        ("kurma.k", ("kurma.k", None)),
    ],
)
def test_cmdline_quoting_follows_the_kernel(cmdline: str, expected: tuple[str, Any]) -> None:
    """Double quotes group words and are dropped as the kernel's next_arg() drops them."""
    assert split_cmdline(f"  quiet   {cmdline}\n") == [("quiet", None), expected]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1500", 1500),
        ("'007'", "007"),
        ("yes", True),
        ("off", False),
        ("", None),
        ("[a, b]", ["a", "b"]),
        ("a: b", "a: b"),
        ("@odd", "@odd"),
        ("pool.ntp.org", "pool.ntp.org"),
    ],
)
def test_cmdline_values_are_yaml_scalars(text: str, value: Any) -> None:
    """A value is one YAML scalar, a flow list when bracketed, else the text as given."""
    tree, _ = parse_cmdline(f'"kurma.k={text}"')
    assert tree == {"k": value}


def test_cmdline_repeated_keys_last_wins() -> None:
    """As for kernel parameters, the last of a repeated key is the one that counts."""
    config, problems = layers(cmdline="kurma.hostname=first kurma.hostname=second")
    assert problems == [] and config.hostname == "second"


def test_cmdline_deeper_key_replaces_an_earlier_scalar() -> None:
    """`kurma.console=x kurma.console.autologin` keeps the later, deeper key."""
    tree, _ = parse_cmdline("kurma.console=x kurma.console.autologin")
    assert tree == {"console": {"autologin": True}}


def test_cmdline_lists_by_commas_or_brackets() -> None:
    """A list key takes `a,b` or a YAML flow list `[a,b]`."""
    config, problems = layers(
        cmdline="kurma.modules=virtio_net,ext4 kurma.console.ttys=[ttyS0,tty1]"
    )
    assert problems == []
    assert config.modules == ("virtio_net", "ext4")
    assert config.console.ttys == ("ttyS0", "tty1")


def test_cmdline_dashes_in_key_names() -> None:
    """`log-forwarding` is `log_forwarding` (the kernel treats - and _ alike); names keep '-'."""
    config, problems = layers(
        cmdline="kurma.log-forwarding.target=169.254.100.100:5514 "
        "kurma.services.my-app.image=example.com/my-app"
    )
    assert problems == []
    assert config.log_forwarding.target == "169.254.100.100:5514"
    assert set(config.services) == {"my-app"}


def test_cmdline_disk_by_label_with_a_colon() -> None:
    """The first '=' ends a kernel parameter's name, so a disk key there is LABEL:name."""
    config, problems = layers(
        initrd={"disks": {"LABEL=data": {"format": True}}},
        cmdline="kurma.disks.LABEL:data.mount=/var/lib/kurma kurma.disks.LABEL:data.holds=images",
    )
    assert problems == []
    disk = config.disks["LABEL=data"]
    assert disk.format is True and disk.mount == "/var/lib/kurma"
    assert disk.holds == (DiskRole.IMAGES,)


def test_cmdline_empty_key_segment_is_reported() -> None:
    """`kurma.network..mtu` names nothing: reported, the other words still apply."""
    config, problems = layers(cmdline="kurma.network..mtu=1 kurma.hostname=ok")
    problem = only(problems)
    assert problem.source == CMDLINE and problem.path == "kurma.network..mtu"
    assert config.hostname == "ok"


# --- validation, key by key ------------------------------------------------------------------

BAD_VALUES = [
    # (raw YAML layer, the reported path, a fragment of the message)
    ({"hostname": "not a host!"}, "hostname", "host name"),
    ({"hostname": "a" * 65}, "hostname", "64"),
    ({"hostname": 12}, "hostname", "string"),
    ({"modules": ["virtio net"]}, "modules[0]", "module name"),
    (
        {"network": {"interfaces": {"eth0": {"mtu": 99999}}}},
        "network.interfaces.eth0.mtu",
        "68..65535",
    ),
    (
        {"network": {"interfaces": {"eth0": {"mtu": "big"}}}},
        "network.interfaces.eth0.mtu",
        "integer",
    ),
    (
        {"network": {"interfaces": {"eth0": {"dhcp": "maybe"}}}},
        "network.interfaces.eth0.dhcp",
        "true or false",
    ),
    (
        {"network": {"interfaces": {"eth0": {"addresses": ["169.254.1.2"]}}}},
        "network.interfaces.eth0.addresses[0]",
        "prefix length",
    ),
    (
        {"network": {"interfaces": {"eth0": {"addresses": ["169.254.0.0/16"]}}}},
        "network.interfaces.eth0.addresses[0]",
        "network's own",
    ),
    (
        {"network": {"interfaces": {"eth0": {"routes": [{"to": "169.254.1.0/16"}]}}}},
        "network.interfaces.eth0.routes[0].to",
        "169.254.0.0/16",
    ),
    (
        {"network": {"interfaces": {"eth0": {"routes": [{"via": "169.254.0.1"}]}}}},
        "network.interfaces.eth0.routes[0].to",
        "required",
    ),
    (
        {"network": {"interfaces": {"eth0": {"routes": [{"to": "default", "via": "gw"}]}}}},
        "network.interfaces.eth0.routes[0].via",
        "IP address",
    ),
    (
        {
            "network": {
                "interfaces": {"eth0": {"routes": [{"to": "fdfe::/16", "via": "169.254.0.1"}]}}
            }
        },
        "network.interfaces.eth0.routes[0].via",
        "same IP version",
    ),
    (
        {"network": {"interfaces": {"eth/0": {"dhcp": True}}}},
        "network.interfaces.eth/0",
        "interface name",
    ),
    (
        {"network": {"interfaces": {"averyveryverylongname": {}}}},
        "network.interfaces.averyveryverylongname",
        "15",
    ),
    ({"network": {"dns": {"servers": ["dns.example"]}}}, "network.dns.servers[0]", "IP address"),
    ({"network": {"dns": {"search": ["bad_domain!"]}}}, "network.dns.search[0]", "host name"),
    ({"disks": {"data": {"mount": "/data"}}}, "disks.data", "LABEL="),
    ({"disks": {"UUID=xyz": {}}}, "disks.UUID=xyz", "UUID="),
    ({"disks": {"LABEL=d": {"mount": "data"}}}, "disks.LABEL=d.mount", "absolute path"),
    ({"disks": {"LABEL=d": {"fs": "ntfs"}}}, "disks.LABEL=d.fs", "ext4"),
    ({"disks": {"LABEL=d": {"format": "please"}}}, "disks.LABEL=d.format", "true or false"),
    (
        {"disks": {"LABEL=d": {"mount": "/d", "holds": ["music"]}}},
        "disks.LABEL=d.holds[0]",
        "images, pods, volumes, oem",
    ),
    ({"services": {"Web": {"image": "x"}}}, "services.Web", "lowercase"),
    ({"services": {"web": {"image": "Not An Image"}}}, "services.web.image", "image"),
    (
        {"services": {"web": {"image": "w", "restart": "sometimes"}}},
        "services.web.restart",
        "always, on-failure, never",
    ),
    ({"services": {"web": {"image": "w", "exec": "bin/web"}}}, "services.web.exec", "absolute"),
    (
        {"services": {"web": {"image": "w", "depends_on": ["Network!"]}}},
        "services.web.depends_on[0]",
        "lowercase",
    ),
    (
        {"services": {"web": {"image": "w", "backoff": {"initial": -1}}}},
        "services.web.backoff.initial",
        "0..3600",
    ),
    (
        {"services": {"web": {"image": "w", "backoff": {"factor": 0.5}}}},
        "services.web.backoff.factor",
        "1..10",
    ),
    (
        {"services": {"web": {"image": "w", "health": {"command": []}}}},
        "services.web.health.command",
        "empty",
    ),
    (
        {"services": {"web": {"image": "w", "health": {"command": "true", "retries": 0}}}},
        "services.web.health.retries",
        "1..100",
    ),
    (
        {"services": {"web": {"image": "w", "environment": {"1X": "y"}}}},
        "services.web.environment.1X",
        "environment variable",
    ),
    (
        {"services": {"web": {"image": "w", "isolators": {"resource/memory": {"limit": "lots"}}}}},
        "services.web.isolators.resource/memory",
        "limit",
    ),
    ({"console": {"enabled": "sure"}}, "console.enabled", "true or false"),
    ({"console": {"ttys": ["/dev/pts/0"]}}, "console.ttys[0]", "terminal"),
    ({"console": {"autologin": 2}}, "console.autologin", "true or false"),
    ({"log_forwarding": {"target": "logs.example:99999"}}, "log_forwarding.target", "1..65535"),
    ({"log_forwarding": {"target": "not a host"}}, "log_forwarding.target", "HOST:PORT"),
    ({"log_forwarding": {"protocol": "http"}}, "log_forwarding.protocol", "tcp, udp"),
    ({"ntp": {"servers": ["bad host"]}}, "ntp.servers[0]", "host name"),
    (
        {"api": {"listeners": {"main": {"address": "localhost:7443"}}}},
        "api.listeners.main.address",
        "IP address",
    ),
    (
        {"api": {"listeners": {"main": {"address": "0.0.0.0"}}}},
        "api.listeners.main.address",
        "IP:PORT",
    ),
    ({"kurmad": {"State Dir": "/x"}}, "kurmad.State Dir", "setting name"),
    ({"kurmad": {"state_dir": ["/x"]}}, "kurmad.state_dir", "string, number or boolean"),
    ({"shutdown_budget": "soon"}, "shutdown_budget", "number"),
    ({"console": "on"}, "console", "mapping"),
    ({"disks": ["LABEL=d"]}, "disks", "mapping"),
]


@pytest.mark.parametrize(("raw", "path", "fragment"), BAD_VALUES)
def test_a_bad_value_is_reported_with_its_path(
    raw: dict[str, Any], path: str, fragment: str
) -> None:
    """Each key's check names the key's path and what was expected; the boot goes on."""
    _, problems = layers(oem=raw)
    problem, *consequences = problems
    assert problem.source == OEM
    assert problem.path == path.replace(".State Dir", '["State Dir"]')
    assert fragment in problem.message
    # a required key's bad value also leaves its entry out, which is said once more
    assert all(p.kind is ProblemKind.INCOMPLETE and p.path == path for p in consequences)
    assert len(consequences) <= 1


def test_a_bad_value_falls_back_to_the_lower_layer() -> None:
    """The OEM file's bad MTU leaves the initrd's; its good DHCP setting still applies."""
    config, problems = layers(
        initrd={"network": {"interfaces": {"eth0": {"mtu": 9000}}}},
        oem={"network": {"interfaces": {"eth0": {"mtu": 12, "dhcp": True}}}},
    )
    assert only(problems).path == "network.interfaces.eth0.mtu"
    assert config.network.interfaces["eth0"].mtu == 9000
    assert config.network.interfaces["eth0"].dhcp is True


def test_a_bad_value_falls_back_to_the_default() -> None:
    """With no lower layer, the default stands for that key alone."""
    config, problems = layers(cmdline="kurma.hostname=-bad- kurma.console.autologin=1")
    assert only(problems).path == "hostname"
    assert config.hostname == "kurma" and config.console.autologin is True


def test_a_bad_list_item_is_left_out_and_an_all_bad_list_falls_back() -> None:
    """One bad address is dropped; a list with nothing usable leaves the lower list."""
    config, problems = layers(
        initrd={"ntp": {"servers": ["ntp.example"]}},
        oem={"network": {"interfaces": {"eth0": {"addresses": ["169.254.1.2/16", "nope"]}}}},
        cmdline="kurma.ntp.servers=[bad host]",
    )
    assert [p.path for p in problems] == ["network.interfaces.eth0.addresses[1]", "ntp.servers[0]"]
    assert config.network.interfaces["eth0"].addresses == ("169.254.1.2/16",)
    assert config.ntp.servers == ("ntp.example",)


def test_values_are_normalised() -> None:
    """Host names lowercased, module dashes as '_', /dev/ dropped, IPv6 compressed, ports added."""
    config, problems = layers(
        oem={
            "hostname": "Box.Example",
            "modules": "virtio-net",
            "console": {"ttys": "/dev/tty1"},
            "network": {"interfaces": {"eth0": {"addresses": ["fdfe:0::0002/64"]}}},
            "log_forwarding": {"target": "[fdfe::1]", "protocol": "UDP"},
            "disks": {"label=data": {"fs": "XFS"}},
        }
    )
    assert problems == []
    assert config.hostname == "box.example"
    assert config.modules == ("virtio_net",)
    assert config.console.ttys == ("tty1",)
    assert config.network.interfaces["eth0"].addresses == ("fdfe::2/64",)
    assert config.log_forwarding.target == "[fdfe::1]:514"
    assert config.log_forwarding.protocol is Protocol.UDP
    assert config.disks["LABEL=data"].fs is FsType.XFS


def test_a_full_config_loads_without_problems(tmp_path: Path) -> None:
    """Every key at once, as an OEM file would hold it."""
    text = f"""
hostname: node-1
modules: [virtio_net, overlay]
network:
  interfaces:
    "eth*": {{dhcp: false}}
    eth0:
      addresses: [169.254.1.2/16, fdfe::2/64]
      mtu: 1500
      routes:
        - {{to: default, via: 169.254.0.1}}
        - {{to: 169.254.200.0/24, via: 169.254.0.2, metric: 10}}
  dns: {{servers: [169.254.0.53], search: [example.internal]}}
disks:
  LABEL=KURMA_DATA: {{format: true, fs: ext4, mount: /var/lib/kurma, holds: [images, pods]}}
  UUID=1234-ABCD: {{holds: [oem]}}
services:
  web:
    image: example.com/web:1.0
    exec: /bin/web --port 80
    environment: {{MODE: prod}}
    isolators:
      resource/memory: {{limit: 64M}}
      host/api-access: {{scope: subtree}}
    depends_on: [network, clock, db]
    restart: on-failure
    backoff: {{initial: 0.5, maximum: 30, factor: 3}}
    health: {{command: [/bin/check], interval: 5, timeout: 1, retries: 2}}
  db: {{image: example.com/db}}
console: {{enabled: true, ttys: [ttyS0], password_hash: '{HASH}', autologin: false}}
log_forwarding: {{target: 169.254.100.100:5514, protocol: tcp}}
ntp: {{servers: [169.254.100.123]}}
api:
  listeners:
    public: {{address: "0.0.0.0:7443", cert: /oem/api.crt, key: /oem/api.key, ca: /oem/ca.crt}}
trusted_keys:
  - {{path: /oem/keys/example.asc, prefix: example.com}}
kurmad: {{log_level: debug, warm_pods: 2}}
shutdown_budget: 8
"""
    config, problems = load_boot_config(None, write(tmp_path, "oem.yml", text), None)
    assert problems == [], [str(p) for p in problems]
    web = config.services["web"]
    assert web.exec == ("/bin/web", "--port", "80")
    assert web.isolators["resource/memory"] == {"limit": "64M"}
    assert web.depends_on == ("network", "clock", "db")
    assert web.backoff.factor == 3.0 and web.health is not None and web.health.retries == 2
    assert config.network.interfaces["eth0"].routes[1].metric == 10
    assert config.api.listeners["public"].key == "/oem/api.key"
    assert config.trusted_keys[0].prefix == "example.com"
    assert config.kurmad == {"log_level": "debug", "warm_pods": 2}
    # and back: the plain form loads to the same config
    assert layers(oem=bc.to_plain(config)) == (config, [])


# --- rules across layers ---------------------------------------------------------------------


def test_a_service_without_an_image_is_left_out() -> None:
    """After merging, a service no layer gave an image to is reported against its layer."""
    config, problems = layers(cmdline="kurma.services.web.restart=never")
    problem = only(problems)
    assert (problem.source, problem.path) == (CMDLINE, "services.web.image")
    assert problem.kind is ProblemKind.INCOMPLETE
    assert config.services == {}


def test_a_service_gets_its_image_from_a_lower_layer() -> None:
    """The initrd names the image, the command line disables the service."""
    config, problems = layers(
        initrd={"services": {"web": {"image": "example.com/web"}}},
        cmdline="kurma.services.web.enabled=false",
    )
    assert problems == [] and config.services["web"].enabled is False


def test_dependencies_on_unknown_disabled_or_cyclic_services_are_dropped() -> None:
    """Each dependency names network, clock or an enabled service, and there is no cycle."""
    config, problems = layers(
        oem={
            "services": {
                "a": {"image": "i", "depends_on": ["b", "ghost", "network"]},
                "b": {"image": "i", "depends_on": ["c"]},
                "c": {"image": "i", "depends_on": ["a", "off"]},
                "off": {"image": "i", "enabled": False},
            }
        }
    )
    messages = {p.path: p.message for p in problems}
    assert "neither network, clock, a system service nor" in messages["services.a.depends_on[1]"]
    assert "disabled" in messages["services.c.depends_on[1]"]
    assert "cycle" in messages["services.c.depends_on"]
    assert config.services["a"].depends_on == ("b", "network")
    assert config.services["c"].depends_on == ()


def test_health_check_without_command_falls_back_to_none() -> None:
    """An incomplete health check is reported; the service runs without one."""
    config, problems = layers(oem={"services": {"w": {"image": "i", "health": {"retries": 2}}}})
    assert only(problems).path == "services.w.health.command"
    assert config.services["w"].health is None


def test_backoff_initial_above_maximum_is_reported() -> None:
    """initial > maximum (from different layers) falls back to the default backoff."""
    config, problems = layers(
        initrd={"services": {"w": {"image": "i", "backoff": {"maximum": 2}}}},
        cmdline="kurma.services.w.backoff.initial=5",
    )
    assert only(problems).path == "services.w.backoff.initial"
    assert config.services["w"].backoff == bc.Backoff()


def test_disk_roles_are_unique_and_need_a_mount() -> None:
    """Two disks holding images: the second is refused; pods without a mount point too."""
    config, problems = layers(
        oem={
            "disks": {
                "LABEL=a": {"mount": "/a", "holds": ["images"]},
                "LABEL=b": {"mount": "/b", "holds": ["images", "volumes"]},
                "LABEL=c": {"holds": ["pods", "oem"]},
            }
        }
    )
    assert [p.path for p in problems] == ["disks.LABEL=b.holds[0]", "disks.LABEL=c.holds[0]"]
    assert config.disks["LABEL=b"].holds == (DiskRole.VOLUMES,)
    assert config.disks["LABEL=c"].holds == (DiskRole.OEM,)


def test_an_isolator_name_must_be_known() -> None:
    """A misspelt isolator is an unknown key, not silently passed to the pod."""
    config, problems = layers(
        oem={"services": {"w": {"image": "i", "isolators": {"resource/memroy": {}}}}}
    )
    problem = only(problems)
    assert problem.kind is ProblemKind.UNKNOWN_KEY
    assert problem.path == "services.w.isolators.resource/memroy"
    assert config.services["w"].isolators == {}


# --- secrets ---------------------------------------------------------------------------------

SECRETS = {
    "console": {"password_hash": HASH},
    "api": {"listeners": {"main": {"cert": "/c.pem", "key": "/k.pem", "ca": "/ca.pem"}}},
    "trusted_keys": [{"path": "/oem/key.asc"}],
    "kurmad": {"tls_key": "/k.pem"},
}


def test_secrets_are_refused_from_the_initrd() -> None:
    """The initrd is the same on every machine: each secret it sets is reported and ignored."""
    config, problems = layers(initrd=SECRETS)
    refused = {p.path for p in problems if p.kind is ProblemKind.SECRET_REFUSED}
    assert refused == {
        "console.password_hash",
        "api.listeners.main.cert",
        "api.listeners.main.key",
        "api.listeners.main.ca",
        "trusted_keys",
        "kurmad.tls_key",
    }
    assert all(p.source == INITRD for p in problems)
    assert config.console.password_hash is None and config.trusted_keys == ()
    assert config.kurmad == {}
    # the listener the initrd named lacks its certificates: left out, and said so
    assert config.api.listeners == {}
    assert "api.listeners.main.address" in {p.path for p in problems}


@pytest.mark.parametrize("where", ["oem", "cmdline"])
def test_secrets_are_accepted_from_oem_and_cmdline(where: str) -> None:
    """The OEM file and the command line are per machine: secrets are taken from them."""
    if where == "oem":
        config, problems = layers(
            oem=SECRETS
            | {
                "api": {
                    "listeners": {
                        "main": {
                            "address": "0.0.0.0:7443",
                            "cert": "/c.pem",
                            "key": "/k.pem",
                            "ca": "/ca.pem",
                        }
                    }
                }
            }
        )
    else:
        config, problems = layers(
            cmdline=f"kurma.console.password_hash={HASH} "
            "kurma.api.listeners.main.address=0.0.0.0:7443 kurma.api.listeners.main.cert=/c.pem "
            "kurma.api.listeners.main.key=/k.pem kurma.api.listeners.main.ca=/ca.pem "
            '"kurma.trusted_keys=[{path: /oem/key.asc}]" kurma.kurmad.tls_key=/k.pem'
        )
    assert problems == [], [str(p) for p in problems]
    assert config.console.password_hash == HASH
    assert config.api.listeners["main"].ca == "/ca.pem"
    assert config.trusted_keys[0].path == "/oem/key.asc"
    assert config.kurmad == {"tls_key": "/k.pem"}


def test_an_initrd_listener_completed_by_the_oem_file() -> None:
    """The initrd may name the listener's address; the OEM file brings its certificates."""
    config, problems = layers(
        initrd={"api": {"listeners": {"main": {"address": "0.0.0.0:7443"}}}},
        oem={"api": {"listeners": {"main": {"cert": "/c", "key": "/k", "ca": "/ca"}}}},
    )
    assert problems == [] and config.api.listeners["main"].address == "0.0.0.0:7443"


def test_a_bad_password_hash_is_never_echoed() -> None:
    """A plain password typed by mistake does not end up in the boot log."""
    _, problems = layers(cmdline="kurma.console.password_hash=hunter2")
    problem = only(problems)
    assert problem.path == "console.password_hash" and "hunter2" not in str(problem)


# --- unknown keys and broken files -----------------------------------------------------------


def test_unknown_keys_are_reported_and_ignored(tmp_path: Path) -> None:
    """Misspelt keys at any depth, from files and the command line; the rest applies."""
    oem = write(tmp_path, "oem.yml", "hostnme: x\nconsole: {autologin: true, ttyz: [a]}\n")
    config, problems = load_boot_config(None, oem, "kurma.network.interfaces.eth0.mut=1")
    assert {(p.source, p.path) for p in problems} == {
        (oem, "hostnme"),
        (oem, "console.ttyz"),
        (CMDLINE, "network.interfaces.eth0.mut"),
    }
    assert all(p.kind is ProblemKind.UNKNOWN_KEY for p in problems)
    assert "known: enabled, ttys" in next(p.message for p in problems if p.path == "console.ttyz")
    assert config.console.autologin is True


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"hostname: [unclosed\n", "not valid YAML"),
        (b"- a list\n- at the top\n", "must be a mapping"),
        (b"just text\n", "must be a mapping"),
        (b"hostname: \xff\xfe\n", "not UTF-8"),
    ],
)
def test_a_broken_file_is_reported_and_skipped(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    """The whole layer is skipped; the layers around it still apply."""
    initrd = write(tmp_path, "kurma.yml", "hostname: from-initrd\n")
    oem = tmp_path / "oem.yml"
    oem.write_bytes(content)
    config, problems = load_boot_config(initrd, oem, "kurma.console.autologin")
    problem = only(problems)
    assert problem.source == str(oem) and problem.kind is ProblemKind.UNREADABLE
    assert fragment in problem.message and "skipped" in problem.message
    assert config.hostname == "from-initrd" and config.console.autologin is True


def test_an_unreadable_file_is_reported(tmp_path: Path) -> None:
    """A path that cannot be read (here a directory) is reported, not raised."""
    config, problems = load_boot_config(tmp_path, None, None)
    assert only(problems).kind is ProblemKind.UNREADABLE and config == BootConfig()


def test_an_empty_file_is_an_empty_layer(tmp_path: Path) -> None:
    """An empty OEM file (or one of comments only) changes nothing and is no problem."""
    assert load_boot_config(None, write(tmp_path, "oem.yml", "# nothing\n"), None) == (
        BootConfig(),
        [],
    )


# --- properties ------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c", "d"])
leaves = st.one_of(
    st.integers(), st.booleans(), st.text(max_size=3), st.lists(st.integers(), max_size=2)
)
trees = st.recursive(leaves, lambda inner: st.dictionaries(names, inner, max_size=3), max_leaves=8)


MISSING = object()


def leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every non-mapping value (and every empty mapping) of a tree, by its path."""
    if isinstance(tree, dict) and tree:
        out: dict[tuple[str, ...], Any] = {}
        for k, v in tree.items():
            out.update(leaf_paths(v, (*prefix, k)))
        return out
    return {prefix: tree}


def at(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return MISSING
        tree = tree[part]
    return tree


@given(trees, trees)
def test_merge_upper_leaves_win_and_lower_leaves_survive(lower: Any, upper: Any) -> None:
    """Each value of the upper tree that is not a mapping (a list too) is the merged value;
    a lower value stays unless the upper tree holds a non-mapping at or above its path."""
    merged = merge(lower, upper)
    for path, value in leaf_paths(upper).items():
        if value != {}:
            assert at(merged, path) == value
    for path, value in leaf_paths(lower).items():
        above = [at(upper, path[:i]) for i in range(len(path) + 1)]
        if all(
            node is MISSING or (isinstance(node, dict) and i < len(path))
            for i, node in enumerate(above)
        ):
            assert at(merged, path) == value


@given(trees, trees)
def test_merge_is_idempotent_and_empty_is_neutral(lower: Any, upper: Any) -> None:
    """Applying a layer twice is applying it once; an empty layer changes nothing."""
    assert merge(merge(lower, upper), upper) == merge(lower, upper)
    if isinstance(lower, dict):
        assert merge(lower, {}) == lower


segments = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
# Words YAML reads back as themselves: not `no`, `on`, `y`, `null` or `0x1f` (YAML 1.1).
words = st.from_regex(r"[a-z0-9][a-z0-9 ./-]{0,8}[a-z]", fullmatch=True).filter(
    lambda w: isinstance(yaml.safe_load(w), str)
)
values = st.one_of(st.integers(-1000, 1000), st.booleans(), words)


@given(st.dictionaries(st.lists(segments, min_size=1, max_size=3).map(tuple), values, max_size=5))
def test_cmdline_round_trip(settings: dict[tuple[str, ...], Any]) -> None:
    """Any dotted keys with scalar values, written as quoted kurma.K=V words, parse back."""
    text = " ".join(
        f'kurma.{".".join(path)}="{str(value).lower() if isinstance(value, bool) else value}"'
        for path, value in settings.items()
    )
    tree, problems = parse_cmdline("console=ttyS0 " + text + " quiet")
    assert problems == []
    expected: dict[str, Any] = {}
    for path, value in settings.items():  # the same rule: later and deeper keys replace
        node = expected
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    assert tree == expected


def test_a_service_is_the_supervisors_service_spec() -> None:
    """The boot config builds kurma.services' ServiceSpec itself (one model): named by its
    key, with the health check's start timeout from any layer."""
    from kurma.services import ServiceSpec

    config, problems = layers(
        oem={"services": {"web": {"image": "w", "health": {"command": "/bin/check"}}}},
        cmdline="kurma.services.web.health.start_timeout=7.5",
    )
    assert problems == []
    web = config.services["web"]
    assert type(web) is ServiceSpec and web.name == "web" and web.image == "w"
    assert web.health is not None and web.health.start_timeout == 7.5
    assert web.health.command == ("/bin/check",)


# --- pod networks ----------------------------------------------------------------------------

BRIDGE = [{"type": "bridge", "bridge": "b0", "ipam": {"type": "host-local"}}]


def test_a_network_is_a_conflist_or_its_plugins_and_may_be_the_default() -> None:
    config, problems = layers(
        initrd={"networks": {"b0": {"plugins": BRIDGE}}, "default_network": "b0"},
        oem={"networks": {"b1": BRIDGE}},
    )
    assert problems == []
    assert sorted(config.networks) == ["b0", "b1"]
    assert config.default_network == "b0"
    doc = bc.network_document("b1", config.networks["b1"])
    assert doc == {"cniVersion": "1.0.0", "name": "b1", "plugins": BRIDGE}


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"plugins": []}, "networks.b0", "plugins: must be a non-empty list"),
        ([{"bridge": "x"}], "networks.b0", "plugins[0].type"),
        ({"name": "other", "plugins": BRIDGE}, "networks.b0", "differs from"),
        ({"cniVersion": "0.1.0", "plugins": BRIDGE}, "networks.b0", "cniVersion"),
        ("bridge", "networks.b0", "a conflist (a mapping) or a list of plugins"),
    ],
)
def test_a_bad_network_is_reported_by_key_and_left_out(value: Any, path: str, words: str) -> None:
    config, problems = layers(oem={"networks": {"b0": value}})
    problem = only(problems)
    assert problem.path == path
    assert words in problem.message
    assert config.networks == {}


def test_a_bad_network_name_and_an_unknown_default_are_reported() -> None:
    config, problems = layers(
        oem={"networks": {"no/slash": BRIDGE, "host": BRIDGE}, "default_network": "nope"}
    )
    assert sorted(p.path for p in problems) == [
        "default_network",
        "networks.host",
        "networks.no/slash",
    ]
    assert config.networks == {}
    assert config.default_network is None


def test_the_initrd_config_defines_the_bridge_as_default() -> None:
    config, problems = bc.load_boot_config(str(Path(__file__).parents[2] / "initrd/kurma.yml"))
    assert problems == []
    assert config.default_network == "kurma0"
    doc = bc.network_document("kurma0", config.networks["kurma0"])
    bridge = doc["plugins"][0]
    assert (bridge["type"], bridge["bridge"], bridge["ipMasq"]) == ("bridge", "kurma0", False)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "169.254.200.0/24"}]]
    assert bridge["ipam"]["dataDir"].startswith("/run/")
