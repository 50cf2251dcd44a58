"""Isolators: typed values for every known type, their rules, list rules, unknown types."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from kurma.aci import (
    CAPABILITIES,
    DEFAULT_CAPABILITIES,
    ApiAccessIsolator,
    ApiScope,
    BlockBandwidthIsolator,
    BlockIOPSIsolator,
    CapabilitiesRemoveSet,
    CapabilitiesRetainSet,
    CPUIsolator,
    CPUSharesIsolator,
    DevicesIsolator,
    FrozenMap,
    MemoryIsolator,
    NamespacesIsolator,
    NetworkBandwidthIsolator,
    NetworksIsolator,
    NoNewPrivilegesIsolator,
    OOMScoreAdjIsolator,
    PrivilegedIsolator,
    Quantity,
    SeccompRemoveSet,
    SeccompRetainSet,
    SELinuxContextIsolator,
    SysctlIsolator,
    UnknownIsolator,
    isolator_types,
    parse_isolator,
)
from kurma.aci._isolators import parse_isolators
from kurma.errors import ValidationError


def q(text: str) -> Quantity:
    """A quantity."""
    return Quantity.parse(text, "q")


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("128974848", 128974848),
        ("125952Ki", 128974848),
        ("123Mi", 128974848),
        ("1G", 10**9),
        ("1K", 1000),
        ("1k", 1000),
        ("2Ei", 2 * 2**60),
        ("500m", Fraction(1, 2)),
        ("0.3", Fraction(3, 10)),
        (".5", Fraction(1, 2)),
        ("1.", 1),
        ("1e3", 1000),
        ("15E-1", Fraction(3, 2)),
        ("100n", Fraction(1, 10**7)),
        ("+1", 1),
        (1000, 1000),
        (0.25, Fraction(1, 4)),
    ],
)
def test_quantity_values(text: Any, amount: Fraction | int) -> None:
    """Unsuffixed, metric, binary, milli, decimal and exponent forms (ace.md)."""
    quantity = Quantity.parse(text, "q")
    assert quantity.amount == amount
    assert Quantity.parse(quantity.to_json(), "q") == quantity


def test_quantity_rounding() -> None:
    """`value` rounds up to base units; `milli_value` gives millicores."""
    assert q("250m").value == 1 and q("250m").milli_value == 250
    assert q("1.5").milli_value == 1500 and q("2").value == 2


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("1GB", "quantity such as"),
        ("", "quantity such as"),
        ("G", "quantity such as"),
        (".", "quantity such as"),
        ("1 G", "quantity such as"),
        ("-1", "negative"),
        ("1e999", "too large"),
        ("16Ei", "too large"),
        (True, "quantity string"),
        (None, "quantity string"),
        ([], "quantity string"),
    ],
)
def test_quantity_rejects(value: Any, words: str) -> None:
    """Malformed, negative, oversized and non-string/number quantities."""
    with pytest.raises(ValidationError) as e:
        Quantity.parse(value, "x.limit")
    assert e.value.path == "x.limit" and words in e.value.message


GOOD: list[tuple[dict[str, Any], object]] = [
    (
        {"name": "resource/memory", "value": {"request": "1G", "limit": "2G"}},
        MemoryIsolator(q("1G"), q("2G")),
    ),
    ({"name": "resource/memory", "value": {}}, MemoryIsolator()),
    ({"name": "resource/cpu", "value": {"limit": "500m"}}, CPUIsolator(None, q("500m"))),
    (
        {"name": "resource/block-bandwidth", "value": {"default": True, "limit": "2M"}},
        BlockBandwidthIsolator(q("2M")),
    ),
    (
        {"name": "resource/block-iops", "value": {"default": True, "limit": "1000"}},
        BlockIOPSIsolator(q("1000")),
    ),
    (
        {"name": "resource/network-bandwidth", "value": {"default": True, "limit": "1G"}},
        NetworkBandwidthIsolator(q("1G")),
    ),
    (
        {
            "name": "os/linux/capabilities-retain-set",
            "value": {"set": ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]},
        },
        CapabilitiesRetainSet(("CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE")),
    ),
    (
        {"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_SYS_ADMIN"]}},
        CapabilitiesRemoveSet(("CAP_SYS_ADMIN",)),
    ),
    ({"name": "os/linux/no-new-privileges", "value": True}, NoNewPrivilegesIsolator(True)),
    (
        {
            "name": "os/linux/seccomp-remove-set",
            "value": {"errno": "ENOTSUP", "set": ["clock_adjtime", "reboot"]},
        },
        SeccompRemoveSet(("clock_adjtime", "reboot"), "ENOTSUP"),
    ),
    (
        {
            "name": "os/linux/seccomp-retain-set",
            "value": {"errno": "", "set": ["read", "@appc.io/all", "@kurma/net"]},
        },
        SeccompRetainSet(("read", "@appc.io/all", "@kurma/net")),
    ),
    ({"name": "os/linux/oom-score-adj", "value": 1000}, OOMScoreAdjIsolator(1000)),
    ({"name": "os/linux/cpu-shares", "value": 262144}, CPUSharesIsolator(262144)),
    (
        {
            "name": "os/linux/selinux-context",
            "value": {
                "user": "system_u",
                "role": "system_r",
                "type": "dhcpc_t",
                "level": "s0:c1,c2",
            },
        },
        SELinuxContextIsolator("system_u", "system_r", "dhcpc_t", "s0:c1,c2"),
    ),
    (
        {"name": "os/unix/sysctl", "value": {"net.ipv4.tcp_mtu_probing": "1", "Kernel/X": "2"}},
        SysctlIsolator(FrozenMap({"net.ipv4.tcp_mtu_probing": "1", "Kernel/X": "2"})),
    ),
    (
        {"name": "os/linux/namespaces", "value": {"pid": "host", "net": "host", "ipc": "pod"}},
        NamespacesIsolator(("net", "pid")),
    ),
    ({"name": "os/linux/privileged", "value": False}, PrivilegedIsolator(False)),
    (
        {"name": "os/linux/devices", "value": ["/dev/ttyS0", "/dev/kmsg"]},
        DevicesIsolator(("/dev/ttyS0", "/dev/kmsg")),
    ),
    ({"name": "host/api-access", "value": {}}, ApiAccessIsolator(ApiScope.SUBTREE)),
    ({"name": "host/api-access", "value": {"scope": "host"}}, ApiAccessIsolator(ApiScope.HOST)),
    (
        {"name": "example.com/custom", "value": {"b": [1, 2], "a": None}},
        UnknownIsolator("example.com/custom", '{"a":null,"b":[1,2]}'),
    ),
    (
        {"name": "os/linux/apparmor", "value": {"profile": "x"}},
        UnknownIsolator("os/linux/apparmor", '{"profile":"x"}'),
    ),
]


@pytest.mark.parametrize(("doc", "expected"), GOOD, ids=[g[0]["name"] for g in GOOD])
def test_parses_typed_isolator(doc: dict[str, Any], expected: object) -> None:
    """Each known type parses into its class; the JSON form parses back to the same object."""
    isolator = parse_isolator(doc, "i")
    assert isolator == expected
    assert parse_isolator(isolator.to_json(), "i") == isolator


def test_every_standard_and_kurma_type_is_registered() -> None:
    """The registry knows the spec's 14 types and Kurma's 5."""
    assert len(isolator_types()) == 19
    assert isolator_types()["host/api-access"] is ApiAccessIsolator
    assert isolator_types()["os/linux/networks"] is NetworksIsolator


def test_networks_isolator_parses_names_and_ports() -> None:
    """Networks in order with docker's -p fields; bad names, ports and repeats refused."""
    iso = parse_isolator({"name": "os/linux/networks", "value": [
        {"name": "bridge", "ports": [{"hostPort": 8080, "containerPort": 80, "hostIP": "::1"}]},
        {"name": "backend"}]}, "i")  # fmt: skip
    assert isinstance(iso, NetworksIsolator)
    assert [n.name for n in iso.networks] == ["bridge", "backend"]
    assert iso.networks[0].ports[0].host_ip == "::1"
    for bad in ([{"name": "a/b"}], [{"name": "x"}, {"name": "x"}],
                [{"name": "x", "ports": [{"hostPort": 0, "containerPort": 1}]}],
                [{"name": "x", "ports": [{"hostPort": 1, "containerPort": 1, "protocol": "icmp"}]}],
                {"name": "x"}):  # fmt: skip
        with pytest.raises(ValidationError):
            parse_isolator({"name": "os/linux/networks", "value": bad}, "i")


def test_unknown_isolator_keeps_raw_value() -> None:
    """An unknown type is allowed (ace.md: executors MAY ignore it) and its value kept."""
    iso = parse_isolator({"name": "vendor/thing", "value": [1, "x"]}, "i")
    assert isinstance(iso, UnknownIsolator) and iso.value == [1, "x"]


def test_request_defaults_to_limit() -> None:
    """ace.md: "If request is omitted, it defaults to the value of limit"."""
    iso = parse_isolator({"name": "resource/memory", "value": {"limit": "1Gi"}}, "i")
    assert isinstance(iso, MemoryIsolator)
    assert iso.effective_request == q("1Gi") and iso.effective_request.value == 2**30


def test_capability_tables() -> None:
    """41 Linux capabilities numbered by position; the spec's 14 default ones among them."""
    assert CAPABILITIES.index("CAP_SYS_ADMIN") == 21 and len(CAPABILITIES) == 41
    assert len(DEFAULT_CAPABILITIES) == 14 and set(DEFAULT_CAPABILITIES) <= set(CAPABILITIES)


def iso(name: str, value: Any) -> dict[str, Any]:
    """An isolator object."""
    return {"name": name, "value": value}


BAD: dict[str, tuple[Any, str, str]] = {
    "not an object": ("x", "i", "object"),
    "name missing": ({"value": 1}, "i.name", "required"),
    "name format": (iso("Resource/CPU", {}), "i.name", "AC Identifier"),
    "value missing": ({"name": "x"}, "i.value", "required"),
    "memory value": (iso("resource/memory", "1G"), "i.value", "object"),
    "memory limit": (iso("resource/memory", {"limit": "1 G"}), "i.value.limit", "quantity"),
    "memory request": (iso("resource/memory", {"request": "-1"}), "i.value.request", "negative"),
    "cpu request over limit": (
        iso("resource/cpu", {"request": "1", "limit": "500m"}),
        "i.value.request",
        "greater than limit",
    ),
    "bandwidth default missing": (
        iso("resource/block-bandwidth", {"limit": "1M"}),
        "i.value.default",
        "true",
    ),
    "bandwidth default false": (
        iso("resource/network-bandwidth", {"default": False}),
        "i.value.default",
        "true",
    ),
    "iops request": (
        iso("resource/block-iops", {"default": True, "request": "1"}),
        "i.value.request",
        "not a parameter",
    ),
    "caps set missing": (iso("os/linux/capabilities-retain-set", {}), "i.value.set", "required"),
    "caps set empty": (
        iso("os/linux/capabilities-remove-set", {"set": []}),
        "i.value.set",
        "empty",
    ),
    "caps unknown": (
        iso("os/linux/capabilities-retain-set", {"set": ["NET_ADMIN"]}),
        "i.value.set[0]",
        "unknown capability",
    ),
    "caps duplicate": (
        iso("os/linux/capabilities-retain-set", {"set": ["CAP_KILL", "CAP_KILL"]}),
        "i.value.set[1]",
        "duplicate",
    ),
    "caps not string": (
        iso("os/linux/capabilities-retain-set", {"set": [1]}),
        "i.value.set[0]",
        "string",
    ),
    "nnp": (iso("os/linux/no-new-privileges", 1), "i.value", "boolean"),
    "seccomp empty": (iso("os/linux/seccomp-retain-set", {"set": []}), "i.value.set", "empty"),
    "seccomp syscall": (
        iso("os/linux/seccomp-remove-set", {"set": ["Reboot"]}),
        "i.value.set[0]",
        "unknown syscall",
    ),
    "seccomp wildcard unscoped": (
        iso("os/linux/seccomp-remove-set", {"set": ["@all"]}),
        "i.value.set[0]",
        "unknown syscall",
    ),
    "seccomp errno": (
        iso("os/linux/seccomp-remove-set", {"set": ["reboot"], "errno": "PERM"}),
        "i.value.errno",
        "errno",
    ),
    "oom low": (iso("os/linux/oom-score-adj", -1001), "i.value", "between -1000 and 1000"),
    "oom type": (iso("os/linux/oom-score-adj", "5"), "i.value", "integer"),
    "cpu shares": (iso("os/linux/cpu-shares", 1), "i.value", "between 2 and 262144"),
    "selinux colon": (
        iso("os/linux/selinux-context", {"user": "a:b", "role": "r", "type": "t", "level": "s0"}),
        "i.value.user",
        "':'",
    ),
    "selinux empty": (
        iso("os/linux/selinux-context", {"user": "u", "role": "", "type": "t", "level": "s0"}),
        "i.value.role",
        "non-empty",
    ),
    "selinux missing": (
        iso("os/linux/selinux-context", {"user": "u", "role": "r", "level": "s0"}),
        "i.value.type",
        "required",
    ),
    "sysctl not object": (iso("os/unix/sysctl", ["a"]), "i.value", "object"),
    "sysctl value": (iso("os/unix/sysctl", {"a.b": 1}), "i.value.a.b", "string"),
    "sysctl key": (iso("os/unix/sysctl", {"a b": "1"}), "i.value.a b", "sysctl parameter"),
    "namespaces key": (
        iso("os/linux/namespaces", {"mnt": "host"}),
        "i.value.mnt",
        "unknown namespace",
    ),
    "namespaces mode": (
        iso("os/linux/namespaces", {"net": "shared"}),
        "i.value.net",
        "'host' or 'pod'",
    ),
    "privileged": (iso("os/linux/privileged", "yes"), "i.value", "boolean"),
    "devices not list": (iso("os/linux/devices", "/dev/kmsg"), "i.value", "array"),
    "devices outside dev": (iso("os/linux/devices", ["/proc/kmsg"]), "i.value[0]", "under /dev/"),
    "devices escape": (iso("os/linux/devices", ["/dev/../etc/shadow"]), "i.value[0]", "normalised"),
    "devices duplicate": (
        iso("os/linux/devices", ["/dev/kmsg", "/dev/kmsg"]),
        "i.value[1]",
        "duplicate",
    ),
    "api scope": (iso("host/api-access", {"scope": "root"}), "i.value.scope", "unknown scope"),
}


@pytest.mark.parametrize(("doc", "path", "words"), BAD.values(), ids=BAD.keys())
def test_invalid_isolator(doc: Any, path: str, words: str) -> None:
    """Each value rule's violation names the field and what is wrong."""
    with pytest.raises(ValidationError) as e:
        parse_isolator(doc, "i")
    assert e.value.path == path
    assert words in e.value.message


def listed(*docs: dict[str, Any]) -> list[tuple[str, Any]]:
    """An isolator list as (path, item) pairs."""
    return [(f"isolators[{i}]", d) for i, d in enumerate(docs)]


CAPS = {"set": ["CAP_KILL"]}
SECCOMP = {"set": ["read"]}
LIST_BAD: dict[str, tuple[list[dict[str, Any]], str]] = {
    "caps retain + remove": (
        [
            iso("os/linux/capabilities-retain-set", CAPS),
            iso("os/linux/capabilities-remove-set", CAPS),
        ],
        "cannot be used together",
    ),
    "caps remove + retain": (
        [
            iso("os/linux/capabilities-remove-set", CAPS),
            iso("os/linux/capabilities-retain-set", CAPS),
        ],
        "cannot be used together",
    ),
    "seccomp retain + remove": (
        [iso("os/linux/seccomp-retain-set", SECCOMP), iso("os/linux/seccomp-remove-set", SECCOMP)],
        "cannot be used together",
    ),
    "two seccomp remove sets": (
        [iso("os/linux/seccomp-remove-set", SECCOMP), iso("os/linux/seccomp-remove-set", SECCOMP)],
        "only one",
    ),
    "two sysctl": ([iso("os/unix/sysctl", {}), iso("os/unix/sysctl", {})], "only one"),
    "two selinux": (
        [iso("os/linux/selinux-context", {"user": "u", "role": "r", "type": "t", "level": "s"})]
        * 2,
        "only one",
    ),
    "two oom": ([iso("os/linux/oom-score-adj", 1), iso("os/linux/oom-score-adj", 2)], "only one"),
    "two cpu-shares": ([iso("os/linux/cpu-shares", 2), iso("os/linux/cpu-shares", 3)], "only one"),
    "two api-access": ([iso("host/api-access", {}), iso("host/api-access", {})], "only one"),
}


@pytest.mark.parametrize(("docs", "words"), LIST_BAD.values(), ids=LIST_BAD.keys())
def test_list_rules(docs: list[dict[str, Any]], words: str) -> None:
    """Mutually exclusive and single-instance types are rejected at the second one's name."""
    with pytest.raises(ValidationError) as e:
        parse_isolators(listed(*docs))
    assert e.value.path == "isolators[1].name"
    assert words in e.value.message


def test_list_allows_repeatable_and_unknown_types() -> None:
    """Resources, capability sets of one kind and unknown types may repeat."""
    docs = [
        iso("resource/memory", {"limit": "1G"}),
        iso("resource/memory", {"limit": "2G"}),
        iso("os/linux/capabilities-retain-set", CAPS),
        iso("os/linux/capabilities-retain-set", CAPS),
        iso("x/y", 1),
        iso("x/y", 2),
    ]
    assert len(parse_isolators(listed(*docs))) == 6
