"""The one door for a pod's state (`Lifecycle._transition`), with a fake runtime around it.

Each change persists the record before anyone hears of it, logs one line
`pod[NAME](STATE): why`, and emits exactly one typed event; fsync only where it matters.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest

from kurma.runtime import PodEventKind, PodRecord, PodState
from kurma.runtime._lifecycle import Lifecycle
from kurma.runtime._live import LivePod


class FakeRuntime(Lifecycle):
    """Just what `_transition` touches: a lock, a condition, and a listener that reads the
    record on disk when it is told."""

    def __init__(self, on_tmpfs: bool) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._pods_on_tmpfs = on_tmpfs
        self.seen: list[tuple[PodEventKind, str, str | None]] = []

    def _emit(self, kind: PodEventKind, live: LivePod, app: str | None = None) -> None:
        path = live.pod_dir / "pod.json"
        on_disk = json.loads(path.read_text())["state"] if path.exists() else None
        self.seen.append((kind, live.record.state.value, on_disk))


def _live(tmp_path: Path) -> LivePod:
    return LivePod(PodRecord("u-1", "web", "{}", 0.0), tmp_path)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_each_state_is_persisted_before_its_event(tmp_path: Path) -> None:
    """A listener reading pod.json finds the state it is told of: a whole life, in order."""
    rt, live = FakeRuntime(on_tmpfs=True), _live(tmp_path)
    with rt._lock:
        for state in (PodState.CREATED, PodState.RUNNING, PodState.STOPPING, PodState.EXITED):
            rt._transition(live, state, "because")
        rt._transition(live, None, "destroyed")
    assert rt.seen == [
        (PodEventKind.CREATED, "created", "created"),
        (PodEventKind.STARTED, "running", "running"),
        (PodEventKind.STOPPING, "stopping", "stopping"),
        (PodEventKind.EXITED, "exited", "exited"),
        (PodEventKind.DESTROYED, "exited", "exited"),  # the record goes with its directory
    ]


def test_one_log_line_per_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rt, live = FakeRuntime(on_tmpfs=True), _live(tmp_path)
    with caplog.at_level(logging.INFO, logger="kurma.runtime._lifecycle"), rt._lock:
        rt._transition(live, PodState.CREATED, "created")
        rt._transition(live, PodState.RUNNING, "starting in a warm shell")
        rt._transition(live, PodState.CREATED, "start failed: no", PodEventKind.START_FAILED)
    assert caplog.messages == [
        "pod[web](created): created",
        "pod[web](running): starting in a warm shell",
        "pod[web](created): start failed: no",
    ]
    assert [kind for kind, _, _ in rt.seen][-1] is PodEventKind.START_FAILED


def test_the_write_is_atomic(tmp_path: Path) -> None:
    """Temporary name, then rename: no temporary is left, the record reads back whole."""
    rt, live = FakeRuntime(on_tmpfs=True), _live(tmp_path)
    with rt._lock:
        rt._transition(live, PodState.RUNNING, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pod.json"]
    assert PodRecord.load(tmp_path).state is PodState.RUNNING


def test_fsync_only_for_what_a_reboot_shows_and_never_on_tmpfs(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    """On a disk: created and exited records are synced, a start's is not (the start path
    stays free of it). On a tmpfs: nothing is."""
    disk, live = FakeRuntime(on_tmpfs=False), _live(tmp_path)
    with disk._lock:
        disk._transition(live, PodState.CREATED, "x")
        assert len(fsyncs) == 1
        disk._transition(live, PodState.RUNNING, "x")
        disk._transition(live, PodState.STOPPING, "x")
        assert len(fsyncs) == 1
        disk._transition(live, PodState.EXITED, "x")
        assert len(fsyncs) == 2
    tmpfs = FakeRuntime(on_tmpfs=True)
    with tmpfs._lock:
        tmpfs._transition(live, PodState.CREATED, "x")
        tmpfs._transition(live, PodState.EXITED, "x")
    assert len(fsyncs) == 2


def test_waiters_are_woken(tmp_path: Path) -> None:
    rt, live = FakeRuntime(on_tmpfs=True), _live(tmp_path)
    done = threading.Event()

    def waiter() -> None:
        with rt._lock:
            rt._changed.wait_for(lambda: live.record.state is PodState.EXITED, 5)
            done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    with rt._lock:
        rt._transition(live, PodState.EXITED, "x")
    thread.join(5)
    assert done.is_set()
