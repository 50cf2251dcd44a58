"""A pod's record on disk (`pods/<uuid>/pod.json`): what a restarted daemon needs to find it.

Written through a temporary name and renamed, after every change of state. The record is
plain data; the runtime owns the transitions.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_atomic

RECORD_FILE = "pod.json"


class PodState(enum.StrEnum):
    CREATED = "created"  # prepared: images held, plan checked, nothing running
    RUNNING = "running"
    STOPPING = "stopping"  # apps told to stop; handlers and clean-up follow
    EXITED = "exited"  # every app and handler ended, namespaces and cgroup gone


class AppState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass
class AppRecord:
    """One app of the pod: its pid inside the pod while it runs, then how it ended."""

    name: str
    image_id: str
    state: AppState = AppState.CREATED
    pid: int | None = None
    exit_code: int | None = None  # 0-255, or 128+N when killed by signal N
    error: str | None = None  # why it did not start (exit codes 125-127)
    started_at: float | None = None
    finished_at: float | None = None
    post_stop_pid: int | None = None
    post_stop_code: int | None = None


@dataclass
class PodRecord:
    uuid: str
    name: str
    manifest: str  # the pod manifest as JSON text
    created_at: float
    state: PodState = PodState.CREATED
    apps: list[AppRecord] = field(default_factory=list)
    isolators: list[dict[str, object]] = field(default_factory=list)
    cgroup: str | None = None  # relpath below the runtime's own cgroup
    podinit_pid: int | None = None
    podinit_start: int | None = None  # /proc/PID/stat starttime: tells a reused pid apart
    metadata_token: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # Recursion (DESIGN.md): the pod that created this one through its API socket (None: the
    # host), the whole chain of parents nearest first, and the scope of the pod's own API
    # socket ("subtree", "host-read", "host"; None: no socket). Fixed at create.
    parent: str | None = None
    ancestors: tuple[str, ...] = ()
    api_access: str | None = None
    # A pod a pod created: its host sources as (root, [[relative path, recursive], ...]),
    # resolved beneath the root at mount time (`_confine`); None: the host's pod.
    beneath: dict | None = None  # type: ignore[type-arg]

    def app(self, name: str) -> AppRecord:
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(name)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> PodRecord:  # type: ignore[type-arg]
        apps = [AppRecord(**{**a, "state": AppState(a["state"])}) for a in doc.pop("apps")]
        ancestors = tuple(doc.pop("ancestors", ()))
        return cls(**{**doc, "state": PodState(doc["state"]), "apps": apps, "ancestors": ancestors})

    def save(self, pod_dir: Path) -> None:
        """Write pod.json atomically (temporary name, then rename)."""
        write_atomic(pod_dir / RECORD_FILE, json.dumps(self.to_json(), indent=1), sync=False)

    @classmethod
    def load(cls, pod_dir: Path) -> PodRecord:
        return cls.from_json(json.loads((pod_dir / RECORD_FILE).read_text()))


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the comm, which may hold spaces); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])
