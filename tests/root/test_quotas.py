"""Per-subtree quotas through a real kurmad: pods, image bytes, log bytes, image deletes.

The top pod is created by the host (the test) with `host/api-access` subtree and a quota;
the calls "as the top pod" go to the top pod's own API socket (the socket is what makes the
caller that pod; tests/root/test_recursion.py shows the same calls made by kurmactl inside
the pod, and one test here does that too).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import build_aci
from kurma.client import Client, PermissionDenied, ResourceExhausted

from ..waiting import wait_for
from .runtime_support import image_manifest
from .test_kurmad import Daemon, daemon_with_image, host_client
from .test_recursion import shell_aci as shell_aci

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

SLEEP = ["/bin/sleep", "3600"]


def pod_doc(image_id: str, quota: dict[str, Any] | None = None, api: bool = True) -> bytes:
    """A pod of one sleeping busybox app, with subtree api-access and `quota` if given."""
    value: dict[str, Any] = {"scope": "subtree"}
    if quota is not None:
        value["quota"] = quota
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "sleep",
                "image": {"id": image_id},
                "app": {"exec": SLEEP, "user": "0", "group": "0"},
            }
        ],
        "isolators": [{"name": "host/api-access", "value": value}] if api else [],
    }
    return json.dumps(doc).encode()


def small_aci(directory: Path, name: str, payload: int) -> Path:
    """An image of `payload` bytes of one file (no busybox: quick to build and import)."""
    root = directory / name / "rootfs"
    root.mkdir(parents=True)
    (root / "blob").write_bytes(os.urandom(payload))
    aci = directory / f"{name}.aci"
    build_aci(root, image_manifest(f"example.com/{name}"), aci, mtime=0, owner=(0, 0))
    return aci


@pytest.fixture(scope="module")
def daemon(busybox_aci: Path) -> Iterator[tuple[Daemon, str]]:
    # logs big enough that a logBytes quota is what caps them
    yield from daemon_with_image(busybox_aci, "--log-max-bytes", str(1 << 20))


@pytest.fixture
def kurma(daemon: tuple[Daemon, str]) -> Iterator[Client]:
    """A host client; every pod the test leaves is destroyed (subtrees with their tops)."""
    yield from host_client(daemon[0])


def top(kurma: Client, image_id: str, name: str, quota: dict[str, Any] | None) -> str:
    return kurma.create_pod(manifest_json=pod_doc(image_id, quota), name=name, start=True).uuid


@contextlib.contextmanager
def as_pod(d: Daemon, pod: str) -> Iterator[Client]:
    """A client on the pod's own API socket, as the host sees it."""
    with Client.connect(str(d.work / "pods" / pod / "api" / "api.sock"), timeout=20) as c:
        yield c


def test_pods_quota_refuses_the_third_and_destroy_frees_a_slot(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """quota pods=2: two children are created, the third is RESOURCE_EXHAUSTED with a
    message naming the quota, its limit and its use; destroying one frees its slot."""
    d, image_id = daemon
    t = top(kurma, image_id, "q-top", {"pods": 2})
    with as_pod(d, t) as me:
        a = me.create_pod(manifest_json=pod_doc(image_id, api=False), name="q-a").uuid
        me.create_pod(manifest_json=pod_doc(image_id, api=False), name="q-b")
        with pytest.raises(ResourceExhausted) as refused:
            me.create_pod(manifest_json=pod_doc(image_id, api=False), name="q-c")
        message = str(refused.value)
        assert "pods" in message and "limit 2" in message and "2 in use" in message, message
        assert "q-c" not in {p.name for p in kurma.list_pods()}
        me.destroy(a, grace=1)
        me.create_pod(manifest_json=pod_doc(image_id, api=False), name="q-c")
    shown = kurma.get(t).quota.pods
    assert (shown.limited, shown.limit, shown.used) == (True, 2, 2)


def test_grandchildren_count_for_the_grandparent(kurma: Client, daemon: tuple[Daemon, str]) -> None:
    """Grandchildren count against the top's quota too: pods=2 at the top allows the child
    (no quota of its own) and one grandchild, not a second."""
    d, image_id = daemon
    t = top(kurma, image_id, "g-top", {"pods": 2})
    with as_pod(d, t) as me:
        child = me.create_pod(manifest_json=pod_doc(image_id), name="g-child")
        me.start(child.uuid)
    with as_pod(d, child.uuid) as it:
        it.create_pod(manifest_json=pod_doc(image_id, api=False), name="g-grand")
        with pytest.raises(ResourceExhausted, match="quota pods of pod g-top"):
            it.create_pod(manifest_json=pod_doc(image_id, api=False), name="g-grand2")


def test_a_child_cannot_get_more_than_its_parent_has_left(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """PERMISSION_DENIED for a child whose quota is larger than what the parent has left."""
    d, image_id = daemon
    t = top(kurma, image_id, "c-top", {"pods": 3, "imageBytes": "1M", "logBytes": "64Ki"})
    with as_pod(d, t) as me:
        for quota, key in (({"pods": 3}, "pods"), ({"imageBytes": "2M"}, "imageBytes"),
                           ({"logBytes": "1M"}, "logBytes")):  # fmt: skip
            with pytest.raises(PermissionDenied, match=f"quota {key}"):
                me.create_pod(manifest_json=pod_doc(image_id, quota), name="c-big")
        assert "c-big" not in {p.name for p in kurma.list_pods()}
        me.create_pod(manifest_json=pod_doc(image_id, {"pods": 2}), name="c-fits")


def test_kurmactl_inside_the_pod_is_refused_over_quota(kurma: Client, shell_aci: Path) -> None:
    """The same refusal as a person sees it: `kurmactl create` inside the subtree pod
    exits non-zero and says which quota."""
    from .test_recursion import kurmactl_in, manifest

    image_id = kurma.import_image(shell_aci).image.id
    doc = manifest(image_id, SLEEP)  # the host's Python bound in, subtree access
    doc["isolators"] = [
        {"name": "host/api-access", "value": {"scope": "subtree", "quota": {"pods": 0}}}
    ]
    t = kurma.create_pod(manifest_json=json.dumps(doc).encode(), name="k-top", start=True).uuid
    child = json.dumps(manifest(image_id, SLEEP, api=None)).encode()
    code, out, err = kurmactl_in(kurma, t, "create", "--name", "k-child", "--manifest", "-",
                                 stdin=child)  # fmt: skip
    assert code != 0, (out, err)
    assert "quota pods" in err and "limit 0" in err, err


def test_image_import_over_quota_is_refused_and_the_store_is_unchanged(
    kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    """imageBytes 64K: a 40 KB image fits, a second one would exceed it and is refused with
    RESOURCE_EXHAUSTED, leaving the store as it was; an image already stored costs nothing."""
    d, image_id = daemon
    t = top(kurma, image_id, "i-top", {"imageBytes": "64Ki"})
    first, second = small_aci(tmp_path, "q-one", 40_000), small_aci(tmp_path, "q-two", 40_000)
    with as_pod(d, t) as me:
        one = me.import_image(first).image
        before = {i.id for i in kurma.list_images()}
        with pytest.raises(ResourceExhausted) as refused:
            me.import_image(second)
        assert "imageBytes" in str(refused.value) and "limit 65536" in str(refused.value)
        assert {i.id for i in kurma.list_images()} == before
        me.import_image(first)  # already stored: no charge, no refusal
        shown = kurma.get(t).quota.image_bytes
        assert shown.limit == 65536 and 40_000 < shown.used < 65536
        me.delete_image(one.id)
    assert kurma.get(t).quota.image_bytes.used == 0


def test_a_pod_deletes_only_what_its_subtree_imported(
    kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    """PERMISSION_DENIED for an image the host imported; an image the subtree imported can
    be deleted by the pod that holds the subtree, not while a pod uses it."""
    d, image_id = daemon
    t = top(kurma, image_id, "d-top", None)
    host_image = kurma.import_image(small_aci(tmp_path, "q-host", 1000)).image
    try:
        with as_pod(d, t) as me:
            with pytest.raises(PermissionDenied, match="not imported by"):
                me.delete_image(host_image.id)
            with pytest.raises(PermissionDenied):
                me.delete_image(image_id)  # busybox: the host's, and in use
            mine = me.import_image(small_aci(tmp_path, "q-mine", 1000)).image
            me.delete_image(mine.id)
        assert mine.id not in {i.id for i in kurma.list_images()}
    finally:
        kurma.delete_image(host_image.id)


def test_log_quota_caps_each_pods_log_size(kurma: Client, daemon: tuple[Daemon, str]) -> None:
    """logBytes caps what a subtree pod's logs keep: a child printing 200 KB keeps at most
    its share (logBytes / pods) of logs, and the top pod shows the use."""
    d, image_id = daemon
    t = top(kurma, image_id, "l-top", {"pods": 2, "logBytes": "48Ki"})
    loud = json.loads(pod_doc(image_id, api=False))
    loud["apps"][0]["app"]["exec"] = [
        "/bin/sh", "-c",
        f"i=0; while [ $i -lt 2000 ]; do echo line-$i-{'x' * 90}; i=$((i+1)); done; "
        "exec sleep 3600",
    ]  # fmt: skip
    with as_pod(d, t) as me:
        child = me.create_pod(manifest_json=json.dumps(loud).encode(), name="l-loud", start=True)
    logs = d.work / "pods" / child.uuid / "logs"

    def kept() -> int:
        return sum(f.stat().st_size for f in logs.iterdir() if f.name.startswith("sleep.log"))

    wait_for(
        lambda: b"line-1999" in b"".join(c.data for c in kurma.logs(child.uuid)),
        "the loud app to finish printing",
        30,
        every=0.2,
    )
    assert kept() <= 24 * 1024 + 4096, kept()  # 48Ki / 2 pods, plus one line of slack
    shown = kurma.get(t).quota.log_bytes
    assert shown.limit == 48 * 1024 and 0 < shown.used <= 24 * 1024 + 4096
