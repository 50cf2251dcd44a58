"""kill -9 of kurmad during concurrent creates leaves nothing invisible (issue "Hardening").

The probe: 20 threads create and start pods; kurmad is killed with SIGKILL 30-150 ms in;
after a restart some pods were listed CREATED while their init and app ran in cgroups their
records did not name, Start launched a second copy, and destroy left processes, cgroups and
pod directories behind. Now a record names a pod's cgroup before anything is launched into
it, and kurmad reconciles records against cgroups and pod directories when it starts.

One test, 20 crash points drawn from a seeded generator (the seed is printed; set
KURMA_CRASH_SEED to replay a failure). Each point is one cycle on one kurmad state dir:
20 concurrent create+start calls, SIGKILL after the drawn delay, restart, then:

- every pod whose podinit runs is listed RUNNING, and no podinit runs in a cgroup no
  running pod names (a warm shell's processes are the launcher's, not a pod's);
- no pod has two podinits, not even after every pod listed CREATED is started;
- after destroying every pod: no podinit of any of them, no pod directory, no mount, and
  only the new launcher's warm shells below the cgroup parent.

At the end kurmad stops cleanly: no cgroup parent, no mount, no pod directory at all.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kurma.api.v1 import pods_pb2
from kurma.client import Client, NotFound
from kurma.runtime.cgroups import CgroupSystem
from tests.root.runtime_support import mounts_under
from tests.root.test_kurmad import Daemon, make_daemon, sh

pytestmark = pytest.mark.timeout(400)

SEED = int(os.environ.get("KURMA_CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
CRASH_POINTS = 20
CONCURRENT = 20
DELAY = (0.03, 0.15)  # seconds from the first create to the SIGKILL
RUNNING, CREATED = pods_pb2.POD_STATE_RUNNING, pods_pb2.POD_STATE_CREATED


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    yield from make_daemon()


def podinits() -> dict[int, str]:
    """Every kurma-podinit on the host: pid -> the pod UUID its title names."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    title = f.read().split(b"\0", 1)[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("kurma-podinit "):
                found[int(entry.name)] = title.split(" ", 1)[1]
    return found


def cgroup_of(pid: int, parent: str) -> str | None:
    """The pod cgroup (`<parent>/pod-...`, nested ones included) of a process, from its
    pids hierarchy line in /proc/PID/cgroup; None if it is elsewhere or gone."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(",") or (controllers == "" and len(lines) == 1):
            marker = f"/{parent}/"
            if marker not in path:
                return None
            rel = parent + "/" + path.split(marker, 1)[1]
            return rel.removesuffix("/self")
    return None


def pod_dirs(daemon: Daemon) -> set[str]:
    pods = daemon.work / "pods"
    return {e.name for e in os.scandir(pods)} if pods.exists() else set()


def create_storm(client: Client, cycle: int) -> list[object]:
    """CONCURRENT create+start calls at once; each result is a Pod or the exception."""

    def one(i: int) -> object:
        try:
            return client.create_pod(spec=sh("sleep 1000"), name=f"c{cycle}-{i}", start=True)
        except Exception as e:
            return e

    with ThreadPoolExecutor(CONCURRENT) as pool:
        return list(pool.map(one, range(CONCURRENT)))


def check_after_restart(client: Client, daemon: Daemon, where: str) -> None:
    """What a restarted kurmad shows matches what runs (see the module docstring)."""
    listed = {p.uuid: p for p in client.list_pods()}
    ours = pod_dirs(daemon) | set(listed)
    running = {u for u, p in listed.items() if p.state == RUNNING}
    named = {p.cgroup for u, p in listed.items() if u in running and p.cgroup}
    inits = {pid: u for pid, u in podinits().items() if u in ours}
    for pid, uuid in inits.items():
        state = listed[uuid].state if uuid in listed else "not listed"
        assert uuid in running, f"{where}: pod {uuid} runs (podinit {pid}) but is {state}"
        group = cgroup_of(pid, daemon.cgroup_parent)
        assert group in named, f"{where}: podinit {pid} of {uuid} runs in {group}, not {named}"
    twice = [u for u, n in Counter(inits.values()).items() if n > 1]
    assert not twice, f"{where}: pods started twice: {twice}"


def destroy_all(client: Client) -> None:
    for pod in client.list_pods():
        if not pod.parents:
            with contextlib.suppress(NotFound):
                client.destroy(pod.uuid, grace=1)


def check_nothing_left(daemon: Daemon, uuids: set[str], where: str) -> None:
    left = [u for u in podinits().values() if u in uuids]
    assert not left, f"{where}: podinits left: {left}"
    assert not pod_dirs(daemon), f"{where}: pod directories left: {pod_dirs(daemon)}"
    mounts = mounts_under(daemon.work / "pods")
    assert not mounts, f"{where}: mounts left: {mounts}"
    parent = CgroupSystem.detect().open(daemon.cgroup_parent)
    for pid in parent.pids():  # only the new launcher's warm shells: forks of kurmad
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        assert b"kurma.api.daemon" in argv, f"{where}: process {pid} {argv!r} is left"


def test_kill9_during_concurrent_creates_leaves_nothing_invisible(
    daemon: Daemon, busybox_aci: Path
) -> None:
    print(f"crash test seed: {SEED} (KURMA_CRASH_SEED={SEED} replays it)")
    rng = random.Random(SEED)
    with daemon.start() as client:
        client.import_image(busybox_aci)
    seen: set[str] = set()
    for cycle in range(CRASH_POINTS):
        delay = rng.uniform(*DELAY)
        where = f"seed {SEED}, crash point {cycle} ({delay * 1000:.0f} ms)"
        with daemon.client() as client, ThreadPoolExecutor(1) as storm:
            results = storm.submit(create_storm, client, cycle)
            time.sleep(delay)
            daemon.signal(signal.SIGKILL)
            daemon.wait()
            results.result(timeout=60)
        made = sum(isinstance(r, pods_pb2.Pod) for r in results.result())
        with daemon.start() as client:
            states = Counter(pods_pb2.PodState.Name(p.state) for p in client.list_pods())
            print(f"{where}: {made} of {CONCURRENT} answered, then listed {dict(states)}")
            check_after_restart(client, daemon, where)
            for pod in client.list_pods():
                if pod.state == CREATED:  # the probe's second copy came from here
                    client.start(pod.uuid)
            check_after_restart(client, daemon, where + ", after starting the created")
            seen |= pod_dirs(daemon) | {p.uuid for p in client.list_pods()}
            destroy_all(client)
            assert client.list_pods() == [], where
            check_nothing_left(daemon, seen, where)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    check_nothing_left(daemon, seen, f"seed {SEED}, after a clean exit")
    parent = CgroupSystem.detect().open(daemon.cgroup_parent)
    assert not any(os.path.isdir(d) for _, d in parent.directories()), (
        f"seed {SEED}: the cgroup parent is left after a clean exit"
    )
