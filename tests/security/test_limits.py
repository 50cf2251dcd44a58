"""Hardening items 5 and 6 through a real kurmad: isolators are enforced or refused at
Create, and subtrees and imports are bounded by default.

One attack per test, its contract in the docstring. Every pod a test creates is destroyed
after it (the `kurma` fixture), every mount it makes is unmounted, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.client import (
    Client,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    app_spec,
    run_spec,
)
from kurma.runtime.linux import Capability, caps_from_mask
from tests.bombs import zero_bomb_aci
from tests.root.runtime_support import IMAGE_NAME
from tests.root.test_kurmactl import kurmactl
from tests.root.test_kurmad import (
    Daemon,
    daemon_with_image,
    host_client,
    logs,
    make_daemon,
    pod_cgroup_dirs,
)

pytestmark = [pytest.mark.timeout(240)]

RETAIN = "os/linux/capabilities-retain-set"
REMOVE = "os/linux/capabilities-remove-set"
SECCOMP_REMOVE = "os/linux/seccomp-remove-set"
OOM = "os/linux/oom-score-adj"
SH = ["/bin/sh", "-c"]


@pytest.fixture(scope="module")
def daemon(busybox_aci: Path) -> Iterator[tuple[Daemon, str]]:
    """kurmad with its default quotas (no subtree_max_* given) and no warm pod shells, so
    every cgroup below its parent belongs to a pod that was started."""
    yield from daemon_with_image(busybox_aci, "--warm-pods", "0")


@pytest.fixture
def kurma(daemon: tuple[Daemon, str]) -> Iterator[Client]:
    """A host client; every top-level pod the test leaves is destroyed (with its subtree)."""
    yield from host_client(daemon[0])


def run_to_end(kurma: Client, spec: Any) -> tuple[int, str]:
    """Create and start the pod, wait for it, return (exit code, output)."""
    pod = kurma.create_pod(spec=spec, start=True)
    done = kurma.wait(pod.uuid, timeout=30)
    return done.apps[0].exit_code, logs(kurma, pod.uuid).decode()


def status_caps(output: str, key: str) -> frozenset[Capability]:
    for line in output.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return caps_from_mask(int(value.strip(), 16))
    raise AssertionError(f"no {key} in {output!r}")


def nothing_left(d: Daemon, kurma: Client, before: dict[str, object]) -> None:
    """No pod directory, record or cgroup more than `before` (see `snapshot`)."""
    assert snapshot(d, kurma) == before


def snapshot(d: Daemon, kurma: Client) -> dict[str, object]:
    return {
        "pod dirs": sorted(os.listdir(d.work / "pods")),
        "records": sorted(p.uuid for p in kurma.list_pods()),
        "cgroups": sorted(pod_cgroup_dirs(d.cgroup_parent)),
        "staging": sorted(os.listdir(d.state / "tmp")),
    }


# --- item 5: isolators enforced or refused at Create -----------------------------------------


def test_pod_level_capabilities_retain_set_is_enforced(daemon: tuple[Daemon, str]) -> None:
    """`kurmactl run --isolator os/linux/capabilities-retain-set=...` (a pod-level isolator)
    gives the app exactly that set: CapEff and CapBnd read inside the app, nothing of the
    default set beyond it."""
    d, _ = daemon
    value = json.dumps({"set": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]})
    done = kurmactl(
        d, "run", "--rm", "--isolator", f"{RETAIN}={value}",
        IMAGE_NAME, "--", "grep", "Cap", "/proc/self/status",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = {Capability.CAP_NET_BIND_SERVICE, Capability.CAP_CHOWN}
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert status_caps(done.stdout, key) == want, (key, done.stdout)


def test_pod_level_remove_set_and_app_narrowing_are_enforced_and_reported(
    kurma: Client,
) -> None:
    """A pod-level remove-set takes its capabilities from every app, an app's own
    remove-set takes more; the pod's record lists both as enforced."""
    spec = run_spec(
        app_spec(
            IMAGE_NAME,
            exec=["grep", "Cap", "/proc/self/status"],
            isolators={REMOVE: json.dumps({"set": ["CAP_KILL"]})},
        ),
        isolators={REMOVE: json.dumps({"set": ["CAP_NET_RAW", "CAP_MKNOD"]})},
    )
    pod = kurma.create_pod(spec=spec, start=True)
    kurma.wait(pod.uuid, timeout=30)
    out = logs(kurma, pod.uuid).decode()
    eff = status_caps(out, "CapEff")
    assert not eff & {Capability.CAP_NET_RAW, Capability.CAP_MKNOD, Capability.CAP_KILL}, out
    assert Capability.CAP_CHOWN in eff, out
    report = {(i.scope, i.name): i.enforced for i in kurma.get(pod.uuid).isolators}
    assert report[("pod", REMOVE)] is True, report
    assert any(scope != "pod" and name == REMOVE and ok for (scope, name), ok in report.items())


def test_pod_level_seccomp_is_enforced(kurma: Client) -> None:
    """A pod-level seccomp remove-set blocks its syscalls in the app: mkdir fails with
    EPERM there, while the same pod without it can mkdir."""
    blocked = {SECCOMP_REMOVE: json.dumps({"set": ["mkdir", "mkdirat"], "errno": "EPERM"})}
    script = "mkdir /tmp/made && echo MADE"
    code, out = run_to_end(
        kurma, run_spec(app_spec(IMAGE_NAME, exec=[*SH, script]), isolators=blocked)
    )
    assert code != 0 and "MADE" not in out and "not permitted" in out, out
    code, out = run_to_end(kurma, run_spec(app_spec(IMAGE_NAME, exec=[*SH, script])))
    assert code == 0 and "MADE" in out, out


def test_unenforceable_isolator_is_refused_at_create(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """A retain-set naming CAP_SYS_RESOURCE, which kurmad itself does not hold (not in
    these hosts' bounding set), cannot be enforced: INVALID_ARGUMENT at Create naming the
    isolator and the capability; no pod dir, record or cgroup is left. An app's set
    reaching beyond the pod-level one is refused the same way."""
    d, _ = daemon
    held = status_caps(Path("/proc/self/status").read_text(), "CapBnd")
    if Capability.CAP_SYS_RESOURCE in held:
        pytest.skip("this host's bounding set has CAP_SYS_RESOURCE")
    before = snapshot(d, kurma)
    spec = run_spec(
        app_spec(IMAGE_NAME, exec=["true"]),
        isolators={RETAIN: json.dumps({"set": ["CAP_SYS_RESOURCE", "CAP_CHOWN"]})},
    )
    with pytest.raises(InvalidArgument) as refused:
        kurma.create_pod(spec=spec, start=True)
    assert RETAIN in str(refused.value) and "CAP_SYS_RESOURCE" in str(refused.value)
    nothing_left(d, kurma, before)
    wider = run_spec(
        app_spec(
            IMAGE_NAME, exec=["true"], isolators={RETAIN: json.dumps({"set": ["CAP_SYS_ADMIN"]})}
        ),
        isolators={RETAIN: json.dumps({"set": ["CAP_CHOWN"]})},
    )
    with pytest.raises(InvalidArgument, match="CAP_SYS_ADMIN beyond the pod-level"):
        kurma.create_pod(spec=wider)
    nothing_left(d, kurma, before)


@pytest.mark.parametrize(
    ("where", "app"),
    [
        ("exec", {"exec": ["/bin/sh", "-c", "echo x\u0000y"]}),
        ("environment", {"exec": ["true"], "environment": [{"name": "A", "value": "a\u0000b"}]}),
        ("workingDirectory", {"exec": ["true"], "workingDirectory": "/tmp\u0000/x"}),
        ("mountPoints", {"exec": ["true"], "mountPoints": [{"name": "v", "path": "/m\u0000n"}]}),
        (
            "isolators",
            {
                "exec": ["true"],
                "isolators": [
                    {"name": "os/unix/sysctl", "value": {"net.ipv4.ip_forward": "1\u0000"}}
                ],
            },
        ),
    ],
)
def test_nul_bytes_are_refused_at_create_leaving_nothing(
    kurma: Client, daemon: tuple[Daemon, str], where: str, app: dict[str, Any]
) -> None:
    """A NUL byte in a string that reaches a syscall (argv, environment, working
    directory, mount path, sysctl value) is INVALID_ARGUMENT at Create naming the field,
    before anything exists: no pod dir, no record, no cgroup, no staging."""
    d, image_id = daemon
    before = snapshot(d, kurma)
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {"name": "nul", "image": {"id": image_id}, "app": {"user": "0", "group": "0", **app}}
        ],
    }
    with pytest.raises(InvalidArgument) as refused:
        kurma.create_pod(manifest_json=json.dumps(doc), start=True)
    assert "NUL" in str(refused.value) and where in str(refused.value), refused.value
    nothing_left(d, kurma, before)
    spec = run_spec(app_spec(IMAGE_NAME, exec=["/bin/echo", "a\0b"]))
    with pytest.raises(InvalidArgument, match="NUL"):
        kurma.create_pod(spec=spec, start=True)
    nothing_left(d, kurma, before)


@contextlib.contextmanager
def as_pod(d: Daemon, pod: str) -> Iterator[Client]:
    """A client on the pod's own API socket (calls made on it act as that pod)."""
    with Client.connect(str(d.work / "pods" / pod / "api" / "api.sock"), timeout=20) as c:
        yield c


def subtree_pod(image_id: str, *isolators: dict[str, Any], api: bool = True) -> bytes:
    """A sleeping busybox pod, with subtree api-access (no quota: kurmad's defaults)."""
    pod_isolators = [*isolators]
    if api:
        pod_isolators.append({"name": "host/api-access", "value": {"scope": "subtree"}})
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "sleep",
                "image": {"id": image_id},
                "app": {"exec": ["/bin/sleep", "3600"], "user": "0", "group": "0"},
            }
        ],
        "isolators": pod_isolators,
    }
    return json.dumps(doc).encode()


def test_child_oom_score_adj_below_the_creators_is_refused(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """A pod whose apps run at oom_score_adj 500 cannot, on its own socket, create a child
    at 100 (one the OOM killer would spare in its place): PERMISSION_DENIED naming the
    isolator, nothing created; a child at 500 or more is fine."""
    d, image_id = daemon
    top = kurma.create_pod(
        manifest_json=subtree_pod(image_id, {"name": OOM, "value": 500}), name="oom-top", start=True
    )
    with as_pod(d, top.uuid) as me:
        before = snapshot(d, kurma)
        with pytest.raises(PermissionDenied, match=f"{OOM} 100 is below pod oom-top's"):
            me.create_pod(
                manifest_json=subtree_pod(image_id, {"name": OOM, "value": 100}, api=False),
                name="oom-low",
            )
        nothing_left(d, kurma, before)
        me.create_pod(
            manifest_json=subtree_pod(image_id, {"name": OOM, "value": 600}, api=False),
            name="oom-high",
        )


def test_oom_score_adj_kurmad_cannot_write_is_refused_at_create(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """Below kurmad's own oom_score_adj only a holder of CAP_SYS_RESOURCE may go (these
    hosts' bounding set lacks it): such a score, asked by the host itself, is
    INVALID_ARGUMENT at Create naming the isolator, not a failed start; nothing is left."""
    d, image_id = daemon
    held = status_caps(Path("/proc/self/status").read_text(), "CapBnd")
    own = int(Path(f"/proc/{d.proc.pid}/oom_score_adj").read_text())
    if Capability.CAP_SYS_RESOURCE in held or own <= -1000:
        pytest.skip("kurmad may lower oom_score_adj here")
    before = snapshot(d, kurma)
    doc = subtree_pod(image_id, {"name": OOM, "value": own - 1}, api=False)
    with pytest.raises(InvalidArgument, match=f"{OOM}: cannot be enforced"):
        kurma.create_pod(manifest_json=doc, start=True)
    nothing_left(d, kurma, before)


# --- item 6: bounded by default -------------------------------------------------------------


def test_default_image_quota_stops_a_gzip_bomb_of_a_subtree_pod(
    kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path
) -> None:
    """A subtree pod given no quota still has kurmad's defaults (1 GiB of images, 256 MiB
    of logs); its imageBytes stops the attack: a 4 MB
    gzip of a 4 GiB zero layer, imported on the pod's socket, is RESOURCE_EXHAUSTED
    naming imageBytes as soon as the uncompressed bytes pass the limit (long before 4 GiB
    are decompressed), and the store is as it was: no image, no staging."""
    d, image_id = daemon
    bomb = zero_bomb_aci(tmp_path / "bomb.aci", 4 << 30)
    assert bomb.stat().st_size < 8 << 20
    top = kurma.create_pod(manifest_json=subtree_pod(image_id), name="bomb-top", start=True)
    quota = kurma.get(top.uuid).quota
    assert (quota.image_bytes.limit, quota.log_bytes.limit) == (1 << 30, 256 << 20)
    images = {i.id for i in kurma.list_images()}
    before = sorted(os.listdir(d.state / "tmp"))
    started = time.monotonic()
    with as_pod(d, top.uuid) as me, pytest.raises(ResourceExhausted) as refused:
        me.import_image(bomb)
    took = time.monotonic() - started
    message = str(refused.value)
    assert "imageBytes" in message and f"limit {1 << 30}" in message, message
    assert took < 60, took  # 1 GiB of zeros inflated, not 4
    assert {i.id for i in kurma.list_images()} == images
    assert sorted(os.listdir(d.state / "tmp")) == before


@pytest.fixture
def small_state() -> Iterator[Daemon]:
    """A kurmad whose state dir is a 48 MiB tmpfs the test mounts (and unmounts)."""
    for daemon in make_daemon():
        daemon.state.mkdir(parents=True)
        subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "size=48m,mode=0755",
                "kurma-test-state",
                str(daemon.state),
            ],
            check=True,
        )
        try:
            yield daemon
        finally:
            daemon.stop()
            subprocess.run(["umount", str(daemon.state)], check=False)


def test_import_stops_short_of_a_full_state_filesystem(small_state: Daemon, tmp_path: Path) -> None:
    """An import (the host's, no quota) that would leave less than state_min_free (10% by
    default) of the state filesystem free stops while it streams: RESOURCE_EXHAUSTED
    saying so, its staging removed, no image stored, the filesystem left with room; a
    small image imports fine afterwards."""
    bomb = zero_bomb_aci(tmp_path / "bomb.aci", 4 << 30)
    with small_state.start("--warm-pods", "0") as kurma:
        with pytest.raises(ResourceExhausted) as refused:
            kurma.import_image(bomb)
        message = str(refused.value)
        assert "less than 10% of the state filesystem free" in message, message
        assert "staging was removed" in message
        assert kurma.list_images() == []
        assert [n for n in os.listdir(small_state.state / "tmp") if not n.startswith(".")] == []
        st = os.statvfs(small_state.state)
        assert st.f_bavail * st.f_frsize > 40 << 20  # everything written was removed
        small = zero_bomb_aci(tmp_path / "small.aci", 1 << 20, name="example.com/small")
        assert kurma.import_image(small).created
