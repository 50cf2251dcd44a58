"""An operator certificate is not host root (issue "Hardening", item 2), and TLS says why.

The probe this answers: over mutual TLS an `operator` created a pod with `os/linux/privileged`
and the host's `/` mounted read-write, then exec'd into it. Every test here attacks a real
kurmad (tests/root/test_kurmad's Daemon) over its real TCP listener with certificates of a
real PKI (kurma.api._pki), one attack per test, and checks the refusal names the field; the
pods a test creates are destroyed after it through the system socket, refused or not.

The daemon's kurmad.yml opens one host directory to operators (`operator_host_volumes`):
`<work>/srv/ok`, beside `<work>/srv/okay` (a prefix trick) and with a symlink inside it that
leads out (`<work>/srv/ok/escape -> /etc`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import DEFAULT_CAPABILITIES, build_aci
from kurma.aci._manifest_isolator_types import CAPABILITIES
from kurma.api._pki import CertPaths, init_ca, issue_client, issue_server
from kurma.api.v1 import pods_pb2
from kurma.client import (
    Client,
    ClientError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from kurma.runtime.linux import Capability, read_status_capabilities
from kurma.services import parse_services, write_services_file
from tests.root.runtime_support import busybox_rootfs, image_manifest
from tests.root.test_kurmad import REPO, Daemon, daemon_with_image, make_daemon
from tests.root.test_services import sh, wait_state
from tests.security.test_tenant import FLIPPER
from tests.waiting import wait_for

pytestmark = [pytest.mark.timeout(240)]

KURMACTL = [sys.executable, "-m", "kurma.cli.main"]
SLEEP = ["/bin/sleep", "1000"]


# --- the PKI, the daemon and the callers -------------------------------------------------------


@dataclass
class Site:
    """One kurmad with a TCP listener, its PKI, and the host directories of the tests."""

    daemon: Daemon
    image_id: str
    port: int
    ca: Path
    certs: dict[str, CertPaths]  # admin, operator, reader, and rogue (another CA's admin)
    rogue_ca: Path
    srv: Path  # <work>/srv: ok/ (operators' prefix), okay/, ok/escape -> /etc
    services: Path  # kurmad's services file (none until a test writes it)

    @property
    def target(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def client(self, who: str, ca: Path | None = None, timeout: float = 20) -> Client:
        paths = self.certs[who]
        return Client.connect(
            self.target,
            cert=str(paths.cert),
            key=str(paths.key),
            ca=str(ca or self.ca),
            timeout=timeout,
        )


def write_services(site: Site, **services: dict[str, Any]) -> None:
    """Replace the daemon's system services (its supervisor reconciles within a second)."""
    loaded = parse_services({"services": services})
    assert not loaded.problems, loaded.problems
    write_services_file(site.services, loaded)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki(base: Path) -> tuple[CertPaths, dict[str, CertPaths], Path]:
    """A CA with kurmad's server certificate and one client per role, and a rogue CA with
    an admin client: (server, clients, rogue CA directory)."""
    init_ca(base / "ca")
    init_ca(base / "rogue-ca")
    server = issue_server(base / "ca", base / "server", ["localhost"], ["127.0.0.1"], 1)
    certs = {
        role: issue_client(base / "ca", base / "clients", f"{role}-1", role, 1)
        for role in ("admin", "operator", "reader")
    }
    certs["rogue"] = issue_client(base / "rogue-ca", base / "rogue", "mallory", "admin", 1)
    return server, certs, base / "rogue-ca"


@pytest.fixture(scope="module")
def site(busybox_aci: Path) -> Iterator[Site]:
    work = Path(tempfile.mkdtemp(prefix="kurma-op-", dir="/tmp"))
    try:
        server, certs, rogue = make_pki(work / "pki")
        srv = work / "srv"
        (srv / "ok" / "sub").mkdir(parents=True)
        (srv / "okay").mkdir()
        os.symlink("/etc", srv / "ok" / "escape")
        port = free_port()
        config = work / "kurmad.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "listen": f"127.0.0.1:{port}",
                    "tls_cert": str(server.cert),
                    "tls_key": str(server.key),
                    "tls_ca": str(server.ca),
                    "operator_host_volumes": [str(srv / "ok")],
                    "services_file": str(work / "services.yml"),  # see write_services
                }
            )
        )
        for daemon, image_id in daemon_with_image(busybox_aci, "--config", str(config)):
            yield Site(daemon, image_id, port, server.ca, certs, rogue, srv, work / "services.yml")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def host(site: Site) -> Iterator[Client]:
    """The system socket (root on the host); every pod a test leaves is destroyed after it."""
    assert site.daemon.alive(), site.daemon.log()
    with site.daemon.client() as client:
        before = {p.uuid for p in client.list_pods()}
        try:
            yield client
        finally:
            for pod in client.list_pods():
                if pod.uuid not in before:
                    with contextlib.suppress(NotFound):  # a child, gone with its parent
                        client.destroy(pod.uuid, grace=1)


@pytest.fixture
def operator(site: Site, host: Client) -> Iterator[Client]:
    with site.client("operator") as client:
        yield client


@pytest.fixture
def reader(site: Site, host: Client) -> Iterator[Client]:
    with site.client("reader") as client:
        yield client


@pytest.fixture
def admin(site: Site, host: Client) -> Iterator[Client]:
    with site.client("admin") as client:
        yield client


def manifest(
    image_id: str,
    *,
    isolators: list[dict[str, Any]] = (),  # type: ignore[assignment]
    app_isolators: list[dict[str, Any]] = (),  # type: ignore[assignment]
    volumes: list[tuple[str, str, bool]] = (),  # type: ignore[assignment]
    argv: list[str] = SLEEP,  # type: ignore[assignment]
) -> bytes:
    """A pod of one busybox app; `volumes` are host volumes (name, source, readOnly)
    mounted at /mnt/<name>."""
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "app",
                "image": {"id": image_id},
                "app": {
                    "exec": argv,
                    "user": "0",
                    "group": "0",
                    "isolators": list(app_isolators),
                },
                "mounts": [{"volume": n, "path": f"/mnt/{n}"} for n, _, _ in volumes],
            }
        ],
        "volumes": [
            {"name": n, "kind": "host", "source": s, "readOnly": ro} for n, s, ro in volumes
        ],
        "isolators": list(isolators),
    }
    return json.dumps(doc).encode()


def run(client: Client, pod: str, argv: list[str]) -> tuple[int | None, bytes]:
    """Exec `argv` in `pod`: (exit code, stdout and stderr)."""
    proc = client.exec(pod, argv)
    proc.close_stdin()
    out = b"".join(data for _, data in proc.output())
    return proc.exit_code, out


def assert_none_named(host: Client, name: str) -> None:
    assert not [p for p in host.list_pods() if p.name == name], f"pod {name} exists"


def kurmactl_as(site: Site, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kurmactl over the TCP listener with `who`'s certificate."""
    paths = site.certs[who]
    flags = ["--host", site.target, "--cert", str(paths.cert), "--key", str(paths.key)]
    return subprocess.run(
        [*KURMACTL, *flags, "--ca", str(site.ca), *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_probe_is_refused(site: Site, host: Client) -> None:
    """The probe as it was run: `kurmactl run` over mTLS with an operator certificate, a
    privileged pod with the host's `/` mounted read-write. kurmactl fails naming the
    volume (the first thing checked), and no pod exists."""
    done = kurmactl_as(
        site, "operator", "run", "-d", "--name", "probe", "--isolator",
        "os/linux/privileged=true", "-v", "/:/host", "example.com/busybox", "--",
        "/bin/cat", "/host/etc/shadow",
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "host source / is not inside" in done.stderr, done.stderr
    assert_none_named(host, "probe")


def test_the_probe_without_its_volume_is_refused_for_privileged(site: Site, host: Client) -> None:
    """The probe's other half alone: `kurmactl run --isolator os/linux/privileged=true`."""
    done = kurmactl_as(
        site, "operator", "run", "-d", "--name", "probe-priv", "--isolator",
        "os/linux/privileged=true", "example.com/busybox", "--", "/bin/sleep", "1000",
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "os/linux/privileged" in done.stderr, done.stderr
    assert_none_named(host, "probe-priv")


# --- the operator policy: what a pod may hold ---------------------------------------------------

NS = "os/linux/namespaces"
EXTRA_CAPS = sorted(set(CAPABILITIES) - set(DEFAULT_CAPABILITIES))
ATTACKS: dict[str, tuple[dict[str, Any], str]] = {  # manifest fields, what the refusal names
    "privileged": ({"isolators": [{"name": "os/linux/privileged", "value": True}]},
                   "os/linux/privileged"),
    "host-net": ({"isolators": [{"name": NS, "value": {"net": "host"}}]}, "net namespace"),
    "host-ipc": ({"isolators": [{"name": NS, "value": {"ipc": "host"}}]}, "ipc namespace"),
    "host-uts": ({"isolators": [{"name": NS, "value": {"uts": "host"}}]}, "uts namespace"),
    "host-pid": ({"isolators": [{"name": NS, "value": {"pid": "host"}}]}, "pid namespace"),
    "devices": ({"isolators": [{"name": "os/linux/devices", "value": ["/dev/kmsg"]}]},
                "os/linux/devices /dev/kmsg"),
    "seccomp-off": ({"app_isolators": [{"name": "os/linux/seccomp-retain-set",
                                        "value": {"set": ["@appc.io/all"]}}]}, "seccomp off"),
    "seccomp-retain-loosened": ({"app_isolators": [
        {"name": "os/linux/seccomp-retain-set",
         "value": {"set": ["read", "write", "exit_group", "mount", "kexec_load"]}}]},
        "seccomp looser"),
    "seccomp-remove-loosened": ({"app_isolators": [
        {"name": "os/linux/seccomp-remove-set", "value": {"set": ["kill"]}}]}, "seccomp looser"),
    "oom-score-adj": ({"app_isolators": [{"name": "os/linux/oom-score-adj", "value": -1000}]},
                      "oom-score-adj -1000"),
    "api-host-read": ({"isolators": [{"name": "host/api-access",
                                      "value": {"scope": "host-read"}}]}, "scope host-read"),
    "api-host": ({"isolators": [{"name": "host/api-access", "value": {"scope": "host"}}]},
                 "scope host"),
}  # fmt: skip


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_operator_cannot_create_a_pod_that_reaches_the_host(
    site: Site, operator: Client, host: Client, attack: str
) -> None:
    """An operator's Create of a pod holding privileged, a host namespace, a host device,
    seccomp off or loosened (retain-set allowing what the default blocks, remove-set
    blocking less), a negative oom-score-adj or host-read/host api-access is refused with
    PERMISSION_DENIED naming the field; no pod is left."""
    fields, says = ATTACKS[attack]
    name = f"op-{attack}"
    refusals: tuple[type[Exception], ...] = (PermissionDenied,)
    if attack == "oom-score-adj" and not _holds_capability(24):  # CAP_SYS_RESOURCE
        # A kurmad without CAP_SYS_RESOURCE (these hosts) cannot enforce a score below its
        # own for anyone: that refusal (INVALID_ARGUMENT) comes before the caller is judged.
        refusals, says = (PermissionDenied, InvalidArgument), "oom-score-adj"
    with pytest.raises(refusals, match=says):
        operator.create_pod(manifest_json=manifest(site.image_id, **fields), name=name)
    assert_none_named(host, name)


def _holds_capability(number: int) -> bool:
    """Whether this process (and so the kurmad it starts) has capability `number` in its
    bounding set (CAP_SYS_RESOURCE is not, on these hosts)."""
    return Capability(number) in read_status_capabilities()["CapBnd"]


@pytest.mark.parametrize("cap", EXTRA_CAPS)
def test_operator_cannot_add_a_capability_beyond_the_default_set(
    site: Site, operator: Client, host: Client, cap: str
) -> None:
    """Each capability outside the default bounding set, asked for with a retain-set, is
    refused for an operator (PERMISSION_DENIED naming it)."""
    retain = {"name": "os/linux/capabilities-retain-set", "value": {"set": [cap]}}
    name = f"op-{cap.lower().replace('_', '-')}"
    refusals: tuple[type[Exception], ...] = (PermissionDenied,)
    if not _holds_capability(int(Capability[cap])):
        # kurmad cannot grant what it does not hold: refused as unenforceable, for anyone.
        refusals = (PermissionDenied, InvalidArgument)
    with pytest.raises(refusals, match=cap):
        operator.create_pod(
            manifest_json=manifest(site.image_id, app_isolators=[retain]), name=name
        )
    assert_none_named(host, name)


def test_operator_may_keep_the_default_capabilities(site: Site, operator: Client) -> None:
    """The default set itself, and less of it, is within the policy."""
    retain = {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_CHOWN"]}}
    pod = operator.create_pod(manifest_json=manifest(site.image_id, app_isolators=[retain]))
    assert pod.uuid


def test_operator_cannot_get_privileged_through_the_image(
    site: Site, operator: Client, host: Client, tmp_path: Path
) -> None:
    """An image whose own manifest declares os/linux/privileged, imported by the operator
    (allowed) and run without a word about isolators in the pod: refused all the same, as
    the policy judges the planned pod, not the request."""
    app = {"exec": SLEEP, "user": "0", "group": "0",
           "isolators": [{"name": "os/linux/privileged", "value": True}]}  # fmt: skip
    aci = tmp_path / "evil.aci"
    build_aci(busybox_rootfs(tmp_path / "rootfs"), image_manifest("example.com/evil", app), aci)
    image = operator.import_image(aci).image
    try:
        doc = json.loads(manifest(image.id))
        del doc["apps"][0]["app"]
        with pytest.raises(PermissionDenied, match="privileged"):
            operator.create_pod(manifest_json=json.dumps(doc).encode(), name="op-evil")
        assert_none_named(host, "op-evil")
    finally:
        host.delete_image(image.id)


def test_operator_cannot_take_over_a_system_services_image_name(
    site: Site, operator: Client, host: Client, tmp_path: Path
) -> None:
    """A service finds its image by name, highest version first: an operator's import of
    a newer version of the image a system service runs (here `example.com/busybox`, and
    any `kurma.io/` name) would become that service at its next restart, with the service's
    host api-access. Refused (PERMISSION_DENIED), and the store is unchanged."""
    write_services(site, console=sh("exec sleep 1000"))
    try:
        wait_state(host, "console", "RUNNING")
        before = {i.id for i in host.list_images()}
        rootfs = busybox_rootfs(tmp_path / "rootfs")
        for name in ("example.com/busybox", "kurma.io/console"):
            aci = tmp_path / f"{name.replace('/', '_')}.aci"
            app = {"exec": SLEEP, "user": "0", "group": "0"}
            manifest_ = image_manifest(name, app, version="99")
            build_aci(rootfs, manifest_, aci)
            with pytest.raises(PermissionDenied, match=f"image name {name}"):
                operator.import_image(aci)
        assert {i.id for i in host.list_images()} == before
    finally:
        write_services(site)
        wait_for(lambda: not host.services(), "the console service to go", 20)


SYSCTLS = {  # sysctls that would change the host (with the host namespace they need)
    "kernel": [{"name": "os/unix/sysctl", "value": {"kernel.domainname": "x"}}],
    "net-with-host-net": [{"name": "os/unix/sysctl", "value": {"net.ipv4.ip_forward": "1"}},
                          {"name": NS, "value": {"net": "host"}}],
    "ipc-with-host-ipc": [{"name": "os/unix/sysctl", "value": {"kernel.shmmax": "1"}},
                          {"name": NS, "value": {"ipc": "host"}}],
}  # fmt: skip


@pytest.mark.parametrize("case", list(SYSCTLS))
def test_operator_cannot_set_a_sysctl_of_the_host(
    site: Site, operator: Client, host: Client, case: str
) -> None:
    """A sysctl outside the pod's own namespaces is refused, naming the sysctl or the host
    namespace it would need (neither is open to an operator; the first to nobody)."""
    name = f"op-sysctl-{case}"
    doc = manifest(site.image_id, isolators=SYSCTLS[case])
    with pytest.raises((PermissionDenied, InvalidArgument), match=r"sysctl|namespace"):
        operator.create_pod(manifest_json=doc, name=name)
    assert_none_named(host, name)


# --- host volumes: only under operator_host_volumes --------------------------------------------


VOLUME_ATTACKS = {  # host volume sources (readOnly or not) an operator may not mount
    "root": ("/", False),
    "etc-read-only": ("/etc", True),
    "dotdot": ("{srv}/ok/../..", False),
    "dotdot-inside": ("{srv}/ok/sub/../../okay", False),
    "sibling-prefix": ("{srv}/okay", False),
    "parent": ("{srv}", False),
    "symlink-out": ("{srv}/ok/escape", True),
    "below-symlink-out": ("{srv}/ok/escape/ssl", True),
}


@pytest.mark.parametrize("attack", list(VOLUME_ATTACKS))
def test_operator_cannot_mount_a_host_path_outside_the_allowed_prefixes(
    site: Site, operator: Client, host: Client, attack: str
) -> None:
    """A host volume whose source, `..` collapsed and symlinks followed, is not inside one
    of kurmad.yml's operator_host_volumes (`<srv>/ok`) is refused, read-only or not
    (PERMISSION_DENIED naming the volume): `/`, `/etc`, `<srv>/ok/../..`, `<srv>/okay` (a
    longer name, not a path below), and `<srv>/ok/escape`, a symlink to /etc under the
    prefix."""
    template, read_only = VOLUME_ATTACKS[attack]
    name = f"op-vol-{attack}"
    doc = manifest(site.image_id, volumes=[("host", template.format(srv=site.srv), read_only)])
    with pytest.raises(PermissionDenied, match="volume 'host'"):
        operator.create_pod(manifest_json=doc, name=name)
    assert_none_named(host, name)


def test_operator_host_volume_inside_the_allowed_prefix_works(site: Site, operator: Client) -> None:
    """kurmad.yml's operator_host_volumes opens its directories: an operator's pod mounts
    `<srv>/ok/sub` read-write (named through `..` and `.`), writes there, and the host sees
    the file; the pod's manifest records the resolved path."""
    sub = site.srv / "ok" / "sub"
    doc = manifest(
        site.image_id,
        volumes=[("data", f"{site.srv}/ok/./sub/../sub", False)],
        argv=["/bin/sh", "-c", "echo written > /mnt/data/by-operator && exec sleep 1000"],
    )
    pod = operator.create_pod(manifest_json=doc, name="op-vol-ok", start=True)
    try:
        recorded = {v["source"] for v in json.loads(pod.manifest_json)["volumes"]}
        assert recorded == {str(sub)}
        code, out = run(operator, pod.uuid, ["/bin/cat", "/mnt/data/by-operator"])
        assert (code, out) == (0, b"written\n")
        assert (sub / "by-operator").read_text() == "written\n"
    finally:
        with contextlib.suppress(FileNotFoundError):
            (sub / "by-operator").unlink()


def test_operator_cannot_start_through_a_directory_swapped_for_a_symlink(
    site: Site, operator: Client, host: Client
) -> None:
    """Created with `<srv>/ok/swap/data` (a real directory then), the pod's directory
    `swap` is replaced by a symlink to / before the operator starts it (as another of its
    pods with `<srv>/ok` mounted could do): the Start is refused, naming the volume that
    leads outside the prefix now, and the pod does not run."""
    swap = site.srv / "ok" / "swap"
    (swap / "data").mkdir(parents=True)
    try:
        doc = manifest(site.image_id, volumes=[("data", f"{swap}/data", False)])
        pod = operator.create_pod(manifest_json=doc, name="op-swap")
        shutil.rmtree(swap)
        os.symlink("/", swap)
        with pytest.raises(
            PermissionDenied, match=r"volume 'data': host source .*/swap/data is not inside"
        ):
            operator.start(pod.uuid)
        assert host.get(pod.uuid).state != pods_pb2.POD_STATE_RUNNING
    finally:
        if swap.is_symlink():
            swap.unlink()
        shutil.rmtree(swap, ignore_errors=True)


def test_operator_volume_raced_while_pods_start_never_mounts_outside(
    site: Site, operator: Client, host: Client, tmp_path: Path
) -> None:
    """A flipper exchanges `<srv>/ok/race` between a real directory and a symlink to a
    directory outside the prefix (as another of the operator's pods with `<srv>/ok` mounted
    could), flat out, while the operator creates and starts 20 pods with the source
    `<srv>/ok/race/data`. The Start's check and the mount are two moments: the mount
    resolves the path below the prefix through descriptors (openat2 RESOLVE_BENEATH), never
    the string the check saw. Every pod is refused at create or start, or fails to mount,
    or reads the inside marker: none ever reads the outside one."""
    race, swap = site.srv / "ok" / "race", site.srv / "ok" / "race-swap"
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "marker").write_text("outside\n")
    (race / "data").mkdir(parents=True)
    (race / "data" / "marker").write_text("inside\n")
    os.symlink(str(outside), swap)
    argv = ["/bin/cat", "/mnt/data/marker"]
    doc = manifest(site.image_id, volumes=[("data", f"{race}/data", True)], argv=argv)
    flipper = subprocess.Popen(
        [sys.executable, "-c", FLIPPER, str(race), str(swap)], stdout=subprocess.PIPE, text=True
    )
    seen: dict[str, int] = {"inside": 0, "outside": 0, "refused": 0}
    names = [f"op-race-{i}" for i in range(20)]
    try:
        assert flipper.stdout is not None and flipper.stdout.readline() == "flipping\n"
        for name in names:
            try:
                pod = operator.create_pod(manifest_json=doc, name=name, start=True)
            except ClientError as e:  # refused at create or start, or the mount failed
                assert not isinstance(e, Unavailable), e
                seen["refused"] += 1
                continue
            operator.wait(pod.uuid, timeout=30)
            out = b"".join(c.data for c in operator.logs(pod.uuid, "app"))
            seen["outside" if b"outside" in out else "inside" if out else "refused"] += 1
        assert flipper.poll() is None, f"the flipper stopped: {flipper.returncode}"
    finally:
        flipper.kill()
        flipper.wait()
        for name in names:
            with contextlib.suppress(NotFound):
                host.destroy(name)
        for path in (race, swap):
            if path.is_symlink():
                path.unlink()
            shutil.rmtree(path, ignore_errors=True)
    assert seen["outside"] == 0, seen
    assert sum(seen.values()) == len(names), seen


def test_operator_volumes_carry_no_device_nodes(site: Site, operator: Client) -> None:
    """An operator's writable host volume (inside the prefix) and empty volume are mounted
    nodev: CAP_MKNOD is in the default set, so a block device node made there must not
    open (the host's disk)."""
    doc = json.loads(manifest(site.image_id, volumes=[("data", f"{site.srv}/ok/sub", False)]))
    doc["volumes"].append({"name": "scratch", "kind": "empty"})
    doc["apps"][0]["mounts"].append({"volume": "scratch", "path": "/mnt/scratch"})
    pod = operator.create_pod(manifest_json=json.dumps(doc).encode(), name="op-nodev", start=True)
    code, out = run(operator, pod.uuid, ["/bin/cat", "/proc/self/mountinfo"])
    assert code == 0
    options = {line.split()[4]: line.split()[5] for line in out.decode().splitlines()}
    for target in ("/mnt/data", "/mnt/scratch"):
        assert "nodev" in options[target].split(","), (target, options[target])


# --- start and exec: only pods within the policy --------------------------------------------------


def test_operator_cannot_exec_into_a_host_level_pod(
    site: Site, operator: Client, host: Client
) -> None:
    """A pod the host made like the console (host/api-access `host`, the host's network): an
    operator's Exec into it is refused (PERMISSION_DENIED), since its API socket is the
    whole API and its namespaces are the host's; its Logs stay readable."""
    doc = manifest(
        site.image_id,
        isolators=[
            {"name": "host/api-access", "value": {"scope": "host"}},
            {"name": NS, "value": {"net": "host"}},
        ],
    )
    pod = host.create_pod(manifest_json=doc, name="console-like", start=True)
    with pytest.raises(PermissionDenied, match="exec into a pod only when it is within"):
        run(operator, pod.uuid, ["/bin/id"])
    list(operator.logs(pod.uuid))


def test_operator_cannot_exec_into_a_running_system_service(
    site: Site, operator: Client, host: Client
) -> None:
    """A system service run by kurmad's supervisor like the console (host/api-access
    `host`, the host's network): the operator sees it in the service list, but its Exec
    into the service's pod is refused (PERMISSION_DENIED)."""
    console = sh(
        "exec sleep 1000",
        isolators={"host/api-access": {"scope": "host"}, NS: {"net": "host"}},
    )
    write_services(site, console=console)
    try:
        service = wait_state(host, "console", "RUNNING")
        assert [s.name for s in operator.services()] == ["console"]
        with pytest.raises(PermissionDenied, match="exec into a pod only when it is within"):
            run(operator, service.pod, ["/bin/id"])
    finally:
        write_services(site)
        wait_for(lambda: not host.services(), "the console service to go", 20)


def test_operator_cannot_exec_into_the_probes_pod_made_by_an_admin(
    site: Site, operator: Client, admin: Client
) -> None:
    """The probe's pod (privileged, the host's `/` read-write), made by an admin: the
    operator's Exec into it is refused, naming what reaches the host."""
    doc = manifest(
        site.image_id,
        isolators=[{"name": "os/linux/privileged", "value": True}],
        volumes=[("host", "/", False)],
    )
    pod = admin.create_pod(manifest_json=doc, name="admins-probe", start=True)
    with pytest.raises(PermissionDenied, match="os/linux/privileged"):
        run(operator, pod.uuid, ["/bin/cat", "/mnt/host/etc/hostname"])


def test_operator_cannot_start_a_privileged_pod_made_by_an_admin(
    site: Site, operator: Client, admin: Client
) -> None:
    """A privileged pod an admin created and left stopped: the operator's Start is refused
    (it would run with every capability, under the operator's hand)."""
    doc = manifest(site.image_id, isolators=[{"name": "os/linux/privileged", "value": True}])
    pod = admin.create_pod(manifest_json=doc, name="admins-stopped")
    with pytest.raises(PermissionDenied, match="start a pod only when it is within"):
        operator.start(pod.uuid)


def test_operator_may_exec_into_a_pod_within_the_policy(site: Site, operator: Client) -> None:
    """An operator's own pod within the policy: Exec works, with the default capabilities
    only (no CAP_SYS_ADMIN in the bounding set)."""
    pod = operator.create_pod(manifest_json=manifest(site.image_id), name="op-plain", start=True)
    code, out = run(operator, pod.uuid, ["/bin/sh", "-c", "grep CapBnd /proc/self/status"])
    assert code == 0
    bounding = int(out.split()[1], 16)
    assert not bounding & (1 << 21), out  # CAP_SYS_ADMIN


# --- readers read, admins may still do everything -----------------------------------------------


def test_reader_cannot_create(site: Site, reader: Client, host: Client) -> None:
    """A reader's Create is PERMISSION_DENIED, even of a harmless pod."""
    with pytest.raises(PermissionDenied, match="needs role operator"):
        reader.create_pod(manifest_json=manifest(site.image_id), name="reader-pod")
    assert_none_named(host, "reader-pod")


def test_reader_cannot_exec(site: Site, reader: Client, host: Client) -> None:
    """A reader's Exec into a running pod is PERMISSION_DENIED."""
    pod = host.create_pod(manifest_json=manifest(site.image_id), name="for-reader", start=True)
    with pytest.raises(PermissionDenied, match="needs role operator"):
        run(reader, pod.uuid, ["/bin/true"])


def test_reader_cannot_destroy(site: Site, reader: Client, host: Client) -> None:
    """A reader's Destroy is PERMISSION_DENIED and the pod stays."""
    pod = host.create_pod(manifest_json=manifest(site.image_id), name="kept")
    with pytest.raises(PermissionDenied, match="needs role operator"):
        reader.destroy(pod.uuid)
    assert host.get(pod.uuid).uuid == pod.uuid


def test_admin_still_can_create_and_exec_into_the_probes_pod(
    site: Site, admin: Client, tmp_path: Path
) -> None:
    """An admin certificate may do what the probe did, on purpose: a privileged pod with a
    host directory read-write, exec, write there."""
    doc = manifest(
        site.image_id,
        isolators=[{"name": "os/linux/privileged", "value": True}],
        volumes=[("host", str(tmp_path), False)],
    )
    pod = admin.create_pod(manifest_json=doc, name="admin-priv", start=True)
    code, _ = run(admin, pod.uuid, ["/bin/sh", "-c", "echo admin > /mnt/host/mark"])
    assert code == 0
    assert (tmp_path / "mark").read_text() == "admin\n"


# --- the TLS side: pki issue server, and failures that say which check failed ----------------


def test_pki_issue_server_prints_a_line_kurmad_accepts(tmp_path: Path) -> None:
    """`kurmactl pki issue server`, run with relative paths, prints a kurmad line with
    absolute paths; kurmad started with exactly its flags serves mutual TLS on them."""
    work = tmp_path / "w"
    work.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def kurmactl(*args: str) -> str:
        done = subprocess.run(
            [*KURMACTL, *args], cwd=work, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    kurmactl("pki", "init", "--dir", "ca")
    out = kurmactl("pki", "issue", "server", "--dir", "ca", "--out", "srv",
                   "--ip", "127.0.0.1", "--port", str(port))  # fmt: skip
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith("kurmad "))
    words = shlex.split(line)
    assert all(os.path.isabs(w) for w in words if w.endswith((".crt", ".key")))
    kurmactl("pki", "issue", "client", "--dir", "ca", "--out", "cl", "--name", "o", "--role",
             "operator")  # fmt: skip
    daemons = make_daemon()
    daemon = next(daemons)
    try:
        daemon.start(*words[1:]).close()
        cl = work / "cl"
        with Client.connect(
            f"tcp://127.0.0.1:{port}",
            cert=str(cl / "o.crt"), key=str(cl / "o.key"), ca=str(cl / "ca.crt"), timeout=20,
        ) as client:  # fmt: skip
            assert client.info().role == "operator"
    finally:
        daemons.close()  # stops it and removes its directory


def test_wrong_ca_says_the_server_certificate_is_not_signed_by_it(site: Site) -> None:
    """A client given another CA than kurmad's: the failure names kurmad's certificate and
    the CA it is not signed by, not `UNAVAILABLE: Socket closed`."""
    rogue_ca = site.rogue_ca / "ca.crt"
    with pytest.raises(Unavailable) as e:
        site.client("operator", ca=rogue_ca, timeout=3).close()
    assert "kurmad's server certificate" in e.value.message
    assert f"is not signed by the CA {rogue_ca}" in e.value.message


def test_client_certificate_of_another_ca_says_kurmad_refused_it(site: Site) -> None:
    """A client certificate from another CA (kurmad's own CA given as --ca): kurmactl says
    kurmad refused our client certificate, naming it and its issuer."""
    rogue = site.certs["rogue"]
    done = subprocess.run(
        [*KURMACTL, "--host", site.target, "--cert", str(rogue.cert), "--key", str(rogue.key),
         "--ca", str(site.ca), "ps"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "kurmad refused our client certificate" in done.stderr, done.stderr
    assert str(rogue.cert) in done.stderr and "CN=mallory" in done.stderr
    assert "Socket closed" not in done.stderr
