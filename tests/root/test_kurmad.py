"""A real kurmad, driven through kurma.client: images, pods, logs, events, errors, restarts.

Each daemon is a subprocess (`python -m kurma.api.daemon`) with its own temporary state dir,
socket and cgroup parent (`kurma-test-<random>`). Most tests share one daemon (module
scope); the restart and shutdown tests start their own. Teardown destroys what is left
through the API, stops the daemon, and fails the test if pods' cgroups remain; it always
kills and removes the cgroup parent, unmounts and deletes the temporary directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kurma.aci import build_aci
from kurma.api.v1 import host_pb2, host_pb2_grpc, images_pb2, images_pb2_grpc, pods_pb2
from kurma.client import (
    AlreadyExists,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    app_spec,
    run_spec,
)
from kurma.runtime.cgroups import CgroupSystem

from ..waiting import wait_for
from .runtime_support import IMAGE_NAME, busybox_rootfs, image_manifest, mounts_under

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
RUNNING, EXITED = pods_pb2.POD_STATE_RUNNING, pods_pb2.POD_STATE_EXITED


class Daemon:
    """One kurmad process on a state dir that outlives restarts of the process."""

    def __init__(self, work: Path, cgroup_parent: str) -> None:
        self.work = work
        self.state = work / "state"
        self.socket = work / "kurmad.sock"
        self.cgroup_parent = cgroup_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self, *flags: str) -> list[str]:
        return [
            sys.executable, "-m", "kurma.api.daemon",
            "--config", "/dev/null",  # never the host's /etc/kurma/kurmad.yml
            "--socket", str(self.socket),
            "--state-dir", str(self.state),
            "--pods-dir", str(self.work / "pods"),
            "--cgroup-parent", self.cgroup_parent,
            "--stop-grace", "2",
            "--shutdown-grace", "1",
            "--log-max-bytes", "4096",
            "--log-level", "debug",
            *flags,
        ]  # fmt: skip

    def start(self, *flags: str) -> Client:
        """Start kurmad and return a client once it answers."""
        self.starts += 1
        self.log_path = self.work / f"kurmad-{self.starts}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv(*flags), stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        wait_for(lambda: self.socket.exists() or self.proc.poll() is not None, "the socket", 30)
        if self.proc.poll() is not None:
            pytest.fail(f"kurmad exited with {self.proc.returncode}:\n{self.log()}")
        return self.client()

    def client(self) -> Client:
        return Client.connect(str(self.socket), timeout=20)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 20 s."""
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            self.wait(20)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.wait(10)


def pod_cgroup_dirs(cgroup_parent: str) -> list[str]:
    """The directories below the cgroup parent, in every hierarchy (pods, zygotes)."""
    parent = CgroupSystem.detect().open(cgroup_parent)
    return [
        os.path.join(d, e.name)
        for _, d in parent.directories()
        if os.path.isdir(d)
        for e in os.scandir(d)
        if e.is_dir()
    ]


def pod_processes(cgroup_relpath: str) -> set[int]:
    cgroup = CgroupSystem.detect().open(cgroup_relpath)
    return cgroup.pids() if cgroup.exists() else set()


def host_client(daemon: Daemon) -> Iterator[Client]:
    """A host client of a running daemon; every top-level pod left when the test is done
    is destroyed (with its subtree)."""
    assert daemon.alive(), daemon.log()
    with daemon.client() as client:
        yield client
        for pod in client.list_pods():
            if not pod.parents:
                with contextlib.suppress(NotFound):
                    client.destroy(pod.uuid, grace=1)


def make_daemon() -> Iterator[Daemon]:
    work = Path(tempfile.mkdtemp(prefix="kurmad-", dir="/tmp"))  # short: a unix socket path
    daemon = Daemon(work, f"kurma-test-{secrets.token_hex(4)}")
    try:
        yield daemon
    finally:
        _teardown(daemon)


def daemon_with_image(aci: Path, *start_args: str) -> Iterator[tuple[Daemon, str]]:
    """A started daemon (`start_args` for kurmad) with `aci` imported: (daemon, image ID);
    torn down like make_daemon's."""
    for daemon in make_daemon():
        with daemon.start(*start_args) as client:
            image_id = client.import_image(aci).image.id
        yield daemon, image_id


def _teardown(daemon: Daemon) -> None:
    problems: list[str] = []
    try:
        if daemon.alive():
            try:
                with daemon.client() as client:
                    for pod in client.list_pods():
                        # NotFound: a child pod, destroyed with its parent already
                        with contextlib.suppress(NotFound):
                            client.destroy(pod.uuid, grace=1)
            except Exception as e:
                problems.append(f"destroying the pods left: {e}")
            daemon.stop()
            leftovers = pod_cgroup_dirs(daemon.cgroup_parent)
            if leftovers:
                problems.append(f"cgroups left after the daemon destroyed its pods: {leftovers}")
        elif daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
    finally:
        parent = CgroupSystem.detect().open(daemon.cgroup_parent)
        if parent.exists():
            parent.kill_all()
            parent.remove()
        for point in reversed(mounts_under(daemon.work)):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(daemon.work, ignore_errors=True)
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture(scope="module")
def shared(busybox_aci: Path) -> Iterator[tuple[Daemon, str]]:
    """One daemon for the tests that need no restart, with busybox imported: (daemon, ID)."""
    yield from daemon_with_image(busybox_aci)


@pytest.fixture
def kurma(shared: tuple[Daemon, str]) -> Iterator[Client]:
    """A client of the shared daemon; the pods a test leaves are destroyed after it."""
    daemon, _ = shared
    assert daemon.alive(), daemon.log()
    with daemon.client() as client:
        before = {p.uuid for p in client.list_pods()}
        yield client
        for pod in client.list_pods():
            if pod.uuid not in before:
                client.destroy(pod.uuid, grace=1)


@pytest.fixture
def own() -> Iterator[Daemon]:
    """A daemon of the test's own, for killing and restarting."""
    yield from make_daemon()


def sh(script: str, **kw: Any) -> pods_pb2.RunSpec:
    return run_spec(app_spec(IMAGE_NAME, exec=["/bin/sh", "-c", script], **kw))


def logs(client: Client, pod: str, **kw: Any) -> bytes:
    return b"".join(chunk.data for chunk in client.logs(pod, **kw))


def pod_manifest(image_id: str, *apps: tuple[str, list[str]]) -> bytes:
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": name,
                "image": {"id": image_id},
                "app": {"exec": argv, "user": "0", "group": "0"},
            }
            for name, argv in apps
        ],
    }
    return json.dumps(doc).encode()


# --- the server itself ------------------------------------------------------------------------


def test_socket_is_private(shared: tuple[Daemon, str]) -> None:
    """The API socket is root's alone: mode 0600 in a 0755 directory."""
    daemon, _ = shared
    mode = os.stat(daemon.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_health_and_reflection(shared: tuple[Daemon, str]) -> None:
    """Generic tools work: the health service says SERVING, reflection lists every service."""
    daemon, _ = shared
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "kurma.v1.Pods", "kurma.v1.Images", "kurma.v1.Host"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
    assert names >= {
        "kurma.v1.Pods",
        "kurma.v1.Images",
        "kurma.v1.Trust",
        "kurma.v1.Host",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_host_info(kurma: Client) -> None:
    """Info: kernel, memory, versions, cgroup version per controller, counts."""
    info = kurma.info()
    assert info.kernel == os.uname().release
    assert info.memory_total_bytes > info.memory_available_bytes > 0
    assert info.uptime_seconds > 0
    assert info.api_version == "v1"
    versions = {c.name: c.version for c in info.cgroups}
    assert versions["memory"] in (1, 2)
    assert info.images >= 1
    assert (info.caller, info.role) == ("host", "admin")


# --- images -----------------------------------------------------------------------------------


def test_import_reports_progress_and_the_image(kurma: Client, tmp_path: Path) -> None:
    """A fresh image: progress messages, then the image (created); again: not created."""
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "big").write_bytes(os.urandom(3 << 20))  # > 1 MiB steps of progress
    aci = tmp_path / "big.aci"
    build_aci(rootfs, image_manifest("example.com/big", version="1.0"), aci, mtime=0, owner=(0, 0))
    seen: list[tuple[int, int]] = []
    imported = kurma.import_image(aci, progress=lambda done, total: seen.append((done, total)))
    try:
        assert imported.created
        assert imported.image.name == "example.com/big"
        assert imported.image.labels["version"] == "1.0"
        assert len(seen) >= 3 and seen[-1] == (aci.stat().st_size, aci.stat().st_size)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        with open(aci, "rb") as f:  # a file object, not a path
            assert not kurma.import_image(f).created
    finally:
        kurma.delete_image(imported.image.id)


def test_list_inspect_and_refs(kurma: Client, shared: tuple[Daemon, str]) -> None:
    """List by prefix; Inspect by name, name:version-less ref, full and short ID."""
    _, image_id = shared
    (image,) = kurma.list_images(name_prefix="example.com/busy")
    assert image.id == image_id and image.size > 0
    for ref in (IMAGE_NAME, image_id, image_id[:39]):
        found = kurma.inspect_image(ref)
        assert found.id == image_id
        assert json.loads(found.manifest_json)["name"] == IMAGE_NAME
    assert kurma.list_images(name_prefix="nothing/") == []


def test_image_errors(kurma: Client, shared: tuple[Daemon, str]) -> None:
    """Unknown image: NOT_FOUND; in use: FAILED_PRECONDITION; a bad reference: INVALID_ARGUMENT."""
    _, image_id = shared
    with pytest.raises(NotFound, match=r"example\.com/nope"):
        kurma.inspect_image("example.com/nope")
    with pytest.raises(InvalidArgument, match="image"):
        kurma.inspect_image("Not An Image!")
    pod = kurma.create_pod(spec=sh("true"))  # holds the image
    with pytest.raises(FailedPrecondition, match=f"used by {pod.uuid}"):
        kurma.delete_image(image_id)
    with grpc.insecure_channel(f"unix:{shared[0].socket}") as channel:
        images = images_pb2_grpc.ImagesStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            list(images.Fetch(images_pb2.FetchRequest(name="Bad Reference")))
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid reference format" in e.value.details()
        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        with pytest.raises(grpc.RpcError) as e:
            list(images.Fetch(images_pb2.FetchRequest(name=f"127.0.0.1:{port}/x")))
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        assert f"127.0.0.1:{port}" in e.value.details()
        exported = b"".join(c.data for c in images.Export(images_pb2.ImageRef(ref=IMAGE_NAME)))
        with tarfile.open(fileobj=io.BytesIO(exported)) as aci:  # packed again: an .aci
            assert {"manifest", "rootfs/bin/busybox"} <= set(aci.getnames())
        with pytest.raises(grpc.RpcError) as e:
            list(images.Export(images_pb2.ImageRef(ref=IMAGE_NAME, format="docker-archive")))
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "appc image" in e.value.details()
        trust = images_pb2_grpc.TrustStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            trust.List(images_pb2.ListKeysRequest())
        assert e.value.code() is grpc.StatusCode.UNIMPLEMENTED


# --- pods -------------------------------------------------------------------------------------


def test_run_spec_pod_runs_to_its_exit_code(kurma: Client) -> None:
    """Create+start from a RunSpec; Wait returns the app's exit code; logs hold its output."""
    pod = kurma.create_pod(
        spec=sh("echo hello from $AC_APP_NAME; exit 7", env={"X": "1"}), start=True
    )
    assert pod.apps[0].name == "busybox"
    assert pod.apps[0].image_name == IMAGE_NAME
    done = kurma.wait(pod.uuid, timeout=30)
    assert done.state == EXITED
    assert done.apps[0].exit_code == 7
    assert logs(kurma, pod.uuid) == b"hello from busybox\n"
    assert kurma.destroy(pod.uuid) == [pod.uuid]
    with pytest.raises(NotFound):
        kurma.get(pod.uuid)


def test_manifest_pod_lifecycle_with_stats(kurma: Client, shared: tuple[Daemon, str]) -> None:
    """Create (not started) from a manifest, start, stats while running, stop, destroy."""
    _, image_id = shared
    manifest = pod_manifest(
        image_id, ("main", ["/bin/sleep", "1000"]), ("side", ["/bin/sleep", "1000"])
    )
    pod = kurma.create_pod(manifest_json=manifest, name="lifecycle")
    assert pod.state == pods_pb2.POD_STATE_CREATED
    assert [a.name for a in pod.apps] == ["main", "side"]
    assert kurma.get("lifecycle").uuid == pod.uuid  # by name
    assert kurma.get(pod.uuid[:8]).uuid == pod.uuid  # by UUID prefix
    running = kurma.start(pod.uuid)
    assert running.state == RUNNING and all(a.pid > 0 for a in running.apps)
    assert [p.uuid for p in kurma.list_pods(states=[RUNNING], name_prefix="life")] == [pod.uuid]
    stats = kurma.stats(pod.uuid)
    assert stats.pids >= 3  # podinit and two sleeps
    assert stats.memory_bytes > 0
    with pytest.raises(FailedPrecondition, match="not created"):
        kurma.start(pod.uuid)
    stopped = kurma.stop(pod.uuid, grace=5)
    assert stopped.state == EXITED
    assert [a.exit_code for a in stopped.apps] == [128 + signal.SIGTERM] * 2
    assert kurma.stats(pod.uuid).pids == 0
    assert kurma.list_pods(states=[RUNNING], name_prefix="life") == []


def test_names_are_unique(kurma: Client) -> None:
    """A default name gets a suffix when taken; a taken explicit name is refused."""
    first = kurma.create_pod(spec=sh("true"), name="twin")
    second = kurma.create_pod(spec=sh("true"))
    third = kurma.create_pod(spec=sh("true"))
    assert first.name == "twin"
    assert second.name.startswith("busybox") and third.name.startswith("busybox-")
    assert second.name != third.name
    with pytest.raises(AlreadyExists, match="a pod named 'twin' exists already"):
        kurma.create_pod(spec=sh("true"), name="twin")


def test_logs_tail_and_follow(kurma: Client) -> None:
    """tail N gives the last N lines; follow from -1 gives only new output and ends itself."""
    script = (
        "for i in 1 2 3 4 5; do echo early $i; done; sleep 1; "
        "for i in 1 2 3; do echo late $i; sleep 0.2; done"
    )
    pod = kurma.create_pod(spec=sh(script), start=True)
    wait_for(lambda: b"early 5" in logs(kurma, pod.uuid), "the early lines", 20.0)
    assert logs(kurma, pod.uuid, tail=2) == b"early 4\nearly 5\n"
    assert logs(kurma, pod.uuid, tail=-1) == b""
    started = time.monotonic()
    followed = logs(kurma, pod.uuid, tail=-1, follow=True, app="busybox")
    assert followed == b"late 1\nlate 2\nlate 3\n"
    assert time.monotonic() - started < 10
    assert kurma.get(pod.uuid).apps[0].state == pods_pb2.APP_STATE_EXITED
    with pytest.raises(NotFound, match="no app 'nope'"):
        logs(kurma, pod.uuid, app="nope")


def test_follow_ends_when_the_client_cancels(kurma: Client) -> None:
    """A follow on a pod that runs on ends as soon as the client cancels it."""
    pod = kurma.create_pod(spec=sh("while true; do echo tick; sleep 0.1; done"), start=True)
    stream = kurma.logs(pod.uuid, follow=True, tail=-1)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(c.data for c in stream))
    reader.start()
    wait_for(lambda: got, "the first ticks", 20.0)
    stream.cancel()
    reader.join(5)
    assert not reader.is_alive()
    assert kurma.get(pod.uuid).state == RUNNING


def test_follow_reads_across_log_rotation(kurma: Client) -> None:
    """With 4 KiB log files, every line of a 20 KiB output arrives once, in order."""
    script = (
        'i=0; while [ $i -lt 300 ]; do echo "line $i padding padding padding padding"; '
        "i=$((i+1)); [ $((i % 10)) -eq 0 ] && sleep 0.05; done; true"
    )
    pod = kurma.create_pod(spec=sh(script))
    chunks: list[bytes] = []
    follower = threading.Thread(
        target=lambda: chunks.extend(c.data for c in kurma.logs(pod.uuid, follow=True))
    )
    follower.start()
    time.sleep(0.3)  # the stream is open on a pod whose log does not exist yet
    kurma.start(pod.uuid)
    follower.join(60)
    assert not follower.is_alive()
    got = b"".join(chunks).decode().splitlines()
    assert [line.split()[1] for line in got] == [str(i) for i in range(300)]


def test_events_stream_sees_pod_and_image_events(kurma: Client, tmp_path: Path) -> None:
    """Events: created, started, app exited, exited, destroyed; imported and deleted."""
    events: list[host_pb2.Event] = []
    with kurma.events() as stream:
        reader = threading.Thread(target=lambda: events.extend(stream))
        reader.start()
        pod = kurma.create_pod(spec=sh("exit 3"), start=True)
        kurma.wait(pod.uuid, timeout=30)
        kurma.destroy(pod.uuid)
        rootfs = busybox_rootfs(tmp_path / "rootfs")
        aci = tmp_path / "other.aci"
        build_aci(rootfs, image_manifest("example.com/other"), aci, mtime=0, owner=(0, 0))
        image = kurma.import_image(aci).image
        kurma.delete_image(image.id)
        wait_for(lambda: any(e.kind == "image.deleted" for e in events), "image.deleted", 20.0)
    reader.join(10)
    assert not reader.is_alive()
    kinds = [e.kind for e in events if e.pod == pod.uuid]
    assert kinds == ["pod.created", "pod.started", "app.exited", "pod.exited", "pod.destroyed"]
    exited = next(e for e in events if e.kind == "app.exited" and e.pod == pod.uuid)
    assert "exited with code 3" in exited.message
    assert [(e.kind, e.image) for e in events if e.image] == [
        ("image.imported", image.id),
        ("image.deleted", image.id),
    ]


def test_clean_errors(kurma: Client, shared: tuple[Daemon, str]) -> None:
    """Unknown pod, invalid manifest, missing image, bad wait: statuses with their reason."""
    _, image_id = shared
    with pytest.raises(NotFound, match="no pod has the UUID or name 'no-such-pod'"):
        kurma.get("no-such-pod")
    with pytest.raises(NotFound):
        kurma.stop("no-such-pod")
    bad = pod_manifest(image_id, ("Bad_Name", ["/bin/true"]))
    with pytest.raises(InvalidArgument, match=r"apps\[0\]\.name"):
        kurma.create_pod(manifest_json=bad)
    with pytest.raises(InvalidArgument, match="JSON"):
        kurma.create_pod(manifest_json=b"{not json")
    with pytest.raises(NotFound, match=r"spec\.apps\[0\]\.image: no image example\.com/missing"):
        kurma.create_pod(spec=run_spec(app_spec("example.com/missing", exec=["/x"])))
    missing = pod_manifest("sha512-" + "0" * 128, ("app", ["/bin/true"]))
    with pytest.raises(NotFound, match="sha512-0000"):
        kurma.create_pod(manifest_json=missing)
    with pytest.raises(
        InvalidArgument, match=r"spec\.apps\[0\]\.exec: image example\.com/busybox has no app"
    ):
        kurma.create_pod(spec=run_spec(app_spec(IMAGE_NAME)))
    pod = kurma.create_pod(spec=sh("sleep 100"), start=True)
    with pytest.raises(DeadlineExceeded, match=r"still running after 0\.3 s"):
        kurma.wait(pod.uuid, timeout=0.3)
    assert kurma.get(pod.uuid).state == RUNNING  # the daemon is still fine


def test_without_kurma_init_services_are_none_and_the_boot_log_says_why(
    shared: tuple[Daemon, str],
) -> None:
    daemon, _ = shared
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        host = host_pb2_grpc.HostStub(channel)
        assert list(host.Services(host_pb2.ServicesRequest()).services) == []
        with pytest.raises(grpc.RpcError) as e:
            host.BootLog(host_pb2.BootLogRequest())
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "boot_log_file is not set" in e.value.details()


def _running(kurma: Client, script: str = "exec sleep 1000") -> pods_pb2.Pod:
    pod = kurma.create_pod(spec=sh(script), start=True)
    wait_for(lambda: kurma.get(pod.uuid).apps[0].pid, "the app's pid", 20.0)
    return pod


def test_exec_with_pipes_returns_output_and_exit_code(kurma: Client) -> None:
    pod = _running(kurma)
    session = kurma.exec(pod.uuid, ["/bin/sh", "-c", "read x; echo out:$x; echo err >&2; exit 4"])
    session.send(b"hello\n")
    session.close_stdin()
    got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for stream, data in session.output():
        got[stream] += data
    assert got == {"stdout": b"out:hello\n", "stderr": b"err\n"}
    assert session.exit_code == 4


def test_exec_with_a_terminal_and_resize(kurma: Client) -> None:
    pod = _running(kurma)
    session = kurma.exec(
        pod.uuid, ["/bin/sh", "-c", "stty size; read x; stty size"], tty=True, size=(30, 100)
    )
    output = b""
    for _, data in session.output():
        output += data
        if output.count(b"\n") == 1:  # the first size is out: now resize and go on
            session.resize(40, 120)
            session.send(b"go\r")
    assert session.exit_code == 0
    lines = [line.strip() for line in output.decode().splitlines()]
    assert [line for line in lines if line in ("30 100", "40 120")] == ["30 100", "40 120"]


def test_exec_errors(kurma: Client) -> None:
    pod = _running(kurma)
    session = kurma.exec(pod.uuid, ["/no/such/program"])
    session.close_stdin()
    err = b"".join(data for stream, data in session.output() if stream == "stderr")
    assert session.exit_code == 127 and b"/no/such/program" in err
    done = kurma.create_pod(spec=sh("true"), start=True)
    kurma.wait(done.uuid, timeout=30)
    with pytest.raises(FailedPrecondition, match="not running"):
        list(kurma.exec(done.uuid, ["true"]).output())
    with pytest.raises(NotFound):
        list(kurma.exec("no-such-pod", ["true"]).output())


def test_app_that_cannot_start_reports_why(kurma: Client) -> None:
    """An exec that does not exist: the pod is created and started, the app's error says
    why, and it exits with 127 like a shell's 'command not found'."""
    pod = kurma.create_pod(
        spec=run_spec(app_spec(IMAGE_NAME, exec=["/no/such/program"])), start=True
    )
    done = kurma.wait(pod.uuid, timeout=30)
    (app,) = done.apps
    assert "/no/such/program" in app.error
    assert app.exit_code == 127


# --- the TCP listener: mutual TLS with roles ---------------------------------------------------


def test_tcp_listener_serves_mutual_tls_with_roles(own: Daemon, tmp_path: Path) -> None:
    """Over TCP only a certificate of the daemon's CA gets in, and its role decides."""
    from kurma.api._pki import init_ca, issue_client, issue_server

    init_ca(tmp_path / "ca")
    server = issue_server(tmp_path / "ca", tmp_path / "server", ["localhost"], ["127.0.0.1"])
    reader = issue_client(tmp_path / "ca", tmp_path / "clients", "ann", "reader")
    admin = issue_client(tmp_path / "ca", tmp_path / "clients", "bob", "admin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    own.start(
        "--listen", f"127.0.0.1:{port}", "--tls-cert", str(server.cert),
        "--tls-key", str(server.key), "--tls-ca", str(server.ca),
    ).close()  # fmt: skip
    target = f"tcp://127.0.0.1:{port}"
    with Client.connect(target, cert=str(reader.cert), key=str(reader.key), ca=str(reader.ca)) as c:
        assert c.info().role == "reader" and c.info().caller == "ann"
        c.list_pods()
        with pytest.raises(PermissionDenied, match="needs role operator"):
            c.create_pod(spec=sh("true"))
    admin_client = Client.connect(
        target, cert=str(admin.cert), key=str(admin.key), ca=str(admin.ca)
    )
    with admin_client as c, pytest.raises(NotFound):  # allowed; the daemon has no image
        c.create_pod(spec=sh("true"))
    # No client certificate: the handshake fails, nothing is served.
    creds = grpc.ssl_channel_credentials(root_certificates=admin.ca.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        with pytest.raises(grpc.RpcError) as e:
            host_pb2_grpc.HostStub(channel).Info(host_pb2.InfoRequest(), timeout=5)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE


# --- restarts and shutdown ----------------------------------------------------------------------


def test_second_daemon_is_refused(own: Daemon) -> None:
    """A second kurmad on the socket, or on the state dir, of a live one exits 1 saying so."""
    own.start().close()
    assert own.proc is not None
    pid = own.proc.pid
    second = subprocess.run(own.argv(), capture_output=True, text=True, cwd=REPO, timeout=60)
    assert second.returncode == 1
    assert f"another kurmad (pid {pid}) is serving on {own.socket}" in second.stderr
    other_socket = ["--socket", str(own.work / "other.sock")]
    third = subprocess.run(own.argv(*other_socket), capture_output=True, text=True, cwd=REPO)
    assert third.returncode == 1
    assert f"another kurmad uses the state directory {own.state}" in third.stderr
    assert own.alive()
    with own.client() as client:
        assert client.info().pods == 0


def test_sigkill_then_restart_readopts_running_pods(own: Daemon, busybox_aci: Path) -> None:
    """Killed with SIGKILL, kurmad leaves its pods running; a new one adopts them: listed
    RUNNING, stoppable, and the exit is recorded."""
    with own.start() as client:
        client.import_image(busybox_aci)
        pod = client.create_pod(
            spec=sh("trap 'exit 9' TERM; while true; do sleep 0.1; done"), start=True
        )
        cgroup = pod.cgroup
    assert cgroup and pod_processes(cgroup)
    own.signal(signal.SIGKILL)
    own.wait()
    time.sleep(0.5)
    assert pod_processes(cgroup), "the pod died with the daemon"
    assert own.socket.exists()  # stale: the next daemon must replace it
    with own.start() as client:
        adopted = client.get(pod.uuid)
        assert adopted.state == RUNNING
        assert client.stats(pod.uuid).pids >= 2
        started = time.monotonic()
        stopped = client.stop(pod.uuid, grace=5)
        took = time.monotonic() - started
        assert stopped.state == EXITED
        assert not pod_processes(cgroup)
        client.destroy(pod.uuid)
    assert stopped.apps[0].exit_code == 9  # the app's own code, from podinit's record
    assert took < 10  # its SIGTERM trap ran: no SIGKILL after the grace


def test_sigterm_shuts_down_cleanly_and_pods_keep_running(own: Daemon, busybox_aci: Path) -> None:
    """SIGTERM: exit 0, socket removed, the pod still runs and is adopted next time."""
    with own.start() as client:
        client.import_image(busybox_aci)
        pod = client.create_pod(spec=sh("sleep 1000"), start=True)
    own.signal(signal.SIGTERM)
    assert own.wait() == 0
    assert not own.socket.exists()
    assert pod_processes(pod.cgroup)
    assert "kurmad stopped" in own.log()
    with own.start() as client:
        assert client.get(pod.uuid).state == RUNNING
        client.destroy(pod.uuid, grace=1)


def test_sigterm_with_stop_pods_on_exit_stops_them(own: Daemon, busybox_aci: Path) -> None:
    """--stop-pods-on-exit: SIGTERM stops every pod (exit recorded) before kurmad exits."""
    with own.start("--stop-pods-on-exit") as client:
        client.import_image(busybox_aci)
        pods = [client.create_pod(spec=sh("sleep 1000"), start=True) for _ in range(2)]
    started = time.monotonic()
    own.signal(signal.SIGTERM)
    assert own.wait() == 0
    assert time.monotonic() - started < 8  # in parallel: one grace period, not two
    assert not own.socket.exists()
    for pod in pods:
        assert not pod_processes(pod.cgroup)
    with own.start() as client:
        for pod in pods:
            again = client.get(pod.uuid)
            assert again.state == EXITED
            assert again.apps[0].exit_code == 128 + signal.SIGTERM
