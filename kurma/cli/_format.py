"""How pods, images and log output look on the terminal: `ps` rows, ages, JSON documents,
exit codes, and log lines of several apps told apart by a prefix.

Pure functions over the API's messages (duck-typed, so that the tests can pass plain
objects); the only import beyond the standard library is protobuf's json_format, and only
for JSON output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import IO, Any

STATE_NAMES = {0: "unknown", 1: "created", 2: "running", 3: "stopping", 4: "exited"}
APP_STATE_NAMES = {0: "unknown", 1: "created", 2: "running", 3: "exited"}
SHORT_UUID = 8


def age(seconds: float) -> str:
    """12 -> '12s', 150 -> '2m', 7200 -> '2h', 200000 -> '2d': the AGE column."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def exit_code(apps: Sequence[Any]) -> int:
    """The exit code of a pod's apps: the first non-zero one, else 0 (a single app's own)."""
    for app in apps:
        if app.HasField("exit_code") and app.exit_code != 0:
            return app.exit_code
    return 0


def pod_state(pod: Any) -> str:
    """'running', 'created', or 'exited (3)' with the pod's exit code."""
    state = STATE_NAMES.get(pod.state, "unknown")
    if state == "exited":
        return f"exited ({exit_code(pod.apps)})"
    return state


def _seconds(stamp: Any) -> float | None:
    if stamp is None or (stamp.seconds == 0 and stamp.nanos == 0):
        return None
    return stamp.seconds + stamp.nanos / 1e9


def pod_row(pod: Any, now: float, wide: bool = False) -> tuple[str, ...]:
    """One `ps` row: UUID NAME STATE APPS AGE (wide: full UUID, IMAGES and PARENT too)."""
    created = _seconds(pod.created_at)
    row = (
        pod.uuid if wide else pod.uuid[:SHORT_UUID],
        pod.name,
        pod_state(pod),
        ",".join(a.name for a in pod.apps),
        age(now - created) if created is not None else "-",
    )
    if not wide:
        return row
    images = ",".join(a.image_name or a.image_id[:19] for a in pod.apps)
    parent = pod.parents[0] if pod.parents else "-"
    return (*row, images, parent)


PS_HEADERS = ("UUID", "NAME", "STATE", "APPS", "AGE")
PS_WIDE_HEADERS = (*PS_HEADERS, "IMAGES", "PARENT")


def ps_table(pods: Sequence[Any], wide: bool = False, now: float | None = None) -> str:
    from ._output import table

    now = time.time() if now is None else now
    headers = PS_WIDE_HEADERS if wide else PS_HEADERS
    return table(headers, [pod_row(p, now, wide) for p in pods])


def message_dict(message: Any) -> dict[str, Any]:
    """A message as JSON-ready data with the proto's own field names; embedded JSON text
    (`manifest_json`) becomes a nested `manifest` object, so `jq` can reach into it."""
    from google.protobuf import json_format

    doc = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )
    text = doc.pop("manifest_json", None)
    if text:
        try:
            doc["manifest"] = json.loads(text)
        except ValueError:
            doc["manifest_json"] = text
    return doc


def dumps(docs: Any) -> str:
    return json.dumps(docs, indent=2, sort_keys=False)


class LogPrinter:
    """Writes log chunks as they come. With several apps each line gets `app | ` in front
    (a partial line waits for its end, so that two apps never mix within a line)."""

    def __init__(self, out: IO[bytes], apps: Sequence[str]) -> None:
        self.out = out
        self.prefixed = len(apps) > 1
        width = max((len(a) for a in apps), default=0)
        self._prefix = {a: f"{a.ljust(width)} | ".encode() for a in apps}
        self._partial: dict[str, bytes] = {}

    def write(self, app: str, data: bytes) -> None:
        if not self.prefixed:
            self.out.write(data)
            self.out.flush()
            return
        prefix = self._prefix.get(app) or f"{app} | ".encode()
        lines = (self._partial.pop(app, b"") + data).split(b"\n")
        self._partial[app] = lines.pop()  # b"" when the data ended a line
        if not self._partial[app]:
            del self._partial[app]
        if lines:
            self.out.write(b"".join(prefix + line + b"\n" for line in lines))
            self.out.flush()

    def close(self) -> None:
        """Write what is left of unfinished lines."""
        for app, rest in self._partial.items():
            prefix = self._prefix.get(app) or f"{app} | ".encode()
            self.out.write(prefix + rest + b"\n")
        self._partial.clear()
        self.out.flush()
