"""The metadata service: one selector loop serving every pod's listener.

Strategy. Each pod gets a listener inside its own network namespace (see `_netns`), so a
daemon with 200 pods holds 200 listening sockets; a thread per pod or per connection would
cost more than the work. One thread runs `serve_forever`: a selector over the listeners,
the open connections and a wake-up socket. Responses are precomputed bytes, so no request
blocks the loop; a slow client only holds its own connection until its deadline.

Other threads (gRPC handlers registering pods) never touch the selector while the loop
runs: they queue a command, wake the loop, and wait for it. Otherwise a socket closed by
one thread while the loop still holds its fd number could make the loop act on whichever
new socket reuses that number.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ...aci import PodManifest
from ._handlers import MetadataHandlers
from ._hmac import PodSigner, canonical_uuid
from ._http import CONTINUE, HttpError, Limits, Request, RequestParser, Response
from ._listeners import Connection, Listener
from ._netns import NetnsId, bind_listener, listen_in_netns, netns_id
from ._registry import ImageManifestInput, PodRecord, Registry, build_pod_record

log = logging.getLogger(__name__)

# Inside a pod's own network namespace the service listens on 127.0.0.1:8775, so a pod
# with nothing but `lo` reaches it and no route or address has to be set up for it. 8775
# is the port of OpenStack's instance metadata API: an app is unlikely to want it itself.
DEFAULT_POD_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8775
_LINGER_SECONDS = 1.0
_SWEEP_SECONDS = 0.25
_READ = selectors.EVENT_READ


@dataclass(frozen=True)
class MetadataConfig:
    """Where the service listens, and how much one client may ask of it."""

    pod_address: str = DEFAULT_POD_ADDRESS  # bound inside each pod's network namespace
    pod_port: int = DEFAULT_PORT
    host_address: str = "127.0.0.1"  # for pods sharing the daemon's network namespace
    host_port: int = DEFAULT_PORT  # 0 picks a free port (tests)
    limits: Limits = field(default_factory=Limits)
    request_timeout: float = 5.0  # from accept to the response sent, per connection
    max_connections: int = 1024
    max_connections_per_listener: int = 64  # one pod cannot starve the others
    require_flavor_header: bool = True


class MetadataService:
    """Serves `acMetadata/v1` to registered pods, each on a listener in its own netns."""

    def __init__(self, config: MetadataConfig | None = None, signer: PodSigner | None = None):
        self.config = config or MetadataConfig()
        self.signer = signer or PodSigner()
        self.registry = Registry()
        self._handlers = MetadataHandlers(
            self.registry.by_token, self.signer, self.config.require_flavor_header
        )
        self._own_netns = netns_id(None)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()  # guards the fields below and the selector when idle
        self._listeners: dict[NetnsId, Listener] = {}
        self._pod_listener: dict[str, Listener] = {}
        self._connections: set[Connection] = set()
        self._pending: list[Callable[[], None]] = []
        self._loop_thread: threading.Thread | None = None
        self._stop = False
        self._stopped = threading.Event()
        self._closed = False
        self._next_sweep = 0.0
        self._prepared: dict[str, PodRecord] = {}  # by canonical UUID, see prepare_pod

    def prepare_pod(
        self,
        pod_uuid: str,
        pod_manifest: bytes | str | PodManifest,
        image_manifests: Mapping[str, ImageManifestInput],
        token: str,
    ) -> None:
        """Check and precompute a pod's responses ahead of `register_pod` (which then only
        opens the listener): the pod start does the slow part before its apps run."""
        record = build_pod_record(pod_uuid, pod_manifest, image_manifests, token)
        with self._lock:
            self._prepared[record.uuid] = record

    def forget_prepared(self, pod_uuid: str) -> None:
        with self._lock:
            self._prepared.pop(canonical_uuid(pod_uuid), None)

    def register_pod(
        self,
        pod_uuid: str,
        pod_manifest: bytes | str | PodManifest,
        image_manifests: Mapping[str, ImageManifestInput],
        netns_path: str | os.PathLike[str] | None = None,
        token: str | None = None,
        listener_sock: socket.socket | None = None,
    ) -> str:
        """Serve a pod; returns its AC_METADATA_URL (`http://ADDR:PORT/TOKEN`).

        `netns_path` (e.g. /proc/PID/ns/net of the pod's init) names the pod's network
        namespace; None (or the daemon's own) means the shared host listener. `token` keeps
        the URL a pod already has (after a daemon restart). `listener_sock` is a listening
        socket already made inside that namespace (the launcher makes one while it creates
        the namespace, so apps never race the registration); it is adopted, or closed if the
        namespace has a listener. Raises ValueError, OSError.
        """
        with self._lock:
            record = self._prepared.pop(canonical_uuid(pod_uuid), None)
        if record is None or (token is not None and record.token != token):
            record = build_pod_record(pod_uuid, pod_manifest, image_manifests, token)
        nsid = netns_id(netns_path)
        self.registry.add(record)
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("metadata service is closed")
                listener = self._listeners.get(nsid)
                created = listener is None
                if listener is None and listener_sock is not None:
                    listener_sock.setblocking(False)
                    listener = Listener(
                        listener_sock, nsid, shared=False, netns_path=os.fspath(netns_path or "")
                    )
                    listener_sock = None
                elif listener is None:
                    listener = self._open_listener(nsid, netns_path)
                if created:
                    self._listeners[nsid] = listener
                listener.pods.add(record.uuid)
                self._pod_listener[record.uuid] = listener
        except BaseException:
            self.registry.remove(record.uuid)
            raise
        finally:
            if listener_sock is not None:
                listener_sock.close()
        if created:
            # Not waited for: the socket listens already, so a client that comes before the
            # loop polls it waits in the backlog; the pod start does not wait for our thread.
            self._call_in_loop(
                lambda: self._selector.register(listener.sock, _READ, listener), wait=False
            )
        log.info("metadata: pod %s registered on %s", record.uuid, listener.describe())
        return f"{listener.url_base}/{record.token}"

    def _open_listener(self, nsid: NetnsId, netns_path: str | os.PathLike[str] | None) -> Listener:
        cfg = self.config
        if nsid == self._own_netns:
            try:
                sock = bind_listener(cfg.host_address, cfg.host_port)
            except OSError as e:
                if e.errno != errno.EADDRINUSE or cfg.host_port == 0:
                    raise
                # Another kurmad on this host (a test's, a nested one) serves host-network
                # pods there: ours get a free port, and their AC_METADATA_URL names it.
                log.warning(
                    "metadata: %s:%d is taken; host-network pods get a free port",
                    cfg.host_address,
                    cfg.host_port,
                )
                sock = bind_listener(cfg.host_address, 0)
            return Listener(sock, nsid, shared=True)
        assert netns_path is not None
        sock = listen_in_netns(netns_path, cfg.pod_address, cfg.pod_port)
        return Listener(sock, nsid, shared=False, netns_path=os.fspath(netns_path))

    def unregister_pod(self, pod_uuid: str) -> bool:
        """Stop serving a pod: its token 404s at once and its netns listener is closed.

        Returns False if the pod was not registered. The shared host listener stays open.
        """
        record = self.registry.remove(pod_uuid)
        if record is None:
            return False
        with self._lock:  # the listener is missing only while register_pod still runs
            listener = self._pod_listener.pop(record.uuid, None)
            if listener is not None:
                listener.pods.discard(record.uuid)
            closing = listener is not None and not listener.pods and not listener.shared
            if closing:
                del self._listeners[listener.netns]
        if closing and listener is not None:
            self._call_in_loop(lambda: self._close_listener(listener))
        log.info("metadata: pod %s unregistered", record.uuid)
        return True

    def url_of(self, pod_uuid: str) -> str | None:
        """The AC_METADATA_URL of a registered pod."""
        record = self.registry.by_uuid(pod_uuid)
        listener = self._pod_listener.get(record.uuid) if record else None
        return None if record is None or listener is None else f"{listener.url_base}/{record.token}"

    def sign(self, pod_uuid: str, content: bytes) -> str:
        """What `pod/hmac/sign` answers to the pod `pod_uuid` for `content`."""
        return self.signer.sign(pod_uuid, content)

    def verify(self, pod_uuid: str, content: bytes, signature: str) -> bool:
        """Whether `pod/hmac/verify` accepts this signature."""
        return self.signer.verify(pod_uuid, content, signature)

    # --- the loop -----------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run `serve_forever` in a daemon thread; returns once it serves."""
        started = threading.Event()
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"started": started}, name="kurma-metadata"
        )
        thread.daemon = True
        thread.start()
        started.wait()
        return thread

    def serve_forever(
        self, poll_interval: float = 0.5, started: threading.Event | None = None
    ) -> None:
        """Serve until `shutdown()`; one thread for every pod and connection."""
        with self._lock:
            if self._loop_thread is not None or self._closed:
                raise RuntimeError("metadata service is already serving or closed")
            self._loop_thread, self._stop = threading.current_thread(), False
            self._stopped.clear()
        if started is not None:
            started.set()
        try:
            while not self._stop:
                for key, mask in self._selector.select(self._timeout(poll_interval)):
                    try:
                        self._dispatch(key, mask)
                    except Exception:  # a bug met by one client must not stop every pod's
                        log.exception("metadata: error serving %s", key.data)
                        if isinstance(key.data, Connection):
                            self._close_connection(key.data)
                self._run_pending()
                self._sweep()
        finally:
            with self._lock:
                self._loop_thread = None
                pending, self._pending = self._pending, []
                for command in pending:
                    command()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` and wait for it; sockets stay open (see `close`)."""
        with self._lock:
            thread, self._stop = self._loop_thread, True
        if thread is None:
            return
        self._wake()
        if thread is not threading.current_thread():
            self._stopped.wait()  # not join(): the loop may run in the main thread

    def close(self) -> None:
        """Stop serving and close every listener and connection."""
        self.shutdown()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in list(self._connections):
                self._close_connection(conn)
            for listener in self._listeners.values():
                self._close_listener(listener)
            self._listeners.clear()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> MetadataService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- loop internals -----------------------------------------------------------------

    def _call_in_loop(self, command: Callable[[], None], wait: bool = True) -> None:
        """Run a selector change in the loop thread (now, if nothing serves); wait for it
        unless told not to (the commands still run in the order they were queued)."""
        done = threading.Event()

        def run() -> None:
            try:
                command()
            finally:
                done.set()

        with self._lock:
            thread = self._loop_thread
            if thread is None or thread is threading.current_thread():
                run()
                return
            self._pending.append(run)
        self._wake()
        if wait:
            done.wait()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _run_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for command in pending:
            command()

    def _timeout(self, poll_interval: float) -> float:
        if not self._connections:
            return poll_interval
        return max(0.0, min(poll_interval, self._next_sweep - time.monotonic()))

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        data = key.data
        if data is None:
            with contextlib.suppress(BlockingIOError):
                while self._wake_r.recv(4096):
                    pass
        elif isinstance(data, Listener):
            self._accept(data)
        elif isinstance(data, Connection) and data in self._connections:
            if mask & selectors.EVENT_READ:
                self._read(data)
            if mask & selectors.EVENT_WRITE and data in self._connections:
                self._write(data)

    def _accept(self, listener: Listener) -> None:
        for _ in range(64):  # bounded, so a flood on one listener cannot starve the rest
            try:
                sock, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:  # EMFILE, ENFILE, ENOBUFS: try again on the next event
                log.warning("metadata: accept on %s failed: %s", listener.describe(), e)
                return
            cfg = self.config
            full = listener.connections >= cfg.max_connections_per_listener or (
                len(self._connections) >= cfg.max_connections and not self._evict_for(listener)
            )
            if full:
                log.warning("metadata: too many connections on %s", listener.describe())
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(
                sock, listener, RequestParser(cfg.limits), time.monotonic() + cfg.request_timeout
            )
            listener.connections += 1
            self._connections.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict_for(self, listener: Listener) -> bool:
        """The total cap is reached: close the oldest connection of the listener holding the
        most, if it holds more than `listener` (one pod's, or one tree's many pods', idle
        connections must not keep every other pod from its metadata). False: none closed."""
        if not self._connections:
            return False
        busiest = max((c.listener for c in self._connections), key=lambda lst: lst.connections)
        if busiest.connections <= listener.connections + 1:
            return False
        oldest = min(
            (c for c in self._connections if c.listener is busiest), key=lambda c: c.deadline
        )
        log.warning("metadata: connections full: closing one of %s", busiest.describe())
        self._close_connection(oldest)
        return True

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_connection(conn)
            return
        if conn.answered:  # lingering: discard what the client still sends
            return
        try:
            request = conn.parser.feed(data)
        except HttpError as e:
            log.debug("metadata: %s: bad request: %d %s", conn.listener.describe(), e.status, e)
            self._respond(conn, e.response())
            return
        if request is None:
            if conn.parser.wants_continue and not conn.continued:
                conn.continued = True
                conn.out += CONTINUE
                self._write(conn)
            return
        self._respond(conn, self._handle(conn, request), request.method == "HEAD")

    def _handle(self, conn: Connection, request: Request) -> Response:
        done = self._handlers.handle(request, conn.listener.pods)
        log.debug("metadata: pod %s: %s %s -> %d", done.pod_uuid, request.method,
                  done.endpoint, done.response.status)  # fmt: skip
        return done.response

    def _respond(self, conn: Connection, response: Response, head_only: bool = False) -> None:
        conn.answered = True
        conn.deadline = min(conn.deadline, time.monotonic() + self.config.request_timeout)
        conn.out += response.encode(head_only)
        self._write(conn)

    def _write(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.out) if conn.out else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close_connection(conn)
            return
        del conn.out[:sent]
        if not conn.out and conn.answered and not conn.half_closed:
            # Half-close and read to EOF before closing: closing with unread bytes (a body
            # we refused with 413) would reset the connection and lose our answer.
            conn.half_closed = True
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            conn.deadline = min(conn.deadline, time.monotonic() + _LINGER_SECONDS)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        self._selector.modify(conn.sock, events, conn)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_SECONDS
        for conn in [c for c in self._connections if c.deadline <= now]:
            if not conn.answered:
                log.debug("metadata: %s: client too slow, closing", conn.listener.describe())
            self._close_connection(conn)

    def _close_connection(self, conn: Connection) -> None:
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        conn.listener.connections -= 1
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _close_listener(self, listener: Listener) -> None:
        for conn in [c for c in self._connections if c.listener is listener]:
            self._close_connection(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(listener.sock)
        listener.sock.close()
        log.debug("metadata: closed listener %s", listener.describe())
