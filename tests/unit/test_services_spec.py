"""The services file (kurma-init -> kurmad): parsing with errors that name the key, the
round trip through `write_services_file`, backoff delays, and the dependency graph."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import kurma.services as services
from kurma.services import (
    Backoff,
    HealthCheck,
    RestartPolicy,
    ServicesFile,
    ServiceSpec,
    ServiceSpecError,
    VolumeSpec,
    check_graph,
    load_services_file,
    parse_services,
    stop_order,
    write_services_file,
)

EXAMPLE = """
ready: [network]
services:
  ntp:
    image: kurma.io/ntp
    exec: null
    environment: {NTP_SERVERS: "pool.ntp.org"}
    isolators: {"host/api-access": {"scope": "host"}}
    volumes: {conf: {source: /run/kurma/services/ntp, readOnly: true}}
    depends_on: [network, syslog]
    provides: [clock]
    restart: on-failure
    backoff: {initial: 0.5, maximum: 8, factor: 3}
    health: {command: [/bin/true], interval: 2, timeout: 1, retries: 2}
  syslog:
    image: kurma.io/syslog
"""


def test_public_names() -> None:
    """What kurma-init and kurmad rely on."""
    public = {n for n in dir(services) if not n.startswith("_")}
    assert {
        "ServiceSpec",
        "ServicesFile",
        "write_services_file",
        "load_services_file",
        "dump_services",
        "ServiceState",
        "ServiceStatus",
        "ServiceNotFound",
    } <= public


def test_example_parses_every_field() -> None:
    loaded = parse_services(yaml.safe_load(EXAMPLE))
    assert loaded.ready == ("network",)
    assert loaded.problems == ()
    ntp = loaded.services["ntp"]
    assert ntp == ServiceSpec(
        name="ntp",
        image="kurma.io/ntp",
        environment={"NTP_SERVERS": "pool.ntp.org"},
        isolators={"host/api-access": {"scope": "host"}},
        volumes={"conf": VolumeSpec("/run/kurma/services/ntp", read_only=True)},
        depends_on=("network", "syslog"),
        provides=("clock",),
        restart=RestartPolicy.ON_FAILURE,
        backoff=Backoff(0.5, 8.0, 3.0),
        health=HealthCheck(("/bin/true",), 2.0, 1.0, 2),
    )
    syslog = loaded.services["syslog"]
    assert syslog.restart is RestartPolicy.ALWAYS and syslog.enabled and syslog.exec is None


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"image": "x", "restart": "sometimes"}, "services.bad.restart: must be always"),
        ({"image": "x", "bogus": 1}, "services.bad.bogus: unknown key"),
        ({}, "services.bad.image: give an image"),
        ({"image": "x", "exec": "sleep 1"}, "services.bad.exec: must be a list"),
        ({"image": "x", "environment": {"A": 1}}, "services.bad.environment.A: must be a string"),
        ({"image": "x", "volumes": {"v": {"source": "rel"}}}, "services.bad.volumes.v.source"),
        ({"image": "x", "backoff": {"initial": -1}}, "services.bad.backoff.initial"),
        ({"image": "x", "backoff": {"factor": 0.5}}, "services.bad.backoff.factor"),
        ({"image": "x", "health": {"interval": 1}}, "services.bad.health.command"),
        ({"image": "x", "health": {"command": ["t"], "retries": 0}}, "health.retries"),
        ({"image": "x", "health": {"command": ["t"], "start_timeout": 0}}, "start_timeout"),
        ({"image": "x", "depends_on": ["bad"]}, "cannot depend on itself"),
        ({"image": "x", "enabled": "yes"}, "services.bad.enabled: must be true or false"),
    ],
)
def test_a_bad_service_is_reported_by_key_and_the_others_stand(service: dict, message: str) -> None:
    loaded = parse_services({"services": {"bad": service, "good": {"image": "busybox"}}})
    assert list(loaded.services) == ["good"]
    assert len(loaded.problems) == 1 and message in loaded.problems[0], loaded.problems


def test_bad_names_and_bad_shape() -> None:
    loaded = parse_services({"services": {"Bad_Name": {"image": "x"}}})
    assert "services.Bad_Name: a service name must be" in loaded.problems[0]
    with pytest.raises(ServiceSpecError, match="must be a mapping"):
        parse_services(["a"])
    with pytest.raises(ServiceSpecError, match="servics: unknown key"):
        parse_services({"servics": {}})


def test_write_then_load_round_trips_atomically(tmp_path: Path) -> None:
    original = parse_services(yaml.safe_load(EXAMPLE))
    path = tmp_path / "services.yml"
    write_services_file(path, original)
    assert os.listdir(tmp_path) == ["services.yml"]  # no temporary left behind
    again = load_services_file(path)
    assert again == ServicesFile(original.services, original.ready)
    assert again.services["ntp"].fingerprint() == original.services["ntp"].fingerprint()


def test_unreadable_or_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(ServiceSpecError, match="cannot read"):
        load_services_file(tmp_path / "missing.yml")
    (tmp_path / "bad.yml").write_text("services: [unclosed\n")
    with pytest.raises(ServiceSpecError, match="not valid YAML"):
        load_services_file(tmp_path / "bad.yml")


def test_fingerprint_changes_with_the_spec() -> None:
    a = ServiceSpec(name="a", image="busybox")
    assert a.fingerprint() == ServiceSpec(name="a", image="busybox").fingerprint()
    assert a.fingerprint() != ServiceSpec(name="a", image="busybox", exec=("sh",)).fingerprint()


def test_backoff_grows_to_its_cap() -> None:
    b = Backoff(initial=0.2, maximum=1.0, factor=2.0)
    assert [b.delay(n) for n in range(6)] == [0.0, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.reset_after == 2.0
    assert Backoff().reset_after == 60.0
    assert Backoff(1, 60, 2).delay(10_000) == 60  # no overflow


def _specs(**deps: tuple[str, ...]) -> dict[str, ServiceSpec]:
    return {n: ServiceSpec(name=n, image="x", depends_on=d) for n, d in deps.items()}


def test_graph_reports_unknown_dependencies_and_cycles() -> None:
    specs = _specs(a=(), b=("a", "network"), c=("nope",), d=("e",), e=("d",), f=("d",))
    problems = check_graph(specs, ready=())
    assert problems["c"] == "depends on unknown service or condition 'nope'"
    assert problems["d"].startswith("dependency cycle: d -> e -> d")
    assert problems["e"] == problems["d"]
    assert set(problems) == {"c", "d", "e"}  # f only waits, forever, for d


def test_conditions_come_from_ready_and_provides() -> None:
    specs = _specs(ntp=(), app=("clock", "dns"))
    specs["ntp"] = ServiceSpec(name="ntp", image="x", provides=("clock",))
    assert check_graph(specs, ready=("dns",)) == {}
    assert "'dns'" in check_graph(specs, ready=())["app"]


def test_stop_order_is_dependents_first() -> None:
    specs = _specs(base=(), mid=("base",), top=("mid", "base"), other=())
    specs["clock"] = ServiceSpec(name="clock", image="x", provides=("clock",))
    specs["timed"] = ServiceSpec(name="timed", image="x", depends_on=("clock",))
    assert stop_order(specs) == [["top"], ["mid", "timed"], ["base", "clock", "other"]]


def test_a_health_checks_start_timeout_defaults_to_a_minute() -> None:
    loaded = parse_services(
        {"services": {"a": {"image": "x", "health": {"command": ["t"]}},
                      "b": {"image": "x", "health": {"command": ["t"], "start_timeout": 2.5}}}}
    )  # fmt: skip
    health = {name: s.health for name, s in loaded.services.items()}
    assert health["a"] is not None and health["a"].start_timeout == 60.0
    assert health["b"] is not None and health["b"].start_timeout == 2.5
