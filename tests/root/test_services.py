"""System services in a real kurmad: a services file of busybox services, run as pods.

Dependency order, restart with growing backoff, RestartService, the file rewritten (added,
removed, changed), ServiceLogs, `kurmactl service ls`, the boot log, shutdown dependents
first, re-adoption after SIGKILL, and Poweroff's signal to a stand-in kurma-init. One daemon
is shared by the tests that only rewrite the file; the others start their own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.client import Client, FailedPrecondition, NotFound
from kurma.services import load_services_file, parse_services, write_services_file

from ..waiting import wait_for
from .runtime_support import IMAGE_NAME
from .test_kurmactl import kurmactl, ok
from .test_kurmad import EXITED, RUNNING, Daemon, make_daemon, pod_processes

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

QUICK = {"initial": 0.2, "maximum": 1.6, "factor": 2.0}


def sh(script: str, **extra: Any) -> dict[str, Any]:
    """A busybox service running `script`."""
    return {"image": IMAGE_NAME, "exec": ["/bin/sh", "-c", script], "backoff": QUICK, **extra}


def write(daemon: Daemon, ready: tuple[str, ...] = (), **services: dict[str, Any]) -> None:
    path = daemon.work / "services.yml"
    loaded = parse_services({"ready": list(ready), "services": services})
    assert not loaded.problems, loaded.problems
    write_services_file(path, loaded)
    assert load_services_file(path).services.keys() == services.keys()


def by_name(client: Client) -> dict[str, Any]:
    return {s.name: s for s in client.services()}


def output(client: Client, name: str) -> bytes:
    """A service's output so far; b"" while it has no pod (between two of them)."""
    try:
        return b"".join(c.data for c in client.service_logs(name))
    except FailedPrecondition:
        return b""


def state_of(client: Client, name: str, *states: str) -> Any:
    """The service once it is in one of `states` (polled)."""
    service = by_name(client).get(name)
    return service if service is not None and service.state in states else None


def wait_state(client: Client, name: str, *states: str, timeout: float = 20) -> Any:
    """The service once in one of `states`; the failure shows every service's state."""
    try:
        return wait_for(lambda: state_of(client, name, *states), f"{name} {states}", timeout)
    except AssertionError as e:
        now = {s.name: (s.state, s.message, s.restarts) for s in client.services()}
        raise AssertionError(f"{e}: {now}") from None


def start(daemon: Daemon, busybox_aci: Path, *flags: str) -> Client:
    """kurmad with a services file (not written yet) and busybox imported."""
    client = daemon.start("--services-file", str(daemon.work / "services.yml"), *flags)
    client.import_image(busybox_aci)
    return client


@pytest.fixture(scope="module")
def shared(busybox_aci: Path) -> Iterator[tuple[Daemon, Client]]:
    for daemon in make_daemon():
        boot_log = daemon.work / "boot-log.json"
        client = start(daemon, busybox_aci, "--boot-log-file", str(boot_log))
        try:
            yield daemon, client
        finally:
            client.close()


@pytest.fixture
def own() -> Iterator[Daemon]:
    yield from make_daemon()


def test_services_start_in_dependency_order(shared: tuple[Daemon, Client]) -> None:
    """`app` waits for `base` (a service) and `clock` (a condition `gated` provides once its
    health check passes); unknown dependencies and cycles are FAILED with a message."""
    daemon, client = shared
    write(
        daemon,
        ("network",),
        base=sh("exec sleep 1000"),
        gated=sh(
            "sleep 1; touch /tmp/ok; exec sleep 1000",
            provides=["clock"],
            health={"command": ["test", "-e", "/tmp/ok"], "interval": 0.2, "timeout": 2},
        ),
        app=sh("exec sleep 1000", depends_on=["base", "clock", "network"]),
        lonely=sh("exec sleep 1000", depends_on=["nope"]),
        loop1=sh("exec sleep 1000", depends_on=["loop2"]),
        loop2=sh("exec sleep 1000", depends_on=["loop1"]),
    )
    waiting = wait_state(client, "app", "WAITING")
    assert "clock" in waiting.message
    app = wait_state(client, "app", "RUNNING")
    base, gated = by_name(client)["base"], by_name(client)["gated"]
    assert gated.state == "RUNNING" and base.state == "RUNNING"
    created = {s.name: client.get(s.pod).created_at.ToNanoseconds() for s in (app, base, gated)}
    assert created["app"] > created["base"] and created["app"] > created["gated"]
    services = by_name(client)
    assert services["lonely"].state == "FAILED"
    assert services["lonely"].message == "depends on unknown service or condition 'nope'"
    assert services["loop1"].state == "FAILED" and "dependency cycle" in services["loop1"].message
    assert not services["lonely"].pod
    pod = client.get(app.pod)
    assert pod.name == "app" and pod.state == RUNNING and not pod.parents  # a host-level pod


def test_failing_service_restarts_with_growing_delays(shared: tuple[Daemon, Client]) -> None:
    """A service that exits 1 is restarted after 0.2, 0.4, 0.8 ... s; restarts count up."""
    daemon, client = shared
    write(daemon, crash=sh("echo boom; exit 1"))
    seen: list[tuple[float, int]] = []

    def four_restarts() -> bool:
        service = by_name(client).get("crash")
        if service is not None and (not seen or service.restarts != seen[-1][1]):
            seen.append((time.monotonic(), service.restarts))
        return bool(seen) and seen[-1][1] >= 4

    wait_for(four_restarts, "4 restarts", 30)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen[1:])]  # between restarts
    assert gaps[-1] > gaps[0] * 1.8, (seen, gaps)
    crash = by_name(client)["crash"]
    assert crash.last_exit_code == 1
    assert crash.state in ("BACKOFF", "STARTING", "RUNNING")
    wait_for(lambda: b"boom" in output(client, "crash"), "the crashing service's output", 5)


def test_failing_health_check_restarts_the_service(shared: tuple[Daemon, Client]) -> None:
    """Healthy first, then `retries` failed checks in a row: the pod is replaced."""
    daemon, client = shared
    health = {"command": ["test", "-e", "/tmp/ok"], "interval": 0.2, "timeout": 2, "retries": 2}
    script = "touch /tmp/ok; sleep 1; rm /tmp/ok; exec sleep 1000"
    write(daemon, flaky=sh(script, health=health, backoff={"initial": 1.0}))
    first = wait_state(client, "flaky", "RUNNING")
    failed = wait_state(client, "flaky", "BACKOFF")
    assert "health check failed 2 times" in failed.message
    again = wait_state(client, "flaky", "RUNNING")
    assert again.pod != first.pod and again.restarts == 1


def test_a_health_check_that_never_passes_restarts_after_the_start_timeout(
    shared: tuple[Daemon, Client],
) -> None:
    """A service whose check never passes is STARTING for `start_timeout` s, then its pod
    is stopped and restarted by its policy (BACKOFF, restarts counting up), never STARTING
    forever."""
    daemon, client = shared
    health = {"command": ["false"], "interval": 0.2, "timeout": 2, "start_timeout": 1.5}
    try:
        write(daemon, sick=sh("exec sleep 1000", health=health))

        def checking() -> bool:
            sick = state_of(client, "sick", "STARTING")
            return sick is not None and sick.message.startswith("waiting for the first health")

        wait_for(checking, "sick to wait for its first health check")
        failed = wait_state(client, "sick", "BACKOFF", timeout=10)
        assert failed.message.startswith("no health check passed within 1.5 s; last: exit code 1")
        assert client.get(failed.pod).state == EXITED  # stopped, kept for its logs
        # restarted by its policy (always), again and again: each start ends the same way
        wait_for(lambda: by_name(client)["sick"].restarts >= 2, "two restarts", 20)
    finally:
        write(daemon)
        wait_for(lambda: "sick" not in by_name(client), "the service removed")


def test_a_service_with_api_access_gets_its_socket(shared: tuple[Daemon, Client]) -> None:
    daemon, client = shared
    access = {"host/api-access": {"scope": "host-read"}}
    write(daemon, reader=sh("ls /run/kurma; exec sleep 1000", isolators=access))
    reader = wait_state(client, "reader", "RUNNING")
    wait_for(lambda: b"api.sock" in output(client, "reader"), "the pod's API socket", 10)
    assert client.get(reader.pod).api_access == "host-read"


def test_restart_service_and_unknown_names(shared: tuple[Daemon, Client]) -> None:
    """RestartService: a new pod now (the old one destroyed), restarts + 1; NOT_FOUND names
    the known services."""
    daemon, client = shared
    write(daemon, web=sh("exec sleep 1000"))
    before = wait_state(client, "web", "RUNNING")
    after = client.restart_service("web")
    assert after.state == "RUNNING" and after.pod and after.pod != before.pod
    assert after.restarts == before.restarts + 1
    with pytest.raises(NotFound):
        client.get(before.pod)
    with pytest.raises(NotFound, match="no service named 'nope' \\(services: web\\)"):
        client.restart_service("nope")


def test_rewriting_the_file_adds_removes_and_changes(shared: tuple[Daemon, Client]) -> None:
    daemon, client = shared
    write(daemon, one=sh("exec sleep 1000"))
    one = wait_state(client, "one", "RUNNING")
    write(daemon, one=sh("exec sleep 1000"), two=sh("exec sleep 1000"))
    wait_state(client, "two", "RUNNING")
    assert by_name(client)["one"].pod == one.pod  # unchanged: the same pod
    write(daemon, two=sh("exec sleep 1001"))
    wait_for(lambda: "one" not in by_name(client), "one removed", 10)
    with pytest.raises(NotFound):
        client.get(one.pod)

    def changed() -> Any:
        two = state_of(client, "two", "RUNNING")
        with contextlib.suppress(NotFound):  # the old pod, destroyed since
            return two if two and "1001" in client.get(two.pod).manifest_json else None
        return None

    two = wait_for(changed, "two restarted with its new spec", 10)
    assert [p.name for p in client.list_pods()].count("two") == 1
    assert two.restarts == 1


def test_service_logs(shared: tuple[Daemon, Client]) -> None:
    daemon, client = shared
    write(daemon, talker=sh("echo hello from talker; exec sleep 1000", environment={"X": "y"}))
    wait_state(client, "talker", "RUNNING")
    wait_for(lambda: b"hello from talker" in output(client, "talker"), "the service's output", 10)
    with pytest.raises(NotFound):
        list(client.service_logs("nope"))


def test_kurmactl_service_ls_and_boot_log(shared: tuple[Daemon, Client]) -> None:
    daemon, client = shared
    write(daemon, web=sh("exec sleep 1000"), down=sh("exec sleep 1", depends_on=["x"]))
    web = wait_state(client, "web", "RUNNING")
    wait_state(client, "down", "FAILED")
    lines = ok(kurmactl(daemon, "service", "ls")).splitlines()
    assert lines[0].split() == ["NAME", "STATE", "POD", "RESTARTS", "MESSAGE"]
    rows = {line.split()[0]: line.split(None, 4) for line in lines[1:]}
    assert rows["web"][:4] == ["web", "RUNNING", web.pod[:8], "0"]
    assert rows["down"][1] == "FAILED" and "unknown service or condition 'x'" in rows["down"][4]

    (daemon.work / "boot-log.json").write_text(
        json.dumps(
            {
                "steps": [
                    {
                        "name": "system_mounts",
                        "outcome": "ok",
                        "started": 0.012,
                        "duration": 0.004,
                        "message": "",
                    },
                    {
                        "name": "disks",
                        "outcome": "failed",
                        "started": 0.02,
                        "duration": 0.1,
                        "message": "no disk LABEL=data",
                    },
                ],
                "problems": ["boot config: hostname: must be a string"],
            }
        )
    )
    boot = client.boot_log()
    assert [s.name for s in boot.steps] == ["system_mounts", "disks"]
    assert boot.steps[1].message == "no disk LABEL=data"
    assert list(boot.problems) == ["boot config: hostname: must be a string"]
    text = ok(kurmactl(daemon, "host", "boot-log"))
    assert "disks" in text and "no disk LABEL=data" in text
    assert "boot config: hostname: must be a string" in text


def test_power_is_refused_without_kurma_init(shared: tuple[Daemon, Client]) -> None:
    """Not under kurma-init: power calls are refused, naming the parent pid."""
    _, client = shared
    with pytest.raises(FailedPrecondition, match=r"not running under kurma-init \(parent pid"):
        client.poweroff()


def test_sigterm_stops_dependents_first_within_budget(own: Daemon, busybox_aci: Path) -> None:
    """Shutdown: `app` (depends on `base`) has stopped before `base` gets its SIGTERM; all
    within the shutdown grace, then kurmad exits 0."""
    out = own.work / "out"
    out.mkdir()
    volume = {"out": {"source": str(out), "path": "/out"}}
    client = start(own, busybox_aci, "--shutdown-grace", "4")
    with client:
        write(
            own,
            base=sh(
                "trap 'if [ -e /out/app ]; then echo after; else echo before; fi > /out/base;"
                " exit 0' TERM; while true; do sleep 0.1; done",
                volumes=volume,
            ),
            app=sh(
                "trap 'sleep 0.5; touch /out/app; exit 0' TERM; while true; do sleep 0.1; done",
                depends_on=["base"],
                volumes=volume,
            ),
        )
        app = wait_state(client, "app", "RUNNING")
        base = by_name(client)["base"]
        cgroups = [client.get(s.pod).cgroup for s in (app, base)]
    started = time.monotonic()
    own.signal(signal.SIGTERM)
    assert own.wait(20) == 0
    assert time.monotonic() - started < 4 + 3
    assert (out / "base").read_text() == "after\n"
    assert all(not pod_processes(c) for c in cgroups)


def test_sigkill_then_restart_adopts_running_services(own: Daemon, busybox_aci: Path) -> None:
    flags = ("--services-file", str(own.work / "services.yml"))
    with start(own, busybox_aci) as client:
        write(own, base=sh("exec sleep 1000"))
        base = wait_state(client, "base", "RUNNING")
    own.signal(signal.SIGKILL)
    own.wait()
    with own.start(*flags) as client:
        adopted = wait_state(client, "base", "RUNNING")
        assert adopted.pod == base.pod
        time.sleep(1.0)  # a few supervisor rounds: nothing else is started
        assert [p.name for p in client.list_pods()] == ["base"]
        assert by_name(client)["base"].pod == base.pod


STANDIN = textwrap.dedent(
    """\
    # A stand-in kurma-init: runs kurmad as its child, writes down the signals it gets.
    import os, signal, subprocess, sys
    record = sys.argv[1]
    def note(sig, frame):
        with open(record, "a") as f:
            f.write(signal.Signals(sig).name + "\\n")
    signal.signal(signal.SIGTERM, note)
    signal.signal(signal.SIGINT, note)
    child = subprocess.Popen([*sys.argv[2:], "--init-pid", str(os.getpid())])
    signal.signal(signal.SIGUSR1, lambda *_: child.terminate())
    sys.exit(child.wait())
    """
)


class UnderInit(Daemon):
    """kurmad as the child of a stand-in kurma-init; stop() ends both."""

    def start(self, *flags: str) -> Client:
        script = self.work / "kurma-init"
        script.write_text(STANDIN)
        self.signals = self.work / "signals"
        self.starts += 1
        self.log_path = self.work / f"kurmad-{self.starts}.log"
        argv = [sys.executable, str(script), str(self.signals), *self.argv(*flags)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.socket.exists() or self.proc.poll() is not None, "the socket", 30)
        assert self.proc.poll() is None, self.log()
        return self.client()

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.wait(20)
        if self.alive():
            self.proc.kill()


def test_poweroff_and_reboot_signal_kurma_init(own: Daemon) -> None:
    """Under kurma-init (its parent, pid `init_pid`): Poweroff is SIGTERM, Reboot SIGINT."""
    under = UnderInit(own.work, own.cgroup_parent)
    try:
        with under.start() as client:
            client.poweroff()
            wait_for(under.signals.exists, "the signal", 5)
            client.reboot()
            expected = ["SIGTERM", "SIGINT"]
            wait_for(lambda: under.signals.read_text().split() == expected, "both signals", 5)
            assert client.services() == []  # no services file: none
    finally:
        under.stop()


def test_a_bad_service_is_reported_and_the_others_run(shared: tuple[Daemon, Client]) -> None:
    daemon, client = shared
    text = f"""
services:
  good: {{image: {IMAGE_NAME}, exec: [/bin/sleep, "1000"]}}
  bad: {{image: {IMAGE_NAME}, restart: sometimes}}
"""
    staged = daemon.work / "services.yml.new"
    staged.write_text(text)
    staged.rename(daemon.work / "services.yml")
    wait_state(client, "good", "RUNNING")
    assert "bad" not in by_name(client)
    result = kurmactl(daemon, "service", "ls")
    assert result.returncode == 0 and "good" in result.stdout
    assert "services.bad.restart: must be always, on-failure or never" in result.stderr
