"""The event hub behind Host.Events: pod events from the Runtime, image events from the API.

One runtime listener feeds every subscriber. The runtime calls it with its lock held, so it
only converts the event and puts it on each subscriber's bounded queue; a subscriber that
does not keep up loses events and is told how many (an `events.lost` event), and never
slows the runtime down. Subscriptions end when the stream's call ends.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

from ..runtime import PodEvent, Runtime
from ._caller import CallerView
from ._convert import event_to_proto, image_event, timestamp
from .v1 import host_pb2

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000


class Subscription:
    """One stream's queue; iterate it until `close()`."""

    def __init__(self, view: CallerView, on_close: Callable[[Subscription], None]) -> None:
        self.view = view
        self._queue: queue.Queue[host_pb2.Event | None] = queue.Queue(QUEUE_SIZE)
        self._lost = 0
        self._closed = False
        self._on_close = on_close

    def offer(self, event: host_pb2.Event) -> None:
        """Queue an event without ever blocking; count it as lost when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._lost += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        with contextlib.suppress(queue.Full):  # a full queue wakes the reader anyway
            self._queue.put_nowait(None)

    def __iter__(self) -> Iterator[host_pb2.Event]:
        while not self._closed:
            if self._lost:
                lost, self._lost = self._lost, 0
                yield host_pb2.Event(
                    time=timestamp(time.time()),
                    kind="events.lost",
                    message=f"{lost} events were dropped: this stream fell behind",
                )
            try:
                event = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if event is None:
                return
            yield event


class EventHub:
    """Fans pod and image events out to every open Events stream."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []
        runtime.add_listener(self._on_pod_event)

    def subscribe(self, view: CallerView) -> Subscription:
        sub = Subscription(view, self._remove)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    def _on_pod_event(self, event: PodEvent) -> None:
        with self._lock:
            targets = [s for s in self._subscribers if s.view.sees(event.record)]
        if not targets:
            return
        message = event_to_proto(event)
        for sub in targets:
            sub.offer(message)

    def image(self, kind: str, image_id: str, name: str) -> None:
        """Publish image.imported or image.deleted (images are visible to every caller)."""
        message = image_event(kind, image_id, name, time.time())
        with self._lock:
            targets = list(self._subscribers)
        for sub in targets:
            sub.offer(message)

    def close(self) -> None:
        """End every stream and stop listening to the runtime."""
        self._runtime.remove_listener(self._on_pod_event)
        with self._lock:
            subs = list(self._subscribers)
        for sub in subs:
            sub.close()
