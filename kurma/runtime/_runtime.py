"""The pod runtime's Python interface: create, start, wait, stop, destroy, and re-adopt pods.

One `Runtime` per state directory. It forks the launcher first (before its own threads),
owns the image store, the cgroups and the metadata service, and watches every running pod
from one thread: podinit's notification pipe wakes it, the exit records in `exits/` are the
truth it reads, and a pidfd per podinit tells it when a pod's namespaces are gone. Every
change of a pod's state is written to `pods/<uuid>/pod.json` before anyone is told, so a
new Runtime on the same directory finds running pods again (`adopt`) and cleans up the
ones that died meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..aci import PodManifest, parse_pod_manifest
from ..errors import KurmaError, ValidationError
from ..store import ImageStore
from ._confine import check_oom_within, check_within, translate_volumes
from ._etc import HOSTS_NAME, RESOLV_CONF_NAME, EtcFiles, write_pod_etc
from ._plan import AppInput, PodPlan, host_namespaces, plan_pod, precheck_pod
from ._podinit import (
    SIGNAL_KILL_APPS,
    SIGNAL_TERMINATE_APPS,
    log_path,
    podinit_path,
    read_exit_records,
)
from ._podrecord import AppRecord, AppState, PodRecord, PodState, process_start_time
from .cgroups import CgroupStats, CgroupSystem
from .launcher import ExecStart, HandlerStart, Launcher, PodStart
from .launcher._app import parse_start_error
from .launcher._shell import procs_files
from .launcher._zygote import process_cgroup
from .linux import MNT_DETACH, MS_NODEV, MS_NOSUID, mount, umount2
from .metadata import MetadataConfig, MetadataService
from .metadata._hmac import PodSigner, load_or_create_key
from .metadata._registry import new_token

log = logging.getLogger(__name__)

METADATA_KEY_FILE = "metadata.key"
SWITCH_INTERVAL = 0.0005  # seconds; see Runtime.__init__
_SCAN_INTERVAL = 1.0  # seconds between scans of pods that have no notification pipe


class PodNotFound(KurmaError):
    """No pod has that UUID, UUID prefix or name."""


class PodStateError(KurmaError):
    """The pod is not in a state that allows the operation."""


API_DIR = "api"  # <pod_dir>/api: the pod's API socket lives here, bound at /run/kurma


@dataclass(frozen=True)
class RuntimeConfig:
    cgroup_parent: str = "kurma"  # below the runtime's own cgroup
    stop_grace: float = 10.0  # SIGTERM to SIGKILL when stopping a pod
    leftover_grace: float = 2.0  # for processes left when every app has ended
    handler_timeout: float = 30.0  # a post-stop handler's budget while stopping
    log_max_bytes: int = 2 << 20  # in RAM with pods_dir on a tmpfs: 2 MiB x (1 + keep)
    log_keep: int = 2
    nameservers: tuple[str, ...] | None = None  # None: the host's resolv.conf
    pids_max: int | None = None  # a pids limit for every pod
    # Pods' state, logs and writable layers: best on a tmpfs (kurmad: /run/kurma/pods). A
    # pod never outlives a boot, and metadata operations there cost microseconds, not the
    # milliseconds of a journalled disk. None: `<state_dir>/pods`.
    pods_dir: str | None = None
    warm_pods: int = 1  # zygotes kept ready in their cgroups (see launcher/_zygote.py)
    max_depth: int = 8  # pods that pods create: levels below the host, the top one included
    # kurmad serves an API socket in `<pod_dir>/api/` of each pod with host/api-access;
    # without it (a bare Runtime) that isolator is reported as ignored.
    api_sockets: bool = False
    metadata: bool = True
    metadata_config: MetadataConfig = field(default_factory=MetadataConfig)


@dataclass(frozen=True)
class PodEvent:
    """What happened to a pod: kind is pod.created, pod.started, app.exited, pod.stopping,
    pod.exited or pod.destroyed; `record` is a copy taken at that moment."""

    kind: str
    record: PodRecord
    app: str | None = None
    time: float = field(default_factory=time.time)


@dataclass
class ExecProcess:
    """A command run in a running app (`exec_in_pod`); `exit_code` is set when it ends."""

    pod: str
    app: str
    pid: int  # as registered with podinit
    exit_code: int | None = None
    error: str | None = None  # why it did not start (exit codes 125-127)
    terminal: int | None = None  # the master of a terminal opened in the pod (caller owns it)


class _Live:
    """The in-memory side of a pod: its record plus descriptors and the plan."""

    def __init__(self, record: PodRecord, pod_dir: Path) -> None:
        self.record = record
        self.pod_dir = pod_dir
        self.plan: PodPlan | None = None
        self.image_manifests: dict[str, bytes] = {}
        self.pidfd: int | None = None
        self.notify: int | None = None
        self.pending: bytes = b""
        self.finishing = False
        self.execs: dict[int, ExecProcess] = {}

    @property
    def cgroup_path(self) -> str | None:
        return self.record.cgroup


class Runtime:
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
        self.pods_dir = (
            Path(self.config.pods_dir) if self.config.pods_dir else self.state_dir / "pods"
        )
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self._pods_on_tmpfs = filesystem_type(self.pods_dir) == "tmpfs"
        # kurmad on a pure cgroup2 host first moves itself into a leaf and passes the result.
        self.cgroups = cgroups or CgroupSystem.detect()
        cfg = self.config
        listen = self._metadata_listen()
        self.launcher = Launcher(self.cgroups, cfg.cgroup_parent, cfg.warm_pods, listen)
        self.store = store or ImageStore(self.state_dir)
        podinit_path()  # fail now, not at the first pod, if it is not built
        self.metadata: MetadataService | None = None
        if self.config.metadata:
            # One key per state dir: signatures a pod made verify after a daemon restart.
            key = load_or_create_key(self.state_dir / METADATA_KEY_FILE)
            self.metadata = MetadataService(self.config.metadata_config, PodSigner(key))
            self.metadata.start()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._pods: dict[str, _Live] = {}
        self._listeners: list[Callable[[PodEvent], None]] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", ""))
        self._closed = False
        self.adopt()
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

    def _emit(self, kind: str, live: _Live, app: str | None = None) -> None:
        """Tell the listeners (lock held); a failing listener is logged, never fatal."""
        if not self._listeners:
            return
        event = PodEvent(kind, _copy_record(live.record), app)
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
            return [_copy_record(p.record) for p in self._pods.values()]

    def get(self, ref: str) -> PodRecord:
        """A pod by UUID, unique UUID prefix, or name (copies: the runtime's stay private)."""
        with self._lock:
            return _copy_record(self._find(ref).record)

    def _find(self, ref: str) -> _Live:
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

    # --- create ----------------------------------------------------------------------------

    def create_pod(
        self,
        manifest: PodManifest,
        *,
        name: str | None = None,
        parent: str | None = None,
        confine_to: str | None = None,
        check: Callable[[PodPlan], None] | None = None,
    ) -> PodRecord:
        """Prepare a pod: hold its images, check every app and isolator, write its record.

        `parent` (a pod's UUID): the new pod is that pod's child: its cgroup nests under the
        parent's, destroying the parent destroys it, and it may hold no more than the parent
        (`_confine`: its host volumes are paths in the parent's view). `confine_to` applies
        those limits for another pod (default: the parent). NotPermitted when it asks for
        more; PodStateError past `max_depth` or when the parent has exited. `check(plan)`
        may refuse the planned pod (the API's authorization) before anything is recorded.
        """
        if not manifest.apps:
            raise ValidationError("apps", "a pod needs at least one app")
        pod_uuid = str(uuidlib.uuid4())
        pod_name = name or manifest.apps[0].name
        _check_pod_name(pod_name)
        ancestors: tuple[str, ...] = ()
        if parent is not None:
            with self._lock:
                above = self._find(parent).record
                if above.state is PodState.EXITED:
                    raise PodStateError(f"pod {above.name} has exited: it cannot have children")
                ancestors = (above.uuid, *above.ancestors)
            if len(ancestors) + 1 > self.config.max_depth:
                raise PodStateError(
                    f"pod {above.name} is {len(ancestors)} levels deep: the depth limit is "
                    f"{self.config.max_depth} levels of pods"
                )
        confiner = self._confiner(confine_to or parent)
        beneath = None
        if confiner is not None:
            manifest, beneath = translate_volumes(manifest, confiner)
        # Every Create-time check that needs no tree, before anything exists (_plan).
        scores = precheck_pod(manifest, lambda a: self.store.get_by_id(a.image.id).manifest.app)
        if confiner is not None:
            check_oom_within(scores, confiner)
        pod_dir = self.pods_dir / pod_uuid
        pod_dir.mkdir(mode=0o711)
        try:
            live = self._prepare(pod_uuid, pod_name, manifest, pod_dir, ancestors, beneath)
            if confiner is not None:
                assert live.plan is not None
                check_within(live.plan, confiner)
            if check is not None and live.plan is not None:
                check(live.plan)
        except BaseException:
            self.store.release(pod_uuid)
            remove_pod_dir(pod_dir)
            raise
        with self._lock:
            self._pods[pod_uuid] = live
            self._emit("pod.created", live)
            return _copy_record(live.record)

    def _confiner(self, ref: str | None) -> PodPlan | None:
        """The plan of the pod whose privileges bound a new pod's (None: the host's)."""
        if ref is None:
            return None
        with self._lock:
            live = self._find(ref)
            return live.plan or self._replan(live)

    def pod_plan(self, ref: str) -> PodPlan:
        """What the launcher does for pod `ref` (every isolator judged): for authorization."""
        plan = self._confiner(ref)
        assert plan is not None
        return plan

    def children(self, ref: str) -> list[str]:
        """The UUIDs of a pod's children (its direct descendants)."""
        with self._lock:
            uuid = self._find(ref).record.uuid
            return [u for u, p in self._pods.items() if p.record.parent == uuid]

    def _prepare(
        self,
        pod_uuid: str,
        pod_name: str,
        manifest: PodManifest,
        pod_dir: Path,
        ancestors: tuple[str, ...] = (),
        beneath: dict | None = None,  # type: ignore[type-arg]
    ) -> _Live:
        inputs, manifests = self._acquire(pod_uuid, manifest)
        # P1 registers apps in pids/ before podinit runs; podinit makes exits/ and logs/,
        # volumes/ appears with the first empty volume.
        (pod_dir / "pids").mkdir()
        if not self._pods_on_tmpfs:
            mount_apps_tmpfs(pod_dir)
        nameservers = self.config.nameservers
        etc = write_pod_etc(str(pod_dir), pod_name, list(nameservers) if nameservers else None)
        apps = [AppRecord(item.app.name, item.image_id) for item in inputs]
        record = PodRecord(
            pod_uuid,
            pod_name,
            manifest.to_bytes().decode(),
            time.time(),
            apps=apps,
            metadata_token=new_token(),
            parent=ancestors[0] if ancestors else None,
            ancestors=ancestors,
            beneath=beneath,
        )
        live = _Live(record, pod_dir)
        live.image_manifests = manifests
        live.plan = self._plan(live, manifest, inputs, etc)
        record.isolators = [o.to_json() for o in live.plan.report]
        if live.plan.api_access is not None:
            record.api_access = live.plan.api_access.scope.value
            if self.config.api_sockets:
                (pod_dir / API_DIR).mkdir(mode=0o700)
        record.save(pod_dir)
        return live

    def _acquire(
        self, pod_uuid: str, manifest: PodManifest
    ) -> tuple[list[AppInput], dict[str, bytes]]:
        """Hold (and render) every app's image for the pod; safe to repeat after a restart."""
        inputs: list[AppInput] = []
        manifests: dict[str, bytes] = {}
        for app in manifest.apps:
            tree = self.store.acquire(pod_uuid, app.image.id)
            image = self.store.get_by_id(tree.image_id)
            inputs.append(AppInput(app, image.manifest, str(tree.rootfs), tree.image_id))
            manifests[app.name] = (image.path / "manifest").read_bytes()
        return inputs, manifests

    def _plan(
        self, live: _Live, manifest: PodManifest, inputs: list[AppInput], etc: EtcFiles
    ) -> PodPlan:
        record = live.record
        url = self.metadata.url_of(record.uuid) if self.metadata is not None else None
        if url is None:
            url = self._metadata_url(live, host_net="net" in host_namespaces(manifest, inputs))
        return plan_pod(
            record.uuid,
            record.name,
            manifest,
            inputs,
            pod_dir=str(live.pod_dir),
            etc=etc,
            metadata_url=url,
            pids_max=self.config.pids_max,
            api_dir=str(live.pod_dir / API_DIR) if self.config.api_sockets else None,
            # a child's host sources only as its record maps them (none: refused)
            beneath=record.beneath if record.parent is None else (record.beneath or {}),
        )

    def _replan(self, live: _Live) -> PodPlan:
        """The plan of a pod this Runtime did not create (after a restart), from its record."""
        manifest = parse_pod_manifest(live.record.manifest.encode())
        inputs, live.image_manifests = self._acquire(live.record.uuid, manifest)
        hosts, resolv = (str(live.pod_dir / n) for n in (HOSTS_NAME, RESOLV_CONF_NAME))
        live.plan = self._plan(live, manifest, inputs, EtcFiles(hosts, resolv))
        return live.plan

    def _metadata_listen(self) -> tuple[str, int] | None:
        """Where the metadata service listens inside each pod's own netns (None: no service)."""
        if not self.config.metadata:
            return None
        cfg = self.config.metadata_config
        return cfg.pod_address, cfg.pod_port

    def _metadata_url(self, live: _Live, *, host_net: bool) -> str | None:
        """The pod's AC_METADATA_URL, known before it starts (the token is chosen here)."""
        if self.metadata is None:
            return None
        record = live.record
        if not host_net:  # responses computed now; the start only opens the listener
            self.metadata.prepare_pod(
                record.uuid, record.manifest, live.image_manifests, record.metadata_token or ""
            )
        else:  # served by the daemon's own listener, which exists already
            return self.metadata.register_pod(
                record.uuid, record.manifest, live.image_manifests, None, record.metadata_token
            )
        cfg = self.config.metadata_config
        return f"http://{cfg.pod_address}:{cfg.pod_port}/{record.metadata_token}"

    # --- start -----------------------------------------------------------------------------

    def start_pod(self, ref: str, *, timeout: float = 60.0) -> PodRecord:
        """Start a created pod; returns once every app has exec'd or failed to start."""
        with self._lock:
            live = self._find(ref)
            if live.record.state is not PodState.CREATED:
                raise PodStateError(f"pod {live.record.name} is {live.record.state}, not created")
            live.record.state = PodState.RUNNING  # claimed: a second start fails above
        try:
            errpipes = self._launch(live)
        except BaseException:
            with self._lock:
                live.record.state = PodState.CREATED
            self._remove_cgroup(live)
            raise
        failures = _read_errpipes(errpipes, timeout)
        with self._lock:
            for app, failure in zip(live.record.apps, failures, strict=True):
                if failure is not None:
                    app.error = failure[1]
            if any(failures):  # else the record saved at the launch is still right
                live.record.save(live.pod_dir)
            self._changed.notify_all()
            result = _copy_record(live.record)
        if any(failures):
            log.warning(
                "pod %s: %s", live.record.name, "; ".join(f[1] for f in failures if f is not None)
            )
        return result

    def _launch(self, live: _Live) -> list[int]:
        record = live.record
        plan = live.plan or self._replan(live)
        listen = None if "net" in plan.host_namespaces else self._metadata_listen()
        cfg = self.config
        cgroup_parent = None
        if record.parent is not None:  # a child's cgroup nests under its parent's
            with self._lock:
                above = self._pods.get(record.parent)
                if above is None or above.record.state is not PodState.RUNNING:
                    raise PodStateError(f"pod {record.name}: its parent pod is not running")
                cgroup_parent = above.record.cgroup
        log_bytes = cfg.log_max_bytes
        if self.log_cap is not None:  # kurmad's per-subtree log quota (api/_quota.py)
            log_bytes = min(log_bytes, self.log_cap(record) or log_bytes)
        request = PodStart(
            plan, cfg.leftover_grace, (log_bytes, cfg.log_keep), listen, cgroup_parent
        )
        started, fds = self.launcher.start_pod(request)
        pidfd, notify, *rest = fds
        listener = rest.pop(0) if started.has_listener else None
        with self._lock:
            record.cgroup = started.cgroup
            record.podinit_pid = started.pid
            record.podinit_start = process_start_time(started.pid)
            record.started_at = time.time()
            for app in record.apps:
                app.state = AppState.RUNNING
                app.started_at = record.started_at
            live.pidfd, live.notify = pidfd, notify
            record.save(live.pod_dir)
            # Told now, before the watcher (which needs the lock) can report an app's end.
            self._emit("pod.started", live)
            self._watch_pod(live)
        if listener is not None:
            assert self.metadata is not None
            self.metadata.register_pod(
                record.uuid,
                record.manifest,
                live.image_manifests,
                f"/proc/{started.pid}/ns/net",
                record.metadata_token,
                listener_sock=socket.socket(fileno=listener),
            )
        return rest

    # --- wait, stop, destroy ---------------------------------------------------------------

    def wait(self, ref: str, timeout: float | None = None) -> PodRecord:
        """Block until the pod has exited; TimeoutError if it has not within `timeout`."""
        with self._lock:
            live = self._find(ref)
            if not self._changed.wait_for(lambda: live.record.state is PodState.EXITED, timeout):
                raise TimeoutError(f"pod {live.record.name} still {live.record.state}")
            return _copy_record(live.record)

    def wait_app(self, ref: str, app: str, timeout: float | None = None) -> AppRecord:
        """Block until one app has exited and its status is known."""
        with self._lock:
            live = self._find(ref)
            record = live.record.app(app)
            if not self._changed.wait_for(lambda: record.state is AppState.EXITED, timeout):
                raise TimeoutError(f"app {app} of pod {live.record.name} is still running")
            return replace(record)

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

    def run(
        self, manifest: PodManifest, *, name: str | None = None, timeout: float | None = None
    ) -> PodRecord:
        """create + start + wait: the pod's final record."""
        record = self.create_pod(manifest, name=name)
        self.start_pod(record.uuid)
        return self.wait(record.uuid, timeout)

    def stop_pod(self, ref: str, grace: float | None = None) -> PodRecord:
        """SIGTERM to the apps, `grace` seconds, SIGKILL, then post-stop; waits for the end."""
        grace = self.config.stop_grace if grace is None else grace
        for child in self.children(ref):  # its subtree first, while its cgroup still holds it
            with contextlib.suppress(PodNotFound):
                self.stop_pod(child, grace)
        with self._lock:
            live = self._find(ref)
            if live.record.state is PodState.EXITED:
                return _copy_record(live.record)
            if live.record.state is PodState.CREATED:
                live.record.state = PodState.EXITED
                live.record.finished_at = time.time()
                live.record.save(live.pod_dir)
                self._changed.notify_all()
                return _copy_record(live.record)
            if live.record.state is PodState.RUNNING:
                live.record.state = PodState.STOPPING
                live.record.save(live.pod_dir)
                self._emit("pod.stopping", live)
            apps_done = lambda: all(a.state is AppState.EXITED for a in live.record.apps)  # noqa: E731
            if not apps_done():
                self._signal(live, SIGNAL_TERMINATE_APPS)
                if not self._changed.wait_for(apps_done, grace):
                    self._signal(live, SIGNAL_KILL_APPS)
                    self._changed.wait_for(apps_done, 5.0)
            ended = lambda: live.record.state is PodState.EXITED  # noqa: E731
            if not self._changed.wait_for(ended, self.config.handler_timeout):
                self._signal(live, signal.SIGKILL)  # podinit: the kernel ends the namespace
                self._changed.wait_for(ended, 10.0)
            return _copy_record(live.record)

    def destroy_pod(self, ref: str, grace: float | None = None) -> list[str]:
        """Destroy the pod's subtree (children first), then stop the pod if needed, remove
        its state and release its images. Returns the UUIDs destroyed, the pod's last."""
        destroyed: list[str] = []
        for child in self.children(ref):
            with contextlib.suppress(PodNotFound):
                destroyed += self.destroy_pod(child, grace)
        record = self.stop_pod(ref, grace)
        for child in self.children(record.uuid):  # created while it was stopping
            with contextlib.suppress(PodNotFound):
                destroyed += self.destroy_pod(child, grace)
        with self._lock:
            live = self._pods.pop(record.uuid, None)
            if live is None:
                raise PodNotFound(f"pod {record.name} was destroyed meanwhile")
            self._emit("pod.destroyed", live)
        if self.metadata is not None:
            self.metadata.forget_prepared(record.uuid)  # a pod destroyed before its start
        self._remove_cgroup(live)
        self.store.release(record.uuid)
        remove_pod_dir(live.pod_dir)
        destroyed.append(record.uuid)
        return destroyed

    def _signal(self, live: _Live, sig: int) -> None:
        if live.pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(live.pidfd, sig)

    # --- the watcher -------------------------------------------------------------------------

    def _watch_pod(self, live: _Live) -> None:
        """Register a running pod's descriptors with the watcher (lock held)."""
        uuid = live.record.uuid
        if live.notify is not None:
            os.set_blocking(live.notify, False)
            self._selector.register(live.notify, selectors.EVENT_READ, ("notify", uuid))
        if live.pidfd is not None:
            self._selector.register(live.pidfd, selectors.EVENT_READ, ("pidfd", uuid))
        os.write(self._wake_w, b"w")

    def _watch(self) -> None:
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
                        _drain(self._wake_r)
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

    def _read_notifications(self, live: _Live) -> None:
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

    def _scan(self, live: _Live) -> None:
        """Consume podinit's exit records (lock held)."""
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
                self._emit("app.exited", live, app.name)
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

    def _after_app(self, live: _Live, app: AppRecord) -> None:
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

    def _maybe_finish(self, live: _Live) -> None:
        """All apps and handlers done: tell podinit to end the pod (it kills leftovers)."""
        record = live.record
        if live.finishing or not all(a.state is AppState.EXITED for a in record.apps):
            return
        if any(a.post_stop_pid is not None and a.post_stop_code is None for a in record.apps):
            return
        live.finishing = True
        self._signal(live, signal.SIGTERM)

    def _finalize(self, live: _Live) -> None:
        """podinit is gone, and with it the pod's namespaces: clean up, record the end."""
        record = live.record
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
        record.state = PodState.EXITED
        record.finished_at = now
        record.save(live.pod_dir)
        self._changed.notify_all()
        self._emit("pod.exited", live)

    def _remove_cgroup(self, live: _Live, *, kill: bool = True) -> None:
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

    # --- adoption, shutdown ------------------------------------------------------------------

    def adopt(self) -> None:
        """Load every pod record; re-watch running pods, finish the ones that died."""
        for entry in sorted(self.pods_dir.iterdir()):
            if entry.name in self._pods or not (entry / "pod.json").exists():
                continue
            try:
                record = PodRecord.load(entry)
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("pod state %s unreadable, skipped: %s", entry, e)
                continue
            live = _Live(record, entry)
            with self._lock:
                self._pods[record.uuid] = live
                if record.state in (PodState.RUNNING, PodState.STOPPING):
                    self._readopt(live)

    def _readopt(self, live: _Live) -> None:
        record = live.record
        pid = record.podinit_pid
        alive = pid is not None and process_start_time(pid) == record.podinit_start
        if alive:
            assert pid is not None
            try:
                live.pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                alive = False
        if not alive:
            log.info("pod %s ended while nobody watched; cleaning up", record.name)
            self._scan(live)
            self._finalize(live)
            return
        _pids_from_registrations(live)
        self._watch_pod(live)
        if self.metadata is not None and record.metadata_token is not None:
            try:
                self.metadata.register_pod(
                    record.uuid,
                    record.manifest,
                    self._stored_manifests(record),
                    f"/proc/{pid}/ns/net",
                    record.metadata_token,
                )
            except (OSError, ValueError) as e:
                log.warning("pod %s: metadata not served again: %s", record.name, e)
        try:
            self._replan(live)  # post-stop handlers need it
        except (KurmaError, OSError, ValueError) as e:
            log.warning("pod %s: no plan after re-adoption (no post-stop): %s", record.name, e)
        log.info("pod %s re-adopted (podinit pid %s)", record.name, pid)
        self._scan(live)

    def _stored_manifests(self, record: PodRecord) -> dict[str, bytes]:
        return {
            a.name: (self.store.get_by_id(a.image_id).path / "manifest").read_bytes()
            for a in record.apps
        }

    def close(self, *, stop_pods: bool = False) -> None:
        """Stop watching (pods keep running unless `stop_pods`), end the launcher."""
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

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- helpers --------------------------------------------------------------------------------


def _check_pod_name(name: str) -> None:
    """The pod name is its hostname: 1-63 of [a-z0-9-], not starting or ending with '-'."""
    ok = 0 < len(name) <= 63 and name[0] != "-" and name[-1] != "-"
    if not ok or any(not (c.isascii() and (c.islower() or c.isdigit() or c == "-")) for c in name):
        raise ValidationError(
            "name", f"{name!r} is not a valid pod name (a hostname: up to 63 of a-z, 0-9 and '-')"
        )


APPS_TMPFS_OPTIONS = "mode=0711"


def mount_apps_tmpfs(pod_dir: Path) -> None:
    """A tmpfs on `pod_dir/apps` for the apps' overlay upper and work dirs.

    Overlayfs tests its upper filesystem at every mount (xattrs, whiteouts, O_TMPFILE):
    5-6 ms on ext4, 0.2 ms on tmpfs. An app's writes to its root land in RAM there,
    charged to the pod's memory cgroup like any tmpfs page it writes; data that must
    outlive the pod belongs in a volume. Mounted in the daemon's (the launcher's) mount
    namespace, which every app's namespace copies; `remove_pod_dir` unmounts it.
    """
    apps = pod_dir / "apps"
    apps.mkdir(mode=0o711)
    mount("tmpfs", str(apps), "tmpfs", MS_NOSUID | MS_NODEV, APPS_TMPFS_OPTIONS)


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem `path` is on, from the mount table (the longest mount
    point that contains it)."""
    real = os.path.realpath(path)
    best, fstype = "", None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fstype = point, fields[fields.index("-") + 1]
    return fstype


def unmount_apps_tmpfs(pod_dir: Path) -> None:
    """Unmount the apps' tmpfs, if it is mounted (a pod on a tmpfs pods dir has none)."""
    with contextlib.suppress(OSError):  # EINVAL: not a mount point
        umount2(str(pod_dir / "apps"), MNT_DETACH)


def remove_pod_dir(pod_dir: Path) -> None:
    """Unmount the apps' tmpfs (if mounted) and remove the pod's directory."""
    unmount_apps_tmpfs(pod_dir)
    shutil.rmtree(pod_dir, ignore_errors=True)


def _copy_record(record: PodRecord) -> PodRecord:
    """A copy callers may keep: the record's lists are fresh, its values immutable. (Five
    times cheaper than deepcopy, which List at hundreds of pods notices.)"""
    return replace(
        record,
        apps=[replace(a) for a in record.apps],  # ancestors: a tuple, immutable
        isolators=[dict(i) for i in record.isolators],
    )


def _pids_from_registrations(live: _Live) -> None:
    """Fill in app pids the record missed (a restart before the pipe was read): the
    registrations in pids/ hold the app names of the apps still running."""
    missing = {a.name: a for a in live.record.apps if a.pid is None}
    if not missing:
        return
    try:
        entries = list(os.scandir(live.pod_dir / "pids"))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                name = Path(entry.path).read_text().strip()
                if name in missing:
                    missing[name].pid = int(entry.name)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _read_errpipes(fds: list[int], timeout: float) -> list[tuple[int, str] | None]:
    """Wait until each app has exec'd (EOF) or reported why not; closes the pipes."""
    results: list[tuple[int, str] | None] = [None] * len(fds)
    chunks: dict[int, bytes] = {fd: b"" for fd in fds}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        open_fds = set(fds)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                fd = key.fd
                data = os.read(fd, 4096)
                if data:
                    chunks[fd] += data
                    continue
                sel.unregister(fd)
                open_fds.discard(fd)
    for i, fd in enumerate(fds):
        results[i] = parse_start_error(chunks[fd])
        os.close(fd)
    return results
