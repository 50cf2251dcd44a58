"""How a pod lives: create, start, stop, destroy, and the one door for its state.

A pod starts, in this module's order:

1. `create_pod`: its directory (`<pods_dir>/<uuid>`, `_poddir`), its images held in the
   store, hosts/resolv.conf, the metadata token, and `plan_pod` (every isolator judged
   once, identity, limits, rootfs). Then `_transition(CREATED)` writes the first record.
2. `start_pod` -> `_launch`: an offered warm shell is taken (its cgroup and P1 exist
   already, see launcher/_shell.py), or a cgroup name is chosen for a shell the launcher
   makes now. `_transition(RUNNING)` writes that cgroup (and P1's pid) into the record;
   only then is the start sent, so a daemon killed at any moment leaves no process in a
   cgroup that no record names (`_adoption.reconcile` removes any other). The watcher
   (`_watcher`) takes over once the launch returns.
3. `stop_pod`: signal 63 to podinit, the grace, signal 64; the watcher records the end.
4. `destroy_pod`: the subtree first, then stop, then kill whatever is in the pod's cgroup
   (whatever the record says), release the images, remove the directory.

Every state change goes through `_transition`: it persists the record (temporary name,
rename; fsync where it matters), logs one line `pod[NAME](STATE): why`, wakes the waiters
and emits one `PodEvent`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..aci import PodManifest, parse_pod_manifest
from ..errors import PodNotFound, PodStateError, ValidationError
from ._adoption import is_podinit_of, unnamed_pod_cgroups
from ._confine import check_oom_within, check_within, translate_volumes
from ._etc import HOSTS_NAME, RESOLV_CONF_NAME, EtcFiles, write_pod_etc
from ._live import LivePod, PodEventKind, RuntimeParts, copy_record
from ._netplan import GATE_NAME
from ._plan import AppInput, PodPlan, host_namespaces, plan_pod, precheck_pod
from ._poddir import API_DIR, check_pod_name, mount_apps_tmpfs, remove_pod_dir
from ._podinit import SIGNAL_KILL_APPS, SIGNAL_TERMINATE_APPS
from ._podrecord import AppRecord, AppState, PodRecord, PodState, process_start_time
from ._stopsignal import signal_main_process, stop_signals
from ._volumes import Beneath
from .launcher import PodStart
from .launcher._app import parse_start_error
from .launcher._zygote import new_pod_cgroup
from .metadata._registry import new_token

log = logging.getLogger(__name__)

_EVENT_OF = {
    PodState.CREATED: PodEventKind.CREATED,
    PodState.RUNNING: PodEventKind.STARTED,
    PodState.STOPPING: PodEventKind.STOPPING,
    PodState.EXITED: PodEventKind.EXITED,
}
# fsync guards a record against the machine's crash, not kurmad's (the page cache outlives
# kurmad, and the rename is atomic either way). After a machine's crash no pod runs any
# more, so only the records a user still wants to see then are worth an fsync: a created
# pod's (it can be started after the reboot) and an exited one's (its exit codes). A
# start's record is not: the pod it describes is gone after a reboot whatever it says, and
# an fsync on a journalled disk would add milliseconds to every start. On a tmpfs (kurmad's
# /run/kurma/pods) nothing survives a reboot and fsync is skipped altogether.
_DURABLE_STATES = frozenset({PodState.CREATED, PodState.EXITED})


class Lifecycle(RuntimeParts):
    """Create, start, stop and destroy pods (see the module docstring)."""

    # --- the one door ----------------------------------------------------------------------

    def _transition(
        self, live: LivePod, state: PodState | None, why: str, event: PodEventKind | None = None
    ) -> None:
        """Change a pod's state (lock held): persist the record, log one line, wake the
        waiters, emit one event (`event`, else the state's). `state` None: the pod is
        destroyed, and its record goes with its directory."""
        record = live.record
        if state is None:
            log.info("pod[%s](destroyed): %s", record.name, why)
            self._emit(event or PodEventKind.DESTROYED, live)
            return
        record.state = state
        durable = state in _DURABLE_STATES and not self._pods_on_tmpfs
        record.save(live.pod_dir, durable=durable)
        log.info("pod[%s](%s): %s", record.name, state, why)
        self._changed.notify_all()
        self._emit(event or _EVENT_OF[state], live)

    # --- create ----------------------------------------------------------------------------

    def create_pod(
        self,
        manifest: PodManifest,
        *,
        name: str | None = None,
        parent: str | None = None,
        confine_to: str | None = None,
        check: Callable[[PodPlan], None] | None = None,
        beneath: Beneath | None = None,
        images_visible: Callable[[str], bool] | None = None,
    ) -> PodRecord:
        """Prepare a pod: hold its images, check every app and isolator, write its record.

        `parent` (a pod's UUID): the new pod is that pod's child: its cgroup nests under the
        parent's, destroying the parent destroys it, and it may hold no more than the parent
        (`_confine`: its host volumes are paths in the parent's view). `confine_to` applies
        those limits for another pod (default: the parent). NotPermitted when it asks for
        more; PodStateError past `max_depth` or when the parent has exited. `check(plan)`
        may refuse the planned pod (the API's authorization) before anything is recorded.
        `beneath` (a pod the host creates for a caller held to host directories, such as an
        operator): each host source's root and steps, resolved beneath the root at mount time
        as a child's are (`_volumes.open_source`); a pod's own children get theirs from
        `_confine`.
        `images_visible(image_id)`: the images the apps' dependencies may resolve to by name
        (the API's: never another tenant's).
        """
        if not manifest.apps:
            raise ValidationError("apps", "a pod needs at least one app")
        pod_uuid = str(uuidlib.uuid4())
        pod_name = name or manifest.apps[0].name
        check_pod_name(pod_name)
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
        if confiner is not None:
            manifest, beneath = translate_volumes(manifest, confiner)
        # Every Create-time check that needs no tree, before anything exists (_plan).
        scores = precheck_pod(manifest, lambda a: self.store.get_by_id(a.image.id).manifest.app)
        if confiner is not None:
            check_oom_within(scores, confiner)
        self._check_networks(manifest)  # every network it names exists (NetworkNotFound)
        pod_dir = self.pods_dir / pod_uuid
        pod_dir.mkdir(mode=0o711)  # no record yet: an orphan to reconcile until there is one
        try:
            live = self._prepare(
                pod_uuid, pod_name, manifest, pod_dir, ancestors, beneath, images_visible
            )
            if confiner is not None:
                assert live.plan is not None
                check_within(live.plan, confiner)
            if check is not None and live.plan is not None:
                check(live.plan)
            with self._lock:
                self._pods[pod_uuid] = live
                try:
                    above_text = f", child of {ancestors[0]}" if ancestors else ""
                    self._transition(live, PodState.CREATED, f"created ({pod_uuid}{above_text})")
                except BaseException:
                    del self._pods[pod_uuid]
                    raise
                return copy_record(live.record)
        except BaseException:
            self.store.release(pod_uuid)
            remove_pod_dir(pod_dir)
            raise

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
        images_visible: Callable[[str], bool] | None = None,
    ) -> LivePod:
        """Everything a start needs but the processes (the record is written by the caller)."""
        inputs, manifests = self._acquire(pod_uuid, manifest, images_visible)
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
        live = LivePod(record, pod_dir)
        live.image_manifests = manifests
        live.plan = self._plan(live, manifest, inputs, etc)
        record.isolators = [o.to_json() for o in live.plan.report]
        if live.plan.api_access is not None:
            record.api_access = live.plan.api_access.scope.value
            if self.config.api_sockets:
                (pod_dir / API_DIR).mkdir(mode=0o700)
        return live

    def _acquire(
        self,
        pod_uuid: str,
        manifest: PodManifest,
        visible: Callable[[str], bool] | None = None,
    ) -> tuple[list[AppInput], dict[str, bytes]]:
        """Hold (and render) every app's image for the pod; safe to repeat after a restart.
        `visible`: the images the apps' dependencies may resolve to (by name)."""
        inputs: list[AppInput] = []
        manifests: dict[str, bytes] = {}
        for app in manifest.apps:
            tree = self.store.acquire(pod_uuid, app.image.id, visible)
            image = self.store.get_by_id(tree.image_id)
            inputs.append(AppInput(app, image.manifest, str(tree.rootfs), tree.image_id))
            manifests[app.name] = (image.path / "manifest").read_bytes()
        return inputs, manifests

    def _plan(
        self, live: LivePod, manifest: PodManifest, inputs: list[AppInput], etc: EtcFiles
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

    def _replan(self, live: LivePod) -> PodPlan:
        """The plan of a pod this Runtime did not create (after a restart), from its record."""
        manifest = parse_pod_manifest(live.record.manifest.encode())
        held = self.store.refs.get(live.record.uuid)  # the layers it was made of, not newer
        visible = held.images.__contains__ if held is not None else None
        inputs, live.image_manifests = self._acquire(live.record.uuid, manifest, visible)
        hosts, resolv = (str(live.pod_dir / n) for n in (HOSTS_NAME, RESOLV_CONF_NAME))
        live.plan = self._plan(live, manifest, inputs, EtcFiles(hosts, resolv))
        return live.plan

    def _metadata_listen(self) -> tuple[str, int] | None:
        """Where the metadata service listens inside each pod's own netns (None: no service)."""
        if not self.config.metadata:
            return None
        cfg = self.config.metadata_config
        return cfg.pod_address, cfg.pod_port

    def _metadata_url(self, live: LivePod, *, host_net: bool) -> str | None:
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
            if live.record.state is not PodState.CREATED or live.starting:
                state = "starting" if live.starting else live.record.state
                raise PodStateError(f"pod {live.record.name} is {state}, not created")
            live.starting = True  # claimed: a second start fails above, a stop waits
        try:
            errpipes = self._launch(live)
        except BaseException as e:
            self._undo_start(live, e)
            raise
        finally:
            with self._lock:
                live.starting = False
                self._changed.notify_all()
        failures = _read_errpipes(errpipes, timeout)
        with self._lock:
            self._close_gate(live)  # P1 has read it (or failed): the start is over
            if live.record.state is PodState.EXITED:  # ended during its launch
                self._detach_networks(live)
            for app, failure in zip(live.record.apps, failures, strict=True):
                if failure is not None:
                    app.error = failure[1]
            if any(failures):  # else the record saved at the launch is still right
                live.record.save(live.pod_dir)
            self._changed.notify_all()
            result = copy_record(live.record)
        if any(failures):
            log.warning(
                "pod %s: %s", live.record.name, "; ".join(f[1] for f in failures if f is not None)
            )
        return result

    def _launch(self, live: LivePod) -> list[int]:
        """Name the pod's cgroup in its record, then start its processes there; returns the
        apps' errpipes."""
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
        if plan.network_gate:  # P1 reads `ok` from it before the apps run (_networks)
            with contextlib.suppress(FileExistsError):
                os.mkfifo(live.pod_dir / GATE_NAME, 0o600)
        launched = None
        shell = self.launcher.take_shell(request)
        if shell is not None:  # its P1 waits in its cgroup: named before it gets the start
            try:
                self._name_cgroup(live, shell.cgroup.relpath, shell.pid, "in a warm shell")
            except BaseException:
                shell.close()  # P1 and the app exit on EOF; _undo_start removes the cgroup
                raise
            with contextlib.suppress(ConnectionError):  # its P1 or app was killed meanwhile
                launched = self.launcher.start_in_shell(shell, request)
        if launched is None:  # a shell made now, in a cgroup named here first
            relpath = new_pod_cgroup(cgroup_parent or cfg.cgroup_parent)
            self._name_cgroup(live, relpath, None, "in a new shell")
            launched = self.launcher.start_pod(replace(request, cgroup=relpath))
        started, fds = launched
        pidfd, notify, *rest = fds
        listener = rest.pop(0) if started.has_listener else None
        with self._lock:
            if record.podinit_pid != started.pid:  # learned only now from the launcher
                record.podinit_pid = started.pid
                record.podinit_start = process_start_time(started.pid)
                record.save(live.pod_dir)
            live.pidfd, live.notify = pidfd, notify
            self._watch_pod(live)
        if listener is not None:
            assert self.metadata is not None
            sock = socket.socket(fileno=listener)
            try:
                self.metadata.register_pod(
                    record.uuid,
                    record.manifest,
                    live.image_manifests,
                    f"/proc/{started.pid}/ns/net",
                    record.metadata_token,
                    listener_sock=sock,
                )
            except FileNotFoundError:  # its PID 1 has ended already (its init failed, say):
                sock.close()  # no netns to serve; the errpipes and the watcher tell the rest
        if plan.network_gate:
            try:
                self._attach_networks(live, plan, started.pid)
            except BaseException:
                for fd in rest:
                    os.close(fd)
                raise
        return rest

    def _name_cgroup(self, live: LivePod, relpath: str, podinit: int | None, how: str) -> None:
        """Persist the start before it is sent: the pod's cgroup (and P1, when known)."""
        with self._lock:
            record = live.record
            record.cgroup = relpath
            record.podinit_pid = podinit
            record.podinit_start = process_start_time(podinit) if podinit is not None else None
            record.started_at = time.time()
            for app in record.apps:
                app.state, app.started_at = AppState.RUNNING, record.started_at
            if record.state is PodState.CREATED:
                self._transition(live, PodState.RUNNING, f"starting {how} (cgroup {relpath})")
            else:  # the warm shell died before its start: the second try's cgroup
                record.save(live.pod_dir)
                log.debug("pod %s: its shell was gone; now cgroup %s", record.name, relpath)

    def _undo_start(self, live: LivePod, error: BaseException) -> None:
        """A start failed: nothing of it may be left (its cgroup is killed and removed),
        and the pod is created again, to be started again or destroyed."""
        if live.record.state is not PodState.RUNNING:
            return  # failed before its cgroup was named: nothing was launched
        with self._lock:
            self._close_gate(live)  # P1 sees EOF, if it still waits
        self._remove_cgroup(live)
        plan = live.plan
        if self.metadata is not None and plan is not None and "net" not in plan.host_namespaces:
            self.metadata.unregister_pod(live.record.uuid)  # its listener pins the netns
        with self._lock:
            self._detach_networks(live)  # what is left of an ADD (normally nothing)
            for fd in (live.pidfd, live.notify):
                if fd is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(fd)
                    os.close(fd)
            live.pidfd = live.notify = None
            self._created_again(live, f"start failed: {error}")

    def _created_again(self, live: LivePod, why: str) -> None:
        """Back to CREATED after a start that ran no app (lock held; its cgroup is gone)."""
        record = live.record
        for sub in ("pids", "exits"):  # a registration of a P1 killed on its way: stale
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(live.pod_dir / sub):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        record.cgroup = record.podinit_pid = record.podinit_start = None
        record.started_at = None
        for app in record.apps:
            app.state, app.pid, app.started_at = AppState.CREATED, None, None
        self._transition(live, PodState.CREATED, why, PodEventKind.START_FAILED)

    # --- stop, destroy ---------------------------------------------------------------------

    def stop_pod(self, ref: str, grace: float | None = None) -> PodRecord:
        """SIGTERM to the apps, `grace` seconds, SIGKILL, then post-stop; waits for the end."""
        grace = self.config.stop_grace if grace is None else grace
        for child in self.children(ref):  # its subtree first, while its cgroup still holds it
            with contextlib.suppress(PodNotFound):
                self.stop_pod(child, grace)
        with self._lock:
            live = self._find(ref)
            self._changed.wait_for(lambda: not live.starting)
            if live.record.state is PodState.EXITED:
                return copy_record(live.record)
            if live.record.state is PodState.CREATED:
                live.record.finished_at = time.time()
                self._transition(live, PodState.EXITED, "stopped before it was started")
                return copy_record(live.record)
            if live.record.state is PodState.RUNNING:
                self._transition(live, PodState.STOPPING, f"stop asked, grace {grace:g} s")
            apps_done = lambda: all(a.state is AppState.EXITED for a in live.record.apps)  # noqa: E731
            if not apps_done():
                if not self._signal_stop_signals(live):
                    self._signal(live, SIGNAL_TERMINATE_APPS)
                if not self._changed.wait_for(apps_done, grace):
                    self._signal(live, SIGNAL_KILL_APPS)
                    self._changed.wait_for(apps_done, 5.0)
            ended = lambda: live.record.state is PodState.EXITED  # noqa: E731
            if not self._changed.wait_for(ended, self.config.handler_timeout):
                self._signal(live, signal.SIGKILL)
                self._changed.wait_for(ended, 10.0)
            return copy_record(live.record)

    def _signal_stop_signals(self, live: LivePod) -> bool:
        """When an app of the pod has a stop signal of its own (`_stopsignal`): each running
        app's main process gets its signal, or SIGTERM; True then. False: no app has one,
        and podinit's SIGTERM to every process of the pod is the way."""
        manifest = parse_pod_manifest(live.record.manifest.encode())
        custom = stop_signals(manifest, live.image_manifests)
        if not custom or live.record.cgroup is None:
            return False
        processes = self.cgroups.open(live.record.cgroup).pids()
        for app in live.record.apps:
            if app.state is AppState.RUNNING and app.pid is not None:
                sig = custom.get(app.name, signal.SIGTERM)
                if signal_main_process(app.pid, processes, sig):
                    log.info("pod[%s]: app %s stopped with signal %d", live.record.name,
                             app.name, sig)  # fmt: skip
        return True

    def destroy_pod(self, ref: str, grace: float | None = None) -> list[str]:
        """Destroy the pod's subtree (children first), then stop the pod if needed, kill
        whatever is left in its cgroup, remove its state and release its images. Returns
        the UUIDs destroyed, the pod's last."""
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
            self._transition(live, None, "its cgroup, directory and images go")
            strays = [] if live.record.cgroup else self._stray_cgroups(live)
        if self.metadata is not None:
            self.metadata.forget_prepared(record.uuid)  # a pod destroyed before its start
        self._remove_cgroup(live)
        for relpath in strays:
            self._kill_cgroup(relpath, f"pod {record.name}: its processes in cgroup {relpath}")
        self._close_gate(live)
        self._detach_networks(live)  # done at its end already, unless a DEL failed then
        self.store.release(record.uuid)
        remove_pod_dir(live.pod_dir)
        destroyed.append(record.uuid)
        return destroyed

    def _stray_cgroups(self, live: LivePod) -> list[str]:
        """The cgroups a pod's processes are in though its record names none (lock held):
        a record of a daemon from before records named cgroups first, or one edited by
        hand. Its podinit tells: the pid the record has (same start time), or a podinit
        run for this pod's directory, in a pod cgroup no other record names."""
        named = {p.record.cgroup for p in self._pods.values() if p.record.cgroup}
        found = []
        for relpath in unnamed_pod_cgroups(self.cgroups, self.config.cgroup_parent, named):
            if any(is_podinit_of(live, pid) for pid in self.cgroups.open(relpath).pids()):
                found.append(relpath)
        return found

    def _kill_cgroup(self, relpath: str, what: str) -> None:
        cgroup = self.cgroups.open(relpath)
        try:
            cgroup.kill_all()
            cgroup.remove()
        except OSError as e:
            log.warning("%s: clean-up: %s", what, e)
        else:
            log.info("%s: killed and removed", what)


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
