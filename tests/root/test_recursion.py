"""Pods that start pods, through a real kurmad: three levels, scoping, least privilege.

How a pod runs `kurmactl`: the busybox image has no Python, so the pods get this host's
interpreter read-only at the very paths it has here: host volumes for /usr (libc and the
loader; the image links /lib and /lib64 into it), the interpreter's prefix
(`sys.base_prefix`) and the repository (with its .venv), and PATH naming the venv's bin.
A child's host volumes are paths in its parent's view, and these lie inside the parent's
own (read-only) volumes at the same paths, so every level gets the same three.

The top pod is created by the host (the test) with `host/api-access` subtree and a memory
limit; everything below it is created by `kurmactl` running inside a pod, talking to that
pod's own socket (KURMA_HOST, set by kurmad). The host drives the commands with Exec.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import build_aci
from kurma.api.v1 import images_pb2, images_pb2_grpc
from kurma.client import Client, PermissionDenied
from kurma.client._errors import from_rpc_error
from kurma.runtime.cgroups import CgroupSystem

from ..waiting import wait_for
from .runtime_support import busybox_rootfs, image_manifest
from .test_kurmad import REPO, Daemon, daemon_with_image, host_client, make_daemon

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

IMAGE = "example.com/kurma-shell"
PREFIX = os.path.realpath(sys.base_prefix)  # the interpreter the venv runs on
VENV_BIN = str(Path(sys.executable).parent)
HOST_PATHS = ("/usr", PREFIX, str(REPO))
PATH = f"{VENV_BIN}:/bin:/usr/bin"
KURMACTL = [sys.executable, "-m", "kurma.cli.main"]


def manifest(
    image_id: str,
    argv: list[str],
    *,
    api: str | None = "subtree",
    memory: str | None = None,
    extra_isolators: list[dict[str, Any]] = (),  # type: ignore[assignment]
    extra_volumes: list[tuple[str, str, bool]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """A pod of one app with the host's Python at the same paths (read-only host volumes)."""
    volumes = [(f"py{i}", p, True) for i, p in enumerate(HOST_PATHS)] + list(extra_volumes)
    isolators: list[dict[str, Any]] = list(extra_isolators)
    if api is not None:
        isolators.append({"name": "host/api-access", "value": {"scope": api}})
    if memory is not None:
        isolators.append({"name": "resource/memory", "value": {"limit": memory}})
    return {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "shell",
                "image": {"id": image_id},
                "app": {
                    "exec": argv,
                    "user": "0",
                    "group": "0",
                    "environment": [{"name": "PATH", "value": PATH}],
                },
                "mounts": [{"volume": name, "path": path} for name, path, _ in volumes],
            }
        ],
        "volumes": [
            {"name": name, "kind": "host", "source": path, "readOnly": ro}
            for name, path, ro in volumes
        ],
        "isolators": isolators,
    }


def kurmactl_in(client: Client, pod: str, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run kurmactl inside `pod` (its default host: KURMA_HOST, the pod's own socket)."""
    proc = client.exec(pod, [*KURMACTL, *args], env={"COLUMNS": "200"})
    if stdin:
        proc.send(stdin)
    proc.close_stdin()
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for stream, data in proc.output():
        out[stream] += data
    return proc.exit_code, out["stdout"].decode(), out["stderr"].decode()


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, (code, out, err)
    return out


def refused(result: tuple[int, str, str], what: str = "") -> str:
    code, out, err = result
    assert code != 0, (what, code, out, err)
    return err


def create_in(client: Client, pod: str, doc: dict[str, Any], name: str) -> str:
    """`kurmactl run -d --manifest -` inside `pod`; the new pod's UUID."""
    out = ok(kurmactl_in(client, pod, "run", "-d", "--name", name, "--manifest", "-",
                         stdin=json.dumps(doc).encode()))  # fmt: skip
    return out.strip()


@pytest.fixture(scope="module")
def shell_aci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox with /lib and /lib64 pointing into /usr (the host's, bound in)."""
    root = busybox_rootfs(tmp_path_factory.mktemp("shell") / "rootfs")
    for link in ("lib", "lib64"):
        os.symlink(f"usr/{link}", root / link)
    aci = root.parent / "shell.aci"
    build_aci(root, image_manifest(IMAGE), aci, mtime=0, owner=(0, 0))
    return aci


@pytest.fixture(scope="module")
def daemon(shell_aci: Path) -> Iterator[tuple[Daemon, str]]:
    yield from daemon_with_image(shell_aci)


@pytest.fixture
def kurma(daemon: tuple[Daemon, str]) -> Iterator[Client]:
    """A host client; every pod the test leaves is destroyed (subtrees with their tops)."""
    yield from host_client(daemon[0])


SLEEP = ["/bin/sleep", "3600"]


def top_pod(client: Client, image_id: str, name: str, **kw: Any) -> str:
    pod = client.create_pod(manifest_json=json.dumps(manifest(image_id, SLEEP, **kw)).encode(),
                            name=name, start=True)  # fmt: skip
    return pod.uuid


def socket_of(d: Daemon, pod: str) -> Path:
    """A pod's own API socket as the host sees it."""
    return d.work / "pods" / pod / "api" / "api.sock"


def _trust_add(client: Client) -> None:
    import grpc

    stub = images_pb2_grpc.TrustStub(client._channel)
    try:
        stub.Add(images_pb2.AddKeyRequest(prefix="example.com", armored_key=b"x"), timeout=10)
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None


def cgroup_dir(relpath: str, controller: str = "memory") -> str:
    directory = CgroupSystem.detect().open(relpath).directory(controller)
    assert directory is not None
    return directory


def test_three_levels_scoping_and_destroy(kurma: Client, daemon: tuple[Daemon, str]) -> None:
    """top (host) -> child (created by kurmactl in top) -> grandchild (by kurmactl in child):
    parents chains, nested cgroups, what each level sees, and destroying the top removes
    all three."""
    _, image_id = daemon
    top = top_pod(kurma, image_id, "top", memory="256M")
    other = top_pod(kurma, image_id, "other", api=None)  # a host pod the child must not see
    child = create_in(kurma, top, manifest(image_id, SLEEP), "child")
    sibling = create_in(kurma, top, manifest(image_id, SLEEP, api=None), "sibling")
    grandchild = create_in(kurma, child, manifest(image_id, SLEEP, api=None), "grandchild")

    pods = {p.name: p for p in kurma.list_pods()}
    assert list(pods["child"].parents) == [top]
    assert list(pods["grandchild"].parents) == [child, top]
    assert list(pods["top"].parents) == []
    assert pods["child"].api_access == "subtree"
    # cgroups nest: the top's limits bound its whole subtree
    assert pods["child"].cgroup.startswith(pods["top"].cgroup + "/")
    assert pods["grandchild"].cgroup.startswith(pods["child"].cgroup + "/")
    assert os.path.isdir(cgroup_dir(pods["grandchild"].cgroup))

    # the top sees its subtree; the child only its grandchild
    seen_by_top = ok(kurmactl_in(kurma, top, "ps", "-q")).split()
    assert sorted(seen_by_top) == sorted([child, sibling, grandchild])
    assert ok(kurmactl_in(kurma, child, "ps", "-a", "-q")).split() == [grandchild]
    info = json.loads(ok(kurmactl_in(kurma, child, "inspect", "grandchild")))
    assert info["parents"] == [child, top]

    # the child cannot see or stop its sibling, its parent or the host's pods: NOT_FOUND
    for target in ("sibling", sibling, "top", top[:8], "other", other, "child"):
        for command in (["inspect", target], ["stop", target], ["rm", "-f", target]):
            err = refused(kurmactl_in(kurma, child, *command))
            assert "no pod" in err and "permission" not in err.lower(), (command, err)
    assert {p.name for p in kurma.list_pods()} >= {"sibling", "top", "other"}

    # destroying the top destroys the subtree, children first
    destroyed = kurma.destroy(top, grace=1)
    assert set(destroyed) == {top, child, sibling, grandchild}
    assert destroyed[-1] == top
    left = {p.uuid for p in kurma.list_pods()}
    assert not left & {top, child, sibling, grandchild}
    assert not os.path.exists(cgroup_dir(pods["top"].cgroup))
    kurma.destroy(other, grace=1)


def test_least_privilege(kurma: Client, daemon: tuple[Daemon, str], tmp_path: Path) -> None:
    """A pod cannot give a child more than it holds: privileged, host namespaces, devices,
    a wider api scope, capabilities, no seccomp, host volumes outside its own volumes
    (also through a symlink), a writable copy of a read-only volume."""
    _, image_id = daemon
    shared = tmp_path / "shared"
    (shared / "sub").mkdir(parents=True)
    os.symlink("/etc", shared / "escape")
    top = top_pod(kurma, image_id, "lp-top", extra_volumes=[("data", str(shared), False)])

    def create(name: str, **kw: Any) -> tuple[int, str, str]:
        doc = manifest(image_id, SLEEP, api=kw.pop("api", None), **kw)
        return kurmactl_in(kurma, top, "create", "--name", name, "--manifest", "-",
                           stdin=json.dumps(doc).encode())  # fmt: skip

    cases = {  # what the manifest asks for, what the refusal names
        "privileged": ({"extra_isolators": [{"name": "os/linux/privileged", "value": True}]},
                       "not privileged"),
        "host-ns": ({"extra_isolators": [{"name": "os/linux/namespaces",
                                          "value": {"net": "host"}}]}, "net namespace"),
        "devices": ({"extra_isolators": [{"name": "os/linux/devices", "value": ["/dev/kmsg"]}]},
                    "/dev/kmsg"),
        "host-read": ({"api": "host-read"}, "scope host-read"),
        "host-scope": ({"api": "host"}, "scope host"),
        "etc": ({"extra_volumes": [("etc", "/etc", True)]}, "not inside one of pod lp-top's"),
        "symlink": ({"extra_volumes": [("esc", f"{shared}/escape", True)]}, "leads outside"),
        "writable": ({"extra_volumes": [("usr", "/usr/share", False)]}, "must be readOnly"),
    }  # fmt: skip
    for name, (kw, says) in cases.items():
        err = refused(create(f"bad-{name}", **kw), name)
        assert says in err, (name, err)
    # the status is PERMISSION_DENIED (the pod's socket, reached from the host as root)
    with Client.connect(str(socket_of(daemon[0], top)), timeout=20) as as_top:
        doc = manifest(image_id, SLEEP, api=None, **cases["privileged"][0])
        with pytest.raises(PermissionDenied, match="privileged"):
            as_top.create_pod(manifest_json=json.dumps(doc).encode(), name="bad-direct")
        with pytest.raises(PermissionDenied, match="scope host"):
            wide = manifest(image_id, SLEEP, api="host")
            as_top.create_pod(manifest_json=json.dumps(wide).encode())
        with pytest.raises(PermissionDenied, match="Trust"):
            _trust_add(as_top)
    # capabilities beyond the parent's and no seccomp under a filtered parent, per app
    app_iso = manifest(image_id, SLEEP, api=None)
    app_iso["apps"][0]["app"]["isolators"] = [
        {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_SYS_ADMIN"]}}
    ]
    err = refused(kurmactl_in(kurma, top, "create", "--name", "bad-caps", "--manifest", "-",
                              stdin=json.dumps(app_iso).encode()))  # fmt: skip
    assert "CAP_SYS_ADMIN" in err, err
    app_iso["apps"][0]["app"]["isolators"] = [
        {"name": "os/linux/seccomp-retain-set", "value": {"set": ["@appc.io/all"]}}
    ]
    err = refused(kurmactl_in(kurma, top, "create", "--name", "bad-seccomp", "--manifest", "-",
                              stdin=json.dumps(app_iso).encode()))  # fmt: skip
    assert "seccomp" in err, err
    assert not [p for p in kurma.list_pods() if p.name.startswith("bad-")]

    # within its own volumes it may: the child sees the host dir through the parent's view
    ok(create("good", api="subtree", extra_volumes=[("d", f"{shared}/sub", False)]))
    good = kurma.get("good")
    assert list(good.parents) == [top]
    doc = json.loads(good.manifest_json)
    assert {v["source"] for v in doc["volumes"]} >= {f"{shared}/sub"}


def test_subtree_is_held_to_the_top_memory_limit(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """A grandchild without limits of its own cannot use more than the top's memory limit:
    its cgroup is below the top's, so the kernel charges the top."""
    _, image_id = daemon
    top = top_pod(kurma, image_id, "mem-top", memory="64M")
    create_in(kurma, top, manifest(image_id, SLEEP), "mem-child")
    grand = create_in(kurma, "mem-child", manifest(image_id, SLEEP, api=None), "mem-grand")
    pod = kurma.get(grand)
    assert pod.cgroup.startswith(kurma.get(top).cgroup + "/")
    small = kurma.exec(grand, ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=2"])
    for _ in small.output():
        pass
    assert small.exit_code == 0
    big = kurma.exec(grand, ["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"])
    for _ in big.output():
        pass
    assert big.exit_code == 137  # SIGKILL by the OOM killer of the top's memory cgroup


def test_restarted_kurmad_serves_the_pod_socket_again(shell_aci: Path) -> None:
    """After a restart, the re-adopted api-access pod's socket answers again."""
    for d in make_daemon():
        with d.start() as client:
            image_id = client.import_image(shell_aci).image.id
            top = top_pod(client, image_id, "restart-top")
            child = create_in(client, top, manifest(image_id, SLEEP, api=None), "restart-child")
        d.stop()
        sock = socket_of(d, top)
        assert not sock.exists()
        with d.start() as client:
            wait_for(sock.exists, "the pod socket again", 10)
            assert ok(kurmactl_in(client, top, "ps", "-q")).split() == [child]
            client.destroy(top, grace=1)


def test_a_host_scope_pod_creates_pods_for_the_host(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """The console's scope: `host` acts for the machine's operator. Its pods are the host's
    (no parent) and are not held to what the console itself holds; it still cannot grant
    host-read or host, which only a host-level admin does."""
    _, image_id = daemon
    console = top_pod(kurma, image_id, "host-console", api="host")
    host_net = [{"name": "os/linux/namespaces", "value": {"net": "host"}}]
    wide = manifest(image_id, SLEEP, api=None, extra_isolators=host_net)
    made = create_in(kurma, console, wide, "host-made")
    pod = kurma.get(made)
    assert list(pod.parents) == []
    kurma.destroy(console, grace=1)
    assert kurma.get(made).state == 2  # RUNNING: not part of the console's subtree
    kurma.destroy(made, grace=1)
    console = top_pod(kurma, image_id, "host-console-2", api="host")
    grant = json.dumps(manifest(image_id, SLEEP, api="host")).encode()
    err = refused(kurmactl_in(kurma, console, "create", "--name", "bad-grant", "--manifest", "-",
                              stdin=grant))  # fmt: skip
    assert "only a host-level admin" in err, err
