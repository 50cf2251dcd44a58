"""Red team (issue "Hardening"): what still got out after the hardening, one attack per
test, its contract in the docstring, each through a real kurmad.

Every pod a test creates is destroyed after it (the `kurma` fixtures), even on failure.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.client import Client, ResourceExhausted
from tests.root.test_kurmad import Daemon, daemon_with_image, host_client
from tests.security.test_tenant import as_pod, pod_doc
from tests.waiting import wait_for

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def few_workers(busybox_aci: Path) -> Iterator[tuple[Daemon, str]]:
    """kurmad with 8 workers: a pod's own socket may hold 2 calls at once (a quarter)."""
    yield from daemon_with_image(busybox_aci, "--workers", "8")


@pytest.fixture
def kurma(few_workers: tuple[Daemon, str]) -> Iterator[Client]:
    """A host client; every top-level pod the test leaves is destroyed (with its subtree)."""
    yield from host_client(few_workers[0])


def test_a_subtree_cannot_take_every_worker_of_the_system_socket(
    few_workers: tuple[Daemon, str], kurma: Client
) -> None:
    """A pod's socket may hold a quarter of kurmad's workers, but the workers were one pool
    for every socket, the host's included, and a subtree pod makes as many sockets as it
    likes: its children with api-access subtree each get one. The top pod and three such
    children each open two Host.Events streams (they never end): every worker was held,
    and the host's own List on the system socket waited forever (as did every other
    tenant's call).

    Now the host's calls are answered while the streams run, and a subtree as a whole
    gets no more than a pod's share: the streams past it are RESOURCE_EXHAUSTED."""
    d, image_id = few_workers
    top = kurma.create_pod(
        manifest_json=pod_doc(image_id, api="subtree"), name="greedy", start=True
    ).uuid
    streams: list[Any] = []
    clients: list[Client] = []
    try:
        sockets = [top]
        with as_pod(d, top) as me:
            for i in range(3):
                child = me.create_pod(manifest_json=pod_doc(image_id, api="subtree"),
                                      name=f"greedy-{i}").uuid  # fmt: skip
                me.start(child)
                sockets.append(child)
        exhausted: list[str] = []

        def drain(stream: Any) -> None:
            with contextlib.suppress(Exception):
                try:
                    for _ in stream:
                        pass
                except ResourceExhausted:
                    exhausted.append("refused")

        for pod in sockets:
            client = Client.connect(str(d.work / "pods" / pod / "api" / "api.sock"))
            clients.append(client)
            for _ in range(2):
                stream = client.events()
                streams.append(stream)
                threading.Thread(target=drain, args=(stream,), daemon=True).start()
        answered = threading.Event()

        def host_list() -> None:
            with d.client() as host:
                host.list_pods()
            answered.set()

        threading.Thread(target=host_list, daemon=True).start()
        assert answered.wait(10.0), "the host's List waits behind the pods' streams"
        wait_for(lambda: len(exhausted) >= 8 - 2, "6 streams refused", 10.0)
    finally:
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.cancel()
        for client in clients:
            client.close()
