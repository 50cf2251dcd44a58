"""Shared pieces of the pod runtime tests: a busybox image, a Runtime in a temp dir, pods.

`runtime` gives a real `Runtime` (launcher, podinit, cgroups, metadata service) on a fresh
state directory with the busybox image imported; at the end every pod it still has is
destroyed, and the test fails if anything is left: a mount under the state dir, the
runtime's cgroup, or a process of a pod.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import build_aci, parse_pod_manifest
from kurma.runtime._podrecord import AppRecord, PodRecord
from kurma.runtime._runtime import Runtime, RuntimeConfig

from ..waiting import wait_for

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
IMAGE_NAME = "example.com/busybox"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/:/bin/false\n"
)
GROUP = "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n"


def busybox_rootfs(root: Path) -> Path:
    """A rootfs with static busybox and a symlink per applet, passwd/group, /home/app."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    for d in ("etc", "root", "tmp", "home/app", "usr/bin", "sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chown(root / "home/app", 1000, 1000)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return root


def image_manifest(
    name: str = IMAGE_NAME, app: dict[str, Any] | None = None, **labels: str
) -> bytes:
    doc: dict[str, Any] = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [
            {"name": k, "value": v} for k, v in {"os": "linux", "arch": "amd64", **labels}.items()
        ],
    }
    if app is not None:
        doc["app"] = app
    return json.dumps(doc).encode()


@dataclass
class PodEnv:
    """A runtime with the busybox image imported; `pod()` builds and runs manifests."""

    runtime: Runtime
    state_dir: Path
    work: Path
    image_id: str

    def manifest(self, *apps: dict[str, Any], **extra: Any) -> Any:
        """A pod manifest from app dicts: `{"name": ..., "exec": [...], ...app fields}`.

        App keys other than name/mounts/readOnlyRootFS/annotations go into the app's
        `app` section (user and group default to 0).
        """
        runtime_apps = []
        for spec in apps:
            spec = dict(spec)
            entry: dict[str, Any] = {
                "name": spec.pop("name"),
                "image": {"id": spec.pop("image", self.image_id)},
            }
            for key in ("mounts", "readOnlyRootFS", "annotations"):
                if key in spec:
                    entry[key] = spec.pop(key)
            if spec:
                entry["app"] = {"user": "0", "group": "0", **spec}
            runtime_apps.append(entry)
        doc = {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": runtime_apps, **extra}
        return parse_pod_manifest(json.dumps(doc).encode())

    def run(
        self, *apps: dict[str, Any], timeout: float = 30, name: str | None = None, **extra: Any
    ) -> PodRecord:
        """Run a pod to its end; returns its final record."""
        return self.runtime.run(self.manifest(*apps, **extra), name=name, timeout=timeout)

    def sh(self, script: str, timeout: float = 30, **app: Any) -> tuple[AppRecord, str]:
        """Run one app `sh -c script`; returns its record and its log."""
        record = self.run({"name": "sh", "exec": ["/bin/sh", "-c", script], **app}, timeout=timeout)
        return record.apps[0], self.log(record, "sh")

    def log(self, record: PodRecord, app: str) -> str:
        path = self.state_dir / "pods" / record.uuid / "logs" / f"{app}.log"
        return path.read_text() if path.exists() else ""

    def import_image(self, rootfs: Path, manifest: bytes) -> str:
        aci = Path(tempfile.mkstemp(suffix=".aci", dir=self.work)[1])
        build_aci(rootfs, manifest, aci, mtime=0, owner=(0, 0))
        result = self.runtime.store.import_image(aci)
        return result.record.image_id


def sh_app(name: str, script: str, **app: Any) -> dict[str, Any]:
    """An app spec for `PodEnv.manifest` running `sh -c script`."""
    return {"name": name, "exec": ["/bin/sh", "-c", script], **app}


def start(pods: PodEnv, *apps: dict[str, Any], ready: str | None = None, **extra: Any) -> str:
    """Create and start a pod; with `ready`, wait until the first app's log holds that line."""
    record = pods.runtime.create_pod(pods.manifest(*apps, **extra))
    pods.runtime.start_pod(record.uuid)
    if ready is not None:
        app = apps[0]["name"]
        wait_for(lambda: ready in pods.log(record, app).splitlines(), f"{ready!r} in the log")
    return record.uuid


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@pytest.fixture(scope="module")
def busybox_aci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("busybox")
    rootfs = busybox_rootfs(work / "rootfs")
    aci = work / "busybox.aci"
    build_aci(rootfs, image_manifest(), aci, mtime=0, owner=(0, 0))
    shutil.rmtree(rootfs)
    return aci


def make_env(busybox_aci: Path, config: RuntimeConfig | None = None) -> Iterator[PodEnv]:
    """Body of the `pods` fixture, for tests that need their own config."""
    work = Path(tempfile.mkdtemp(prefix="kurma-rt-"))
    state = work / "state"
    parent = f"kurma-test-{work.name.rsplit('-', 1)[-1]}"
    config = replace(config or RuntimeConfig(stop_grace=2.0), cgroup_parent=parent)
    runtime = Runtime(state, config=config)
    try:
        image_id = runtime.store.import_image(busybox_aci).record.image_id
        yield PodEnv(runtime, state, work, image_id)
    finally:
        _teardown(runtime, work)


def _teardown(runtime: Runtime, work: Path) -> None:
    problems: list[str] = []
    try:
        for record in runtime.list_pods():
            try:
                runtime.destroy_pod(record.uuid, grace=1.0)
            except Exception as e:  # keep cleaning; report below
                problems.append(f"destroy {record.name}: {e}")
    finally:
        runtime.close()  # ends the launcher and its warm zygotes (their cgroups go too)
        parent = runtime.cgroups.open(runtime.config.cgroup_parent)
        leftovers = [d for _, d in parent.directories() if os.path.isdir(d) and _subdirs(d)]
        if leftovers:
            problems.append(f"cgroups left: {leftovers}")
            parent.kill_all()
        parent.remove()
        mounted = mounts_under(work)
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(work, ignore_errors=True)
        if mounted:
            problems.append(f"mounts left: {mounted}")
    if problems:
        pytest.fail("; ".join(problems))


def _subdirs(directory: str) -> list[str]:
    return [e.name for e in os.scandir(directory) if e.is_dir()]


@pytest.fixture
def pods(busybox_aci: Path) -> Iterator[PodEnv]:
    yield from make_env(busybox_aci)


def busybox_layer(work: Path) -> bytes:
    """The busybox rootfs as one layer tar (an OCI image's base in the pull tests)."""
    from tests.oci_images import rootfs_tar

    root = busybox_rootfs(work / "busybox-layer")
    try:
        return rootfs_tar(root)
    finally:
        shutil.rmtree(root)
