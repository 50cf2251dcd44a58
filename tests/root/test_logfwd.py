"""The log forwarder against a real kurmad: pods' lines reach a syslog receiver as RFC 5424.

One kurmad (a subprocess with its own state dir, socket and cgroup parent, see
test_kurmad.py) runs busybox pods; `python -m kurma.logfwd --no-kernel` runs as a process on
the daemon's system socket (a host-level caller, which sees every pod) and sends over TCP to
a receiver thread on 127.0.0.1. The host's /dev/kmsg is never read. Teardown kills the
forwarder, destroys the pods and removes the daemon's state and cgroups.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kurma.aci import build_aci
from kurma.client import Client, app_spec, pods_pb2, run_spec
from kurma.logfwd import SD_ID
from tests.test_logfwd_sender import Receiver

from ..waiting import wait_for
from .runtime_support import IMAGE_NAME, busybox_rootfs, image_manifest
from .test_kurmad import REPO, Daemon, make_daemon

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

PYTHON_IMAGE = "example.com/kurma-python"

SYSLOG = re.compile(
    r"<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) - - "
    r"\[" + re.escape(SD_ID) + r' pod="(?P<pod>[^"]+)" app="(?P<papp>[^"]+)"\] (?P<msg>.*)$',
    re.S,
)


@pytest.fixture(scope="module")
def python_aci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox with /lib and /lib64 pointing into /usr: the host's Python runs in it once
    /usr and the interpreter's prefix are bound in."""
    root = busybox_rootfs(tmp_path_factory.mktemp("python") / "rootfs")
    for link in ("lib", "lib64"):
        os.symlink(f"usr/{link}", root / link)
    aci = root.parent / "python.aci"
    build_aci(root, image_manifest(PYTHON_IMAGE), aci, mtime=0, owner=(0, 0))
    return aci


@pytest.fixture(scope="module")
def daemon(busybox_aci: Path, python_aci: Path) -> Iterator[Daemon]:
    for d in make_daemon():
        with d.start() as client:
            client.import_image(busybox_aci)
            client.import_image(python_aci)
        yield d


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver("tcp")
    try:
        yield r
    finally:
        r.close()


class Forwarder:
    """`python -m kurma.logfwd` as a process; its stderr kept in a file for failures."""

    def __init__(self, daemon: Daemon, port: int, *flags: str) -> None:
        self.log_path = daemon.work / "logfwd.log"
        argv = [
            sys.executable, "-m", "kurma.logfwd",
            "--target", f"127.0.0.1:{port}",
            "--kurma-host", f"unix://{daemon.socket}",
            "--hostname", "testhost",
            "--no-kernel",
            "--log-level", "debug",
            *flags,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stderr=log, stdout=log, cwd=REPO)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        """SIGTERM; the exit status (a forwarder that hangs is killed and fails the test)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"the forwarder ignored SIGTERM:\n{self.log()}")
        return self.proc.returncode


@pytest.fixture
def forwarders(daemon: Daemon) -> Iterator[list[Forwarder]]:
    made: list[Forwarder] = []
    yield made
    for f in made:
        if f.proc.poll() is None:
            f.proc.kill()
            f.proc.wait()


@pytest.fixture
def kurma(daemon: Daemon) -> Iterator[Client]:
    """A client; the pods a test made are destroyed after it."""
    with daemon.client() as client:
        before = {p.uuid for p in client.list_pods()}
        yield client
        for pod in client.list_pods():
            if pod.uuid not in before:
                client.destroy(pod.uuid, grace=1)


def start_pod(kurma: Client, name: str, script: str) -> str:
    spec = run_spec(app_spec(IMAGE_NAME, name="main", exec=["/bin/sh", "-c", script]))
    return kurma.create_pod(spec=spec, name=name, start=True).uuid


def lines_of(receiver: Receiver, pod_name: str) -> list[re.Match[str]]:
    """The receiver's messages from `pod_name`, parsed (all must parse as pod lines)."""
    found = []
    for data in list(receiver.messages):
        match = SYSLOG.match(data.decode())
        assert match, f"not an RFC 5424 pod line: {data!r}"
        if match["app"] == pod_name:
            found.append(match)
    return found


def test_pod_lines_arrive_as_rfc5424(
    kurma: Client, receiver: Receiver, forwarders: list[Forwarder], daemon: Daemon
) -> None:
    """A running pod's lines, and those of a pod started after the forwarder, arrive in
    order with the pod's name as APP-NAME, its UUID and app in structured data; a
    pod excluded by flag is not forwarded; SIGTERM ends the forwarder with status 0."""
    talker = start_pod(kurma, "talker", "echo alpha-1; echo 'alpha \"2\" ✓'; exec sleep 600")
    wait_for(lambda: b"alpha-1" in b"".join(c.data for c in kurma.logs(talker)), "output", 20.0)
    forwarder = Forwarder(daemon, receiver.port, "--exclude-pod", "quiet")
    forwarders.append(forwarder)

    def talker_lines() -> list[str]:
        assert forwarder.proc.poll() is None, forwarder.log()
        return [m["msg"] for m in lines_of(receiver, "talker")]

    wait_for(
        lambda: len(talker_lines()) >= 2, f"talker's lines; forwarder:\n{forwarder.log()}", 20.0
    )
    assert talker_lines() == ["alpha-1", 'alpha "2" ✓']
    first = lines_of(receiver, "talker")[0]
    assert (first["pri"], first["host"], first["pod"], first["papp"]) == (
        "14", "testhost", talker, "main",
    )  # fmt: skip

    quiet = start_pod(kurma, "quiet", "echo gamma; exec sleep 600")
    later = start_pod(kurma, "later", "echo beta-1; echo beta-2")
    wait_for(
        lambda: len(lines_of(receiver, "later")) >= 2, f"later's lines:\n{forwarder.log()}", 20.0
    )
    assert [m["msg"] for m in lines_of(receiver, "later")] == ["beta-1", "beta-2"]
    assert lines_of(receiver, "later")[0]["pod"] == later
    wait_for(lambda: b"gamma" in b"".join(c.data for c in kurma.logs(quiet)), "quiet output", 20.0)
    assert lines_of(receiver, "quiet") == []
    assert talker_lines() == ["alpha-1", 'alpha "2" ✓']  # nothing twice

    assert forwarder.stop() == 0, forwarder.log()


@pytest.fixture
def own() -> Iterator[Daemon]:
    """A daemon of the test's own, for restarting."""
    yield from make_daemon()


def test_kurmad_restart_neither_loses_nor_repeats_lines(
    busybox_aci: Path, own: Daemon, receiver: Receiver, forwarders: list[Forwarder]
) -> None:
    """kurmad restarts under a running pod: the forwarder reconnects, and the pod's numbered
    lines arrive each exactly once, those written while kurmad was away included."""
    with own.start() as kurma:
        kurma.import_image(busybox_aci)
        start_pod(kurma, "ticker", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done")
    forwarder = Forwarder(own, receiver.port)
    forwarders.append(forwarder)

    def ticks() -> list[int]:
        return [int(m["msg"].removeprefix("tick-")) for m in lines_of(receiver, "ticker")]

    wait_for(lambda: len(ticks()) >= 3, f"the first ticks:\n{forwarder.log()}", 20.0)
    own.stop()
    assert forwarder.proc.poll() is None, forwarder.log()
    wanted = len(ticks()) + 15
    own.start().close()
    wait_for(lambda: len(ticks()) >= wanted, f"ticks after the restart:\n{forwarder.log()}", 30)
    got = ticks()
    assert got == list(range(len(got)))
    assert forwarder.stop() == 0


def forwarder_pod_manifest(image_id: str, port: int) -> bytes:
    """The syslog service's shape: host-read API access, the host's network (to reach the
    receiver on 127.0.0.1), and this machine's Python bound read-only at the same paths."""
    paths = sorted({"/usr", os.path.realpath(sys.base_prefix), str(REPO)})
    volumes = [(f"py{i}", p) for i, p in enumerate(paths)]
    command = [sys.executable, "-m", "kurma.logfwd", "--target", f"127.0.0.1:{port}",
               "--hostname", "testhost", "--no-kernel", "--log-level", "debug"]  # fmt: skip
    # through the image's shell: the runtime looks an app's exec up before volumes are bound
    argv = ["/bin/sh", "-c", "exec " + shlex.join(command)]
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "logfwd",
                "image": {"id": image_id},
                "app": {"exec": argv, "user": "0", "group": "0"},
                "mounts": [{"volume": name, "path": path} for name, path in volumes],
            }
        ],
        "volumes": [
            {"name": name, "kind": "host", "source": path, "readOnly": True}
            for name, path in volumes
        ],
        "isolators": [
            {"name": "host/api-access", "value": {"scope": "host-read"}},
            {"name": "os/linux/namespaces", "value": {"net": "host"}},
        ],
    }
    return json.dumps(doc).encode()


def test_forwarder_as_a_host_read_pod_skips_its_own_logs(kurma: Client, receiver: Receiver) -> None:
    """Run as the syslog service runs (a pod with host-read access, KURMA_HOST from the
    runtime): other pods' lines arrive; its own output, which it also sees, never does."""
    image_id = kurma.inspect_image(PYTHON_IMAGE).id
    manifest = forwarder_pod_manifest(image_id, receiver.port)
    syslog = kurma.create_pod(manifest_json=manifest, name="syslog", start=True).uuid

    def pod_output(uuid: str) -> str:
        return b"".join(c.data for c in kurma.logs(uuid)).decode(errors="replace")

    def forwarder_log() -> str:
        pod = kurma.get(syslog)
        assert pod.state == pods_pb2.POD_STATE_RUNNING, pod_output(syslog)
        return pod_output(syslog)

    wait_for(lambda: "pod logs: connected" in forwarder_log(), "the forwarder pod to connect", 60)
    assert f"as {syslog}" in forwarder_log()  # the API knows it as its own pod
    start_pod(kurma, "neighbour", "echo hello-from-neighbour; exec sleep 600")
    wait_for(lambda: lines_of(receiver, "neighbour"), f"the line:\n{forwarder_log()}", 30)
    assert [m["msg"] for m in lines_of(receiver, "neighbour")] == ["hello-from-neighbour"]
    assert "forwarding to" in forwarder_log()  # it did write output of its own ...
    assert lines_of(receiver, "syslog") == []  # ... which it did not forward
