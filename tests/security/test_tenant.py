"""Tenant isolation (issue "Hardening", item 1): what a pod with `subtree` api-access can do
to get out of its subtree, one attack per test, each through the real API (the pod's own
socket; kurmactl inside the pod is the same call, tests/root/test_recursion.py drives it).

The attacker is a top pod the host (the test) creates with `host/api-access` subtree and a
read-write host volume V (a fresh directory) at /v. "Outside" is another fresh directory
that V's pods must never get; it stands for the host's /etc (the probe aimed at /etc/ssl).
Calls "as the top pod" go to its socket as the host sees it: the socket is what makes the
caller that pod. What runs inside a pod (the swap itself) runs there through Exec.

Covered in tests/root/test_recursion.py and not repeated here: a child cannot inspect, stop
or remove its sibling, its parent or a host pod (kurmactl), and cannot get privileged, the
host's net namespace, a device, a wider api scope, capabilities, a looser seccomp, a host
path outside its creator's volumes (also by a symlink at create) or a writable copy of a
read-only volume. tests/root/test_quotas.py covers quotas one call at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.client import (
    Client,
    ClientError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from kurma.runtime.linux import MNT_DETACH, mount, umount2
from tests.root.test_kurmad import (
    REPO,
    Daemon,
    make_daemon,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(300)

SLEEP = ["/bin/sleep", "3600"]
INSIDE, OUTSIDE = "inside\n", "OUTSIDE\n"


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def work() -> Iterator[Path]:
    """A fresh directory (no symlinks on its path), removed with everything in it."""
    path = Path(os.path.realpath(tempfile.mkdtemp(prefix="kurma-tenant-")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def layout(work: Path) -> tuple[Path, Path]:
    """V (the attacker's volume) with V/d/outside holding an `inside` marker, and Outside,
    whose own `outside` subdirectory holds the `OUTSIDE` marker: a symlink V/d -> Outside
    makes V/d/outside name it."""
    volume, outside = work / "v", work / "outside"
    (volume / "d" / "outside").mkdir(parents=True)
    (volume / "d" / "outside" / "marker").write_text(INSIDE)
    (outside / "outside").mkdir(parents=True)
    (outside / "outside" / "marker").write_text(OUTSIDE)
    return volume, outside


def pod_doc(
    image_id: str,
    argv: list[str] = SLEEP,
    *,
    api: str | None = None,
    volumes: list[dict[str, Any]] = (),  # type: ignore[assignment]
    isolators: list[dict[str, Any]] = (),  # type: ignore[assignment]
    app_isolators: list[dict[str, Any]] = (),  # type: ignore[assignment]
    mounts: list[dict[str, Any]] | None = None,
) -> bytes:
    """A pod of one busybox app `a`; each volume mounted at /<its name> unless `mounts`."""
    isos = list(isolators)
    if api is not None:
        isos.append({"name": "host/api-access", "value": {"scope": api}})
    app: dict[str, Any] = {"exec": argv, "user": "0", "group": "0"}
    if app_isolators:
        app["isolators"] = list(app_isolators)
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "a",
                "image": {"id": image_id},
                "app": app,
                "mounts": mounts
                if mounts is not None
                else [{"volume": v["name"], "path": f"/{v['name']}"} for v in volumes],
            }
        ],
        "volumes": list(volumes),
        "isolators": isos,
    }
    return json.dumps(doc).encode()


def host_volume(name: str, source: str, read_only: bool = False, **kw: Any) -> dict[str, Any]:
    return {"name": name, "kind": "host", "source": source, "readOnly": read_only, **kw}


def attacker(kurma: Client, image_id: str, volume: Path, name: str, **kw: Any) -> str:
    """The top pod: subtree api-access, `volume` read-write at /v, started."""
    doc = pod_doc(image_id, api="subtree", volumes=[host_volume("v", str(volume), **kw)])
    return kurma.create_pod(manifest_json=doc, name=name, start=True).uuid


@contextlib.contextmanager
def as_pod(d: Daemon, pod: str) -> Iterator[Client]:
    """A client on the pod's own API socket, as the host sees it."""
    with Client.connect(str(d.work / "pods" / pod / "api" / "api.sock"), timeout=20) as c:
        yield c


def sh(client: Client, pod: str, script: str) -> tuple[int, str]:
    """Run a shell script inside `pod`: (exit code, stdout + stderr)."""
    proc = client.exec(pod, ["/bin/sh", "-c", script])
    proc.close_stdin()
    out = b"".join(data for _, data in proc.output())
    return proc.exit_code, out.decode(errors="replace")


def child_volume(source: str, read_only: bool = False) -> bytes:
    return json.dumps(host_volume("x", source, read_only)).encode()


def reader(image_id: str, source: str, **kw: Any) -> bytes:
    """A child whose volume `x` (host source `source`, a path in the creator's view) is at
    /x; it says what /x/marker holds and tries to write /x/written, then sleeps."""
    script = "cat /x/marker; echo pwned > /x/written; exec sleep 3600"
    return pod_doc(image_id, ["/bin/sh", "-c", script], volumes=[host_volume("x", source, **kw)])


def start_error(client: Client, pod: str) -> str:
    """Start `pod`, whose app must not run: why (the start's error or the app's)."""
    try:
        started = client.start(pod)
    except ClientError as e:
        return str(e)
    errors = [a.error for a in started.apps if a.error]
    assert errors, f"the app ran: {started}"
    return errors[0]


def refused(call: Any, error: type[ClientError], says: str, case: object) -> None:
    """`call()` must raise `error` with a message matching `says`; `case` names it."""
    try:
        call()
    except error as e:
        assert re.search(says, str(e)), (case, str(e))
    else:
        pytest.fail(f"{case}: not refused")


def never_written(outside: Path) -> None:
    """Nothing of the attack reached Outside: no file written, no mount on or below it."""
    assert not (outside / "outside" / "written").exists()
    assert (outside / "outside" / "marker").read_text() == OUTSIDE
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    assert not [p for p in points if p == str(outside) or p.startswith(f"{outside}/")]


def pod_dirs(d: Daemon) -> set[str]:
    return {e.name for e in os.scandir(d.work / "pods")}


# --- the swap between Create and Start ---------------------------------------------------


def test_swap_between_create_and_start_is_refused_at_start(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """The probe's escape: the top pod creates a child (not started) with host source
    /v/d/outside, then replaces V/d by a symlink to Outside (absolute, then relative), then
    starts the child. Contract: the start fails naming the volume, the child never runs,
    Outside is neither mounted nor written; with V/d a directory again the start works and
    the child sees V's own directory."""
    d, image_id = daemon
    volume, outside = layout
    top = attacker(kurma, image_id, volume, "swap-top")
    with as_pod(d, top) as me:
        for target in (str(outside), f"../{outside.name}"):
            child = me.create_pod(manifest_json=reader(image_id, "/v/d/outside")).uuid
            code, out = sh(kurma, top, f"mv /v/d /v/d.real && ln -s {target} /v/d")
            assert code == 0, out
            assert os.path.realpath(volume / "d" / "outside") == str(outside / "outside")
            assert re.search(r"'x'.*leads outside", start_error(me, child))
            never_written(outside)
            me.destroy(child, grace=1)
            assert sh(kurma, top, "rm /v/d && mv /v/d.real /v/d")[0] == 0
        child = me.create_pod(manifest_json=reader(image_id, "/v/d/outside")).uuid
        me.start(child)
        code, out = sh(kurma, child, "cat /x/marker")
        assert (code, out) == (0, INSIDE)
    never_written(outside)


RACER = textwrap.dedent(
    """
    # The runtime's own mount step (`_volumes.mount_volume`, as an app's process runs it)
    # raced against a flipper process: a private mount namespace, so every mount goes
    # with the process.
    import os, sys
    from kurma.aci import VolumeKind
    from kurma.runtime._volumes import VolumeBind, mount_volume
    from kurma.runtime.linux import CLONE_NEWNS, MNT_DETACH, make_rprivate, umount2, unshare

    root, rel, scratch, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    unshare(CLONE_NEWNS)
    make_rprivate("/")
    bind = VolumeBind("x", VolumeKind.HOST, root, "/x", beneath=((rel, True),))
    rootfd = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
    counts = {"inside": 0, "outside": 0, "refused": 0}
    for _ in range(rounds):
        try:
            mount_volume(rootfd, bind)
        except OSError as e:
            assert "leads outside" in str(e) or "does not exist" in str(e), e
            counts["refused"] += 1
            continue
        with open(os.path.join(scratch, "x", "marker")) as f:
            counts["inside" if f.read() == "inside\\n" else "outside"] += 1
        umount2(os.path.join(scratch, "x"), MNT_DETACH)
    print(counts["inside"], counts["outside"], counts["refused"])
    """
)

FLIPPER = textwrap.dedent(
    """
    # Exchange V/d (a directory) and V/swap (a symlink to Outside) atomically, forever,
    # each state held ~0.1 ms (spinning flat out starves the lookups of the other side).
    import ctypes, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    a, b = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
    print("flipping", flush=True)
    while True:
        if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
            sys.exit(ctypes.get_errno())
        time.sleep(0.0001)
    """
)


def test_the_swap_raced_a_thousand_times_never_mounts_outside(layout: tuple[Path, Path]) -> None:
    """1000 mounts against a flipper exchanging V/d between a directory and a symlink to
    Outside as fast as it can, on the other core: every mount is V's own directory or
    refused, never Outside. This races the runtime's mount step directly (the function
    an app's process runs before pivot_root, in a mount namespace of its own), since 1000
    pod starts through kurmad take minutes; the next test races real starts, fewer."""
    volume, outside = layout
    scratch = volume.parent / "scratch"
    scratch.mkdir()
    os.symlink(str(outside), volume / "swap")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    flipper = subprocess.Popen(
        [sys.executable, "-c", FLIPPER, str(volume / "d"), str(volume / "swap")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flipper.stdout is not None and flipper.stdout.readline() == "flipping\n"
        racer = subprocess.run(
            [sys.executable, "-c", RACER, str(volume), "d/outside", str(scratch), "1000"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert flipper.poll() is None, f"the flipper stopped: {flipper.returncode}"
    finally:
        flipper.kill()
        flipper.wait()
    assert racer.returncode == 0, racer.stderr
    inside, outside_count, refused = map(int, racer.stdout.split())
    assert outside_count == 0
    assert inside + refused == 1000
    assert inside > 0 and refused > 0, "the race did not happen both ways"
    never_written(outside)


def test_the_swap_raced_against_starts_through_the_api(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """The race through kurmad: inside the top pod a shell loop flips V/d between the
    directory and a symlink to Outside while the top pod creates and starts 15 children
    with source /v/d/outside over its socket. Every create is refused (V/d was the symlink
    then), or its start fails naming the volume, or the child sees V's own marker; Outside
    is never mounted nor written."""
    d, image_id = daemon
    volume, outside = layout
    top = attacker(kurma, image_id, volume, "race-top")
    loop = f"ln -s {outside} /v/swap; while :; do mv /v/d /v/d.real; mv /v/swap /v/d; "
    loop += "mv /v/d /v/swap; mv /v/d.real /v/d; sleep 0.01; done"
    flip = kurma.exec(top, ["/bin/sh", "-c", loop])
    started = refused = at_create = 0
    try:
        with as_pod(d, top) as me:
            for _ in range(15):
                try:  # at create V/d may be the symlink already: refused then
                    child = me.create_pod(manifest_json=reader(image_id, "/v/d/outside")).uuid
                except PermissionDenied as e:
                    assert re.search(r"'x'.*leads outside", str(e)), e
                    at_create += 1
                    continue
                try:
                    pod = me.start(child)
                except ClientError as e:
                    pod, error = None, str(e)
                else:
                    error = pod.apps[0].error
                if error:
                    assert re.search(r"'x'.*(leads outside|does not exist)", error), error
                    refused += 1
                else:
                    code, out = sh(kurma, child, "cat /x/marker")
                    assert (code, out) == (0, INSIDE)
                    started += 1
                never_written(outside)
                me.destroy(child, grace=1)
    finally:
        flip.cancel()
        kurma.stop(top, grace=1)
    assert started + refused + at_create == 15
    never_written(outside)


# --- symlinks, `..` and magic links as sources, at create --------------------------------


def test_sources_that_lead_outside_are_refused_at_create(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """Each way out of V a source may take is refused at create (PERMISSION_DENIED naming
    the volume) and leaves no pod and no pod directory: a symlink as the last component,
    one in the middle, absolute and relative, `..` past the volume, magic links
    (/proc/self/root, /proc/self/fd/N, as symlinks in V and as sources), /etc (the
    probe's aim). A symlink that stays inside V is followed: that child runs."""
    d, image_id = daemon
    volume, outside = layout
    (volume / "in").mkdir()
    links = {
        "last": str(outside / "outside"),  # absolute, the last component
        "mid": str(outside),  # absolute, in the middle: /v/mid/outside
        "rel": f"../{outside.name}",  # relative, climbing out of V
        "deep": "in/../../outside",  # `..` inside the link
        "self-root": "/proc/self/root",
        "self-fd": "/proc/self/fd/0",
        "etc": "/etc",  # the probe's aim: /etc/ssl
        "alias": "d",  # stays inside: followed
    }
    for name, target in links.items():
        os.symlink(target, volume / name)
    top = attacker(kurma, image_id, volume, "links-top")
    before = pod_dirs(d)
    sources = {
        "/v/last": "leads outside",
        "/v/mid/outside": "leads outside",
        "/v/rel/outside": "leads outside",
        "/v/deep": "leads outside",
        "/v/self-root/etc": "leads outside",
        "/v/self-fd": "leads outside",
        "/v/etc/ssl": "leads outside",
        "/v/../outside": "not inside",
        "/v/d/../../outside": "not inside",
        "/proc/self/root/etc": "not inside",
        "/proc/1/root": "not inside",
        f"/proc/self/fd/0/{outside}": "not inside",
        str(outside): "not inside",
    }
    with as_pod(d, top) as me:
        for source, says in sources.items():
            doc = reader(image_id, source)
            refused(lambda m=doc: me.create_pod(manifest_json=m, name="bad"), PermissionDenied,
                    rf"'x'.*{says}", source)  # fmt: skip
        assert not [p for p in kurma.list_pods() if p.name == "bad"]
        assert pod_dirs(d) == before
        child = me.create_pod(manifest_json=reader(image_id, "/v/alias/outside")).uuid
        me.start(child)
        assert sh(kurma, child, "cat /x/marker") == (0, INSIDE)
    never_written(outside)


def test_magic_links_inside_the_volume_are_not_followed(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """V holds a procfs (the admin mounted one inside it; V is bound recursively, so the
    top pod sees it): /v/proc/self/root and /v/proc/1/root are magic links to whole roots
    and are refused (RESOLVE_NO_MAGICLINKS); /v/proc/self/fd/N too."""
    d, image_id = daemon
    volume, outside = layout
    proc = volume / "proc"
    proc.mkdir()
    mount("proc", proc, "proc")
    try:
        top = attacker(kurma, image_id, volume, "magic-top")
        assert sh(kurma, top, "test -e /v/proc/self/root/bin")[0] == 0
        with as_pod(d, top) as me:
            for source in ("/v/proc/self/root", "/v/proc/1/root/etc", "/v/proc/self/fd/0",
                           "/v/proc/self/cwd"):  # fmt: skip
                doc = reader(image_id, source, read_only=True)
                refused(lambda m=doc: me.create_pod(manifest_json=m), PermissionDenied,
                        r"'x'.*(leads outside|Permission denied)", source)  # fmt: skip
        kurma.destroy(top, grace=1)
    finally:
        umount2(proc, MNT_DETACH)
    never_written(outside)


def test_mounts_below_a_non_recursive_volume_stay_hidden(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """The top pod has V non-recursively, so it never sees what the admin mounted below V
    (a tmpfs at V/mnt holding a secret). A child asking for /v/mnt or below is refused
    (RESOLVE_NO_XDEV): it would otherwise get the mount its creator cannot see."""
    d, image_id = daemon
    volume, _outside = layout
    hidden = volume / "mnt"
    hidden.mkdir()
    mount("tmpfs", hidden, "tmpfs", data="size=1m")
    try:
        (hidden / "secret").write_text("secret\n")
        top = attacker(kurma, image_id, volume, "xdev-top", recursive=False)
        assert sh(kurma, top, "test -e /v/mnt/secret")[0] != 0  # the top's view
        with as_pod(d, top) as me:
            for source in ("/v/mnt", "/v/mnt/"):
                doc = reader(image_id, source)
                refused(lambda m=doc: me.create_pod(manifest_json=m), PermissionDenied,
                        r"'x'.*leads outside", source)  # fmt: skip
            me.create_pod(manifest_json=reader(image_id, "/v/d"), name="xdev-ok")
        kurma.destroy(top, grace=1)
    finally:
        umount2(hidden, MNT_DETACH)


def test_a_bind_mount_the_parent_makes_inside_its_volume_is_not_followed(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """A privileged top pod bind-mounts its own /etc over /v/d/outside inside its mount
    namespace, then has a child created with that source: the child gets V's directory
    (the parent's mounts live in the parent's namespace; sources are resolved in the
    host's), not what the parent put there."""
    d, image_id = daemon
    volume, _outside = layout
    doc = pod_doc(
        image_id,
        api="subtree",
        volumes=[host_volume("v", str(volume))],
        isolators=[{"name": "os/linux/privileged", "value": True}],
    )
    top = kurma.create_pod(manifest_json=doc, name="bind-top", start=True).uuid
    code, out = sh(kurma, top, "mount --bind /etc /v/d/outside && test -e /v/d/outside/passwd")
    assert code == 0, out
    with as_pod(d, top) as me:
        child = me.create_pod(manifest_json=reader(image_id, "/v/d/outside")).uuid
        me.start(child)
        assert sh(kurma, child, "cat /x/marker; test ! -e /x/passwd") == (0, INSIDE)
    assert not (volume / "d" / "outside" / "passwd").exists()


def test_app_volumes_are_held_to_the_creators_volumes(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """An inline `appVolume` of kind host is a path the pod names too: outside the
    creator's volumes it is refused (it was once mounted as given: any host path), inside
    them it is resolved beneath V like a pod volume."""
    d, image_id = daemon
    volume, outside = layout
    top = attacker(kurma, image_id, volume, "appvol-top")

    def with_app_volume(source: str) -> bytes:
        app_volume = host_volume("x", source)
        mounts = [{"volume": "x", "path": "/x", "appVolume": app_volume}]
        script = ["/bin/sh", "-c", "cat /x/marker; exec sleep 3600"]
        return pod_doc(image_id, script, mounts=mounts)

    with as_pod(d, top) as me:
        for source, says in ((str(outside / "outside"), "not inside"), ("/v/../outside", "not")):
            with pytest.raises(PermissionDenied, match=rf"'x'.*{says}"):
                me.create_pod(manifest_json=with_app_volume(source), name="bad-appvol")
        child = me.create_pod(manifest_json=with_app_volume("/v/d/outside")).uuid
        os.rename(volume / "d", volume / "d.real")
        os.symlink(str(outside), volume / "d")
        assert re.search(r"'x'.*leads outside", start_error(me, child))
    never_written(outside)


def test_sources_in_the_creators_empty_volume_are_resolved_beneath_it(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """An empty volume's root is kurma's directory in the creator's pod dir: a child gets
    a directory below it, and once the creator swaps that directory for a symlink to `/`
    (absolute) or out of the volume (relative), the next child's start is refused."""
    d, image_id = daemon
    volumes = [{"name": "e", "kind": "empty"}]
    top_doc = pod_doc(image_id, api="subtree", volumes=volumes)
    top = kurma.create_pod(manifest_json=top_doc, name="empty-top", start=True).uuid
    assert sh(kurma, top, "mkdir -p /e/sub && echo inside > /e/sub/marker")[0] == 0
    with as_pod(d, top) as me:
        child = me.create_pod(manifest_json=reader(image_id, "/e/sub")).uuid
        me.start(child)
        assert sh(kurma, child, "cat /x/marker") == (0, INSIDE)
        for link in ("/", "../../.."):
            late = me.create_pod(manifest_json=reader(image_id, "/e/sub")).uuid
            code, out = sh(kurma, top, f"rm -rf /e/sub && ln -s {link} /e/sub")
            assert code == 0, out
            assert re.search(r"'x'.*leads outside", start_error(me, late))
            assert sh(kurma, top, "rm /e/sub && mkdir /e/sub")[0] == 0
    assert not os.path.exists("/written")


def test_invalid_paths_are_refused_at_create_naming_the_volume(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """A NUL byte, a lone surrogate or an overlong path in a host source is INVALID_ARGUMENT
    at create, naming the volume, before any pod directory exists: from the host and from
    a pod alike."""
    d, image_id = daemon
    volume, _ = layout
    top = attacker(kurma, image_id, volume, "nul-top")
    before = pod_dirs(d)
    bad = ["/v/d\0/../../etc", "/v/\ud800", "/v/" + "a" * 300, "/v" + "/a" * 2100]
    with as_pod(d, top) as me:
        for client in (kurma, me):
            for source in bad:
                with pytest.raises(InvalidArgument, match="volume 'x'"):
                    client.create_pod(manifest_json=reader(image_id, source), name="bad-path")
    assert pod_dirs(d) == before
    assert not [p for p in kurma.list_pods() if p.name == "bad-path"]


def test_grandchild_sources_are_resolved_through_each_level(
    kurma: Client, daemon: tuple[Daemon, str], layout: tuple[Path, Path]
) -> None:
    """Three levels: the top has V at /v, its child V/d at /x, the grandchild asks for
    /x/outside (the child's view). The grandchild's source is resolved beneath V, then
    beneath d: once the child swaps its own /x/outside for a symlink to `../..` (which
    stays inside V but leaves the child's volume), the grandchild's start is refused."""
    d, image_id = daemon
    volume, _outside = layout
    (volume / "other").mkdir()
    (volume / "other" / "marker").write_text("other\n")
    top = attacker(kurma, image_id, volume, "three-top")
    with as_pod(d, top) as me:
        doc = pod_doc(image_id, api="subtree", volumes=[host_volume("x", "/v/d")])
        child = me.create_pod(manifest_json=doc).uuid
        me.start(child)
    with as_pod(d, child) as it:
        grand = it.create_pod(manifest_json=reader(image_id, "/x/outside")).uuid
        it.start(grand)
        assert sh(kurma, grand, "cat /x/marker") == (0, INSIDE)
        it.destroy(grand, grace=1)
        grand = it.create_pod(manifest_json=reader(image_id, "/x/outside")).uuid
        code, out = sh(kurma, child, "mv /x/outside /x/o.real && ln -s ../other /x/outside")
        assert code == 0, out
        assert re.search(r"'x'.*leads outside", start_error(it, grand))
    assert not (volume / "other" / "written").exists()


def test_the_steps_survive_a_kurmad_restart(busybox_aci: Path, layout: tuple[Path, Path]) -> None:
    """Children created before kurmad restarts are planned again from their records after
    it: the record, not the manifest's joined path, says where their sources are. The
    first starts with V's directory; V/d is swapped for a symlink to Outside and the second
    is refused."""
    volume, outside = layout
    for d in make_daemon():
        with d.start() as client:
            image_id = client.import_image(busybox_aci).image.id
            top = attacker(client, image_id, volume, "restart-top")
            with as_pod(d, top) as me:
                first = me.create_pod(manifest_json=reader(image_id, "/v/d/outside")).uuid
                second = me.create_pod(manifest_json=reader(image_id, "/v/d/outside")).uuid
        d.stop()
        with d.start() as client:
            sock = d.work / "pods" / top / "api" / "api.sock"
            wait_for(sock.exists, "the pod socket again", 20)
            with as_pod(d, top) as me:
                me.start(first)
                assert sh(client, first, "cat /x/marker") == (0, INSIDE)
                os.rename(volume / "d", volume / "d.real")
                os.symlink(str(outside), volume / "d")
                assert re.search(r"'x'.*leads outside", start_error(me, second))
            client.destroy(top, grace=1)
    never_written(outside)


def test_a_pod_cannot_open_a_host_device_it_makes_a_node_for(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """Found while hardening volumes: an ordinary pod (default capabilities, CAP_MKNOD
    among them, no devices granted) makes a node for the host's /dev/loop0 (b 7 0; a disk's
    major and minor would do the same) in its own /dev tmpfs and opens it. Contract: the
    open fails (the /dev tmpfs is nodev; on cgroup v1 the devices cgroup refuses the mknod
    already). Every other place and the granted nodes: tests/security/test_devices.py."""
    _, image_id = daemon
    script = "mknod /dev/k b 7 0 && dd if=/dev/k of=/dev/null count=0 && echo OPENED"
    doc = pod_doc(image_id, ["/bin/sh", "-c", script])
    pod = kurma.create_pod(manifest_json=doc, name="mknod", start=True).uuid
    kurma.wait(pod, timeout=20)
    out = b"".join(c.data for c in kurma.logs(pod))
    assert b"OPENED" not in out, out
    assert re.search(rb"Operation not permitted|Permission denied", out), out


# --- the existing defences, where tests/root/test_recursion.py has none ------------------


def test_a_pod_cannot_reach_its_siblings_or_parents_pods(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """Through its socket, a child pod gets NOT_FOUND for every call naming its sibling,
    the sibling's child, its parent or a host pod (by UUID, prefix or name): get, start,
    stop, destroy, wait, stats, logs, exec. List shows only its own subtree. They all still
    run afterwards."""
    d, image_id = daemon
    top = kurma.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="sib-top",
                           start=True).uuid  # fmt: skip
    host_pod = kurma.create_pod(manifest_json=pod_doc(image_id), name="sib-host", start=True)
    with as_pod(d, top) as me:
        a = me.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="sib-a").uuid
        b = me.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="sib-b").uuid
        me.start(a)
        me.start(b)
    with as_pod(d, b) as bee:
        b_child = bee.create_pod(manifest_json=pod_doc(image_id), name="sib-b-child").uuid
        bee.start(b_child)
    targets = [b, b[:8], "sib-b", b_child, "sib-b-child", top, "sib-top", host_pod.uuid,
               "sib-host"]  # fmt: skip
    with as_pod(d, a) as ay:
        assert [p.uuid for p in ay.list_pods()] == []
        for target in targets:
            calls = {
                "get": lambda t=target: ay.get(t),
                "start": lambda t=target: ay.start(t),
                "stop": lambda t=target: ay.stop(t, grace=1),
                "destroy": lambda t=target: ay.destroy(t, grace=1),
                "wait": lambda t=target: ay.wait(t, timeout=1),
                "stats": lambda t=target: ay.stats(t),
                "logs": lambda t=target: list(ay.logs(t)),
                "exec": lambda t=target: sh(ay, t, "echo in"),
            }
            for what, call in calls.items():
                with pytest.raises(NotFound):
                    call()
                    pytest.fail(f"{what} {target} did not fail")
    running = {p.uuid for p in kurma.list_pods() if p.state == 2}
    assert {top, a, b, b_child, host_pod.uuid} <= running


def test_escalation_through_each_remaining_field_is_refused(
    kurma: Client, daemon: tuple[Daemon, str], work: Path
) -> None:
    """PERMISSION_DENIED for what test_recursion.py does not try: no-new-privileges turned
    off under a creator that has it, the host's ipc/uts/pid namespaces, privileged as an
    app isolator, a capability added by a remove-set under a creator with a small
    retain-set, a remove-set blocking fewer syscalls than the creator's, a read-only
    volume asked read-write (and asked with readOnly left out). Also a grandchild: the
    child holds no more than the top gave it, so the same asks from the child are refused
    too."""
    d, image_id = daemon
    (work / "ro").mkdir()
    top_doc = pod_doc(
        image_id,
        api="subtree",
        volumes=[host_volume("ro", str(work / "ro"), read_only=True)],
        isolators=[{"name": "os/linux/no-new-privileges", "value": True}],
        app_isolators=[
            {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_CHOWN"]}},
            {"name": "os/linux/seccomp-remove-set", "value": {"set": ["mount", "reboot"]}},
        ],
    )
    top = kurma.create_pod(manifest_json=top_doc, name="esc-top", start=True).uuid
    nnp_off = {"name": "os/linux/no-new-privileges", "value": False}
    seccomp = {"name": "os/linux/seccomp-remove-set", "value": {"set": ["mount", "reboot"]}}
    small = {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_CHOWN"]}}
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "nnp": ({"isolators": [nnp_off], "app_isolators": [small, seccomp]},
                "no-new-privileges"),
        "ipc": ({"isolators": [{"name": "os/linux/namespaces", "value": {"ipc": "host"}}],
                 "app_isolators": [small, seccomp]}, "ipc namespace"),
        "uts": ({"isolators": [{"name": "os/linux/namespaces", "value": {"uts": "host"}}],
                 "app_isolators": [small, seccomp]}, "uts namespace"),
        "pid": ({"isolators": [{"name": "os/linux/namespaces", "value": {"pid": "host"}}],
                 "app_isolators": [small, seccomp]}, "pid namespace"),
        "app-privileged": ({"app_isolators": [{"name": "os/linux/privileged", "value": True}]},
                           "not privileged"),
        "remove-set": ({"app_isolators": [seccomp, {"name": "os/linux/capabilities-remove-set",
                                                    "value": {"set": ["CAP_CHOWN"]}}]},
                       "capabilities"),
        "default-caps": ({"app_isolators": [seccomp]}, "capabilities"),
        "looser-seccomp": ({"app_isolators": [small, {"name": "os/linux/seccomp-remove-set",
                                                      "value": {"set": ["reboot"]}}]},
                           "seccomp"),
        "ro-as-rw": ({"app_isolators": [small, seccomp],
                      "volumes": [host_volume("ro", "/ro", read_only=False)]}, "readOnly"),
        "ro-unsaid": ({"app_isolators": [small, seccomp],
                       "volumes": [{"name": "ro", "kind": "host", "source": "/ro"}]},
                      "readOnly"),
    }  # fmt: skip
    fine = pod_doc(image_id, api="subtree", app_isolators=[small, seccomp],
                   volumes=[host_volume("ro", "/ro", read_only=True)])  # fmt: skip
    with as_pod(d, top) as me:
        for name, (kw, says) in cases.items():
            doc = pod_doc(image_id, **kw)
            refused(lambda m=doc: me.create_pod(manifest_json=m), PermissionDenied, says, name)
        child = me.create_pod(manifest_json=fine, name="esc-child").uuid
        me.start(child)
    with as_pod(d, child) as it:
        for name, (kw, says) in cases.items():
            doc = pod_doc(image_id, **kw)
            refused(lambda m=doc: it.create_pod(manifest_json=m), PermissionDenied, says, name)
    assert not [p for p in kurma.list_pods() if p.name.startswith("bad-")]


def test_quota_holds_under_twenty_concurrent_creates(
    kurma: Client, daemon: tuple[Daemon, str]
) -> None:
    """quota pods=5 at the top, one taken by its child; then 20 creates at once, 10 from
    the top and 10 from the child (whose pods count against the top too): exactly 4
    succeed, the other 16 are RESOURCE_EXHAUSTED, 5 pods are below the top and the quota
    shows 5 used."""
    d, image_id = daemon
    quota = {"scope": "subtree", "quota": {"pods": 5}}
    doc = pod_doc(image_id, isolators=[{"name": "host/api-access", "value": quota}])
    top = kurma.create_pod(manifest_json=doc, name="quota-top", start=True).uuid
    with as_pod(d, top) as me:
        child = me.create_pod(manifest_json=pod_doc(image_id, api="subtree")).uuid
        me.start(child)
    results: list[str] = []
    barrier = threading.Barrier(20)

    def create(pod: str, i: int) -> None:
        with as_pod(d, pod) as client:
            barrier.wait(30)
            try:
                client.create_pod(manifest_json=pod_doc(image_id), name=f"q-{i}")
                results.append("created")
            except ResourceExhausted:
                results.append("exhausted")
            except Exception as e:
                results.append(repr(e))

    threads = [threading.Thread(target=create, args=(top if i % 2 else child, i))
               for i in range(20)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["created"] * 4 + ["exhausted"] * 16, results
    below = [p for p in kurma.list_pods() if top in p.parents]
    assert len(below) == 5
    shown = kurma.get(top).quota.pods
    assert (shown.limit, shown.used) == (5, 5)


def test_the_depth_limit_stops_a_chain_of_pods(kurma: Client, daemon: tuple[Daemon, str]) -> None:
    """Each pod of a chain creates and starts the next through its own socket: 8 levels
    (the top included) exist, the 9th create is FAILED_PRECONDITION naming the limit, and
    destroying the top removes the whole chain."""
    d, image_id = daemon
    chain = [kurma.create_pod(manifest_json=pod_doc(image_id, api="subtree"), name="depth-0",
                              start=True).uuid]  # fmt: skip
    for level in range(1, 9):
        with as_pod(d, chain[-1]) as last:
            doc = pod_doc(image_id, api="subtree")
            if level == 8:
                with pytest.raises(FailedPrecondition, match="depth limit is 8"):
                    last.create_pod(manifest_json=doc, name=f"depth-{level}")
                break
            pod = last.create_pod(manifest_json=doc, name=f"depth-{level}").uuid
            last.start(pod)
            chain.append(pod)
    assert len(chain) == 8
    assert list(kurma.get(chain[-1]).parents) == chain[-2::-1]
    assert set(kurma.destroy(chain[0], grace=1)) == set(chain)
