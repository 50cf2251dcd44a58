"""Host devices (issue "Hardening"): an unprivileged app opens no device node but its own.

CAP_MKNOD is in appc's default set, so an app may make a node for any major:minor, e.g. the
host's disk, anywhere it can write. Two defences, each tested on its own (`_devices`):

- `nodev` on every mount of an unprivileged app's root where a node could be made or found
  (the overlay root with /tmp, the /dev tmpfs, /dev/shm, /dev/mqueue, empty and host
  volumes): a node made there does not open (EACCES). The minimal nodes are the host's
  own, bound one by one (read-only, so chmod cannot reach the host's node), and granted
  nodes (`os/linux/devices`) likewise; those binds are mounts of their own and open.
  Tested below through the rootfs alone, in no restricted cgroup.
- the devices cgroup (cgroup v1: these hosts): every unprivileged pod's processes (the
  pod's leaf, and an app's own cgroup) may make and open only the minimal set, the ptys
  and the granted nodes: mknod of anything else is EPERM. Tested through a real kurmad.
  On cgroup2 a BPF_CGROUP_DEVICE program does the same: tested on this host's cgroup2
  hierarchy, outside kurmad.

Privileged pods keep the host's /dev and no restriction. The attack nodes are the host's
/dev/loop7 (b 7 7) and /dev/loop-control (c 10 237), opened read-only and never read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import VolumeKind
from kurma.client import Client
from kurma.runtime._devices import DEFAULT_DEVICE_RULES
from kurma.runtime._volumes import VolumeBind
from kurma.runtime.cgroups import (
    CgroupSystem,
    Placement,
    Version,
    parse_mountinfo,
    parse_proc_cgroup,
)
from tests.root.test_kurmad import Daemon
from tests.root.test_rootfs_harness import make_tree, run_app, spec_for
from tests.root.test_rootfs_kernelfs import MASKED_FILES
from tests.security.test_tenant import as_pod
from tests.security.test_tenant import pod_doc as tenant_doc

pytestmark = pytest.mark.timeout(300)

ATTACKS = (("b", 7, 7), ("c", 10, 237))  # the host's /dev/loop7 and /dev/loop-control
GRANTED = ("/dev/loop6", "/dev/kmsg")  # a block and a char node, given by os/linux/devices
PLACES = ("/", "/dev", "/dev/shm", "/e", "/h", "/tmp")  # rootfs, tmpfs x2, volumes, overlay
EPERM, EACCES = "Operation not permitted", "Permission denied"

# For each place and attack node: mknod, then open read-only (never read). One line each:
# `PLACE TYPE MAJOR MINOR: made|mknod: ERROR` then `opened|open: ERROR` when made.
ATTACK_SCRIPT = """
mkdir -p /tmp
for d in {places}; do
  for n in {attacks}; do
    set -- $(echo "$n" | tr , ' ')
    f="${{d%/}}/kurma-node"
    rm -f "$f"
    if err=$(mknod "$f" "$1" "$2" "$3" 2>&1); then
      if err=$( (exec 3<"$f") 2>&1); then echo "$d $*: made opened"
      else echo "$d $*: made open: $err"; fi
      rm -f "$f"
    else
      echo "$d $*: mknod: $err"
    fi
  done
done
for f in {found}; do
  if err=$( (exec 3<"$f") 2>&1); then echo "$f: opened"; else echo "$f: open: $err"; fi
done
"""

# The nodes the app is given: opened read-write (kmsg write-only: reading it wants
# CAP_SYSLOG), /dev/tty answers ENXIO (no controlling terminal), not EPERM.
GIVEN_SCRIPT = """
for f in null zero full random urandom ptmx; do (exec 3<>/dev/$f) && echo "$f ok"; done
echo x > /dev/null && head -c 4 /dev/zero | wc -c
(exec 3<>/dev/tty) 2>&1 | grep -q 'No such device or address' && echo "tty enxio"
(exec 3</dev/loop6) && echo "loop6 ok"
(exec 3>>/dev/kmsg) && echo "kmsg ok"
chmod 600 /dev/null 2>&1 | grep -q 'Read-only file system' && echo "null chmod refused"
"""
GIVEN_OK = [
    *(f"{n} ok" for n in ("null", "zero", "full", "random", "urandom", "ptmx")),
    "4",
    "tty enxio",
    "loop6 ok",
    "kmsg ok",
    "null chmod refused",
]


FOUND = "/h/host-made: open: (/bin/)?sh: can't open '?/h/host-made'?: {errors}"


def app_lines(lines: list[str]) -> list[str]:
    """The app's own lines of a harness run (without its setup time)."""
    return [line for line in lines if not line.startswith("setup_ms=")]


def attack_script(found: tuple[str, ...] = ()) -> str:
    attacks = " ".join(f"{t},{ma},{mi}" for t, ma, mi in ATTACKS)
    return ATTACK_SCRIPT.format(places=" ".join(PLACES), attacks=attacks, found=" ".join(found))


def refused_everywhere(lines: list[str], *, mknod_refused: bool | None = None) -> None:
    """Every attack line says refused: mknod EPERM, or made and the open EACCES (nodev) or
    EPERM (the devices cgroup). `mknod_refused` True: the mknod must be EPERM (the devices
    cgroup); False: made, and the open EACCES (nodev alone)."""
    attacks = [line for line in lines if ": made" in line or ": mknod" in line]
    assert len(attacks) == len(PLACES) * len(ATTACKS), lines
    for line in [*attacks, *(line for line in lines if line.endswith("opened"))]:
        assert "opened" not in line, lines
        if mknod_refused is True:
            assert re.search(f": mknod: .*{EPERM}", line), line
        elif mknod_refused is False:  # nodev alone
            assert re.search(f": made open: .*{EACCES}", line), line
        else:
            assert re.search(f": (mknod: .*{EPERM}|made open: .*({EACCES}|{EPERM}))", line), line


@pytest.fixture(autouse=True)
def _host_has_the_nodes() -> None:
    for path in ("/dev/loop7", "/dev/loop-control", *GRANTED):
        if not os.path.exists(path):
            pytest.skip(f"this host has no {path}")


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(os.path.realpath(tempfile.mkdtemp(prefix="kurma-devices-")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def host_node(directory: Path) -> Path:
    """A node for /dev/loop7 the host made in `directory` (a host volume's source): the
    host's own filesystem here allows devices (not nodev), so only the bind can refuse."""
    node = directory / "host-made"
    os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 7))
    os.close(os.open(node, os.O_RDONLY))  # the host itself opens it
    return node


# --- nodev alone: the rootfs, in no restricted cgroup -----------------------------------


def test_nodev_alone_refuses_every_node_the_app_makes_or_finds(work: Path) -> None:
    """With no devices cgroup at all (the rootfs built in the test's own cgroup, all
    capabilities: mknod succeeds everywhere), a node made in the rootfs, /dev, /dev/shm,
    an empty volume, a host volume or /tmp does not open (EACCES), nor does a node the
    host made in the host volume's source; the minimal nodes and the granted ones open
    and /dev/null cannot be chmodded (EROFS: the host's node stays as it is)."""
    tree = make_tree(work / "tree")
    (work / "h").mkdir()
    host_node(work / "h")
    volumes = (
        VolumeBind("e", VolumeKind.EMPTY, str(work / "volumes" / "e"), "/e", mode=0o755),
        VolumeBind("h", VolumeKind.HOST, str(work / "h"), "/h"),
    )
    spec = spec_for(work, tree, volumes=volumes, devices=GRANTED)
    before = os.stat("/dev/null")
    run = run_app(spec, attack_script(("/h/host-made",)) + GIVEN_SCRIPT)
    assert run.status == 0, run
    lines = app_lines(run.lines)
    refused_everywhere(lines[: -len(GIVEN_OK) - 1], mknod_refused=False)
    assert re.fullmatch(FOUND.format(errors=EACCES), lines[-len(GIVEN_OK) - 1]), lines
    assert lines[-len(GIVEN_OK) :] == GIVEN_OK
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)


def test_nodev_is_on_every_writable_mount_of_the_root(work: Path) -> None:
    """mountinfo inside: every mount of the root has nodev but the bound nodes (the
    minimal set, the granted ones and the /dev/null binds masking /proc files) and devpts
    (which makes no nodes: mknod EPERM)."""
    tree = make_tree(work / "tree")
    (work / "h").mkdir()
    volumes = (
        VolumeBind("e", VolumeKind.EMPTY, str(work / "volumes" / "e"), "/e", mode=0o755),
        VolumeBind("h", VolumeKind.HOST, str(work / "h"), "/h"),
    )
    spec = spec_for(work, tree, volumes=volumes, devices=GRANTED)
    run = run_app(spec, "cat /proc/self/mountinfo")
    options = ((line.split()[4], line.split()[5]) for line in app_lines(run.lines))
    without = sorted(point for point, opts in options if "nodev" not in opts.split(","))
    masks = [p for p in without if p.startswith("/proc/")]  # /dev/null over kcore, keys ...
    assert {os.path.basename(p) for p in masks} <= set(MASKED_FILES), masks
    without = [p for p in without if p not in masks]
    nodes = [f"/dev/{n}" for n in ("full", "null", "random", "tty", "urandom", "zero")]
    assert without == sorted([*nodes, *GRANTED, "/dev/pts"]), run.lines


def test_privileged_keeps_the_hosts_dev(work: Path) -> None:
    """os/linux/privileged: the host's /dev as it is, its nodes open (loop7 here)."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree, privileged=True), "(exec 3</dev/loop7) && echo ok")
    assert app_lines(run.lines) == ["ok"], run


# --- through kurmad: the devices cgroup as well ------------------------------------------


def devices_v1() -> bool:
    return CgroupSystem.detect().version("devices") is Version.V1


def pod_doc(
    image_id: str,
    script: str,
    *,
    host: Path | None = None,
    devices: tuple[str, ...] = (),
    privileged: bool = False,
    memory: str | None = None,
) -> bytes:
    """One busybox app `a` running `script`; an empty volume at /e, `host` at /h."""
    volumes: list[dict[str, Any]] = [{"name": "e", "kind": "empty"}]
    if host is not None:
        volumes.append({"name": "h", "kind": "host", "source": str(host)})
    isolators: list[dict[str, Any]] = []
    if devices:
        isolators.append({"name": "os/linux/devices", "value": list(devices)})
    if privileged:
        isolators.append({"name": "os/linux/privileged", "value": True})
    if memory:
        isolators.append({"name": "resource/memory", "value": {"limit": memory}})
    app = {"exec": ["/bin/sh", "-c", script], "user": "0", "group": "0", "isolators": isolators}
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "a",
                "image": {"id": image_id},
                "app": app,
                "mounts": [{"volume": v["name"], "path": f"/{v['name']}"} for v in volumes],
            }
        ],
        "volumes": volumes,
    }
    return json.dumps(doc).encode()


def run_pod(kurma: Client, doc: bytes) -> list[str]:
    """Create and start the pod, wait for its app to end; its output lines."""
    pod = kurma.create_pod(manifest_json=doc, start=True).uuid
    kurma.wait(pod, timeout=60)
    return b"".join(c.data for c in kurma.logs(pod)).decode(errors="replace").splitlines()


def sh(kurma: Client, pod: str, script: str) -> tuple[int, list[str]]:
    proc = kurma.exec(pod, ["/bin/sh", "-c", script])
    proc.close_stdin()
    out = b"".join(data for _, data in proc.output())
    return proc.exit_code, out.decode(errors="replace").splitlines()


def test_a_pod_opens_no_node_it_makes_or_finds(
    kurma: Client, daemon: tuple[Daemon, str], work: Path
) -> None:
    """An ordinary pod (appc's default capabilities, CAP_MKNOD among them) with an empty
    volume at /e, a host volume at /h and /dev/loop6 and /dev/kmsg granted: a block and a
    char node made in /, /dev, /dev/shm, /e, /h and /tmp never open, by the app and by a
    process `exec` adds; on a v1 devices cgroup the mknod itself is EPERM. A node the host
    made in /h does not open. /dev/null and the rest of the minimal set, /dev/ptmx and
    both granted nodes work; chmod of /dev/null is refused and the host's is unchanged."""
    _, image_id = daemon
    host_node(work)
    before = os.stat("/dev/null")
    doc = pod_doc(
        image_id,
        attack_script(("/h/host-made",)) + GIVEN_SCRIPT + "exec sleep 3600",
        host=work,
        devices=GRANTED,
    )
    pod = kurma.create_pod(manifest_json=doc, start=True).uuid
    v1 = devices_v1() or None
    found = FOUND.format(errors=f"({EACCES}|{EPERM})")

    def check(lines: list[str]) -> None:
        refused_everywhere(lines[: -len(GIVEN_OK) - 1], mknod_refused=v1)
        assert re.fullmatch(found, lines[-len(GIVEN_OK) - 1]), lines
        assert lines[-len(GIVEN_OK) :] == GIVEN_OK, lines

    check(wait_lines(kurma, pod, GIVEN_OK[-1]))  # the app's output, then an exec'd process's
    code, lines = sh(kurma, pod, attack_script(("/h/host-made",)) + GIVEN_SCRIPT)
    assert code == 0, lines
    check(lines)
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)


def own_devices_list(lines: list[str]) -> set[str]:
    """The devices.list (host side) of the cgroup an app's `/proc/self/cgroup` names."""
    path = next(line.split(":", 2)[2] for line in lines if ":devices:" in line)
    placement = CgroupSystem.detect().placements["devices"]
    directory = os.path.join(placement.mount_point, path.lstrip("/"))
    with open(os.path.join(directory, "devices.list")) as f:
        return set(f.read().splitlines())


@pytest.mark.skipif(not devices_v1(), reason="no v1 devices controller on this host")
def test_the_devices_cgroup_allows_the_default_set_and_the_granted_nodes(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """cgroup v1: the cgroup an unprivileged app runs in (the pod's leaf, restricted while
    its shell waited; an app with a memory limit has its own) allows exactly the minimal
    nodes, the console, ptmx and the ptys (`rwm`), plus the granted nodes when there are
    some, and mknod of another node is EPERM; a privileged pod's app cgroup and leaf (an
    `exec` runs there) allow everything (`a *:* rwm`)."""
    _, image_id = daemon
    script = "mknod /tmp/k b 7 7; cat /proc/self/cgroup; exec sleep 3600"
    granted = {"b 7:6 rwm", "c 1:11 rwm"}
    for devices in ((), GRANTED):
        for memory in (None, "64M"):
            doc = pod_doc(image_id, script, devices=devices, memory=memory)
            pod = kurma.create_pod(manifest_json=doc, start=True).uuid
            lines = wait_lines(kurma, pod, ":devices:")
            expected = set(DEFAULT_DEVICE_RULES) | (granted if devices else set())
            assert own_devices_list(lines) == expected, (devices, memory)
            assert re.search(f"mknod: /tmp/k: {EPERM}", lines[0]), lines
            if memory:
                assert any(re.search(r":devices:.*/app-a$", line) for line in lines), lines
            kurma.destroy(pod, grace=1)
    pod = kurma.create_pod(manifest_json=pod_doc(image_id, script, privileged=True), start=True)
    lines = wait_lines(kurma, pod.uuid, ":devices:")
    assert own_devices_list(lines) == {"a *:* rwm"}
    assert not lines[0].startswith("mknod"), lines  # made (in the overlay: nodev there)
    code, lines = sh(kurma, pod.uuid, "cat /proc/self/cgroup")  # exec: the pod's leaf
    assert code == 0, lines
    assert any(re.search(r":devices:.*/self$", line) for line in lines), lines
    assert own_devices_list(lines) == {"a *:* rwm"}  # the leaf's restriction lifted


@pytest.mark.skipif(not devices_v1(), reason="no v1 devices controller on this host")
def test_a_child_pod_is_restricted_as_its_parent(kurma: Client, daemon: tuple[Daemon, str]) -> None:
    """A pod that a pod creates (its cgroup below its parent's, its shell made on the
    spot) runs in a leaf restricted to the default set too: mknod is EPERM."""
    d, image_id = daemon
    top = kurma.create_pod(manifest_json=tenant_doc(image_id, api="subtree"), start=True).uuid
    script = "mknod /tmp/k b 7 7; cat /proc/self/cgroup; exec sleep 3600"
    with as_pod(d, top) as me:
        child = me.create_pod(manifest_json=tenant_doc(image_id, ["/bin/sh", "-c", script]))
        me.start(child.uuid)
    lines = wait_lines(kurma, child.uuid, ":devices:")
    assert re.search(f"mknod: /tmp/k: {EPERM}", lines[0]), lines
    assert any(re.search(r":devices:.*/pod-[0-9a-f]+/pod-[0-9a-f]+/self$", x) for x in lines)
    assert own_devices_list(lines) == set(DEFAULT_DEVICE_RULES)


def wait_lines(kurma: Client, pod: str, marker: str) -> list[str]:
    """The pod's output lines once one holds `marker` (within 20 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = b"".join(c.data for c in kurma.logs(pod)).decode(errors="replace").splitlines()
        if any(marker in line for line in lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no {marker!r} in the pod's output")


def test_a_privileged_pod_keeps_the_hosts_devices(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """A privileged pod sees the host's /dev and opens its nodes (loop7), and a node it
    makes in its empty volume opens too: nothing changes for it."""
    _, image_id = daemon
    script = "(exec 3</dev/loop7) && echo dev ok; mknod /e/k b 7 7 && (exec 3</e/k) && echo e ok"
    assert run_pod(kurma, pod_doc(image_id, script, privileged=True)) == ["dev ok", "e ok"]


# --- cgroup2: the BPF_CGROUP_DEVICE program -----------------------------------------------


def v2_devices() -> CgroupSystem | None:
    """A system whose `devices` is served by our cgroup2 hierarchy (the unified one of a
    hybrid host: the kernel runs its device programs there too), or None without one."""
    with open("/proc/self/mountinfo") as f:
        mount = next((m for m in parse_mountinfo(f.read()) if m.version is Version.V2), None)
    with open("/proc/self/cgroup") as f:
        path = parse_proc_cgroup(f.read()).v2
    if mount is None or path is None:
        return None
    return CgroupSystem({"devices": Placement(Version.V2, mount.mount_point, path)})


PROBE = """
import os, stat, sys
os.read(0, 1)  # in the cgroup now
def try_(what, call):
    try:
        call()
        print(what, "ok")
    except OSError as e:
        print(what, e.strerror)
try_("null", lambda: os.close(os.open("/dev/null", os.O_RDWR)))
try_("ptmx", lambda: os.close(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)))
try_("loop6 r", lambda: os.close(os.open("/dev/loop6", os.O_RDONLY)))
try_("loop6 w", lambda: os.close(os.open("/dev/loop6", os.O_WRONLY)))
try_("loop7", lambda: os.close(os.open("/dev/loop7", os.O_RDONLY)))
try_("loop-control", lambda: os.close(os.open("/dev/loop-control", os.O_RDONLY)))
node = sys.argv[1]
try_("mknod b 7 7", lambda: os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 7)))
"""


def probe_in(directory: str, node: Path) -> list[str]:
    """PROBE's lines, run in the cgroup2 `directory`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(node)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with open(os.path.join(directory, "cgroup.procs"), "w") as f:
        f.write(str(proc.pid))
    out, _ = proc.communicate("g", timeout=30)
    return out.splitlines()


def test_the_cgroup2_device_program_allows_only_its_rules(work: Path) -> None:
    """Pure cgroup2 (the booted VM) has no devices controller: `restrict_devices` attaches
    a BPF_CGROUP_DEVICE program instead. Tested on this host's cgroup2 hierarchy: a
    process in a cgroup restricted to the default set plus `b 7:6 r` opens /dev/null and
    /dev/ptmx, reads loop6 but may not write it, may not open loop7 or loop-control or
    mknod b 7 7 (EPERM); `allow_all_devices` lifts it all."""
    system = v2_devices()
    if system is None:
        pytest.skip("no cgroup2 hierarchy here")
    cgroup = system.open(f"kurma-devices-test-{os.getpid()}")
    directory = cgroup.directory("devices")
    assert directory is not None
    os.mkdir(directory)
    try:
        assert cgroup.restrict_devices((*DEFAULT_DEVICE_RULES, "b 7:6 r"))
        assert probe_in(directory, work / "n1") == [
            "null ok",
            "ptmx ok",
            "loop6 r ok",
            f"loop6 w {EPERM}",
            f"loop7 {EPERM}",
            f"loop-control {EPERM}",
            f"mknod b 7 7 {EPERM}",
        ]
        cgroup.allow_all_devices()
        assert probe_in(directory, work / "n2") == [
            "null ok",
            "ptmx ok",
            "loop6 r ok",
            "loop6 w ok",
            "loop7 ok",
            "loop-control ok",
            "mknod b 7 7 ok",
        ]
    finally:
        cgroup.remove(timeout=5)
