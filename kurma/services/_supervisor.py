"""The system-service supervisor inside kurmad: services file -> host-level pods.

One thread reconciles: it polls the services file's stat (every `poll` s; every `BOOT_POLL`
s in its first `BOOT_SECONDS`, while a booting PID 1 adds services step by step, the console
last; PID 1 replaces the file by rename, so a new inode or mtime means a new version), starts
what waits once its dependencies hold, notices pods that ended (a runtime listener wakes it)
and restarts them by policy with backoff, and runs health checks (in a small pool, so a slow
check holds no one up). Every pod it makes carries the annotations `kurma-service` (the
service's name) and `kurma-service-spec` (the spec's fingerprint): a restarted kurmad finds
its running services by them and adopts them instead of starting them twice; pods without
them are never touched.

Locks: `_ops` serialises everything that changes services or their pods (the loop's step,
RestartService, shutdown); `_state` guards the published statuses, so listing services never
waits behind a pod that takes its grace period to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from ..aci import FrozenMap, PodManifest
from ..errors import ValidationError
from ..runtime._podrecord import PodRecord, PodState
from ..runtime._runtime import PodEvent, PodNotFound, PodStateError, Runtime
from ._graph import check_graph, levels, stop_order
from ._spec import RestartPolicy, ServicesFile, ServiceSpec, ServiceSpecError, load_services_file
from ._state import ServiceNotFound, ServiceState, ServiceStatus

log = logging.getLogger(__name__)

SERVICE_ANNOTATION = "kurma-service"  # pod annotation names are AC Names
SPEC_ANNOTATION = "kurma-service-spec"
RESTARTS_ANNOTATION = "kurma-service-restarts"  # the count survives a kurmad restart
BOOT_POLL, BOOT_SECONDS = 0.1, 60.0  # the console comes last: notice it soon

S = ServiceState
ManifestBuilder = Callable[[ServiceSpec], PodManifest]


def _kv(**kv: object) -> dict[str, Any]:
    return {"kv": kv}  # kurmad's structured log fields (kurma.api._logfmt)


@dataclass
class _Entry:
    """One service's live state (changed only with `_ops` held)."""

    spec: ServiceSpec
    state: ServiceState = S.WAITING
    pod: str | None = None
    restarts: int = 0
    last_exit: int | None = None
    message: str = ""
    failures: int = 0  # quick failures in a row (the backoff's exponent)
    next_start: float = 0.0  # monotonic: when BACKOFF ends
    started: float | None = None  # monotonic start of the current pod
    started_wall: float | None = None
    healthy: bool = False
    health_failures: int = 0
    next_health: float = 0.0
    health_deadline: float = 0.0  # monotonic: the first check passes by then, or it failed
    last_health: str = ""  # why the last check failed
    probing: bool = False
    blocked: bool = False  # FAILED by the dependency graph (unknown names, cycles)
    history: list[tuple[float, str]] = field(default_factory=list)


class Supervisor:
    """Runs the services of `path` as pods of `runtime` (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        path: str,
        manifest_for: ManifestBuilder,
        *,
        on_created: Callable[[PodRecord], None] | None = None,
        images_visible: Callable[[str], bool] | None = None,
        poll: float = 0.5,
        clock: Callable[[], float] = time.monotonic,  # tests drive backoff with a fake
    ) -> None:
        self._clock = clock
        self.runtime = runtime
        self.path = path
        self.manifest_for = manifest_for
        self.on_created = on_created
        self.images_visible = images_visible  # what a service's image dependencies may be
        self.poll = poll
        self.problems: tuple[str, ...] = ()  # of the last load (bad services, bad file)
        self._ready: tuple[str, ...] = ()
        self._entries: dict[str, _Entry] = {}
        self._ops = threading.RLock()
        self._state = threading.Lock()
        self._statuses: dict[str, ServiceStatus] = {}
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._file_key: tuple[int, int, int] | None = None
        self._adoptable: dict[str, list[PodRecord]] | None = None
        self._results: list[tuple[str, str, bool, str]] = []  # (service, pod, ok, why)
        self._probes = ThreadPoolExecutor(4, thread_name_prefix="kurma-health")
        self._thread: threading.Thread | None = None
        self._boot_until = 0.0
        self._first_step = threading.Event()

    # --- life ----------------------------------------------------------------------------

    def start(self, *, thread: bool = True) -> None:
        """Find the pods of a previous kurmad and start the loop (its first step loads the
        file). Without `thread`, the caller drives `step()` (tests, with a fake clock)."""
        self.runtime.add_listener(self._on_event)
        self._adoptable = self._service_pods()
        self._boot_until = self._clock() + BOOT_SECONDS
        if not thread:
            return
        self._wake.set()  # the first step right away, in the loop's thread
        self._thread = threading.Thread(target=self._run, name="kurma-services", daemon=True)
        self._thread.start()

    def wait_first_step(self, timeout: float) -> bool:
        """Wait until the loop's first step (load the file, start what may start) is done."""
        return self._first_step.wait(timeout)

    def step(self) -> None:
        """One round of the loop: reload, notice ended pods, start what may start."""
        with self._ops:
            self._step()

    def close(self, *, stop_services: bool, budget: float) -> None:
        """End the loop; with `stop_services`, stop the pods dependents first, level by
        level (each in parallel), all within `budget` seconds, then SIGKILL what is left."""
        self._closing.set()
        self._wake.set()
        self._first_step.set()
        if self._thread is not None:
            self._thread.join(10.0)
        with contextlib.suppress(ValueError):
            self.runtime.remove_listener(self._on_event)
        self._probes.shutdown(wait=False, cancel_futures=True)
        if stop_services:
            with self._ops:
                self._stop_all(budget)

    def _on_event(self, event: PodEvent) -> None:
        if event.kind in ("pod.exited", "pod.destroyed"):
            self._wake.set()  # runtime lock held: only wake the loop

    def _run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self._sleep())
            self._wake.clear()
            if self._closing.is_set():
                return
            try:
                with self._ops:
                    self._step()
            except Exception:
                log.exception("service supervisor step failed")
            self._first_step.set()

    def _sleep(self) -> float:
        """Until the next poll, backoff end or health check, whichever is first."""
        now = self._clock()
        due = [now + (min(self.poll, BOOT_POLL) if now < self._boot_until else self.poll)]
        for e in list(self._entries.values()):
            if e.state is S.BACKOFF:
                due.append(e.next_start)
            if e.pod and e.spec.health and not e.probing and e.state in (S.RUNNING, S.STARTING):
                due.append(e.next_health)
            if e.pod and e.spec.health and not e.healthy and e.state is S.STARTING:
                due.append(e.health_deadline)
        return max(0.01, min(due) - now)

    # --- queries -------------------------------------------------------------------------

    def services(self) -> list[ServiceStatus]:
        with self._state:
            return [self._statuses[n] for n in sorted(self._statuses)]

    def status(self, name: str) -> ServiceStatus:
        with self._state:
            status = self._statuses.get(name)
        if status is None:
            raise ServiceNotFound(self._unknown(name))
        return status

    def _unknown(self, name: str) -> str:
        known = ", ".join(sorted(self._statuses)) or "none"
        return f"no service named {name!r} (services: {known})"

    # --- the loop's step -----------------------------------------------------------------

    def _step(self) -> None:
        self._maybe_reload()
        self._take_results()
        now = self._clock()
        for entry in list(self._entries.values()):
            if entry.pod and entry.state in (S.RUNNING, S.STARTING):
                self._check_pod(entry)
            if entry.pod and entry.state is S.STARTING and not entry.healthy:
                self._check_start_timeout(entry, now)
        order = levels({n: e.spec for n, e in self._entries.items()})
        for name in sorted(self._entries, key=lambda n: (order.get(n, 0), n)):
            entry = self._entries[name]
            if entry.state is S.BACKOFF and now < entry.next_start:
                continue
            if entry.state in (S.WAITING, S.BACKOFF):
                waiting = self._unmet(entry.spec)
                if waiting:
                    self._set(entry, S.WAITING, f"waiting for {', '.join(waiting)}")
                else:
                    if entry.state is S.BACKOFF:
                        entry.restarts += 1
                    self._launch(entry)
        self._probe_due()

    def _maybe_reload(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._file_key != (0, 0, 0):
                log.info("no services file yet", extra=_kv(path=self.path))
                self._file_key = (0, 0, 0)
            return
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._file_key:
            return
        self._file_key = key
        try:
            loaded = load_services_file(self.path)
        except ServiceSpecError as e:
            log.error("services file refused; services unchanged", extra=_kv(error=str(e)))
            self.problems = (str(e),)
            return
        for problem in loaded.problems:
            log.error("service left out", extra=_kv(error=problem))
        self._apply(loaded)

    def _apply(self, loaded: ServicesFile) -> None:
        """Reconcile with a new version of the file: remove, change, add."""
        self.problems = loaded.problems
        self._ready = loaded.ready
        specs = loaded.services
        for name in [n for n in self._entries if n not in specs]:
            entry = self._entries.pop(name)
            self._end_pod(entry, destroy=True)
            log.info("service removed", extra=_kv(service=name))
            with self._state:
                self._statuses.pop(name, None)
        blocked = check_graph(specs, loaded.ready)
        for name, spec in specs.items():
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry(spec)
                if spec.depends_on:
                    entry.message = f"waiting for {', '.join(spec.depends_on)}"
                self._adopt(entry)
            elif entry.spec != spec:
                log.info("service changed", extra=_kv(service=name))
                if entry.pod is not None:
                    self._set(entry, S.STARTING, "spec changed: replacing its pod")
                self._end_pod(entry, destroy=True)
                entry.spec, entry.failures = spec, 0
                if entry.state not in (S.STOPPED, S.FAILED, S.WAITING):
                    entry.restarts += 1
                entry.state = S.WAITING
            if name in blocked:
                self._end_pod(entry, destroy=True)
                entry.blocked = True
                self._set(entry, S.FAILED, blocked[name])
            elif not spec.enabled:
                self._end_pod(entry, destroy=True)
                entry.blocked = False
                self._set(entry, S.STOPPED, "disabled")
            elif entry.blocked or entry.state is S.STOPPED:
                entry.blocked = False
                self._set(entry, S.WAITING, "")
            else:
                self._publish(entry)
        self._drop_unadopted()

    def _unmet(self, spec: ServiceSpec) -> list[str]:
        """Its dependencies that do not hold yet (the "waiting for" list shrinks)."""
        return [d for d in spec.depends_on if not self._holds(d)]

    def _holds(self, dep: str) -> bool:
        entry = self._entries.get(dep)
        if entry is not None:
            return entry.state is S.RUNNING
        if dep in self._ready:
            return True
        return any(e.state is S.RUNNING and dep in e.spec.provides for e in self._entries.values())

    # --- pods ----------------------------------------------------------------------------

    def _launch(self, entry: _Entry) -> None:
        """Make and start the service's pod (its previous one is destroyed first)."""
        spec = entry.spec
        self._end_pod(entry, destroy=True)
        self._set(entry, S.STARTING, "starting")
        try:
            self._check_name_free(spec.name)
            manifest = self.manifest_for(spec)
            annotations = {
                **dict(manifest.annotations),
                SERVICE_ANNOTATION: spec.name,
                SPEC_ANNOTATION: spec.fingerprint(),
                RESTARTS_ANNOTATION: str(entry.restarts),
            }
            manifest = replace(manifest, annotations=FrozenMap(annotations))
            scoped = {} if self.images_visible is None else {"images_visible": self.images_visible}
            record = self.runtime.create_pod(manifest, name=spec.name, **scoped)
            entry.pod = record.uuid
            if self.on_created is not None:
                self.on_created(record)
            record = self.runtime.start_pod(record.uuid)
        except ValidationError as e:  # the spec itself: no restart helps
            self._set(entry, S.FAILED, f"bad service spec: {e}")
            return
        except Exception as e:
            log.warning("service did not start", extra=_kv(service=spec.name, error=str(e)))
            self._ended(entry, None, f"cannot start: {e}")
            return
        errors = [f"{a.name}: {a.error}" for a in record.apps if a.error]
        entry.started, entry.started_wall = self._clock(), record.started_at
        if errors:
            self._ended(entry, None, f"cannot start: {'; '.join(errors)}")
            return
        self._running(entry)

    def _check_name_free(self, name: str) -> None:
        """A pod's name is its identity for people (and its hostname): a pod someone else
        made under the service's name blocks the service until it is gone."""
        for record in self.runtime.list_pods():
            if record.name == name:
                raise PodStateError(
                    f"a pod named {name!r} exists already ({record.uuid}) and is not this "
                    f"service's; destroy it or rename the service"
                )

    def _running(self, entry: _Entry) -> None:
        entry.health_failures = 0
        entry.healthy = entry.spec.health is None
        entry.probing = False  # a check of the previous pod still out is dropped (pod differs)
        entry.last_health = ""
        if entry.spec.health is not None:
            entry.next_health = self._clock()  # the first check right away
            entry.health_deadline = self._clock() + entry.spec.health.start_timeout
            self._set(entry, S.STARTING, "waiting for the first health check")
        else:
            self._set(entry, S.RUNNING, "")

    def _check_pod(self, entry: _Entry) -> None:
        assert entry.pod is not None
        try:
            record = self.runtime.get(entry.pod)
        except PodNotFound:
            entry.pod = None
            self._ended(entry, None, "its pod was destroyed")
            return
        if record.state is not PodState.EXITED:
            return
        codes = [a.exit_code for a in record.apps if a.exit_code is not None]
        code = next((c for c in codes if c != 0), codes[0] if codes else None)
        errors = [a.error for a in record.apps if a.error]
        why = errors[0] if errors else f"exited with code {code}"
        self._ended(entry, code, why)

    def _ended(self, entry: _Entry, code: int | None, why: str) -> None:
        """The pod ended (or never started): restart by policy, after the backoff."""
        spec = entry.spec
        now = self._clock()
        if entry.started is not None and now - entry.started >= spec.backoff.reset_after:
            entry.failures = 0
        entry.started = None
        entry.failures += 1
        entry.last_exit = code
        failed = code != 0
        if spec.restart is RestartPolicy.NEVER or (
            spec.restart is RestartPolicy.ON_FAILURE and not failed
        ):
            state = S.FAILED if code is None else S.EXITED
            self._set(entry, state, f"{why}; not restarted (restart: {spec.restart.value})")
            return
        delay = spec.backoff.delay(entry.failures)
        entry.next_start = now + delay
        self._set(entry, S.BACKOFF, f"{why}; restarting in {delay:.3g} s")
        self._wake.set()

    def _end_pod(self, entry: _Entry, *, destroy: bool, grace: float | None = None) -> None:
        """Stop (and destroy) the service's pod, if it has one."""
        if entry.pod is None:
            return
        uuid, entry.pod = entry.pod, None
        try:
            if destroy:
                self.runtime.destroy_pod(uuid, grace)
            else:
                self.runtime.stop_pod(uuid, grace)
        except PodNotFound:
            pass
        except Exception as e:
            log.warning("service pod did not end cleanly", extra=_kv(pod=uuid, error=str(e)))

    # --- health --------------------------------------------------------------------------

    def _check_start_timeout(self, entry: _Entry, now: float) -> None:
        """A pod whose first health check has not passed by its deadline failed to start:
        stopped (kept for its logs) and restarted by policy, like a pod that exited."""
        health = entry.spec.health
        if health is None or now < entry.health_deadline:
            return
        pod = entry.pod
        self._end_pod(entry, destroy=False)
        entry.pod = pod  # kept for its logs until the restart destroys it
        entry.started = None  # never healthy: a quick failure however long it took
        last = f"; last: {entry.last_health}" if entry.last_health else ""
        self._ended(entry, None, f"no health check passed within {health.start_timeout:g} s{last}")

    def _probe_due(self) -> None:
        now = self._clock()
        for entry in self._entries.values():
            health = entry.spec.health
            if (
                health is None
                or entry.pod is None
                or entry.probing
                or entry.state not in (S.RUNNING, S.STARTING)
                or now < entry.next_health
            ):
                continue
            entry.probing = True
            self._probes.submit(self._probe, entry.spec.name, entry.pod, health.command,
                                health.timeout)  # fmt: skip

    def _probe(self, name: str, pod: str, argv: tuple[str, ...], timeout: float) -> None:
        """Run one check inside the pod (a pool thread); the loop takes the result."""
        ok, why = False, ""
        try:
            with open(os.devnull, "r+b") as null:
                fd = null.fileno()
                proc = self.runtime.exec_in_pod(pod, None, argv, stdio=(fd, fd, fd))
            if proc.error:
                why = proc.error
            else:
                done = self.runtime.wait_exec(proc, timeout)
                ok, why = done.exit_code == 0, f"exit code {done.exit_code}"
        except TimeoutError:
            why = f"no answer within {timeout:g} s"
        except Exception as e:
            why = str(e)
        with self._state:
            self._results.append((name, pod, ok, why))
        self._wake.set()

    def _take_results(self) -> None:
        with self._state:
            results, self._results = self._results, []
        for name, pod, ok, why in results:
            entry = self._entries.get(name)
            if entry is None or entry.pod != pod or entry.spec.health is None:
                continue
            health = entry.spec.health
            entry.probing = False
            if entry.state not in (S.RUNNING, S.STARTING):
                continue  # it ended (start timeout, exit) while the check ran
            entry.next_health = self._clock() + health.interval
            if ok:
                entry.health_failures = 0
                if not entry.healthy or entry.state is not S.RUNNING:
                    entry.healthy = True
                    self._set(entry, S.RUNNING, "health ok")
                continue
            if not entry.healthy:
                # Still starting up: a check that fails before the first success only says
                # "not ready yet" (a start period, up to `start_timeout`); the service waits,
                # its dependents too.
                entry.last_health = why
                self._set(entry, S.STARTING, f"waiting for the first health check ({why})")
                continue
            entry.health_failures += 1
            log.info("health check failed", extra=_kv(service=name, why=why,
                                                      count=entry.health_failures))  # fmt: skip
            if entry.health_failures >= health.retries:
                self._end_pod(entry, destroy=False)
                entry.pod = pod  # kept for its logs until the restart destroys it
                failures = entry.health_failures
                self._ended(entry, None, f"health check failed {failures} times ({why})")

    # --- restart, adoption, shutdown -----------------------------------------------------

    def restart(self, name: str) -> ServiceStatus:
        """Restart now: a new pod, backoff reset (RestartService)."""
        with self._ops:
            entry = self._entries.get(name)
            if entry is None:
                raise ServiceNotFound(self._unknown(name))
            if entry.blocked or not entry.spec.enabled:
                return self.status(name)  # FAILED or STOPPED says why
            entry.failures = 0
            entry.restarts += 1
            log.info("service restart requested", extra=_kv(service=name))
            waiting = self._unmet(entry.spec)
            if waiting:
                self._end_pod(entry, destroy=True)
                self._set(entry, S.WAITING, f"waiting for {', '.join(waiting)}")
            else:
                self._launch(entry)
            return self.status(name)

    def _service_pods(self) -> dict[str, list[PodRecord]]:
        """Host-level pods a previous kurmad made for services, by service name."""
        found: dict[str, list[PodRecord]] = {}
        for record in self.runtime.list_pods():
            if record.parent is not None:
                continue
            name = _annotation(record, SERVICE_ANNOTATION)
            if name:
                found.setdefault(name, []).append(record)
        return found

    def _adopt(self, entry: _Entry) -> None:
        """Take over a running pod of this service from a previous kurmad, if there is one
        for the same spec; every other pod of the service's is destroyed."""
        if not self._adoptable:
            return
        records = sorted(self._adoptable.pop(entry.spec.name, []), key=lambda r: r.created_at)
        fingerprint = entry.spec.fingerprint()
        keep = next(
            (
                r
                for r in reversed(records)
                if r.state is PodState.RUNNING
                and _annotation(r, SPEC_ANNOTATION) == fingerprint
                and entry.spec.enabled
            ),
            None,
        )
        for record in records:
            if record is not keep:
                with contextlib.suppress(Exception):
                    self.runtime.destroy_pod(record.uuid)
        if keep is None:
            return
        entry.pod = keep.uuid
        with contextlib.suppress(TypeError, ValueError):
            entry.restarts = int(_annotation(keep, RESTARTS_ANNOTATION) or 0)
        ran = time.time() - (keep.started_at or time.time())
        entry.started, entry.started_wall = self._clock() - ran, keep.started_at
        log.info("service adopted", extra=_kv(service=entry.spec.name, pod=keep.uuid))
        self._running(entry)

    def _drop_unadopted(self) -> None:
        """After the first load: pods of services the file no longer has are destroyed."""
        if self._adoptable is None:
            return
        for name, records in self._adoptable.items():
            for record in records:
                log.info("destroying the pod of a removed service", extra=_kv(service=name))
                with contextlib.suppress(Exception):
                    self.runtime.destroy_pod(record.uuid)
        self._adoptable = None

    def _stop_all(self, budget: float) -> None:
        deadline = self._clock() + budget
        groups = stop_order({n: e.spec for n, e in self._entries.items()})
        for group in groups:
            entries = [self._entries[n] for n in group if self._entries[n].pod]
            if not entries:
                continue
            grace = max(0.0, deadline - self._clock())
            names = ",".join(group)
            log.info("stopping services", extra=_kv(services=names, grace=round(grace, 2)))

            def stop(entry: _Entry, grace: float = grace) -> None:
                pod = entry.pod
                self._end_pod(entry, destroy=False, grace=grace)
                entry.pod = pod  # the record stays, for its logs and a later look
                self._set(entry, S.STOPPED, "stopped at shutdown")

            with ThreadPoolExecutor(len(entries)) as pool:
                list(pool.map(stop, entries))

    # --- state changes -------------------------------------------------------------------

    def _set(self, entry: _Entry, state: ServiceState, message: str) -> None:
        """The one way a service changes state: one log line, history, the new status."""
        changed = state is not entry.state or message != entry.message
        entry.state, entry.message = state, message
        if changed:
            log.info(
                "service[%s](%s)%s", entry.spec.name, state.value.lower(),
                f": {message}" if message else "",
                extra=_kv(service=entry.spec.name, state=state.value, pod=entry.pod),
            )  # fmt: skip
            entry.history.append((time.time(), f"{state.value}: {message}"))
            del entry.history[:-20]
        self._publish(entry)

    def _publish(self, entry: _Entry) -> None:
        spec = entry.spec
        status = ServiceStatus(
            name=spec.name,
            state=entry.state,
            pod=entry.pod,
            restarts=entry.restarts,
            last_exit_code=entry.last_exit,
            message=entry.message,
            image=spec.image,
            depends_on=spec.depends_on,
            provides=spec.provides,
            restart=spec.restart.value,
            started_at=entry.started_wall if entry.pod else None,
        )
        with self._state:
            self._statuses[spec.name] = status


def _annotation(record: PodRecord, name: str) -> str | None:
    """A pod annotation's value from the record's manifest JSON."""
    try:
        doc = json.loads(record.manifest)
    except (TypeError, ValueError):
        return None
    for item in doc.get("annotations") or ():
        if isinstance(item, dict) and item.get("name") == name:
            value = item.get("value")
            return value if isinstance(value, str) else None
    return None
