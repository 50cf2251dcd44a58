"""The supervisor's logic with a fake runtime and a fake clock: start order, restart
policies and backoff as whole state sequences, start failures, RestartService, the file
rewritten, adoption, and stopping dependents first. No real time passes."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kurma.aci import PodManifest
from kurma.errors import ImageNotFound, ValidationError
from kurma.runtime._podrecord import PodState
from kurma.runtime._runtime import PodNotFound
from kurma.services import ServiceNotFound, parse_services, write_services_file
from kurma.services._supervisor import Supervisor

from ..waiting import wait_for


class FakeRuntime:
    """The runtime calls the supervisor makes, on records in a dict; `log` is what it did."""

    def __init__(self) -> None:
        self.pods: dict[str, SimpleNamespace] = {}
        self.log: list[tuple[str, str]] = []
        self.grace: dict[str, float | None] = {}
        self.fail: dict[str, Exception] = {}  # service name -> what create_pod raises
        self.healthy: set[str] = set()  # services whose health checks pass
        self.checks: list[str] = []  # the services whose pods were checked, in order
        self._ids = itertools.count(1)

    def add_listener(self, callback: Any) -> None:
        pass

    def remove_listener(self, callback: Any) -> None:
        pass

    def list_pods(self) -> list[SimpleNamespace]:
        return list(self.pods.values())

    def get(self, uuid: str) -> SimpleNamespace:
        if uuid not in self.pods:
            raise PodNotFound(uuid)
        return self.pods[uuid]

    def create_pod(self, manifest: PodManifest, *, name: str) -> SimpleNamespace:
        if name in self.fail:
            raise self.fail[name]
        n = next(self._ids)
        annotations = [{"name": k, "value": v} for k, v in manifest.annotations.items()]
        record = SimpleNamespace(
            uuid=f"pod-{n}", name=name, state=PodState.CREATED, parent=None, created_at=n,
            started_at=None, manifest=json.dumps({"annotations": annotations}),
            apps=[SimpleNamespace(name="app", exit_code=None, error=None)],
        )  # fmt: skip
        self.pods[record.uuid] = record
        self.log.append(("create", name))
        return record

    def start_pod(self, uuid: str) -> SimpleNamespace:
        record = self.pods[uuid]
        record.state, record.started_at = PodState.RUNNING, time.time()
        return record

    def exit(self, name: str, code: int) -> None:
        (record,) = [
            p for p in self.pods.values() if p.name == name and p.state is PodState.RUNNING
        ]
        record.state, record.apps[0].exit_code = PodState.EXITED, code

    def stop_pod(self, uuid: str, grace: float | None = None) -> SimpleNamespace:
        record = self.pods[uuid]
        record.state = PodState.EXITED
        self.log.append(("stop", record.name))
        self.grace[record.name] = grace
        return record

    def destroy_pod(self, uuid: str, grace: float | None = None) -> list[str]:
        record = self.pods.pop(uuid)
        self.log.append(("destroy", record.name))
        return [uuid]

    def exec_in_pod(self, uuid: str, app: None, argv: Any, stdio: Any) -> SimpleNamespace:
        return SimpleNamespace(error=None, name=self.pods[uuid].name)

    def wait_exec(self, proc: SimpleNamespace, timeout: float) -> SimpleNamespace:
        self.checks.append(proc.name)
        return SimpleNamespace(exit_code=0 if proc.name in self.healthy else 1)

    def running(self) -> set[str]:
        return {p.name for p in self.pods.values() if p.state is PodState.RUNNING}


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    runtime: FakeRuntime
    clock: Clock
    sup: Supervisor
    path: Path

    def write(self, ready: tuple[str, ...] = (), **services: dict[str, Any]) -> None:
        doc = {
            "ready": list(ready),
            "services": {k: {"image": "x", **v} for k, v in services.items()},
        }
        loaded = parse_services(doc)
        assert not loaded.problems
        write_services_file(self.path, loaded)

    def state(self, name: str) -> str:
        return self.sup.status(name).state.value

    def step(self, advance: float = 0.0) -> None:
        self.clock.now += advance
        self.sup.step()


def _manifest(spec: Any) -> PodManifest:
    if spec.image == "invalid":
        raise ValidationError("spec.isolators[0]", "unknown isolator")
    return PodManifest()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    runtime, clock = FakeRuntime(), Clock()
    sup = Supervisor(runtime, str(tmp_path / "services.yml"), _manifest, clock=clock)  # type: ignore[arg-type]
    yield Env(runtime, clock, sup, tmp_path / "services.yml")
    sup.close(stop_services=False, budget=0)


QUICK = {"backoff": {"initial": 1, "maximum": 8, "factor": 2}}


def test_start_order_follows_dependencies_and_conditions(env: Env) -> None:
    env.write(
        ("network",),
        app={"depends_on": ["db", "clock", "network"]},
        db={},
        ntp={"provides": ["clock"]},
        late={"depends_on": ["app"]},
    )
    env.sup.start(thread=False)
    env.step()
    assert [n for what, n in env.runtime.log if what == "create"] == ["db", "ntp", "app", "late"]
    assert {s.name: s.state.value for s in env.sup.services()} == dict.fromkeys(
        ["app", "db", "late", "ntp"], "RUNNING"
    )


def test_waiting_says_what_it_still_waits_for(env: Env) -> None:
    env.write(
        app={"depends_on": ["db", "clock"]}, db={"image": "missing"}, ntp={"provides": ["clock"]}
    )
    env.runtime.fail["db"] = ImageNotFound("no image missing")
    env.sup.start(thread=False)
    env.step()
    assert env.state("app") == "WAITING"
    assert env.sup.status("app").message == "waiting for db"  # clock holds already
    assert (
        env.state("db") == "BACKOFF"
        and "cannot start: no image missing" in env.sup.status("db").message
    )


def test_always_restarts_with_growing_backoff_then_resets(env: Env) -> None:
    env.write(web={"restart": "always", **QUICK})
    env.sup.start(thread=False)
    env.step()
    delays = []
    for _ in range(5):
        env.runtime.exit("web", 1)
        env.step()
        assert env.state("web") == "BACKOFF"
        start = env.clock.now
        while env.state("web") == "BACKOFF":
            env.step(0.25)
        delays.append(env.clock.now - start)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    status = env.sup.status("web")
    assert status.restarts == 5 and status.last_exit_code == 1 and status.state.value == "RUNNING"
    env.step(16.0)  # ran longer than reset_after (2 x maximum): not a quick failure
    env.runtime.exit("web", 0)
    env.step()
    assert env.sup.status("web").message == "exited with code 0; restarting in 1 s"


@pytest.mark.parametrize(
    ("policy", "code", "state"),
    [("on-failure", 0, "EXITED"), ("on-failure", 3, "BACKOFF"), ("never", 3, "EXITED")],
)
def test_restart_policies(env: Env, policy: str, code: int, state: str) -> None:
    env.write(job={"restart": policy, **QUICK})
    env.sup.start(thread=False)
    env.step()
    env.runtime.exit("job", code)
    env.step()
    assert env.state("job") == state
    assert env.sup.status("job").last_exit_code == code
    env.step(10)
    assert (env.runtime.running() == {"job"}) is (state == "BACKOFF")


def test_a_spec_the_runtime_refuses_fails_without_restarts(env: Env) -> None:
    env.write(bad={"image": "invalid"})
    env.sup.start(thread=False)
    env.step()
    env.step(100)
    status = env.sup.status("bad")
    assert status.state.value == "FAILED" and "unknown isolator" in status.message
    assert status.restarts == 0


def test_restart_service_replaces_the_pod_and_resets_backoff(env: Env) -> None:
    env.write(web=QUICK)
    env.sup.start(thread=False)
    env.step()
    first = env.sup.status("web").pod
    for _ in range(3):  # three quick failures: the next delay would be 8 s
        env.runtime.exit("web", 1)
        env.step()
        while env.state("web") == "BACKOFF":
            env.step(0.5)
    restarted = env.sup.restart("web")
    assert restarted.state.value == "RUNNING" and restarted.pod != first
    assert restarted.restarts == 4
    env.runtime.exit("web", 1)
    env.step()
    assert env.sup.status("web").message.endswith("restarting in 1 s")
    with pytest.raises(ServiceNotFound, match=r"no service named 'nope' \(services: web\)"):
        env.sup.restart("nope")


def test_rewritten_file_adds_removes_and_replaces(env: Env) -> None:
    env.write(a={}, b={})
    env.sup.start(thread=False)
    env.step()
    a_pod = env.sup.status("a").pod
    env.write(a={}, c={}, b={"environment": {"X": "1"}})
    env.clock.now += 1  # a new mtime is not needed: the rename gives a new inode
    env.step()
    assert env.sup.status("a").pod == a_pod
    assert env.runtime.running() == {"a", "b", "c"}
    assert env.runtime.log[-3:] == [("destroy", "b"), ("create", "b"), ("create", "c")]
    env.write(c={})
    env.step()
    assert [s.name for s in env.sup.services()] == ["c"]
    assert env.runtime.running() == {"c"}


def test_adopts_a_running_pod_of_the_same_spec(env: Env, tmp_path: Path) -> None:
    env.write(web={}, old={})
    env.sup.start(thread=False)
    env.step()
    web_pod = env.sup.status("web").pod
    # a new kurmad: the same runtime (pods survive), a new supervisor; `old` was removed
    env.write(web={})
    again = Supervisor(env.runtime, str(env.path), _manifest, clock=env.clock)  # type: ignore[arg-type]
    again.start(thread=False)
    again.step()
    assert again.status("web").pod == web_pod and again.status("web").state.value == "RUNNING"
    assert [n for what, n in env.runtime.log if what == "create"] == ["old", "web"]
    assert env.runtime.running() == {"web"}  # the removed service's pod was destroyed


def test_changed_spec_is_not_adopted(env: Env) -> None:
    env.write(web={})
    env.sup.start(thread=False)
    env.step()
    env.write(web={"exec": ["/bin/other"]})
    again = Supervisor(env.runtime, str(env.path), _manifest, clock=env.clock)  # type: ignore[arg-type]
    again.start(thread=False)
    again.step()
    assert [n for what, n in env.runtime.log if what in ("create", "destroy")] == [
        "web",
        "web",
        "web",
    ]
    assert again.status("web").restarts == 0 and len(env.runtime.running()) == 1


def test_unknown_dependencies_and_cycles_fail(env: Env) -> None:
    env.write(a={"depends_on": ["b"]}, b={"depends_on": ["a"]}, c={"depends_on": ["x"]}, d={})
    env.sup.start(thread=False)
    env.step()
    assert {s.name: s.state.value for s in env.sup.services()} == {
        "a": "FAILED", "b": "FAILED", "c": "FAILED", "d": "RUNNING",
    }  # fmt: skip
    assert env.runtime.running() == {"d"}


def test_close_stops_dependents_first_in_the_budget(env: Env) -> None:
    env.write(base={}, mid={"depends_on": ["base"]}, top={"depends_on": ["mid"]}, side={})
    env.sup.start(thread=False)
    env.step()
    env.runtime.log.clear()
    env.sup.close(stop_services=True, budget=5.0)
    stops = [n for what, n in env.runtime.log if what == "stop"]
    assert stops[0] == "top" and stops[1] == "mid" and set(stops[2:]) == {"base", "side"}
    assert all(0 < g <= 5.0 for g in env.runtime.grace.values())  # type: ignore[operator]
    assert {s.state.value for s in env.sup.services()} == {"STOPPED"}


def test_restart_count_survives_adoption(env: Env) -> None:
    env.write(web={})
    env.sup.start(thread=False)
    env.step()
    env.sup.restart("web")
    env.sup.restart("web")
    again = Supervisor(env.runtime, str(env.path), _manifest, clock=env.clock)  # type: ignore[arg-type]
    again.start(thread=False)
    again.step()
    assert again.status("web").restarts == 2


def test_a_foreign_pod_with_the_name_blocks_the_service(env: Env) -> None:
    env.runtime.create_pod(PodManifest(), name="web")  # someone's own pod, no annotations
    env.write(web=QUICK)
    env.sup.start(thread=False)
    env.step()
    status = env.sup.status("web")
    assert status.state.value == "BACKOFF" and "a pod named 'web' exists already" in status.message
    assert len(env.runtime.pods) == 1  # the other pod is untouched


def test_problems_of_the_file_are_kept_for_the_api(env: Env) -> None:
    env.path.write_text("services:\n  good: {image: x}\n  bad: {image: x, restart: maybe}\n")
    env.sup.start(thread=False)
    env.step()
    assert [s.name for s in env.sup.services()] == ["good"]
    assert env.sup.problems == (
        "services.bad.restart: must be always, on-failure or never, got 'maybe'",
    )
    env.path.with_name("new").write_text("services: [")
    env.path.with_name("new").rename(env.path)
    env.step()
    assert "not valid YAML" in env.sup.problems[0]
    assert env.runtime.running() == {"good"}  # a refused file changes nothing


HEALTH = {"command": ["check"], "interval": 1, "start_timeout": 5}


def _checked(env: Env, count: int) -> None:
    """Step (no time passes) until the pool thread ran `count` checks and the loop took them."""

    def done() -> bool:
        env.step()
        return len(env.runtime.checks) >= count and not env.sup._entries["web"].probing

    wait_for(done, f"{count} health checks", 10.0, every=0.005)


@pytest.mark.parametrize(("policy", "state"), [("always", "BACKOFF"), ("never", "FAILED")])
def test_a_health_check_that_never_passes_ends_the_start(env: Env, policy: str, state: str) -> None:
    """Checks that fail from the start keep a service STARTING for `start_timeout` s at
    most: then its pod is stopped and its restart policy applies (quick failure: backoff)."""
    env.write(web={"restart": policy, "health": HEALTH, **QUICK})
    env.sup.start(thread=False)
    env.step()
    seen = []
    for second in range(5):  # one check a second: still starting, not yet given up
        env.step(1.0 if second else 0.0)
        _checked(env, second + 1)
        seen.append(env.state("web"))
    assert seen == ["STARTING"] * 5
    assert env.sup.status("web").message == "waiting for the first health check (exit code 1)"
    env.step(1.0)  # 5 s after the start
    status = env.sup.status("web")
    assert status.state.value == state
    assert status.message.startswith("no health check passed within 5 s; last: exit code 1")
    assert ("stop", "web") in env.runtime.log and status.pod  # kept for its logs
    if policy == "always":
        env.step(1.0)  # the backoff's first delay: a new pod, the count goes up
        assert env.state("web") == "STARTING" and env.sup.status("web").restarts == 1
        assert env.sup.status("web").pod != status.pod


def test_a_health_check_that_passes_in_time_makes_it_running(env: Env) -> None:
    env.write(web={"health": HEALTH, **QUICK})
    env.sup.start(thread=False)
    env.step()
    _checked(env, 1)
    env.runtime.healthy.add("web")
    env.step(4.0)
    _checked(env, 2)
    assert env.state("web") == "RUNNING"
    env.step(10.0)  # past the start timeout: it no longer applies
    assert env.state("web") == "RUNNING"
