"""The pod log source: every visible pod's app output, line by line, through kurma's API.

The strategy: subscribe to Host.Events first, then List, so no pod created in between is
missed; follow each pod's Logs (all apps, from the start of what is kept) in a thread of its
own; a pod.created or pod.started event starts a follower for a pod not followed yet, and
pod.destroyed stops one. A Logs stream ends by itself once the pod's apps have exited.

Every stream starts at the beginning of the kept log, so per pod and app we count the bytes
already forwarded and skip that many when a pod is followed again (kurmad came back after
a restart, and every stream was re-opened). Rotation that deletes the
oldest kept file makes that count too large, and some lines of such a pod would be skipped.

The forwarder's own pod is never followed: forwarding its own output would loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ..backoff import Backoff
from ..client import Client, ClientError, NotFound, Stream, pods_pb2

log = logging.getLogger(__name__)

LINE_MAX = 8192  # a longer line goes out in pieces of this many bytes
FOLLOW_EVENTS = ("pod.created", "pod.started")


@dataclass(frozen=True)
class PodLine:
    """One line of an app's output (without its newline)."""

    pod_uuid: str
    pod_name: str
    app: str
    text: str


class PodLogSource:
    """Follows every pod's logs through `connect()`'s client, re-connecting when it fails."""

    def __init__(
        self,
        connect: Callable[[], Client],
        emit: Callable[[PodLine], None],
        stop: threading.Event,
        *,
        exclude: Collection[str] = (),
        backoff: Backoff | None = None,
    ) -> None:
        self.connect = connect
        self.emit = emit
        self.stop = stop
        self.exclude = set(exclude)  # pod UUIDs or names
        self.backoff = backoff or Backoff(0.5, 10.0)
        self._failures = 0  # failed connections in a row: the backoff's count
        self.thread = threading.Thread(target=self.run, name="pods", daemon=True)
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._events: Stream | None = None
        self._streams: dict[str, Stream] = {}  # followed pod UUID -> its Logs stream
        self._seen: dict[tuple[str, str], int] = {}  # (pod, app) -> bytes forwarded
        self._partial: dict[tuple[str, str], bytes] = {}  # (pod, app) -> unterminated line

    def start(self) -> PodLogSource:
        self.thread.start()
        return self

    def following(self) -> set[str]:
        with self._lock:
            return set(self._streams)

    def close(self) -> None:
        """Stop: end the event stream and every log stream."""
        self.stop.set()
        with self._lock:
            streams = [*self._streams.values(), *([self._events] if self._events else [])]
        for stream in streams:
            stream.cancel()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                client = self.connect()
            except (ClientError, ValueError) as e:
                log.warning("pod logs: cannot reach kurmad: %s", e)
            else:
                try:
                    self._serve(client)
                    self._failures = 0
                except ClientError as e:
                    if not self.stop.is_set():
                        log.warning("pod logs: lost kurmad: %s", e)
                finally:
                    self._disconnect(client)
            if not self.stop.is_set():
                self._failures += 1
                self.stop.wait(self.backoff.delay(self._failures))

    def _serve(self, client: Client) -> None:
        """Follow what exists and what comes, until the event stream ends."""
        info = client.info()
        if info.caller not in ("", "host"):
            self.exclude.add(info.caller)  # a pod's socket: the caller is our own pod
        events = client.events()
        with self._lock:
            self._client, self._events = client, events
        if self.stop.is_set():
            return
        log.info("pod logs: connected to %s as %s", client.target, info.caller)
        for pod in client.list_pods():
            self._follow(pod)
        for event in events:
            if event.kind in FOLLOW_EVENTS:
                try:
                    self._follow(client.get(event.pod))
                except NotFound:
                    continue  # gone again already
            elif event.kind == "pod.destroyed":
                self._forget(event.pod)
        if not self.stop.is_set():
            log.warning("pod logs: kurmad ended the event stream (restarting?); reconnecting")

    def _disconnect(self, client: Client) -> None:
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
            self._client = self._events = None
        for stream in streams:
            stream.cancel()
        client.close()

    def _excluded(self, pod: pods_pb2.Pod) -> bool:
        return pod.uuid in self.exclude or pod.name in self.exclude

    def _follow(self, pod: pods_pb2.Pod) -> None:
        if self._excluded(pod):
            return
        with self._lock:
            if self._client is None or self.stop.is_set():
                return
            if pod.uuid in self._streams:
                return  # pod.started after pod.created: followed since its creation
            stream = self._client.logs(pod.uuid, follow=True, tail=0)
            self._streams[pod.uuid] = stream
        log.info("pod logs: following %s (%s)", pod.name, pod.uuid)
        thread = threading.Thread(
            target=self._read, args=(pod, stream), name=f"logs-{pod.name}", daemon=True
        )
        thread.start()

    def _forget(self, uuid: str) -> None:
        with self._lock:
            stream = self._streams.pop(uuid, None)
            for key in [k for k in self._seen if k[0] == uuid]:
                del self._seen[key]
                self._partial.pop(key, None)
        if stream is not None:
            stream.cancel()

    def _read(self, pod: pods_pb2.Pod, stream: Stream) -> None:
        """One pod's Logs stream to its end (its apps exited, or we cancelled it)."""
        position: dict[str, int] = {}
        failed = False
        try:
            for chunk in stream:
                offset = position.get(chunk.app, 0)
                position[chunk.app] = offset + len(chunk.data)
                self._take(pod, chunk.app, offset, chunk.data)
        except ClientError as e:
            failed = True
            if not self.stop.is_set():
                log.info("pod logs: %s: stream ended: %s", pod.name, e)
        with self._lock:
            # still registered: not our cancel; no error: the pod's apps ended it
            registered = self._streams.get(pod.uuid) is stream
            if registered:
                del self._streams[pod.uuid]
            ended = registered and not failed
        if ended:
            for app in position:
                self._flush(pod, app)

    def _take(self, pod: pods_pb2.Pod, app: str, offset: int, data: bytes) -> None:
        """Forward what of `data` (at `offset` in the app's stream) is new, line by line."""
        key = (pod.uuid, app)
        with self._lock:
            seen = self._seen.get(key, 0)
            if offset + len(data) <= seen:
                return
            self._seen[key] = offset + len(data)
            data = data[max(0, seen - offset) :]
            buffered = self._partial.pop(key, b"") + data
            *lines, rest = buffered.split(b"\n")
            while len(rest) >= LINE_MAX:
                lines.append(rest[:LINE_MAX])
                rest = rest[LINE_MAX:]
            if rest:
                self._partial[key] = rest
        for line in lines:
            self._emit(pod, app, line)

    def _flush(self, pod: pods_pb2.Pod, app: str) -> None:
        with self._lock:
            rest = self._partial.pop((pod.uuid, app), b"")
        if rest:
            self._emit(pod, app, rest)

    def _emit(self, pod: pods_pb2.Pod, app: str, line: bytes) -> None:
        for i in range(0, max(len(line), 1), LINE_MAX):
            text = line[i : i + LINE_MAX].rstrip(b"\r").decode("utf-8", "replace")
            self.emit(PodLine(pod.uuid, pod.name, app, text))
