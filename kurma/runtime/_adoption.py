"""A runtime on a state directory someone used before: reconcile, then re-adopt.

kurmad may have been killed at any moment (kill -9, OOM, a power cut of its own). Before
the new runtime forks its launcher:

1. `end_previous_launcher`: the old daemon's launcher may still be finishing a request or
   a warm shell; it is killed and gone before anything below is looked at, so nothing makes
   a cgroup behind the reconcile's back.
2. `reconcile`: every pod directory under the pods dir has a readable record (it is kept)
   or is an orphan (its apps' tmpfs unmounted, removed, its images released later); every
   pod cgroup (`pod-*`) under the runtime's cgroup parent is named by the record of a pod
   that runs (kept; its children's cgroups are looked at in turn) or is an orphan: every
   process in it is killed, then it is removed. One log line each.

Then (`Adoption.adopt`, after the fork) running pods whose podinit is still the same process
(pid + start time) are watched again and re-registered with the metadata service; the ones
that died meanwhile, or whose start never reached a podinit, are finished (their cgroup
killed and removed, the record EXITED).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
from collections.abc import Collection
from pathlib import Path

from ..atomic import write_atomic
from ..errors import KurmaError
from ._live import LivePod, RuntimeParts
from ._poddir import is_pod_dir_name, pids_from_registrations, remove_pod_dir
from ._podrecord import PodRecord, PodState, process_start_time
from .cgroups import Cgroup, CgroupSystem
from .launcher._zygote import POD_CGROUP_PREFIX

log = logging.getLogger(__name__)

LAUNCHER_FILE = "launcher.pid"  # in the state dir: "PID STARTTIME" of the running launcher
_LIVE_STATES = (PodState.RUNNING, PodState.STOPPING)

FoundPod = tuple[Path, PodRecord]


def note_launcher(state_dir: Path, pid: int) -> None:
    """Remember the launcher (`end_previous_launcher` of the next runtime reads it)."""
    write_atomic(state_dir / LAUNCHER_FILE, f"{pid} {process_start_time(pid)}\n", sync=False)


def forget_launcher(state_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (state_dir / LAUNCHER_FILE).unlink()


def end_previous_launcher(state_dir: Path, timeout: float = 5.0) -> None:
    """Kill the launcher of a daemon that died, if it still runs, and wait until it is gone.

    It would exit by itself once it saw its socket close, but it may be making a warm
    shell right now, in a cgroup of its own making."""
    try:
        pid, start = (int(x) for x in (state_dir / LAUNCHER_FILE).read_text().split())
    except (OSError, ValueError):
        return
    if process_start_time(pid) == start:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = None
        if pidfd is not None:
            try:
                if process_start_time(pid) == start:  # still it, now that the pidfd pins it
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    select.select([pidfd], [], [], timeout)
                    log.warning("the previous launcher (pid %d) still ran: killed", pid)
            finally:
                os.close(pidfd)
    forget_launcher(state_dir)


def reconcile(
    pods_dir: Path, cgroups: CgroupSystem, cgroup_parent: str
) -> tuple[list[FoundPod], list[str]]:
    """Orphan pod directories and cgroups removed (see the module docstring). Returns the
    pods found (directory, record) and the UUIDs of the orphan directories (their images
    are to be released)."""
    found: list[FoundPod] = []
    orphans: list[str] = []
    for entry in sorted(pods_dir.iterdir()):
        if not entry.is_dir() or not is_pod_dir_name(entry.name):
            continue
        try:
            record = PodRecord.load(entry)
        except (OSError, ValueError, KeyError, TypeError) as e:
            remove_pod_dir(entry)
            orphans.append(entry.name)
            log.warning("pod directory %s has no readable record (%s): removed", entry, e)
            continue
        found.append((entry, record))
    named = {r.cgroup for _, r in found if r.cgroup is not None and r.state in _LIVE_STATES}
    for relpath in unnamed_pod_cgroups(cgroups, cgroup_parent, named):
        cgroup = cgroups.open(relpath)
        count = len(cgroup.pids())
        try:
            cgroup.kill_all()
            cgroup.remove()
        except OSError as e:
            log.warning("cgroup %s belongs to no pod's record: cannot remove it: %s", relpath, e)
            continue
        log.warning(
            "cgroup %s belonged to no pod's record: %d processes killed, removed", relpath, count
        )
    return found, orphans


def unnamed_pod_cgroups(cgroups: CgroupSystem, parent: str, named: Collection[str]) -> list[str]:
    """The pod cgroups (`pod-*`) below `parent` that `named` does not hold: those of its
    top level, and those below a named one (a child pod's nests in its parent's)."""
    found: list[str] = []
    todo = [parent]
    while todo:
        relpath = todo.pop()
        for name in sorted(_child_names(cgroups.open(relpath))):
            if name.startswith(POD_CGROUP_PREFIX):
                child = f"{relpath}/{name}"
                (todo if child in named else found).append(child)
    return found


def _child_names(cgroup: Cgroup) -> set[str]:
    """The names of a cgroup's children, in any hierarchy."""
    names: set[str] = set()
    for _, directory in cgroup.directories():
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            names.update(e.name for e in os.scandir(directory) if e.is_dir())
    return names


def is_podinit_of(live: LivePod, pid: int) -> bool:
    """Whether `pid` is the pod's podinit: the recorded pid with its start time, or a
    kurma-podinit whose title names the pod's directory (podinit sets its command line to
    `kurma-podinit <basename of POD_DIR>`, the UUID)."""
    record = live.record
    if pid == record.podinit_pid and process_start_time(pid) == record.podinit_start:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return title == f"kurma-podinit {live.pod_dir.name}".encode()


def ran_nothing(live: LivePod) -> bool:
    """Whether no app of the pod was ever registered (P1 registers each before it runs)."""
    if any(a.pid is not None for a in live.record.apps):
        return False
    for sub in ("pids", "exits"):
        with contextlib.suppress(FileNotFoundError):
            if any(True for _ in os.scandir(live.pod_dir / sub)):
                return False
    return True


def remove_empty_parent(cgroups: CgroupSystem, relpath: str) -> None:
    """rmdir the runtime's cgroup parent in every hierarchy where it is empty."""
    for _, directory in cgroups.open(relpath).directories():
        with contextlib.suppress(OSError):  # ENOENT, or EBUSY/ENOTEMPTY: pods still run
            os.rmdir(directory)


class Adoption(RuntimeParts):
    """Taking on the pods a previous runtime left."""

    def adopt(self, found: list[FoundPod] | None = None) -> None:
        """Take on every pod record (`found` by `reconcile`, else read now): re-watch
        running pods, finish the ones that died."""
        if found is None:
            found = []
            for entry in sorted(self.pods_dir.iterdir()):
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    found.append((entry, PodRecord.load(entry)))
        for pod_dir, record in found:
            if record.uuid in self._pods:
                continue
            live = LivePod(record, pod_dir)
            with self._lock:
                self._pods[record.uuid] = live
                if record.state in _LIVE_STATES:
                    self._readopt(live)

    def _readopt(self, live: LivePod) -> None:
        record = live.record
        if record.podinit_pid is None and record.cgroup is not None:
            self._find_podinit(live)  # the daemon ended before the launcher's answer
        pid = record.podinit_pid
        alive = pid is not None and process_start_time(pid) == record.podinit_start
        if alive:
            assert pid is not None
            try:
                live.pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                alive = False
        if not alive:
            self._scan(live)
            if ran_nothing(live):  # the daemon ended between naming the cgroup and the start
                self._remove_cgroup(live)
                self._created_again(live, "kurmad ended before its start reached an app")
                return
            self._finalize(live, "podinit ended while nobody watched")
            return
        pids_from_registrations(live)
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

    def _find_podinit(self, live: LivePod) -> None:
        """Learn the podinit of a pod the launcher started without telling (its record
        names the cgroup only): the one in that cgroup whose title names the pod."""
        record = live.record
        assert record.cgroup is not None
        for pid in sorted(self.cgroups.open(record.cgroup).pids()):
            if is_podinit_of(live, pid):
                record.podinit_pid, record.podinit_start = pid, process_start_time(pid)
                record.save(live.pod_dir)
                return

    def _stored_manifests(self, record: PodRecord) -> dict[str, bytes]:
        return {
            a.name: (self.store.get_by_id(a.image_id).path / "manifest").read_bytes()
            for a in record.apps
        }
