"""Hostile and broken clients: size limits, malformed requests, slow and stuck connections."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse

import pytest

from kurma.runtime.metadata import Limits, MetadataConfig, MetadataService
from tests.unit.test_metadata_support import (
    TEXT,
    images,
    new_uuid,
    pod_manifest,
    request,
    service,
)

from ..waiting import wait_for

__all__ = ["service"]


def address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def raw_exchange(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a fresh connection, then read everything until the server closes."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get(url: str, path: str, extra: str = "") -> bytes:
    token = urllib.parse.urlsplit(url).path
    return (
        f"GET {token}/acMetadata/v1/{path} HTTP/1.1\r\nHost: x\r\n"
        f"Metadata-Flavor: AppContainer\r\n{extra}\r\n"
    ).encode()


def test_oversized_body_is_413_and_the_answer_arrives(service: MetadataService) -> None:
    """The 413 is read by the client even though its body was never consumed."""
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    content = "x" * (Limits().max_body_bytes + 1)
    reply = request(url, "pod/hmac/sign", "POST", form={"content": content})
    assert (reply.status, reply.content_type) == (413, TEXT)


def test_oversized_head_is_431(service: MetadataService) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    response = raw_exchange(url, get(url, "pod/uuid", "X-Big: " + "y" * 10000 + "\r\n"))
    assert status_of(response) == 431


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /a b HTTP/1.1\r\n\r\n", 400),
        (b"GET relative HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_clear_answers(
    service: MetadataService, data: bytes, status: int
) -> None:
    url = service.register_pod(new_uuid(), pod_manifest(), images())
    response = raw_exchange(url, data)
    assert status_of(response) == status
    assert b"Content-Type: text/plain; charset=us-ascii\r\n" in response
    assert b"Connection: close\r\n" in response


def test_expect_100_continue(service: MetadataService) -> None:
    """curl-style clients wait for "100 Continue" before sending a body; they get it."""
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    token = urllib.parse.urlsplit(url).path
    head = (
        f"POST {token}/acMetadata/v1/pod/hmac/sign HTTP/1.1\r\nHost: x\r\n"
        "Metadata-Flavor: AppContainer\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 9\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(address(url), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"content=x")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert status_of(response) == 200
    assert response.endswith(service.sign(pod, b"x").encode())


def test_a_stuck_client_blocks_nobody_and_is_dropped() -> None:
    """A half-sent request neither delays other clients nor lives past the timeout."""
    config = MetadataConfig(host_port=0, request_timeout=1.0)
    with MetadataService(config) as svc:
        svc.start()
        pod = new_uuid()
        url = svc.register_pod(pod, pod_manifest(), images())
        with socket.create_connection(address(url), timeout=5) as stuck:
            stuck.sendall(b"GET " + urllib.parse.urlsplit(url).path.encode())
            started = time.monotonic()
            assert request(url, "pod/uuid").body == pod.encode()
            # Served while the stuck connection is still open: nobody waited for it.
            stuck.setblocking(False)
            with pytest.raises(BlockingIOError):
                stuck.recv(100)
            assert time.monotonic() - started < 1.0
            stuck.settimeout(5)
            assert stuck.recv(100) == b""  # closed by the server at its deadline
            assert 0.9 < time.monotonic() - started < 4


def test_connections_per_listener_are_capped() -> None:
    """Past the cap new connections are closed at once; served ones still work after."""
    config = MetadataConfig(host_port=0, max_connections_per_listener=4, request_timeout=2)
    with MetadataService(config) as svc:
        svc.start()
        pod = new_uuid()
        url = svc.register_pod(pod, pod_manifest(), images())
        held = [socket.create_connection(address(url), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.1)
            with socket.create_connection(address(url), timeout=5) as extra:
                extra.sendall(get(url, "pod/uuid"))
                with contextlib.suppress(ConnectionResetError):  # closed, maybe with a reset
                    assert extra.recv(100) == b""
        finally:
            for sock in held:
                sock.close()

        def answers() -> bool:  # once the loop has seen the held connections close
            with contextlib.suppress(ConnectionError):
                return request(url, "pod/uuid").body == pod.encode()
            return False

        wait_for(answers, "an answer after the held connections closed", 3, every=0.01)


def test_concurrent_clients(service: MetadataService) -> None:
    """Many clients at once on one loop thread all get their own pod's answer."""
    pods = [new_uuid() for _ in range(8)]
    urls = [service.register_pod(p, pod_manifest(), images()) for p in pods]
    results: dict[int, bytes] = {}

    def client(i: int) -> None:
        for _ in range(10):
            results[i] = request(urls[i % 8], "pod/uuid").body

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == pods[i % 8].encode() for i in range(32))


def test_register_and_unregister_while_serving(service: MetadataService) -> None:
    """Registration from other threads is applied by the loop, never racing it."""
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(20):
                pod = new_uuid()
                url = service.register_pod(pod, pod_manifest(), images())
                assert request(url, "pod/uuid").body == pod.encode()
                assert service.unregister_pod(pod)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(service.registry) == 0


def test_an_error_in_one_request_does_not_stop_the_loop(
    service: MetadataService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing connection is closed and logged; the next request is served."""
    pod = new_uuid()
    url = service.register_pod(pod, pod_manifest(), images())
    handlers = service._handlers
    real = handlers.handle
    calls = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(handlers, "handle", flaky)
    with pytest.raises(http.client.RemoteDisconnected):
        request(url, "pod/uuid")
    assert request(url, "pod/uuid").body == pod.encode()


def test_shutdown_stops_a_loop_in_the_calling_thread() -> None:
    """serve_forever may run in the daemon's own thread; shutdown from elsewhere returns."""
    svc = MetadataService(MetadataConfig(host_port=0))
    stopper = threading.Timer(0.2, svc.shutdown)
    stopper.start()
    started = time.monotonic()
    svc.serve_forever(poll_interval=5)
    stopper.join()
    svc.close()
    assert time.monotonic() - started < 3


def test_a_taken_host_port_gives_host_network_pods_a_free_one() -> None:
    """Another kurmad (a test's, a nested one) holds the host port: this service's
    host-network pods get a free port, and their URL names it and answers."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    svc = MetadataService(MetadataConfig(host_port=port))
    svc.start()
    try:
        pod = new_uuid()
        url = svc.register_pod(pod, pod_manifest(), images())
        assert address(url)[1] not in (port, 0)
        assert request(url, "pod/uuid").body == pod.encode()
    finally:
        svc.close()
        taken.close()
