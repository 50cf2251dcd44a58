"""Two hundred pods on one serving thread, plus the service's lifecycle and public names."""

from __future__ import annotations

import importlib
import random
import threading

import pytest

from kurma.runtime.metadata import MetadataConfig, MetadataService
from tests.unit.test_metadata_support import images, new_uuid, pod_manifest, request

PUBLIC = {
    "DEFAULT_POD_ADDRESS",
    "DEFAULT_PORT",
    "FLAVOR",
    "Limits",
    "MetadataConfig",
    "MetadataHandlers",
    "MetadataService",
    "PodRecord",
    "PodSigner",
    "build_pod_record",
    "load_or_create_key",
    "new_token",
}


def test_two_hundred_pods_one_thread() -> None:
    """200 registered pods are served by the one loop thread; spot checks see their own pod."""
    before = threading.active_count()
    with MetadataService(MetadataConfig(host_port=0)) as svc:
        svc.start()
        pods = {new_uuid(): "" for _ in range(200)}
        for pod in pods:
            pods[pod] = svc.register_pod(pod, pod_manifest(), images())
        assert threading.active_count() == before + 1
        for pod in random.sample(sorted(pods), 10):
            assert request(pods[pod], "pod/uuid").body == pod.encode()
        assert len(set(pods.values())) == 200
    assert threading.active_count() == before


def test_shutdown_then_serve_again() -> None:
    svc = MetadataService(MetadataConfig(host_port=0))
    try:
        svc.start()
        pod = new_uuid()
        url = svc.register_pod(pod, pod_manifest(), images())
        svc.shutdown()
        svc.start()
        assert request(url, "pod/uuid").body == pod.encode()
    finally:
        svc.close()
    with pytest.raises(RuntimeError):
        svc.serve_forever()


def test_registration_before_serving_is_answered_once_serving() -> None:
    """The listener exists at registration; connections wait in its backlog."""
    with MetadataService(MetadataConfig(host_port=0)) as svc:
        pod = new_uuid()
        url = svc.register_pod(pod, pod_manifest(), images())
        svc.start()
        assert request(url, "pod/uuid").body == pod.encode()


def test_public_names() -> None:
    """The package re-exports exactly its API, all defined in `_private` modules."""
    module = importlib.import_module("kurma.runtime.metadata")
    names = {n for n in vars(module) if not n.startswith("_")}
    assert names == PUBLIC
    for name in names:
        obj = getattr(module, name)
        if callable(obj):
            assert obj.__module__.rsplit(".", 1)[-1].startswith("_"), name
