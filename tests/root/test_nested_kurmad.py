"""Kurma in kurma: a privileged pod runs a kurmad of its own, whose privileged pod runs another.

host kurmad (the test's) -> pod "outer" (privileged) running kurmad #1
    -> pod "middle" (privileged, created through #1) running kurmad #2
        -> pod "inner" (plain busybox, created through #2) running `sleep`.

How the pods get Python: like tests/root/test_recursion.py, the busybox image gets this
host's interpreter and the repository (with its venv) read-only as host volumes at the very
paths they have here; a nested kurmad is a host-level daemon of its own view, where those
paths exist, so it hands the same three on. Each nested kurmad keeps its state dir, pods dir
and socket on an empty volume (`/kurma`, on the outer daemon's pods dir, not on the overlay).
The test reaches each nested socket from the host through that volume's directory (a short
symlink keeps the socket path under the 108-byte limit), and also walks the chain with
`kurmactl exec ... kurmactl ps` from the host's pod down.

What a user checks: the inner pod runs; its processes sit inside the outer pods' cgroups
(each nested kurmad got its own cgroup subtree, read from the host's /proc/PID/cgroup);
destroying the outer pod from the host ends every process of the chain and leaves no
mounts and no cgroups.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import build_aci
from kurma.api.v1 import pods_pb2
from kurma.client import Client
from kurma.runtime.cgroups import CgroupSystem

from ..waiting import wait_for
from .runtime_support import busybox_rootfs, image_manifest, mounts_under
from .test_kurmad import REPO, Daemon, daemon_with_image, pod_cgroup_dirs

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

IMAGE = "example.com/kurma-nest"
PREFIX = os.path.realpath(sys.base_prefix)
HOST_PATHS = tuple(dict.fromkeys(("/usr", PREFIX, str(REPO))))
PATH = f"{Path(sys.executable).parent}:/bin:/usr/bin"
PYTHON = sys.executable
KURMACTL = [PYTHON, "-m", "kurma.cli.main"]
NEST = "/kurma"  # the empty volume of a nested kurmad: state, pods dir, socket
SOCKET = f"{NEST}/kurmad.sock"
MARK = str(4_000_000 + secrets.randbelow(999_999))  # the inner sleep's argument: findable
RUNNING = pods_pb2.POD_STATE_RUNNING
SOMAXCONN = "1357"


def kurmad_argv() -> list[str]:
    return [
        PYTHON, "-m", "kurma.api.daemon",
        "--config", "/dev/null",
        "--socket", SOCKET,
        "--state-dir", f"{NEST}/state",
        "--pods-dir", f"{NEST}/pods",
        "--cgroup-parent", "kurma",
        "--stop-pods-on-exit",
        "--stop-grace", "1",
        "--shutdown-grace", "1",
        "--warm-pods", "0",
        "--log-level", "debug",
    ]  # fmt: skip


def nest_manifest(image_id: str) -> dict[str, Any]:
    """A privileged pod running a kurmad with the host's Python and its own empty volume."""
    host = [(f"py{i}", p) for i, p in enumerate(HOST_PATHS)]
    mounts = [{"volume": name, "path": path} for name, path in host]
    mounts.append({"volume": "nest", "path": NEST})
    volumes: list[dict[str, Any]] = [
        {"name": name, "kind": "host", "source": path, "readOnly": True} for name, path in host
    ]
    volumes.append({"name": "nest", "kind": "empty"})
    return {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "kurmad",
                "image": {"id": image_id},
                "app": {
                    "exec": kurmad_argv(),
                    "user": "0",
                    "group": "0",
                    "workingDirectory": str(REPO),
                    "environment": [{"name": "PATH", "value": PATH}],
                },
                "mounts": mounts,
            }
        ],
        "volumes": volumes,
        "isolators": [{"name": "os/linux/privileged", "value": True}],
    }


def sleep_manifest(image_id: str) -> dict[str, Any]:
    """busybox `sleep`, after showing a sysctl its kurmad set (through the privileged pod's
    /proc/sys, which must be writable for that)."""
    script = f"cat /proc/sys/net/core/somaxconn; exec /bin/sleep {MARK}"
    return {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [{"name": "sleep", "image": {"id": image_id},
                  "app": {"exec": ["/bin/sh", "-c", script], "user": "0", "group": "0"}}],
        "isolators": [{"name": "os/unix/sysctl", "value": {"net.core.somaxconn": SOMAXCONN}}],
    }  # fmt: skip


@pytest.fixture(scope="module")
def nest_aci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox with /lib and /lib64 pointing into /usr (the host's, bound in), and what
    ctypes.util.find_library needs to find libseccomp there (the launcher's seccomp filters):
    `/sbin/ldconfig -p` (the host's, in /usr) reading a copy of the host's ld.so.cache."""
    root = busybox_rootfs(tmp_path_factory.mktemp("nest") / "rootfs")
    for link in ("lib", "lib64"):
        os.symlink(f"usr/{link}", root / link)
    os.symlink("/usr/sbin/ldconfig", root / "sbin" / "ldconfig")
    shutil.copy2("/etc/ld.so.cache", root / "etc" / "ld.so.cache")
    aci = root.parent / "nest.aci"
    build_aci(root, image_manifest(IMAGE), aci, mtime=0, owner=(0, 0))
    return aci


@pytest.fixture
def host(nest_aci: Path) -> Iterator[tuple[Daemon, str]]:
    yield from daemon_with_image(nest_aci)


@contextlib.contextmanager
def nested_client(volume_dir: Path, what: str, log: Path) -> Iterator[Client]:
    """A client of the kurmad whose empty volume is `volume_dir` (seen from the host)."""
    link = Path(f"/tmp/kn-{secrets.token_hex(4)}")
    link.symlink_to(volume_dir)
    try:
        sock = link / "kurmad.sock"

        def ready() -> bool:
            if not sock.exists():
                return False
            try:
                with Client.connect(str(sock), timeout=5) as c:
                    c.list_pods()
            except Exception:
                return False
            return True

        try:
            wait_for(ready, f"{what}'s socket", 90)
        except BaseException:
            print(log.read_text(errors="replace")[-6000:] if log.exists() else "no log")
            raise
        with Client.connect(str(sock), timeout=30) as client:
            yield client
    finally:
        link.unlink()


def host_pids_of(argv_tail: str) -> list[int]:
    """Host pids whose command line ends with `argv_tail` (NUL-separated argv, joined by ' ')."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.endswith(argv_tail):
            found.append(int(entry.name))
    return found


def cgroup_paths(pid: int) -> dict[str, str]:
    """controller (or '' for cgroup2) -> path, from the host's /proc/PID/cgroup."""
    paths = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
    return paths


def kurmactl_in(client: Client, pod: str, *args: str) -> tuple[int, str, str]:
    proc = client.exec(pod, [*KURMACTL, *args], env={"COLUMNS": "200"})
    proc.close_stdin()
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for stream, data in proc.output():
        out[stream] += data
    return proc.exit_code, out["stdout"].decode(), out["stderr"].decode()


def test_two_nested_daemons(host: tuple[Daemon, str], nest_aci: Path) -> None:
    daemon, image_id = host
    pods_dir = daemon.work / "pods"
    with daemon.client() as kurma:
        outer = kurma.create_pod(
            manifest_json=json.dumps(nest_manifest(image_id)), name="outer", start=True
        )
        outer_nest = pods_dir / outer.uuid / "volumes" / "nest"
        one_log = pods_dir / outer.uuid / "logs" / "kurmad.log"
        with nested_client(outer_nest, "kurmad #1", one_log) as one:
            one_image = one.import_image(nest_aci).image.id
            middle = one.create_pod(
                manifest_json=json.dumps(nest_manifest(one_image)), name="middle", start=True
            )
            middle_nest = outer_nest / "pods" / middle.uuid / "volumes" / "nest"
            two_log = outer_nest / "pods" / middle.uuid / "logs" / "kurmad.log"
            with nested_client(middle_nest, "kurmad #2", two_log) as two:
                two_image = two.import_image(nest_aci).image.id
                inner = two.create_pod(
                    manifest_json=json.dumps(sleep_manifest(two_image)), name="inner", start=True
                )
                assert two.get("inner").state == RUNNING
                wait_for(
                    lambda: b"".join(c.data for c in two.logs("inner")).split() == [b"1357"],
                    "the inner pod's sysctl in its log",
                    10,
                )
                assert [p.name for p in two.list_pods()] == ["inner"]
                assert [p.name for p in one.list_pods()] == ["middle"]

                # the chain, by kurmactl from the host's pod down
                code, out, err = kurmactl_in(
                    kurma, "outer", "--host", f"unix://{SOCKET}", "exec", "middle", "--",
                    *KURMACTL, "--host", f"unix://{SOCKET}", "ps",
                )  # fmt: skip
                assert code == 0, (out, err)
                assert "inner" in out and inner.uuid[:8] in out, out

                # the inner sleep sits inside the outer pods' cgroups, from the host's view
                sleeps = wait_for(lambda: host_pids_of(f"/bin/sleep {MARK}"), "the sleep", 10)
                assert len(sleeps) == 1, sleeps
                outer_cgroup = kurma.get("outer").cgroup
                paths = cgroup_paths(sleeps[0])
                memory = paths["memory"]
                assert f"/{outer_cgroup}/" in memory, (outer_cgroup, memory)
                below = memory.split(f"/{outer_cgroup}/", 1)[1]
                # outer's app cgroup (delegated to kurmad #1) > #1's pod "middle" > its app
                # cgroup (delegated to kurmad #2) > #2's pod "inner" > its processes' leaf
                nested = r"app-kurmad/kurma/pod-[0-9a-f]+/app-kurmad/kurma/pod-[0-9a-f]+/self"
                assert re.fullmatch(nested, below), memory
                assert paths["pids"].endswith(below), paths

        chain = host_pids_of(" ".join(kurmad_argv()))
        assert len(chain) == 4, chain  # the two nested kurmads and their launchers (forks)
        chain += sleeps
        kurma.destroy("outer", grace=1)

        for pid in chain:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), f"pid {pid} to end", 10)
        assert not host_pids_of(f"/bin/sleep {MARK}")
        assert not host_pids_of(" ".join(kurmad_argv()))
        assert not mounts_under(pods_dir)
        assert not (pods_dir / outer.uuid).exists()
        assert not CgroupSystem.detect().open(outer_cgroup).exists()
        assert not [d for d in pod_cgroup_dirs(daemon.cgroup_parent) if outer_cgroup in d]


def show_cgroups_manifest(image_id: str, privileged: bool) -> dict[str, Any]:
    script = (
        "cat /proc/self/cgroup; grep -E ' - cgroup2? ' /proc/self/mountinfo; "
        "touch /sys/fs/cgroup/memory/cgroup.procs && echo WRITABLE"
    )
    isolators = [{"name": "os/linux/privileged", "value": True}] if privileged else []
    return {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [{"name": "show", "image": {"id": image_id},
                  "app": {"exec": ["/bin/sh", "-c", script], "user": "0", "group": "0"}}],
        "isolators": isolators,
    }  # fmt: skip


def output_of(client: Client, doc: dict[str, Any], name: str) -> str:
    pod = client.create_pod(manifest_json=json.dumps(doc), name=name, start=True)
    client.wait(pod.uuid, timeout=30)
    return b"".join(c.data for c in client.logs(pod.uuid)).decode()


def test_privileged_pod_sees_its_own_cgroups(host: tuple[Daemon, str]) -> None:
    """A privileged pod's app is the root of a cgroup namespace, with its own cgroup (and
    nothing above it) mounted writable at /sys/fs/cgroup; a plain pod gets no cgroupfs."""
    daemon, image_id = host
    with daemon.client() as kurma:
        out = output_of(kurma, show_cgroups_manifest(image_id, privileged=True), "priv")
        lines = out.splitlines()
        assert "0::/" in lines, out
        assert any(line.endswith(":memory:/") for line in lines), out
        mounts = [line.split() for line in lines if " - cgroup" in line]
        assert {m[4] for m in mounts} >= {"/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified"}
        assert all(m[3] == "/" for m in mounts), out  # each hierarchy's root is our cgroup
        assert "WRITABLE" in lines, out

        out = output_of(kurma, show_cgroups_manifest(image_id, privileged=False), "plain")
        assert " - cgroup" not in out and "WRITABLE" not in out, out
        assert "0::/" not in out.splitlines(), out  # no cgroup namespace: host paths


def test_daemon_enters_a_leaf_of_a_delegated_cgroup2() -> None:
    """On cgroup2 (this host's unified hierarchy, which carries hugetlb), a process in a
    delegated cgroup cannot enable controllers for children while it sits there; after
    `enter_leaf` it can, and the CgroupSystem still creates beside the leaf."""
    from kurma.runtime.cgroups import CgroupSystem, Version, enable_controllers, enter_leaf

    placement = next(
        (p for p in CgroupSystem.detect().hierarchies if p.version is Version.V2), None
    )
    if placement is None or "hugetlb" not in CgroupSystem.detect().placements:
        pytest.skip("no cgroup2 hierarchy with hugetlb here")
    top = os.path.join(placement.directory(), f"kurma-leaf-{secrets.token_hex(4)}")
    os.mkdir(top)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child moves, never the test process
        code = 1
        try:
            os.close(r)
            with open(os.path.join(top, "cgroup.procs"), "w") as f:
                f.write("0")
            system = CgroupSystem.detect()
            report = []
            try:
                enable_controllers(system.placements["hugetlb"].directory(), ["hugetlb"])
            except OSError as e:
                report.append(f"before: {e.errno}")
            leaf = enter_leaf(system, controllers=("hugetlb",))
            report.append(f"leaf: {leaf}")
            enable_controllers(system.placements["hugetlb"].directory(), ["hugetlb"])
            report.append("after: ok")
            os.write(w, "\n".join(report).encode())
            code = 0
        except BaseException as e:
            os.write(w, f"error: {e}".encode())
        finally:
            os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r) as f:
            report = f.read().splitlines()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, report
        assert report == ["before: 16", f"leaf: {top}/kurmad", "after: ok"], report  # EBUSY
        with open(os.path.join(top, "cgroup.subtree_control")) as f:
            assert "hugetlb" in f.read().split()
    finally:
        for d in (os.path.join(top, "kurmad"), top):
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(d)
