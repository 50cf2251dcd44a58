"""The whole machine under qemu: the real initrd boots, runs its services as pods, and is
driven from its serial console (pexpect) and from the host over mutual TLS.

One VM serves the tests of this module, in file order (the last one powers it off). Its OEM
disk holds a console password, the API listener, log forwarding to a TCP receiver on the
host (reached from the guest through guestfwd), and one extra service with `subtree` API
access that starts a child pod. A second, short boot checks a malformed OEM config.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "build"))

from vm import machine, qemu  # noqa: E402  (build/vm/)

import initrd as initrd_build  # noqa: E402  (build/initrd.py)

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 400.0  # qemu without KVM: the boot takes about 40 s here, CI may be slower
PASSWORD = "kurma-vm-test"
PROMPT = "KURMA-PROMPT# "
SERVICES = ("console", "dhcp", "ntp", "syslog")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def built() -> initrd_build.InitrdResult:
    """The real initrd, built from this tree once per session (about a minute)."""
    if not shutil.which(qemu.QEMU):
        pytest.skip(f"{qemu.QEMU} is not installed (build/apt-deps.sh installs it)")
    return initrd_build.build_initrd(ROOT / "out")


class SyslogReceiver:
    """A TCP syslog receiver on 127.0.0.1 (RFC 6587 octet counting), keeping every message."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.messages: list[str] = []
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b" " in buf:
                    length, _, rest = buf.partition(b" ")
                    if not length.isdigit() or len(rest) < int(length):
                        break
                    message, buf = rest[: int(length)], rest[int(length) :]
                    with self.lock:
                        self.messages.append(message.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for m in self.messages:
                    if re.search(pattern, m):
                        return m
            time.sleep(0.5)
        with self.lock:
            tail = self.messages[-10:]
        raise AssertionError(f"no syslog message matching {pattern!r}; last ones: {tail}")

    def close(self) -> None:
        self.stopping = True
        self.sock.close()


@dataclass
class Vm:
    child: pexpect.spawn
    machine: machine.Machine
    syslog: SyslogReceiver
    console_log: Path
    booted_after: float

    def client(self):
        from kurma.client import Client

        cert, key, ca = self.machine.client_credentials()
        return Client.connect(
            self.machine.api_target, timeout=60, cert=str(cert), key=str(key), ca=str(ca)
        )

    def sh(self, command: str, timeout: float = 120) -> str:
        """Runs `command` in the logged-in console shell; its output (without the echo)."""
        marker = f"END-{time.monotonic_ns()}"
        self.child.sendline(f"{command}; echo {marker}-$?")
        self.child.expect(rf"{marker}-(\d+)", timeout=timeout)
        out = self.child.before
        self.child.expect_exact(PROMPT, timeout=30)
        return out.split("\n", 1)[1] if "\n" in out else out


def boot(workdir: Path, built: initrd_build.InitrdResult, **prepare) -> tuple[pexpect.spawn, machine.Machine, Path, float]:  # noqa: E501
    m = machine.prepare(workdir, Path(built.vmlinux), Path(built.initrd), **prepare)
    argv = m.argv(qemu.choose_accel(built.vmlinux))
    log = workdir / "console.log"
    child = pexpect.spawn(
        argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=60,
        dimensions=(50, 200),
    )  # fmt: skip
    child.logfile_read = open(log, "w")  # noqa: SIM115  (closed with the child)
    t0 = time.monotonic()
    try:
        child.expect("login: ", timeout=BOOT_TIMEOUT)
    except BaseException:
        stop(child)
        raise
    return child, m, log, time.monotonic() - t0


def stop(child: pexpect.spawn) -> None:
    with contextlib.suppress(Exception):
        child.terminate(force=True)
    with contextlib.suppress(Exception):
        child.logfile_read.close()


NESTED_SERVICE = {
    "nest": {
        "image": "kurma.io/python",
        "exec": ["/usr/bin/kurmactl", "run", "--name", "nest-child", "kurma.io/busybox", "--",
                 "sleep", "100000"],
        "isolators": {"host/api-access": {"scope": "subtree"}},
        "restart": "never",
    }
}  # fmt: skip

# A pod started at boot on the initrd's default network, the bridge kurma0 (initrd/kurma.yml),
# serving a marker over HTTP on port 8000 of its own address (busybox httpd).
WEB_MARK = "kurma-web-on-the-bridge"
WEB_SERVICE = {
    "web": {
        "image": "kurma.io/busybox",
        "exec": ["/bin/sh", "-c", f"mkdir -p /srv && echo {WEB_MARK} > /srv/index.html && "
                 "exec httpd -f -p 8000 -h /srv"],
        "isolators": {"os/linux/networks": [{"name": "kurma0"}]},
    }
}  # fmt: skip
BRIDGE_ADDRESS = re.compile(r'"(169\.254\.200\.\d+)/24"')  # in `kurmactl inspect`


@pytest.fixture(scope="module")
def vm(built, tmp_path_factory) -> Iterator[Vm]:
    """One machine for the module: booted to its login prompt, then logged in as root."""
    work = tmp_path_factory.mktemp("vm")
    receiver = SyslogReceiver()
    child, m, log, seconds = boot(
        work,
        built,
        password=PASSWORD,
        syslog_port=receiver.port,
        extra_config={"services": {**NESTED_SERVICE, **WEB_SERVICE}},
    )
    try:
        child.sendline("root")
        child.expect("Password: ", timeout=60)
        child.sendline(PASSWORD)
        child.expect(r"# ", timeout=60)
        child.sendline(f"PS1='{PROMPT}'")
        child.expect_exact(PROMPT, timeout=30)
        yield Vm(child, m, receiver, log, seconds)
    finally:
        stop(child)
        receiver.close()


# --- tests ------------------------------------------------------------------------------------


def test_console_login_and_kurmactl_ps_lists_the_services_running(vm: Vm) -> None:
    """Logged in on ttyS0 with the OEM disk's password, `kurmactl ps` lists every system
    service's pod RUNNING."""

    def all_running() -> str | None:
        out = vm.sh("kurmactl ps")
        states = {
            line.split()[1]: line.split()[2].upper()
            for line in out.splitlines()[1:]
            if len(line.split()) > 2
        }
        return out if all(states.get(s) == "RUNNING" for s in SERVICES) else None

    out = wait_for(all_running, "the services to run", 180, every=3)
    for name in SERVICES:
        assert re.search(rf"\b{name}\s+running\b", out, re.IGNORECASE), out


def test_kurmactl_over_mtls_from_the_host_agrees(vm: Vm) -> None:
    """The host's kurmactl, with the development admin certificate through the forwarded
    port, sees the same services, and `service ls` says they run."""
    console = {
        line.split()[1]: line.split()[2].upper()
        for line in vm.sh("kurmactl ps").splitlines()[1:]
        if len(line.split()) > 2
    }
    cert, key, ca = vm.machine.client_credentials()
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "kurma.cli.main", "--host", vm.machine.api_target,
         "--cert", str(cert), "--key", str(key), "--ca", str(ca), "ps", "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pods = json.loads(r.stdout)
    from_host = {p["name"]: p["state"].upper().removeprefix("POD_STATE_") for p in pods}
    for name in SERVICES:
        assert from_host[name] == console[name] == "RUNNING"
    with contextlib.closing(vm.client()) as c:
        services = {s.name: s for s in c.services()}
    assert {n: services[n].state for n in SERVICES} == dict.fromkeys(SERVICES, "RUNNING")


def test_pod_logs_reach_the_syslog_receiver_on_the_host(vm: Vm) -> None:
    """A pod's output arrives at the host's receiver as RFC 5424 over TCP (guestfwd)."""
    mark = f"kurma-vm-mark-{time.monotonic_ns()}"
    vm.sh(f"kurmactl run -d --name logger kurma.io/busybox -- sh -c 'echo {mark}; sleep 600'")
    message = vm.syslog.wait_for(mark, timeout=60)
    assert re.match(r"<\d+>1 \S+ \S+ logger ", message), message


def test_kernel_log_reaches_the_receiver_too(vm: Vm) -> None:
    """The kernel's ring buffer (PID 1's own lines go there) is forwarded as `kernel`."""
    message = vm.syslog.wait_for(r"^<\d+>1 \S+ \S+ kernel .*kurma-init", timeout=60)
    assert "kurma-init" in message


def test_a_killed_service_is_restarted_with_backoff(vm: Vm) -> None:
    """Kill every process of the dhcp service (from inside its pod, as root there): the
    supervisor sees its pod end and starts a new one after a backoff, counting the restart;
    killed again soon after, it waits twice as long (1 s, then 2 s: dhcp's defaults)."""
    backoffs: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # BACKOFF lasts a second or two: poll the API all along
        with contextlib.closing(vm.client()) as c:
            while not stop.is_set():
                s = {s.name: s for s in c.services()}["dhcp"]
                if s.state == "BACKOFF" and (not backoffs or backoffs[-1] != s.message):
                    backoffs.append(s.message)
                time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    with contextlib.closing(vm.client()) as c:
        watcher.start()
        try:
            pods = []
            for kill in range(2):
                before = {s.name: s for s in c.services()}["dhcp"]
                assert before.state == "RUNNING"
                vm.sh("kurmactl exec dhcp -- kill -KILL -1")

                def restarted(before=before):
                    s = {s.name: s for s in c.services()}["dhcp"]
                    return s if s.restarts > before.restarts and s.state == "RUNNING" else None

                what = f"dhcp to be restarted (kill {kill + 1})"
                after = wait_for(restarted, what, 120.0, every=1.0)
                assert after.pod != before.pod
                pods.append(after)
        finally:
            stop.set()
            watcher.join(10)
    assert pods[1].restarts == pods[0].restarts + 1
    delays = [float(m) for m in re.findall(r"restarting in ([\d.]+) s", " ".join(backoffs))]
    assert delays == [1.0, 2.0], backoffs


def test_a_pod_with_subtree_access_started_at_boot_starts_a_child(vm: Vm) -> None:
    """The `nest` service (subtree scope, from the OEM config) runs kurmactl, whose pod
    becomes its child: the parent chain shows it."""
    with contextlib.closing(vm.client()) as c:

        def child_running():
            pods = {p.name: p for p in c.list_pods()}
            child, nest = pods.get("nest-child"), pods.get("nest")
            if child is None or nest is None or child.state != 2:  # RUNNING
                return None
            return child, nest

        child, nest = wait_for(child_running, "nest-child to run", 180, every=2)
    assert list(child.parents) == [nest.uuid]
    assert nest.api_access == "subtree"
    assert not child.api_access  # nothing granted that was not asked for


def test_the_boot_time_pod_on_the_bridge_answers_from_the_console(vm: Vm) -> None:
    """The initrd's network kurma0 is the default; the `web` pod started at boot has an
    address on it, and the console (the host's network) fetches its marker over the bridge;
    a `kurmactl run --net kurma0` pod gets an eth0 with an address of the bridge too."""
    networks = vm.sh("kurmactl network ls")
    row = next((r.split() for r in networks.splitlines() if r.startswith("kurma0 ")), None)
    assert row is not None, networks
    assert row[1:4] == ["bridge", "portmap", "yes"], networks

    def addressed() -> str | None:
        out = vm.sh("kurmactl inspect web")
        found = BRIDGE_ADDRESS.search(out)
        running = re.search(r'"state": "(POD_STATE_)?RUNNING"', out, re.IGNORECASE)
        return found.group(1) if found and running else None

    address = wait_for(addressed, "the web pod to run with an address", 180, every=3)
    assert address != "169.254.200.1"  # the bridge's own (gateway) address
    # (the console's static busybox wget crashes looking up the `http` service: python)
    url = f"http://{address}:8000/"
    page = vm.sh(f"python3 -c 'import urllib.request as u; print(u.urlopen(\"{url}\").read())'")
    assert WEB_MARK in page, page
    out = vm.sh("kurmactl run --rm --net kurma0 kurma.io/busybox -- ip -4 addr show eth0")
    assert re.search(r"inet 169\.254\.200\.\d+/24", out), out


def test_boot_log_is_served_and_every_step_ran(vm: Vm) -> None:
    """kurmactl host boot-log shows each boot step with its outcome; none failed."""
    with contextlib.closing(vm.client()) as c:
        log = c.boot_log()
    outcomes = {s.name: s.outcome for s in log.steps}
    assert list(outcomes)[:3] == ["signals_and_reaping", "leave_initramfs", "system_mounts"]
    assert "failed" not in outcomes.values(), outcomes
    assert outcomes["services"] == outcomes["console"] == "ok"


def test_poweroff_from_the_console_ends_qemu_within_10_s(vm: Vm) -> None:
    """`poweroff` at the prompt: services stop, the kernel powers off, qemu exits 0."""
    vm.child.sendline("poweroff")
    t0 = time.monotonic()
    vm.child.expect(pexpect.EOF, timeout=30)
    took = time.monotonic() - t0
    vm.child.close()
    assert vm.child.exitstatus == 0, vm.console_log.read_text()[-3000:]
    assert took < 10.0, f"poweroff took {took:.1f} s"


def test_a_malformed_boot_config_boots_with_defaults_and_says_why(built, tmp_path) -> None:
    """An OEM kurma.yml that is not YAML: the machine still boots to its login prompt with
    the defaults, and the console shows which file was wrong."""
    child, _m, log, _ = boot(tmp_path, built, oem_text="hostname: [unclosed\nconsole: {\n")
    try:
        child.logfile_read.flush()
        if "boot done" not in log.read_text():  # the network and services may end after it
            child.expect("boot done", timeout=120)
            child.logfile_read.flush()
        text = log.read_text()
        assert re.search(r"boot config: .*kurma\.yml", text), text[-3000:]
    finally:
        stop(child)
