"""What the Runtime's parts share: its configuration, the in-memory side of a pod, events.

The Runtime (`_runtime.Runtime`) is put together from one class per concern: `Lifecycle`
(create, start, stop, destroy, and `_transition`, the one door for a pod's state),
`Watcher` (the thread that learns of apps' and pods' ends), `Adoption` (a restarted
runtime's reconcile and re-adoption). They share the state `Runtime.__init__` sets up,
listed in `RuntimeParts`.
"""

from __future__ import annotations

import enum
import selectors
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..network import Attachment
from ..store import ImageStore
from ._plan import PodPlan
from ._podrecord import PodRecord, PodState
from .cgroups import CgroupSystem
from .launcher import Launcher
from .metadata import MetadataConfig, MetadataService


@dataclass(frozen=True)
class RuntimeConfig:
    cgroup_parent: str = "kurma"  # below the runtime's own cgroup
    stop_grace: float = 10.0  # SIGTERM to SIGKILL when stopping a pod
    leftover_grace: float = 2.0  # for processes left when every app has ended
    handler_timeout: float = 30.0  # a post-stop handler's budget while stopping
    log_max_bytes: int = 2 << 20  # in RAM with pods_dir on a tmpfs: 2 MiB x (1 + keep)
    log_keep: int = 2
    nameservers: tuple[str, ...] | None = None  # None: the host's resolv.conf
    # CNI: the `.conflist`/`.conf` files of the networks pods may join (None: no networks;
    # a pod asking for one is refused at create), and where the plugin binaries are. The
    # attachments are kept in `<state_dir>/networks/` (DEL after a crash or a reboot).
    networks_dir: str | None = None
    cni_paths: tuple[str, ...] = ("/usr/lib/cni", "/opt/cni/bin")
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


class PodEventKind(enum.StrEnum):
    """What happened to a pod. The values are the API's event kinds (`Host.Events`)."""

    CREATED = "pod.created"
    STARTED = "pod.started"  # its record names its cgroup; its processes come next
    START_FAILED = "pod.start_failed"  # back to created: nothing of the attempt is left
    APP_EXITED = "app.exited"
    STOPPING = "pod.stopping"
    EXITED = "pod.exited"
    DESTROYED = "pod.destroyed"


@dataclass(frozen=True)
class PodEvent:
    """What happened to a pod; `record` is a copy taken at that moment (persisted already:
    a listener that reads pod.json finds this state or a later one)."""

    kind: PodEventKind
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


class LivePod:
    """The in-memory side of a pod: its record plus descriptors and the plan."""

    def __init__(self, record: PodRecord, pod_dir: Path) -> None:
        self.record = record
        self.pod_dir = pod_dir
        self.plan: PodPlan | None = None
        self.image_manifests: dict[str, bytes] = {}
        self.pidfd: int | None = None
        self.notify: int | None = None
        self.pending: bytes = b""
        self.starting = False  # a start_pod is under way (a second one is refused)
        self.finishing = False
        self.execs: dict[int, ExecProcess] = {}
        self.detaching = threading.Lock()  # held while the pod's networks are DELed
        self.networks: list[Attachment] = []  # attached (eth0 first); `Runtime.pod_networks`
        self.gate: int | None = None  # the network gate's FIFO, held while the start runs


class RuntimeParts:
    """The state the Runtime's parts share, set up by `Runtime.__init__` (annotations only:
    for readers and type checkers)."""

    config: RuntimeConfig
    state_dir: Path
    pods_dir: Path
    cgroups: CgroupSystem
    launcher: Launcher
    store: ImageStore
    metadata: MetadataService | None
    log_cap: Callable[[PodRecord], int | None] | None
    _lock: threading.RLock
    _changed: threading.Condition
    _pods: dict[str, LivePod]
    _exited_networks: list[LivePod]
    _selector: selectors.BaseSelector
    _wake_w: int
    _closed: bool
    _pods_on_tmpfs: bool

    def _emit(self, kind: PodEventKind, live: LivePod, app: str | None = None) -> None:
        raise NotImplementedError

    def _find(self, ref: str) -> LivePod:
        raise NotImplementedError

    def _remove_cgroup(self, live: LivePod, *, kill: bool = True) -> None:
        raise NotImplementedError

    def _signal(self, live: LivePod, sig: int) -> None:
        raise NotImplementedError

    def _watch_pod(self, live: LivePod) -> None:
        raise NotImplementedError

    def _scan(self, live: LivePod) -> None:
        raise NotImplementedError

    def _finalize(self, live: LivePod, why: str | None = None) -> None:
        raise NotImplementedError

    def _replan(self, live: LivePod) -> PodPlan:
        raise NotImplementedError

    def _created_again(self, live: LivePod, why: str) -> None:
        raise NotImplementedError

    def _transition(
        self, live: LivePod, state: PodState | None, why: str, event: PodEventKind | None = None
    ) -> None:
        raise NotImplementedError

    def _detach_networks(self, live: LivePod) -> None:
        raise NotImplementedError

    def _close_gate(self, live: LivePod) -> None:
        raise NotImplementedError


def copy_record(record: PodRecord) -> PodRecord:
    """A copy callers may keep: the record's lists are fresh, its values immutable. (Five
    times cheaper than deepcopy, which List at hundreds of pods notices.)"""
    return replace(
        record,
        apps=[replace(a) for a in record.apps],  # ancestors: a tuple, immutable
        isolators=[dict(i) for i in record.isolators],
    )
