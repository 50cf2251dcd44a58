"""Crash safety of the runtime itself: reconcile at start, destroy whatever the record says.

Each test closes the fixture's runtime, leaves behind what a killed daemon could (an orphan
cgroup with a process in it, a pod directory without a record, a launcher still running), and
opens a new Runtime on the same state directory, which must attribute or remove everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from kurma.runtime import PodEventKind, PodState, Runtime
from kurma.runtime._adoption import LAUNCHER_FILE
from kurma.runtime._podrecord import process_start_time

from ..waiting import wait_for
from .runtime_support import PodEnv, sh_app, start

pytestmark = pytest.mark.root


@contextlib.contextmanager
def reopened(pods: PodEnv) -> Iterator[Runtime]:
    """A second Runtime on the fixture's state dir and cgroup parent (the first is closed
    first, and forgets its pods: they are the new one's); its pods are destroyed and it is
    closed at the end."""
    pods.runtime.close()
    with pods.runtime._lock:
        pods.runtime._pods.clear()
    runtime = Runtime(pods.state_dir, config=pods.runtime.config)
    try:
        yield runtime
    finally:
        for record in runtime.list_pods():
            with contextlib.suppress(Exception):
                runtime.destroy_pod(record.uuid, grace=1.0)
        runtime.close()


@contextlib.contextmanager
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_orphan_cgroup_with_a_process_is_killed_and_removed(
    pods: PodEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """A pod cgroup no record names (a shell of a killed daemon, a start it never wrote
    down): its processes are killed, the cgroup removed, one log line."""
    parent = pods.runtime.config.cgroup_parent
    orphan = pods.runtime.cgroups.create(f"{parent}/pod-0123456789ab")
    with sleeper() as proc:
        orphan.add_process(proc.pid)
        with caplog.at_level(logging.WARNING), reopened(pods):
            assert proc.wait(5) == -9
            assert not orphan.exists()
    lines = [m for m in caplog.messages if "pod-0123456789ab" in m]
    assert len(lines) == 1 and "1 processes killed, removed" in lines[0], caplog.messages


def test_orphan_pod_directories_are_removed(pods: PodEnv, caplog: pytest.LogCaptureFixture) -> None:
    """A pod directory without a readable record (the daemon died between its mkdir and
    the first record) is removed; a directory that is no pod's is left alone."""
    pods_dir = pods.state_dir / "pods"
    bare, torn = pods_dir / str(uuid.uuid4()), pods_dir / str(uuid.uuid4())
    bare.mkdir()
    (bare / "pids").mkdir()
    torn.mkdir()
    (torn / "pod.json").write_text('{"uuid": ')
    other = pods_dir / "not-a-pod"
    other.mkdir()
    with caplog.at_level(logging.WARNING), reopened(pods) as runtime:
        assert not bare.exists() and not torn.exists()
        assert other.exists()
        assert runtime.list_pods() == []
    assert sum("has no readable record" in m for m in caplog.messages) == 2


def test_running_pods_are_adopted_not_orphaned(pods: PodEnv) -> None:
    """The reconcile keeps what records name: a running pod (and its cgroup) survives the
    restart, listed RUNNING."""
    pod = start(pods, sh_app("main", "echo up; sleep 1000"), ready="up")
    cgroup = pods.runtime.get(pod).cgroup
    assert cgroup is not None
    with reopened(pods) as runtime:
        assert runtime.get(pod).state is PodState.RUNNING
        assert runtime.cgroups.open(cgroup).pids()


def test_a_start_whose_answer_was_lost_is_adopted(pods: PodEnv) -> None:
    """A record that names a cgroup but no podinit (the daemon died while the launcher
    started the pod): the podinit running in that cgroup for this pod is adopted."""
    pod = start(pods, sh_app("main", "echo up; sleep 1000"), ready="up")
    live = pods.runtime._pods[pod]
    pid = live.record.podinit_pid
    pods.runtime.close()
    live.record.podinit_pid = live.record.podinit_start = None
    live.record.save(live.pod_dir)
    with reopened(pods) as runtime:
        adopted = runtime.get(pod)
        assert adopted.state is PodState.RUNNING
        assert adopted.podinit_pid == pid
        assert runtime.stop_pod(pod, grace=1.0).apps[0].exit_code is not None


def test_a_start_cut_short_before_any_app_is_created_again(pods: PodEnv) -> None:
    """The record names a cgroup (a warm shell's, its P1 waiting) but no app was ever
    registered: whatever is in the cgroup is killed, the pod is CREATED again, and a
    start then runs it once."""
    record = pods.runtime.create_pod(pods.manifest(sh_app("main", "echo up; sleep 1000")))
    live = pods.runtime._pods[record.uuid]
    shell = pods.runtime.cgroups.create(f"{pods.runtime.config.cgroup_parent}/pod-feedfacecafe")
    with sleeper() as proc:
        shell.add_process(proc.pid)
        pods.runtime.close()
        live.record.state = PodState.RUNNING
        live.record.cgroup = shell.relpath
        live.record.podinit_pid, live.record.podinit_start = proc.pid, 1  # not its start
        live.record.save(live.pod_dir)
        with reopened(pods) as runtime:
            assert proc.wait(5) == -9
            assert not shell.exists()
            again = runtime.get(record.uuid)
            assert again.state is PodState.CREATED and again.cgroup is None
            runtime.start_pod(record.uuid)
            wait_for(lambda: "up" in pods.log(again, "main"), "the app")
            assert runtime.get(record.uuid).state is PodState.RUNNING


def test_destroy_kills_the_pods_processes_though_its_record_names_no_cgroup(
    pods: PodEnv,
) -> None:
    """The probe's invisible pod: a record that names no cgroup (nor podinit) while the pod
    runs. Destroy still finds its podinit's cgroup and kills everything in it."""
    pod = start(pods, sh_app("main", "echo up; sleep 1000"), ready="up")
    relpath = pods.runtime.get(pod).cgroup
    assert relpath is not None
    cgroup = pods.runtime.cgroups.open(relpath)
    assert cgroup.pids()
    with pods.runtime._lock:
        record = pods.runtime._pods[pod].record
        record.cgroup = None
        record.podinit_pid = record.podinit_start = None
        record.state = PodState.CREATED  # and it says it never started, as in the probe
    pods.runtime.destroy_pod(pod, grace=1.0)
    assert not cgroup.exists()


def test_a_previous_launcher_still_running_is_ended_first(pods: PodEnv) -> None:
    """The launcher of a killed daemon may still be making a shell: the next runtime kills
    it (the pid file names it, with its start time) before it reconciles."""
    with sleeper() as proc:
        pods.runtime.close()
        (pods.state_dir / LAUNCHER_FILE).write_text(f"{proc.pid} {process_start_time(proc.pid)}\n")
        with reopened(pods):
            assert proc.wait(5) == -9


def test_a_stale_launcher_file_kills_nobody(pods: PodEnv) -> None:
    """A pid reused since (another start time) is left alone."""
    with sleeper() as proc:
        pods.runtime.close()
        (pods.state_dir / LAUNCHER_FILE).write_text(f"{proc.pid} 1\n")
        with reopened(pods):
            assert proc.poll() is None


def test_clean_close_removes_the_empty_cgroup_parent(pods: PodEnv) -> None:
    """No pod left: the runtime's cgroup parent is gone in every hierarchy after close."""
    parent = pods.runtime.cgroups.open(pods.runtime.config.cgroup_parent)
    assert parent.exists()
    pods.runtime.close()
    assert not any(os.path.isdir(d) for _, d in parent.directories())


def test_close_leaves_the_parent_of_running_pods(pods: PodEnv) -> None:
    pod = start(pods, sh_app("main", "echo up; sleep 1000"), ready="up")
    parent = pods.runtime.cgroups.open(pods.runtime.config.cgroup_parent)
    with reopened(pods) as runtime:
        assert parent.exists()
        runtime.destroy_pod(pod, grace=1.0)


def test_events_follow_the_records(pods: PodEnv) -> None:
    """Through the real runtime: one event per change, each persisted first, the cgroup
    named in the record the STARTED event carries; a created pod stopped says EXITED."""
    seen: list[tuple[PodEventKind, PodState, str | None]] = []

    def listener(event):  # type: ignore[no-untyped-def]
        if event.kind == PodEventKind.APP_EXITED:
            return
        path = pods.state_dir / "pods" / event.record.uuid / "pod.json"
        on_disk = path.read_text() if path.exists() else ""
        assert f'"state": "{event.record.state.value}"' in on_disk
        seen.append((event.kind, event.record.state, event.record.cgroup))

    pods.runtime.add_listener(listener)
    pod = start(pods, sh_app("main", "echo up; sleep 1000"), ready="up")
    pods.runtime.destroy_pod(pod, grace=1.0)
    idle = pods.runtime.create_pod(pods.manifest(sh_app("main", "true")))
    pods.runtime.stop_pod(idle.uuid)
    wait_for(lambda: len(seen) >= 7, "the events")
    kinds = [k for k, _, _ in seen]
    assert kinds == [
        PodEventKind.CREATED,
        PodEventKind.STARTED,
        PodEventKind.STOPPING,
        PodEventKind.EXITED,
        PodEventKind.DESTROYED,
        PodEventKind.CREATED,
        PodEventKind.EXITED,
    ]
    assert seen[1][2] is not None  # the cgroup is in the record before the processes run
