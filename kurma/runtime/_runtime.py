"""The pod runtime's Python interface: create, start, wait, stop, destroy, and re-adopt pods.

One `Runtime` per state directory, put together from one part per concern:

    _lifecycle.Lifecycle    create, start, stop, destroy; `_transition`, the one door for
                            a pod's state (how a pod starts: read that module first)
    _watcher.Watcher        the thread that learns of apps' and pods' ends
    _adoption.Adoption      at start: reconcile records against cgroups and directories,
                            re-adopt running pods
    _networks.Networks      CNI networks: checked at create, attached behind the network
                            gate at start, detached at the pod's end and by the reconcile
    _poddir                 what a pod's directory holds
    this module             the Runtime itself: its set-up and close, events, queries,
                            waits and exec

It forks the launcher first (before its own threads), owns the image store, the cgroups and
the metadata service. Every change of a pod's state is written to `pods/<uuid>/pod.json`
before anyone is told, and a pod's cgroup is written there before anything is launched into
it, so a new Runtime on the same directory finds running pods again and removes what no
record names.
"""

from __future__ import annotations

import logging
import os
import selectors
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ..aci import PodManifest
from ..errors import PodNotFound, PodStateError, ValidationError
from ..store import ImageStore
from ._adoption import (
    Adoption,
    end_previous_launcher,
    forget_launcher,
    note_launcher,
    reconcile,
    remove_empty_parent,
)
from ._lifecycle import Lifecycle, _read_errpipes
from ._live import (
    ExecProcess,
    LivePod,
    PodEvent,
    PodEventKind,
    RuntimeConfig,
    copy_record,
)
from ._networks import Networks
from ._poddir import API_DIR, filesystem_type, mount_apps_tmpfs, remove_pod_dir
from ._poddir import unmount_apps_tmpfs as unmount_apps_tmpfs
from ._podinit import log_path, podinit_path
from ._podrecord import AppRecord, AppState, PodRecord, PodState
from ._watcher import Watcher
from .cgroups import CgroupStats, CgroupSystem
from .launcher import ExecStart, Launcher
from .launcher._shell import procs_files
from .launcher._zygote import process_cgroup
from .metadata import MetadataService
from .metadata._hmac import PodSigner, load_or_create_key

__all__ = [
    "API_DIR",
    "ExecProcess",
    "PodEvent",
    "PodEventKind",
    "PodNotFound",
    "PodStateError",
    "Runtime",
    "RuntimeConfig",
    "filesystem_type",
    "mount_apps_tmpfs",
    "remove_pod_dir",
]

log = logging.getLogger(__name__)

METADATA_KEY_FILE = "metadata.key"
SWITCH_INTERVAL = 0.0005  # seconds; see Runtime.__init__


class Runtime(Lifecycle, Watcher, Adoption, Networks):
    """Runs appc pods from the store in `state_dir` (see the module docstring)."""

    # Bytes per app log file for a pod (None: the configured size); kurmad sets it.
    log_cap: Callable[[PodRecord], int | None] | None = None

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        config: RuntimeConfig | None = None,
        store: ImageStore | None = None,
        cgroups: CgroupSystem | None = None,
    ) -> None:
        self.config = config or RuntimeConfig()
        # The watcher thread and the callers hand events to each other; with CPython's
        # default 5 ms switch interval a waiter can sit that long behind a thread holding
        # the GIL. kurmad's threads mostly wait on I/O, so a short interval costs nothing.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pods_dir = (
            Path(self.config.pods_dir) if self.config.pods_dir else self.state_dir / "pods"
        )
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self._pods_on_tmpfs = filesystem_type(self.pods_dir) == "tmpfs"
        # kurmad on a pure cgroup2 host first moves itself into a leaf and passes the result.
        self.cgroups = cgroups or CgroupSystem.detect()
        cfg = self.config
        # Before the launcher: nothing may make a cgroup while the reconcile looks.
        end_previous_launcher(self.state_dir)
        found, orphans = reconcile(self.pods_dir, self.cgroups, cfg.cgroup_parent)
        listen = self._metadata_listen()
        self.launcher = Launcher(self.cgroups, cfg.cgroup_parent, cfg.warm_pods, listen)
        note_launcher(self.state_dir, self.launcher.pid)
        self.store = store or ImageStore(self.state_dir)
        for holder in orphans:
            self.store.release(holder)
        podinit_path()  # fail now, not at the first pod, if it is not built
        self.metadata: MetadataService | None = None
        if self.config.metadata:
            # One key per state dir: signatures a pod made verify after a daemon restart.
            key = load_or_create_key(self.state_dir / METADATA_KEY_FILE)
            self.metadata = MetadataService(self.config.metadata_config, PodSigner(key))
            self.metadata.start()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._pods: dict[str, LivePod] = {}
        self._exited_networks: list[LivePod] = []  # pods whose networks the watcher DELs
        self._listeners: list[Callable[[PodEvent], None]] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", ""))
        self._closed = False
        self._setup_networks()
        self.adopt(found)
        self._exited_networks.clear()  # pods found ended: the reconcile DELs theirs
        self._reconcile_networks()
        self._thread = threading.Thread(target=self._watch, name="kurma-pod-watch", daemon=True)
        self._thread.start()

    # --- events ----------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[PodEvent], None]) -> None:
        """Call `callback` on every PodEvent. It runs with the runtime's lock held, in
        whichever thread made the change: it must be quick and must not call back in."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[PodEvent], None]) -> None:
        with self._lock:
            self._listeners.remove(callback)

    def _emit(self, kind: PodEventKind, live: LivePod, app: str | None = None) -> None:
        """Tell the listeners (lock held); a failing listener is logged, never fatal."""
        if not self._listeners:
            return
        event = PodEvent(kind, copy_record(live.record), app)
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("pod event listener failed on %s", kind)

    # --- queries ---------------------------------------------------------------------------

    def pod_dir(self, ref: str) -> Path:
        with self._lock:
            return self._find(ref).pod_dir

    def log_file(self, ref: str, app: str) -> Path:
        """The current log file of an app (rotated ones are `.1`, `.2`, ... beside it)."""
        with self._lock:
            live = self._find(ref)
            if app not in {a.name for a in live.record.apps}:
                raise PodNotFound(f"pod {live.record.name} has no app named {app!r}")
            return log_path(live.pod_dir, app)

    def stats(self, ref: str) -> tuple[CgroupStats, int]:
        """cgroup usage of a running pod and its OOM kill count; zeros when not running."""
        with self._lock:
            relpath = self._find(ref).record.cgroup
        if relpath is None:
            return CgroupStats(None, None, None, None), 0
        cgroup = self.cgroups.open(relpath)
        try:
            return cgroup.stats(), cgroup.oom_kills()
        except FileNotFoundError:  # ended meanwhile
            return CgroupStats(None, None, None, None), 0

    def list_pods(self) -> list[PodRecord]:
        with self._lock:
            return [copy_record(p.record) for p in self._pods.values()]

    def get(self, ref: str) -> PodRecord:
        """A pod by UUID, unique UUID prefix, or name (copies: the runtime's stay private)."""
        with self._lock:
            return copy_record(self._find(ref).record)

    def _find(self, ref: str) -> LivePod:
        if ref in self._pods:
            return self._pods[ref]
        matches = [p for u, p in self._pods.items() if u.startswith(ref)] if len(ref) >= 4 else []
        if not matches:
            matches = [p for p in self._pods.values() if p.record.name == ref]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise PodNotFound(f"no pod has the UUID or name {ref!r}")
        raise PodNotFound(f"{ref!r} names {len(matches)} pods; give more of the UUID")

    # --- waits and exec --------------------------------------------------------------------

    def wait(self, ref: str, timeout: float | None = None) -> PodRecord:
        """Block until the pod has exited; TimeoutError if it has not within `timeout`."""
        with self._lock:
            live = self._find(ref)
            if not self._changed.wait_for(lambda: live.record.state is PodState.EXITED, timeout):
                raise TimeoutError(f"pod {live.record.name} still {live.record.state}")
            return copy_record(live.record)

    def wait_app(self, ref: str, app: str, timeout: float | None = None) -> AppRecord:
        """Block until one app has exited and its status is known."""
        with self._lock:
            live = self._find(ref)
            record = live.record.app(app)
            if not self._changed.wait_for(lambda: record.state is AppState.EXITED, timeout):
                raise TimeoutError(f"app {app} of pod {live.record.name} is still running")
            return replace(record)

    def run(
        self, manifest: PodManifest, *, name: str | None = None, timeout: float | None = None
    ) -> PodRecord:
        """create + start + wait: the pod's final record."""
        record = self.create_pod(manifest, name=name)
        self.start_pod(record.uuid)
        return self.wait(record.uuid, timeout)

    def exec_in_pod(
        self,
        ref: str,
        app: str | None,
        argv: Sequence[str],
        *,
        stdio: tuple[int, int, int] | None,
        env: Sequence[tuple[str, str]] = (),
        tty: bool = False,
        size: tuple[int, int] = (0, 0),
        timeout: float = 30.0,
    ) -> ExecProcess:
        """Run `argv` inside a running app (its root, identity and limits) with `stdio`
        (stdin, stdout, stderr; the caller keeps its descriptors), or, with `tty` and no
        stdio, a terminal opened inside the pod: `ExecProcess.terminal` is its master.
        Returns once the command has exec'd or failed to; then `wait_exec`."""
        if not argv:
            raise ValidationError("argv", "exec needs a command")
        with self._lock:
            live = self._find(ref)
            record = live.record
            if record.state is not PodState.RUNNING or record.podinit_pid is None:
                raise PodStateError(f"pod {record.name} is {record.state}, not running")
            name = app or record.apps[0].name
            if name not in {a.name for a in record.apps}:
                raise PodNotFound(f"pod {record.name} has no app named {name!r}")
            target = record.app(name)
            if target.state is not AppState.RUNNING or target.pid is None:
                raise PodStateError(f"app {name} of pod {record.name} is not running")
            plan = live.plan or self._replan(live)
            request = ExecStart(
                podinit_pid=record.podinit_pid,
                pod_dir=str(live.pod_dir),
                plan=next(p for p in plan.apps if p.name == name),
                app_pid=target.pid,
                argv=tuple(argv),
                env=tuple(env),
                tty=tty,
                label=f"{name} exec",
                host_namespaces=plan.host_namespaces,
                cgroup_procs=procs_files(process_cgroup(self.cgroups, record.cgroup or "")),
                size=size,
            )
        if stdio is None and not tty:
            raise ValidationError("stdio", "exec without a terminal needs stdin/stdout/stderr")
        pid, errpipe, terminal = self.launcher.start_exec(request, list(stdio or ()))
        proc = ExecProcess(record.uuid, name, pid, terminal=terminal)
        with self._lock:
            live.execs[pid] = proc
            self._scan(live)  # it may have ended already
        failure = _read_errpipes([errpipe], timeout)[0]
        if failure is not None:
            proc.error = failure[1]
        return proc

    def wait_exec(self, proc: ExecProcess, timeout: float | None = None) -> ExecProcess:
        """Block until the command has ended; TimeoutError if not within `timeout`."""
        with self._lock:
            if not self._changed.wait_for(lambda: proc.exit_code is not None, timeout):
                raise TimeoutError(f"exec {proc.pid} in pod {proc.pod} is still running")
            live = self._pods.get(proc.pod)
            if live is not None:
                live.execs.pop(proc.pid, None)
            return proc

    # --- shutdown ----------------------------------------------------------------------------

    def close(self, *, stop_pods: bool = False) -> None:
        """Stop watching (pods keep running unless `stop_pods`), end the launcher, and
        remove the cgroup parent if no pod is left in it."""
        if stop_pods:
            for record in self.list_pods():
                if record.state in (PodState.RUNNING, PodState.STOPPING):
                    self.stop_pod(record.uuid)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.write(self._wake_w, b"x")
        self._thread.join(5.0)
        with self._lock:
            for live in self._pods.values():
                for fd in (live.pidfd, live.notify):
                    if fd is not None:
                        os.close(fd)
                live.pidfd = live.notify = None
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self.metadata is not None:
            self.metadata.close()
        self.launcher.close()
        forget_launcher(self.state_dir)
        remove_empty_parent(self.cgroups, self.config.cgroup_parent)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
