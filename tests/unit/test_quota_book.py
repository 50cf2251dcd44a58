"""The quota book's arithmetic: which quotas a new pod counts against, what a child may be
given, image ownership, and the log size cap. A fake runtime stands in for pods (the real
thing, with kurmad, is tests/root/test_quotas.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import SubtreeQuota, parse_pod_manifest
from kurma.api._caller import CallerView, pod_view
from kurma.api._quota import Quotas
from kurma.api._status import ApiError, Code
from kurma.runtime._confine import NotPermitted
from kurma.runtime._podrecord import AppRecord, PodRecord
from kurma.runtime._runtime import PodNotFound

IMAGE = "sha512-" + "a" * 128


def doc(quota: dict[str, Any] | None = None, api: bool = True) -> str:
    value: dict[str, Any] = {"scope": "subtree"}
    if quota is not None:
        value["quota"] = quota
    return json.dumps(
        {
            "acKind": "PodManifest",
            "acVersion": "0.8.11",
            "apps": [{"name": "a", "image": {"id": IMAGE}}],
            "isolators": [{"name": "host/api-access", "value": value}] if api else [],
        }
    )


@dataclass
class FakeLayout:
    root: Path

    def image_dir(self, image_id: str) -> Path:
        return self.root / image_id


@dataclass
class FakeStore:
    layout: FakeLayout

    def usage_units(self, image_id: str) -> dict[str, int]:
        """As an ACI counts in the real store: one unit, itself (the book keeps its size)."""
        return {image_id: 0}


@dataclass
class FakeConfig:
    log_keep: int = 2


@dataclass
class FakeRuntime:
    state_dir: Path
    pods: dict[str, PodRecord] = field(default_factory=dict)
    config: FakeConfig = field(default_factory=FakeConfig)

    def __post_init__(self) -> None:
        self.store = FakeStore(FakeLayout(self.state_dir / "images"))

    def list_pods(self) -> list[PodRecord]:
        return list(self.pods.values())

    def get(self, uuid: str) -> PodRecord:
        if uuid not in self.pods:
            raise PodNotFound(uuid)
        return self.pods[uuid]

    def log_file(self, uuid: str, app: str) -> str:
        return str(self.state_dir / "pods" / uuid / "logs" / f"{app}.log")

    def add(self, uuid: str, parent: str | None, quota: dict[str, Any] | None = None,
            api: bool = True, apps: int = 1) -> PodRecord:  # fmt: skip
        ancestors = (parent, *self.pods[parent].ancestors) if parent else ()
        record = PodRecord(
            uuid, uuid, doc(quota, api), 0.0,
            apps=[AppRecord(f"a{i}", IMAGE) for i in range(apps)],
            parent=parent, ancestors=ancestors, api_access="subtree" if api else None,
        )  # fmt: skip
        self.pods[uuid] = record
        return record


@pytest.fixture
def runtime(tmp_path: Path) -> FakeRuntime:
    return FakeRuntime(tmp_path)


def book(runtime: FakeRuntime, defaults: SubtreeQuota | None = None) -> Quotas:
    return Quotas(runtime, defaults)  # type: ignore[arg-type]


def admit(quotas: Quotas, caller: str, quota: dict[str, Any] | None = None) -> None:
    with quotas.admitting(pod_view(caller, "subtree"), parse_pod_manifest(doc(quota))):
        pass


def test_limits_take_the_pods_own_fields_then_the_defaults(runtime: FakeRuntime) -> None:
    top = runtime.add("top", None, {"pods": 5})
    plain = runtime.add("plain", None)
    no_api = runtime.add("no-api", None, api=False)
    quotas = book(runtime, SubtreeQuota(pods=9, image_bytes=100))
    assert quotas.limits(top) == SubtreeQuota(5, 100, None)
    assert quotas.limits(plain) == SubtreeQuota(9, 100, None)
    assert quotas.limits(no_api) is None


def test_a_full_pods_quota_up_the_chain_refuses(runtime: FakeRuntime) -> None:
    runtime.add("top", None, {"pods": 2})
    runtime.add("child", "top")  # no quota of its own
    runtime.add("grand", "child", api=False)
    quotas = book(runtime)
    with pytest.raises(ApiError) as refused:
        admit(quotas, "child")
    assert refused.value.code is Code.RESOURCE_EXHAUSTED
    assert refused.value.message == (
        "quota pods of pod top's subtree exhausted: limit 2 pods, 2 in use"
    )
    with pytest.raises(ApiError, match="limit 2 pods, 2 in use"):
        admit(quotas, "top")  # the top is just as full


def test_the_host_is_never_counted(runtime: FakeRuntime) -> None:
    runtime.add("top", None, {"pods": 0})
    with book(runtime).admitting(CallerView(), parse_pod_manifest(doc({"pods": 99}))):
        pass


def test_a_child_gets_at_most_what_is_left_anywhere_up_the_chain(runtime: FakeRuntime) -> None:
    runtime.add("top", None, {"pods": 4})
    runtime.add("child", "top", {"pods": 10})  # bigger than the top's, but counted there too
    runtime.add("sib", "top", api=False)
    quotas = book(runtime)
    # the top has 4 - 2 used - 1 (the new pod itself) = 1 left
    admit(quotas, "child", {"pods": 1})
    with pytest.raises(NotPermitted, match=r"quota pods: 2 is more than pod child's subtree"):
        admit(quotas, "child", {"pods": 2})


def test_images_count_for_the_importers_chain_until_deleted(runtime: FakeRuntime) -> None:
    runtime.add("top", None, {"imageBytes": 100})
    runtime.add("child", "top")
    runtime.add("other", None)
    quotas = book(runtime)
    child = pod_view("child", "subtree")
    with quotas.importing(child, IMAGE, 60):
        quotas.imported(child, IMAGE, 60)
    (runtime.store.layout.root / IMAGE).mkdir(parents=True)  # stored
    assert quotas.usage("top").image_bytes == 60
    assert quotas.usage("other").image_bytes == 0
    second = "sha512-" + "b" * 128
    with (
        pytest.raises(ApiError, match=r"imageBytes of pod top's subtree.*limit 100 bytes, 60"),
        quotas.importing(pod_view("child", "subtree"), second, 41),
    ):
        pass
    with quotas.importing(pod_view("top", "subtree"), IMAGE, 60):  # stored already: free
        pass
    # who may delete it: the importer and its ancestors, not a stranger
    quotas.check_delete(pod_view("top", "subtree"), IMAGE, "x")
    quotas.check_delete(CallerView(), IMAGE, "x")
    with pytest.raises(NotPermitted, match="not imported by pod other's subtree"):
        quotas.check_delete(pod_view("other", "subtree"), IMAGE, "x")
    quotas.forget(IMAGE)
    assert quotas.usage("top").image_bytes == 0


def test_image_ownership_survives_a_restart(runtime: FakeRuntime) -> None:
    runtime.add("top", None)
    view = pod_view("top", "subtree")
    book(runtime).imported(view, IMAGE, 7)
    (runtime.store.layout.root / IMAGE).mkdir(parents=True)
    assert book(runtime).usage("top").image_bytes == 7


def test_log_cap_is_the_pods_share_over_its_files(runtime: FakeRuntime) -> None:
    runtime.add("top", None, {"pods": 4, "logBytes": 96 * 1024})
    child = runtime.add("child", "top", api=False, apps=2)
    outside = runtime.add("outside", None, api=False)
    quotas = book(runtime)
    # 96 KiB / 4 pods = 24 KiB per pod, over 2 apps x (1 + 2 kept) files = 4 KiB per file
    assert quotas.log_cap(child) == 4096
    assert quotas.log_cap(outside) is None
    tiny = runtime.add("tiny", None, {"logBytes": 100})
    assert quotas.log_cap(runtime.add("t-child", "tiny", api=False)) == 4096  # podinit's floor
    assert quotas.limits(tiny) == SubtreeQuota(log_bytes=100)


def test_image_room_is_the_tightest_left_up_the_chain(runtime: FakeRuntime) -> None:
    """What a subtree may still import: the least any imageBytes quota up the chain leaves
    (kurmad's default where a pod gives none); its error names that quota's holder."""
    runtime.add("top", None, {"imageBytes": 100})
    runtime.add("child", "top")
    quotas = book(runtime, SubtreeQuota(image_bytes=1000))
    child = pod_view("child", "subtree")
    quotas.imported(child, IMAGE, 60)
    (runtime.store.layout.root / IMAGE).mkdir(parents=True)
    room = quotas.image_room(child)
    assert room is not None and (room.holder.name, room.left) == ("top", 40)
    assert "imageBytes of pod top's subtree" in room.exceeded().message
    assert "needs more than 40" in room.exceeded().message
    assert quotas.image_room(CallerView()) is None
    runtime.add("free", None)
    assert book(runtime).image_room(pod_view("free", "subtree")) is None  # no quota, no default
