"""The watcher: one thread that learns of every app's and pod's end.

podinit's notification pipe wakes it (hints: `app NAME PID` lines), the exit records in
`exits/` are the truth it reads, and a pidfd per podinit tells it when a pod's namespaces
are gone. When every app and handler of a pod has ended it tells podinit to end the pod;
when podinit has ended it finishes the pod (`_finalize`: cgroup removed, record EXITED).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import time

from ._live import LivePod, PodEventKind, RuntimeParts
from ._poddir import unmount_apps_tmpfs
from ._podinit import log_path, read_exit_records
from ._podrecord import AppRecord, AppState, PodState
from .launcher import HandlerStart
from .launcher._shell import procs_files
from .launcher._zygote import process_cgroup

log = logging.getLogger(__name__)

_SCAN_INTERVAL = 1.0  # seconds between scans of pods that have no notification pipe


class Watcher(RuntimeParts):
    """The Runtime's watcher thread and what it does to pods (methods run with the lock
    held unless they say otherwise)."""

    def _watch_pod(self, live: LivePod) -> None:
        """Register a running pod's descriptors with the watcher."""
        uuid = live.record.uuid
        if live.notify is not None:
            os.set_blocking(live.notify, False)
            self._selector.register(live.notify, selectors.EVENT_READ, ("notify", uuid))
        if live.pidfd is not None:
            self._selector.register(live.pidfd, selectors.EVENT_READ, ("pidfd", uuid))
        os.write(self._wake_w, b"w")

    def _watch(self) -> None:
        """The thread's body (no lock held but while handling what woke it)."""
        next_scan = time.monotonic() + _SCAN_INTERVAL
        while not self._closed:
            try:
                events = self._selector.select(max(0.0, next_scan - time.monotonic()))
            except (OSError, ValueError):
                if self._closed:
                    return
                raise
            with self._lock:
                for key, _ in events:
                    kind, uuid = key.data
                    if kind == "wake":
                        _drain(key.fd)
                        continue
                    live = self._pods.get(uuid)
                    if live is None:
                        continue
                    if kind == "notify":
                        self._read_notifications(live)
                        self._scan(live)
                    elif kind == "pidfd":
                        self._scan(live)
                        self._finalize(live)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + _SCAN_INTERVAL
                    for live in list(self._pods.values()):
                        if live.record.state in (PodState.RUNNING, PodState.STOPPING):
                            self._scan(live)
                exited, self._exited_networks = self._exited_networks, []
            for live in exited:  # outside the lock (see `_finalize`)
                self._detach_networks(live)

    def _read_notifications(self, live: LivePod) -> None:
        """Take the `app NAME PID` lines; the rest are only hints to scan."""
        assert live.notify is not None
        try:
            data = os.read(live.notify, 65536)
        except BlockingIOError:
            return
        if not data:
            self._selector.unregister(live.notify)
            os.close(live.notify)
            live.notify = None
            return
        lines = (live.pending + data).split(b"\n")
        live.pending = lines.pop()
        learned = False
        for line in lines:
            fields = line.split(b" ")
            if len(fields) == 3 and fields[0] == b"app" and fields[2].isdigit():
                app = live.record.app(fields[1].decode())
                app.pid = int(fields[2])
                learned = True
        if learned:  # a restarted Runtime matches exit records by these pids
            live.record.save(live.pod_dir)

    def _scan(self, live: LivePod) -> None:
        """Consume podinit's exit records."""
        records = read_exit_records(live.pod_dir)
        if not records:
            return
        by_pid = {a.pid: a for a in live.record.apps if a.pid is not None}
        handlers = {a.post_stop_pid: a for a in live.record.apps if a.post_stop_pid is not None}
        now = time.time()
        for pid, code in records.items():
            if pid in by_pid and by_pid[pid].state is not AppState.EXITED:
                app = by_pid[pid]
                app.state, app.exit_code, app.finished_at = AppState.EXITED, code, now
                self._after_app(live, app)
                self._emit(PodEventKind.APP_EXITED, live, app.name)
            elif pid in handlers and handlers[pid].post_stop_code is None:
                handlers[pid].post_stop_code = code
            elif pid in live.execs and live.execs[pid].exit_code is None:
                live.execs[pid].exit_code = code
            else:
                continue  # not ours yet (an app line still in the pipe)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(live.pod_dir / "exits" / str(pid))
        live.record.save(live.pod_dir)
        self._changed.notify_all()
        self._maybe_finish(live)

    def _after_app(self, live: LivePod, app: AppRecord) -> None:
        """Run the app's post-stop handler in the pod, if it has one and started at all."""
        plan = live.plan
        if plan is None or live.record.podinit_pid is None or app.error is not None:
            return
        app_plan = next(p for p in plan.apps if p.name == app.name)
        if app_plan.post_stop is None:
            return
        request = HandlerStart(
            live.record.podinit_pid,
            str(live.pod_dir),
            app_plan,
            app_plan.post_stop,
            f"{app.name} post-stop",
            plan.host_namespaces,
            procs_files(process_cgroup(self.cgroups, live.record.cgroup or "")),
            str(log_path(live.pod_dir, app.name)),
        )
        try:
            pid, errpipe = self.launcher.start_handler(request)
        except OSError as e:
            log.warning("pod %s: post-stop of %s: %s", live.record.name, app.name, e)
            return
        os.close(errpipe)
        app.post_stop_pid = pid

    def _maybe_finish(self, live: LivePod) -> None:
        """All apps and handlers done: tell podinit to end the pod (it kills leftovers)."""
        record = live.record
        if live.finishing or not all(a.state is AppState.EXITED for a in record.apps):
            return
        if any(a.post_stop_pid is not None and a.post_stop_code is None for a in record.apps):
            return
        live.finishing = True
        self._signal(live, signal.SIGTERM)

    def _finalize(self, live: LivePod, why: str | None = None) -> None:
        """podinit is gone, and with it the pod's namespaces: clean up, record the end."""
        record = live.record
        if why is None:
            why = "stopped" if record.state is PodState.STOPPING else "its apps ended"
        for fd in (live.pidfd, live.notify):
            if fd is not None:
                self._selector.unregister(fd)
                os.close(fd)
        live.pidfd = live.notify = None
        now = time.time()
        for proc in live.execs.values():
            if proc.exit_code is None:
                proc.exit_code = 128 + signal.SIGKILL  # ended with the pod, unrecorded
        for app in record.apps:
            if app.state is not AppState.EXITED:
                app.state, app.finished_at = AppState.EXITED, now
                if app.exit_code is None:
                    app.exit_code = 128 + signal.SIGKILL
        if self.metadata is not None:
            self.metadata.unregister_pod(record.uuid)
        # A pod with its own pid namespace is empty once its PID 1 is gone: the kernel kills
        # and reaps every other process of the namespace before PID 1's end shows on the
        # pidfd. So no kill round (a read of every hierarchy's cgroup.procs) for it.
        own_pidns = live.plan is not None and "pid" not in live.plan.host_namespaces
        self._remove_cgroup(live, kill=not own_pidns)
        unmount_apps_tmpfs(live.pod_dir)  # the writable layers are done with: free the RAM
        if not live.starting:  # else the start, once its ADDs are done (start_pod)
            # After the lock is released (`_watch`): a DEL takes tens of milliseconds, and
            # neither a Wait on this pod nor the other pods' events need to wait for it.
            self._exited_networks.append(live)
        record.finished_at = now
        codes = ", ".join(f"{a.name} {a.exit_code}" for a in record.apps)
        self._transition(live, PodState.EXITED, f"{why} ({codes or 'no apps'})")

    def _remove_cgroup(self, live: LivePod, *, kill: bool = True) -> None:
        """Kill what is left in the pod's cgroup and remove it (no lock needed)."""
        if live.record.cgroup is None:
            return
        cgroup = self.cgroups.open(live.record.cgroup)
        try:
            if kill:
                cgroup.kill_all()
            cgroup.remove(timeout=5.0 if kill else 0.5)
        except OSError as e:
            if not kill and e.errno == errno.EBUSY:  # someone is left after all
                self._remove_cgroup(live, kill=True)
                return
            log.warning("pod %s: cgroup clean-up: %s", live.record.name, e)

    def _signal(self, live: LivePod, sig: int) -> None:
        if live.pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(live.pidfd, sig)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
