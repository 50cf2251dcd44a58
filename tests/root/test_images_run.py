"""The built service images run as real pods under kurma's runtime.

busybox runs a shell; dhcp's udhcpc gets a lease from busybox udhcpd across a veth pair
between two network namespaces the test made (169.254.77.0/24) and configures address,
route and resolv.conf; console's getty autologs in on a pty the test holds and gives a
shell with KURMA_HOST; ntp's chronyd runs without CAP_SYS_TIME (never with it on the host:
the clock is not namespaced), once for its version and once with `-x` (no clock control)
to show that its config and privilege drop work.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import re
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kurma.aci import ImageManifest
from kurma.runtime._runtime import RuntimeConfig
from kurma.runtime.linux import CLONE_NEWNET, MNT_DETACH, MS_BIND, mount, setns, umount2
from kurma.runtime.metadata import MetadataConfig

from ..waiting import wait_for
from .runtime_support import PodEnv, make_env

# udhcpd's pool in the test's network: a lease is any address from the first to the last.
_POOL_START = ipaddress.IPv4Address("169.254.77.100")
_POOL_END = ipaddress.IPv4Address("169.254.77.150")

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"


def _load_build_images() -> ModuleType:
    sys.path.insert(0, str(BUILD))
    spec = importlib.util.spec_from_file_location("kurma_build_images", BUILD / "images.py")
    assert spec and spec.loader
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


images = _load_build_images()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """busybox, dhcp, ntp and a console: the real one when the python layer builds, else the
    console's spec with busybox as its only dependency (same scripts and app section)."""
    out = tmp_path_factory.mktemp("images")
    acis = images.build_images(out, ["busybox", "dhcp", "ntp"])
    specs = images.load_specs()
    console = replace(
        specs["console"],
        name="kurma.io/console-test",
        dependencies=("kurma.io/busybox",),
    )
    index = json.loads((out / "index.json").read_text())
    pins = {"kurma.io/busybox": index["busybox"]["id"]}
    acis["console"], _ = images.build_one(console, out, pins)
    return acis


@pytest.fixture
def pods(built: dict[str, Path]) -> Iterator[PodEnv]:
    yield from make_env(built["busybox"])


def _import(pods: PodEnv, aci: Path) -> tuple[str, dict[str, Any]]:
    """Import an ACI; its image ID and its manifest's app section (JSON)."""
    record = pods.runtime.store.import_image(aci).record
    manifest = ImageManifest.from_json(record.manifest.to_bytes())
    assert manifest.app is not None
    return record.image_id, manifest.app.to_json()


def _app(image_app: dict[str, Any], name: str, image: str, **changes: Any) -> dict[str, Any]:
    """A PodEnv app: the image's own app section with `environment` entries and other
    fields replaced (appc: a runtime app's `app` replaces the image's as a whole)."""
    app = dict(image_app)
    env = {e["name"]: e["value"] for e in app.get("environment", [])}
    env.update(changes.pop("env", {}))
    app["environment"] = [{"name": k, "value": v} for k, v in env.items()]
    app.update(changes)
    return {"name": name, "image": image, **app}


# --- busybox -----------------------------------------------------------------------------------


def test_busybox_runs_a_shell(pods: PodEnv, built: dict[str, Path]) -> None:
    """The base image alone runs `sh -c` with its applets."""
    image_id, _ = _import(pods, built["busybox"])
    record = pods.run({"name": "sh", "image": image_id, "exec": ["/bin/sh", "-c",
                       "echo ok; id -un; ls /bin/sh"]})  # fmt: skip
    assert record.apps[0].exit_code == 0
    assert pods.log(record, "sh").split() == ["ok", "root", "/bin/sh"]


# --- dhcp --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _dhcp_network(work: Path) -> Iterator[tuple[str, str]]:
    """Two named network namespaces joined by a veth pair, udhcpd serving on the server side.

    Yields (client netns name, client interface). Everything is removed afterwards.
    """
    tag = uuid.uuid4().hex[:6]
    client, server = f"kt-dhcpc-{tag}", f"kt-dhcps-{tag}"
    udhcpd = None
    subprocess.run(["ip", "netns", "add", client], check=True)
    try:
        subprocess.run(["ip", "netns", "add", server], check=True)
        subprocess.run(["ip", "link", "add", "vc", "netns", client, "type", "veth",
                        "peer", "name", "vs", "netns", server], check=True)  # fmt: skip
        for cmd in ("link set lo up", "addr add 169.254.77.1/24 dev vs", "link set vs up"):
            subprocess.run(["ip", "-n", server, *cmd.split()], check=True)
        subprocess.run(["ip", "-n", client, "link", "set", "lo", "up"], check=True)
        conf = work / "udhcpd.conf"
        conf.write_text(
            f"start {_POOL_START}\nend {_POOL_END}\ninterface vs\n"
            f"lease_file {work}/leases\npidfile {work}/udhcpd.pid\n"
            "option subnet 255.255.255.0\noption router 169.254.77.1\n"
            "option dns 169.254.77.53\noption domain kurma.test\noption lease 120\n"
        )
        (work / "leases").touch()
        udhcpd = subprocess.Popen(
            ["ip", "netns", "exec", server, "busybox", "udhcpd", "-f", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        yield client, "vc"
    finally:
        if udhcpd is not None:
            udhcpd.kill()
            udhcpd.wait()
        subprocess.run(["ip", "netns", "del", server], check=False)
        subprocess.run(["ip", "netns", "del", client], check=False)


@contextlib.contextmanager
def _runtime_in_netns(busybox_aci: Path, netns: str) -> Iterator[PodEnv]:
    """A runtime living in `netns`: its `{"net": "host"}` pods are there.

    This thread stays in `netns` (the runtime takes the caller's namespace as the host's)
    until the runtime is torn down, then returns to its own.
    """
    config = RuntimeConfig(stop_grace=2.0, metadata_config=MetadataConfig(host_port=0))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(f"/run/netns/{netns}", CLONE_NEWNET)
        try:
            yield from _once(make_env(busybox_aci, config))
        finally:
            setns(home, CLONE_NEWNET)
    finally:
        os.close(home)


def _once(gen: Iterator[PodEnv]) -> Iterator[PodEnv]:
    """Run a fixture-style generator (setup, one value, teardown) inside a context manager."""
    env = next(gen)
    try:
        yield env
    finally:  # teardown even when the test failed
        with contextlib.suppress(StopIteration):
            next(gen)


def test_dhcp_gets_a_lease_and_configures_address_route_and_resolv(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """udhcpc in the image's host-network pod (here: a namespace the test made) gets an
    address from udhcpd; the hook sets it, the default route and resolv.conf."""
    resolv = tmp_path / "resolv"
    resolv.mkdir()
    with _dhcp_network(tmp_path) as (netns, iface), _runtime_in_netns(
        built["busybox"], netns
    ) as pods:
        image_id, image_app = _import(pods, built["dhcp"])
        _import(pods, built["busybox"])
        app = _app(image_app, "dhcp", image_id, env={"DHCP_INTERFACES": iface})
        app["mounts"] = [{"volume": "resolv", "path": "/run/resolv"}]
        manifest = pods.manifest(
            app, volumes=[{"name": "resolv", "kind": "host", "source": str(resolv)}]
        )
        record = pods.runtime.create_pod(manifest)
        pods.runtime.start_pod(record.uuid)
        conf = resolv / "resolv.conf"
        wait_for(conf.exists, "resolv.conf from DHCP", 20)
        lines = conf.read_text().splitlines()
        assert lines[1:] == ["search kurma.test", "nameserver 169.254.77.53"]
        addr = subprocess.run(["ip", "-n", netns, "-4", "-o", "addr", "show", "dev", iface],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        leased = re.search(r"inet (169\.254\.77\.\d+)/24", addr)
        assert leased is not None, addr
        assert _POOL_START <= ipaddress.IPv4Address(leased[1]) <= _POOL_END, addr
        route = subprocess.run(["ip", "-n", netns, "route", "show", "default"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "default via 169.254.77.1 dev vc" in route
        log = pods.log(record, "dhcp")
        assert f"dhcp[vc]: bound {leased[1]}/24 via 169.254.77.1" in log, log


# --- console -----------------------------------------------------------------------------------


def _read_until(
    fd: int, pattern: bytes, timeout: float = 20, log: Callable[[], str] = str, had: bytes = b""
) -> bytes:
    """Read the pty master until `pattern` appears (in `had` + what was read); returns what
    was read. AssertionError with what came otherwise."""
    deadline = time.monotonic() + timeout
    seen = b""
    while pattern not in had + seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"no {pattern!r} on the console; got {seen[-500:]!r}; pod log: {log()!r}"
            )
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # EIO: no one holds the other side for a moment (getty restarts)
                time.sleep(0.05)
    return seen


@dataclass
class _Tty:
    """The test's side of the console's tty; failures show what came and the pod's log."""

    fd: int
    log: Callable[[], str]
    pending: bytes = b""  # read past the last match

    def expect(self, pattern: bytes, timeout: float = 20) -> bytes:
        """Everything up to and including `pattern`; the rest stays for the next call."""
        if pattern not in self.pending:
            self.pending += _read_until(self.fd, pattern, timeout, self.log, self.pending)
        head, _, self.pending = self.pending.partition(pattern)
        return head + pattern

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)


@contextlib.contextmanager
def _console(
    pods: PodEnv, built: dict[str, Path], auth: Path, **env: str
) -> Iterator[_Tty]:
    """The console image's own app on a pty the test holds; yields the pty's master.

    The pty reaches the pod as the real console's tty does, through `os/linux/devices`: a
    name for it in the host's /dev (an empty file with the pty bound over it: a node of
    its own would reach only the first devpts instance's ptys), made for the test and
    removed after. A device node in a host volume would not open: volumes are nodev. The
    api-access isolator is left out: there is no kurmad.
    """
    image_id, image_app = _import(pods, built["console"])
    master, slave = os.openpty()
    node = f"/dev/kurma-test-tty-{uuid.uuid4().hex[:8]}"
    bound = False
    try:
        os.close(os.open(node, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        mount(os.ttyname(slave), node, None, MS_BIND)
        bound = True
        isolators = [i for i in image_app["isolators"]
                     if i["name"] not in ("os/linux/devices", "host/api-access")]  # fmt: skip
        isolators.append({"name": "os/linux/devices", "value": [node]})
        app = _app(image_app, "console", image_id, isolators=isolators,
                   env={"CONSOLE_TTYS": node, **env})  # fmt: skip
        app["mounts"] = [{"volume": "auth", "path": "/run/console-auth"}]
        manifest = pods.manifest(app, volumes=[
            {"name": "auth", "kind": "host", "source": str(auth), "readOnly": True},
        ])  # fmt: skip
        record = pods.runtime.create_pod(manifest)
        pods.runtime.start_pod(record.uuid)
        os.close(slave)
        slave = -1
        yield _Tty(master, lambda: pods.log(record, "console"))
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
        if bound:
            umount2(node, MNT_DETACH)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(node)


def test_console_autologin_gives_a_root_shell_with_kurma_host(
    pods: PodEnv, built: dict[str, Path], tmp_path: Path
) -> None:
    """With `autologin` in the auth volume, getty logs root in on the tty: a shell prompt,
    and the login shell has KURMA_HOST (written by the console's script for /etc/profile)."""
    (tmp_path / "autologin").touch()
    with _console(pods, built, tmp_path, KURMA_HOST="unix:///run/kurma/test.sock") as tty:
        tty.expect(b"# ")
        tty.send(b"echo KURMA_HOST=$KURMA_HOST; echo sum=$((6*7))\n")
        out = tty.expect(b"sum=42")
    assert b"KURMA_HOST=unix:///run/kurma/test.sock" in out


def test_console_login_takes_roots_password_from_the_auth_volume(
    pods: PodEnv, built: dict[str, Path], tmp_path: Path
) -> None:
    """With `shadow` in the auth volume, login asks for the password: a wrong one is
    refused, the right one gives root's shell."""
    hashed = subprocess.run(["busybox", "mkpasswd", "-m", "sha512", "s3cret"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / "shadow").write_text(f"root:{hashed}:19000:0:99999:7:::\n")
    with _console(pods, built, tmp_path) as tty:
        tty.expect(b"login: ")
        tty.send(b"root\n")
        tty.expect(b"Password: ")
        tty.send(b"wrong\n")
        tty.expect(b"Login incorrect", timeout=30)
        tty.expect(b"login: ")
        tty.send(b"root\n")
        tty.expect(b"Password: ")
        tty.send(b"s3cret\n")
        tty.expect(b"# ")
        tty.send(b"echo me=$(id -un)\n")
        tty.expect(b"me=root")


# --- ntp ---------------------------------------------------------------------------------------

NO_CLOCK = [  # never CAP_SYS_TIME on the host
    {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_SETUID", "CAP_SETGID"]}}
]


def test_ntp_chronyd_runs_without_cap_sys_time(pods: PodEnv, built: dict[str, Path]) -> None:
    """`chronyd -v` runs from the image: its libraries are all there."""
    image_id, _ = _import(pods, built["ntp"])
    _import(pods, built["busybox"])
    record = pods.run({"name": "ntp", "image": image_id, "exec": ["/usr/sbin/chronyd", "-v"],
                       "isolators": NO_CLOCK})  # fmt: skip
    assert record.apps[0].exit_code == 0, pods.log(record, "ntp")
    assert re.search(r"chronyd \(chrony\) version 4\.\d", pods.log(record, "ntp"))


def test_ntp_run_script_starts_chronyd_as_its_user_without_clock_control(
    pods: PodEnv, built: dict[str, Path]
) -> None:
    """The image's own app with `-x` (chronyd never touches the clock) and no CAP_SYS_TIME,
    in the pod's own network namespace: the config is accepted, chronyd drops to _chrony
    and keeps running."""
    image_id, image_app = _import(pods, built["ntp"])
    _import(pods, built["busybox"])
    app = _app(image_app, "ntp", image_id, isolators=NO_CLOCK,
               env={"NTP_SERVERS": "169.254.77.1,169.254.77.2", "NTP_ARGS": "-x"})  # fmt: skip
    record = pods.runtime.create_pod(pods.manifest(app))
    pods.runtime.start_pod(record.uuid)
    wait_for(lambda: "chronyd version" in pods.log(record, "ntp"), "chronyd's start line")
    time.sleep(1.0)
    log = pods.log(record, "ntp")
    assert "Disabled control of system clock" in log, log
    assert "Fatal" not in log, log
    ps = subprocess.run(["ps", "-o", "uid=,args=", "-C", "chronyd"], capture_output=True,
                        text=True).stdout  # fmt: skip
    assert re.search(r"^\s*100\s+/usr/sbin/chronyd -d -u _chrony", ps, re.M), ps  # _chrony


# --- console with the python layer -------------------------------------------------------------


@pytest.fixture(scope="module")
def full_console(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real console image and its layers (busybox, python); skipped, with the reason,
    while build/pyruntime.py cannot build the python layer."""
    out = tmp_path_factory.mktemp("console")
    result = images.build_all(out, ["console"])
    if "console" not in result.built:
        pytest.skip(f"console image not built: {result.skipped.get('console')}")
    return result.built


def test_console_image_has_kurmactl_and_python_over_busybox(
    pods: PodEnv, full_console: dict[str, Path]
) -> None:
    """Rendered from busybox + python + console: busybox's shell, the python runtime with
    kurma, kurmactl on PATH, poweroff going to kurmactl in login shells."""
    for key in ("busybox", "python"):  # layers
        pods.runtime.store.import_image(full_console[key])
    image_id, _ = _import(pods, full_console["console"])
    script = (
        "kurmactl --help >/dev/null && echo kurmactl-ok; "
        "python3 -c 'import kurma; print(\"kurma\", kurma.__version__)'; "
        ". /etc/profile; type poweroff | head -n1; readlink /bin/sh"
    )
    record = pods.run({"name": "c", "image": image_id, "exec": ["/bin/sh", "-c", script]})
    log = pods.log(record, "c")
    assert record.apps[0].exit_code == 0, log
    from kurma import __version__

    assert log.splitlines() == ["kurmactl-ok", f"kurma {__version__}",
                                "poweroff is a function", "/bin/busybox"]  # fmt: skip
