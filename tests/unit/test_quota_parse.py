"""Where quotas come from: the host/api-access isolator's `quota`, kurmad's defaults, and the
least-privilege rule that a child never gets more than its parent has left."""

from __future__ import annotations

from typing import Any

import pytest

from kurma.aci import ApiAccessIsolator, ApiScope, SubtreeQuota, parse_isolator
from kurma.api._config import ConfigError, DaemonConfig, apply
from kurma.api._quota import subtree_defaults
from kurma.errors import ValidationError
from kurma.runtime._confine import NotPermitted, check_quota_within


def api(value: Any) -> ApiAccessIsolator:
    parsed = parse_isolator({"name": "host/api-access", "value": value}, "isolators[0]")
    assert isinstance(parsed, ApiAccessIsolator)
    return parsed


def test_quota_parses_counts_and_quantities() -> None:
    iso = api({"scope": "subtree", "quota": {"pods": 10, "imageBytes": "1G", "logBytes": "64Mi"}})
    assert iso.quota == SubtreeQuota(pods=10, image_bytes=10**9, log_bytes=64 << 20)


def test_quota_keys_match_case_insensitively_and_are_optional() -> None:
    assert api({"quota": {"IMAGEBYTES": 4096}}).quota == SubtreeQuota(image_bytes=4096)
    assert api({"quota": {}}).quota == SubtreeQuota()
    assert api({"scope": "subtree"}).quota is None


def test_quota_round_trips_through_json() -> None:
    iso = api({"quota": {"pods": 3, "logBytes": "1Ki"}})
    assert iso.value_json() == {"scope": "subtree", "quota": {"pods": 3, "logBytes": 1024}}
    assert api(iso.value_json()) == iso
    assert api({}).value_json() == {"scope": "subtree"}  # unchanged without a quota


@pytest.mark.parametrize(
    ("value", "path", "says"),
    [
        ({"quota": {"pods": -1}}, "value.quota.pods", "between 0 and"),
        ({"quota": {"pods": "3"}}, "value.quota.pods", "must be an integer"),
        ({"quota": {"pods": True}}, "value.quota.pods", "must be an integer"),
        ({"quota": {"imageBytes": "1 G"}}, "value.quota.imageBytes", "quantity"),
        ({"quota": {"logBytes": "-5M"}}, "value.quota.logBytes", "negative"),
        ({"quota": {"podz": 3}}, "value.quota.podz", "unknown quota 'podz'"),
        ({"quota": [1]}, "value.quota", "must be an object"),
        ({"scope": "host", "quota": {"pods": 1}}, "value.quota", "scope subtree only"),
    ],
)
def test_bad_quotas_name_the_field(value: Any, path: str, says: str) -> None:
    with pytest.raises(ValidationError) as error:
        api(value)
    assert error.value.path == f"isolators[0].{path}"
    assert says in error.value.message


def test_kurmad_defaults_parse_quantities_and_null() -> None:
    config = apply(
        DaemonConfig(),
        {"subtree_max_pods": 20, "subtree_max_image_bytes": "2G", "subtree_max_log_bytes": "8Mi"},
        "kurmad.yml",
    )
    assert subtree_defaults(config) == SubtreeQuota(20, 2 * 10**9, 8 << 20)
    flags = apply(config, {"subtree_max_pods": "", "subtree_max_log_bytes": "4096"}, "x")
    assert (flags.subtree_max_pods, flags.subtree_max_log_bytes) == (None, 4096)
    # bounded by default: 128 pods, 1 GiB of images and 256 MiB of logs
    assert subtree_defaults(DaemonConfig()) == SubtreeQuota(128, 1 << 30, 256 << 20)
    unlimited = apply(
        DaemonConfig(),
        {"subtree_max_pods": "", "subtree_max_image_bytes": None, "subtree_max_log_bytes": ""},
        "x",
    )
    assert subtree_defaults(unlimited) == SubtreeQuota()


def test_state_min_free_is_a_share() -> None:
    assert DaemonConfig().state_min_free == 0.10
    for raw, share in (("25%", 0.25), (0.05, 0.05), ("0", 0.0), (0, 0.0)):
        assert apply(DaemonConfig(), {"state_min_free": raw}, "x").state_min_free == share
    for raw in ("95%", 1, -0.1, "lots", True):
        with pytest.raises(ConfigError, match="state_min_free"):
            apply(DaemonConfig(), {"state_min_free": raw}, "kurmad.yml")


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("subtree_max_pods", -1, "0..1000000"),
        ("subtree_max_pods", "many", "must be an integer"),
        ("subtree_max_image_bytes", "lots", "quantity"),
        ("subtree_max_log_bytes", [1], "quantity"),
    ],
)
def test_bad_kurmad_defaults_name_the_key(key: str, value: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=f"kurmad.yml: {key}: .*{says}"):
        apply(DaemonConfig(), {key: value}, "kurmad.yml")


def test_a_child_quota_within_what_is_left_passes() -> None:
    room = SubtreeQuota(pods=2, image_bytes=1000, log_bytes=None)
    check_quota_within(SubtreeQuota(2, 1000, 1 << 40), room, "top")
    check_quota_within(SubtreeQuota(), room, "top")  # nothing asked: counted up the chain


@pytest.mark.parametrize(
    ("child", "says"),
    [
        (SubtreeQuota(pods=3), "quota pods: 3 is more than pod top's subtree has left (2)"),
        (SubtreeQuota(image_bytes=1001), "quota imageBytes: 1001"),
    ],
)
def test_a_child_quota_beyond_what_is_left_is_refused(child: SubtreeQuota, says: str) -> None:
    with pytest.raises(NotPermitted, match=says.replace("(", r"\(").replace(")", r"\)")):
        check_quota_within(child, SubtreeQuota(pods=2, image_bytes=1000), "top")


def test_scope_still_defaults_to_subtree() -> None:
    assert api({}).scope is ApiScope.SUBTREE


def test_tenant_publish_ports_is_a_port_range() -> None:
    from kurma.api._config import _port_range

    assert _port_range("30000-32767") == (30000, 32767) and _port_range("") is None
    for bad in ("1", "5-1", "0-9", "a-b", "1-65536"):
        with pytest.raises(ValueError, match="LO-HI"):
            _port_range(bad)
