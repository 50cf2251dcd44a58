"""Volumes of a running pod (pods.md, ace.md Volume Setup): host directories read-write and
read-only, empty volumes shared by the apps of a pod, mount points that must be satisfied,
bad host sources, readOnlyRootFS, image symlinks that try to point a mount at the host, and
a host mount table that never sees any of it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..waiting import wait_for
from .runtime_support import PodEnv, busybox_rootfs, image_manifest

pytestmark = pytest.mark.root


def host_volume(name: str, source: Path, **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": "host", "source": str(source), **fields}


def sh(name: str, script: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "exec": ["/bin/sh", "-c", script], **fields}


def host_mounts_touching(*paths: Path) -> list[str]:
    """Lines of the host's mount table whose mount point lies under one of `paths`, but for
    each pod's `apps` tmpfs (its apps' writable layers; the runtime's own, while it runs)."""
    prefixes = tuple(str(p).rstrip("/") for p in paths)
    with open("/proc/self/mountinfo") as f:
        return [
            line
            for line in f
            if any(line.split()[4] == p or line.split()[4].startswith(p + "/") for p in prefixes)
            and not (line.split()[4].endswith("/apps") and " - tmpfs " in line)
        ]


# --- host volumes -------------------------------------------------------------------------------


def test_host_volume_read_write(pods: PodEnv) -> None:
    """The app reads what the host put there, and the host sees what the app wrote."""
    source = pods.work / "hostdata"
    source.mkdir()
    (source / "from-host").write_text("hello pod\n")
    record = pods.run(
        sh(
            "rw",
            "cat /data/from-host; echo 'hello host' > /data/from-pod",
            mounts=[{"volume": "data", "path": "/data"}],
        ),
        volumes=[host_volume("data", source)],
    )
    log = pods.log(record, "rw")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log == "hello pod\n"
    assert (source / "from-pod").read_text() == "hello host\n"


def test_host_volume_read_only(pods: PodEnv) -> None:
    source = pods.work / "hostdata"
    source.mkdir()
    (source / "from-host").write_text("keep me\n")
    record = pods.run(
        sh(
            "ro",
            "cat /data/from-host; echo x > /data/from-host; echo status=$?; touch /data/new",
            mounts=[{"volume": "data", "path": "/data"}],
        ),
        volumes=[host_volume("data", source, readOnly=True)],
    )
    log = pods.log(record, "ro")
    assert record.apps[0].exit_code != 0, log  # the last touch failed
    assert "keep me" in log and "status=1" in log and "Read-only file system" in log, log
    assert sorted(os.listdir(source)) == ["from-host"]
    assert (source / "from-host").read_text() == "keep me\n"


def test_read_only_mount_point_and_a_volume_that_overrides_it(pods: PodEnv) -> None:
    """pods.md: the mount point's readOnly applies unless the volume says otherwise."""
    source = pods.work / "hostdata"
    source.mkdir()
    points = [{"name": "data", "path": "/data", "readOnly": True}]
    script = "touch /data/f && echo WROTE || echo REFUSED"
    mounts = [{"volume": "data", "path": "/data"}]
    record = pods.run(
        sh("pt", script, mountPoints=points, mounts=mounts),
        volumes=[host_volume("data", source)],
    )
    assert "REFUSED" in pods.log(record, "pt")
    record = pods.run(
        sh("pt", script, mountPoints=points, mounts=mounts),
        volumes=[host_volume("data", source, readOnly=False)],
    )
    assert "WROTE" in pods.log(record, "pt")
    assert (source / "f").exists()


def test_single_file_host_volume(pods: PodEnv) -> None:
    """A host file as source is bound over a file at the target (created if missing)."""
    conf = pods.work / "app.conf"
    conf.write_text("setting=1\n")
    record = pods.run(
        sh(
            "conf",
            "cat /etc/app.conf; [ -f /etc/app.conf ] && echo FILE; echo more >> /etc/app.conf",
            mounts=[{"volume": "conf", "path": "/etc/app.conf"}],
        ),
        volumes=[host_volume("conf", conf)],
    )
    log = pods.log(record, "conf")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log.splitlines() == ["setting=1", "FILE"]
    assert conf.read_text() == "setting=1\nmore\n"


@pytest.mark.parametrize("recursive", [True, False])
def test_host_volume_recursive_shows_submounts(pods: PodEnv, recursive: bool) -> None:
    """recursive (the default) brings the host's submounts along; false leaves them out."""
    source = pods.work / "hostdata"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "kurma-test", str(source / "sub")], check=True)
    try:
        (source / "sub" / "inner").write_text("on the submount\n")
        volume = host_volume("data", source, **({} if recursive else {"recursive": False}))
        record = pods.run(
            sh("rec", "ls /data/sub", mounts=[{"volume": "data", "path": "/data"}]),
            volumes=[volume],
        )
    finally:
        subprocess.run(["umount", str(source / "sub")], check=True)
    log = pods.log(record, "rec")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log.split() == (["inner"] if recursive else [])


# --- empty volumes ------------------------------------------------------------------------------


def test_empty_volume_is_shared_by_the_apps_of_a_pod(pods: PodEnv) -> None:
    """One app writes, the other waits for the file and reads it: the same directory."""
    mounts = [{"volume": "shared", "path": "/shared"}]
    wait = (
        "i=0; while [ ! -s /shared/msg ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done;"
        " cat /shared/msg"
    )
    record = pods.run(
        sh(
            "writer",
            "sleep 0.2; echo 'from the writer' > /shared/msg.tmp; mv /shared/msg.tmp /shared/msg",
            mounts=mounts,
        ),
        sh("reader", wait, mounts=mounts),
        volumes=[{"name": "shared", "kind": "empty"}],
    )
    assert [a.exit_code for a in record.apps] == [0, 0], [a.error for a in record.apps]
    assert pods.log(record, "reader") == "from the writer\n"


def test_empty_volume_mode_and_owner(pods: PodEnv) -> None:
    volume = {"name": "scratch", "kind": "empty", "mode": "0770", "uid": 1000, "gid": 4000}
    record = pods.run(
        sh(
            "owner",
            "stat -c '%a %u %g' /scratch; touch /scratch/mine && echo WROTE",
            user="app",
            group="app",
            mounts=[{"volume": "scratch", "path": "/scratch"}],
        ),
        volumes=[volume],
    )
    log = pods.log(record, "owner")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log.splitlines() == ["770 1000 4000", "WROTE"]


def test_empty_volume_defaults_to_root_and_0755(pods: PodEnv) -> None:
    """ace.md: SHOULD be owned by 0:0 with mode 0755; so user `app` cannot write there."""
    record = pods.run(
        sh(
            "dflt",
            "stat -c '%a %u %g' /scratch; touch /scratch/x 2>/dev/null && echo WROTE || echo NO",
            user="app",
            group="app",
            mounts=[{"volume": "scratch", "path": "/scratch"}],
        ),
        volumes=[{"name": "scratch", "kind": "empty"}],
    )
    assert pods.log(record, "dflt").splitlines() == ["755 0 0", "NO"]


# --- mount points -------------------------------------------------------------------------------


def test_unsatisfied_mount_point_gets_an_empty_volume(pods: PodEnv) -> None:
    """A mount point the pod leaves alone gets an empty volume of the app's own (as rkt,
    and docker for an image's VOLUME): there, writable, and not the image's directory."""
    record = pods.run(
        sh("needy", "echo kept > /db/f && cat /db/f && grep -c ' /db ' /proc/self/mountinfo",
           mountPoints=[{"name": "db", "path": "/db"}]),
    )  # fmt: skip
    assert record.apps[0].exit_code == 0, record.apps[0].error
    assert pods.log(record, "needy").split() == ["kept", "1"]


def test_mount_point_satisfied_by_a_mount_naming_it(pods: PodEnv) -> None:
    """A mount whose volume has the mount point's name satisfies it, at the mount's path."""
    record = pods.run(
        sh(
            "named",
            "echo ok > /elsewhere/f && cat /elsewhere/f",
            mountPoints=[{"name": "db", "path": "/db"}],
            mounts=[{"volume": "db", "path": "/elsewhere"}],
        ),
        volumes=[{"name": "db", "kind": "empty"}],
    )
    assert record.apps[0].exit_code == 0, record.apps[0].error
    assert pods.log(record, "named") == "ok\n"


# --- bad host sources ---------------------------------------------------------------------------


def test_missing_host_source_is_an_error_and_is_not_created(pods: PodEnv) -> None:
    """ace.md: missing sources MUST be an error; the ACE SHOULD NOT create host paths."""
    missing = pods.work / "no" / "such" / "dir"
    record = pods.run(
        sh("lost", "echo STARTED", mounts=[{"volume": "data", "path": "/data"}]),
        volumes=[host_volume("data", missing)],
    )
    app = record.apps[0]
    assert app.exit_code == 125
    assert app.error is not None
    assert "'data'" in app.error and "does not exist" in app.error and str(missing) in app.error
    assert "STARTED" not in pods.log(record, "lost")
    assert not (pods.work / "no").exists()


def test_symlinked_host_source_is_refused(pods: PodEnv) -> None:
    """ace.md: a symlink as source SHOULD be an error, its target never used."""
    target = pods.work / "real"
    target.mkdir()
    link = pods.work / "link"
    link.symlink_to(target)
    record = pods.run(
        sh("linked", "touch /data/x; echo STARTED", mounts=[{"volume": "data", "path": "/data"}]),
        volumes=[host_volume("data", link)],
    )
    app = record.apps[0]
    assert app.exit_code == 125
    assert app.error is not None and "'data'" in app.error and "symlink" in app.error, app.error
    assert os.listdir(target) == []


# --- read-only rootfs ---------------------------------------------------------------------------


def test_read_only_rootfs(pods: PodEnv) -> None:
    """ace.md: the rootfs is mounted read-only. /tmp is part of it (no tmpfs is added, as
    in Docker's --read-only); volumes and /dev/shm stay writable."""
    source = pods.work / "hostdata"
    source.mkdir()
    script = "; ".join(
        f"(touch {path} 2>/dev/null && echo {label}=rw || echo {label}=ro)"
        for label, path in (
            ("root", "/new"),
            ("etc", "/etc/passwd"),
            ("tmp", "/tmp/new"),
            ("volume", "/data/new"),
            ("shm", "/dev/shm/new"),
        )
    )
    record = pods.run(
        sh("rofs", script, readOnlyRootFS=True, mounts=[{"volume": "data", "path": "/data"}]),
        volumes=[host_volume("data", source)],
    )
    log = pods.log(record, "rofs")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log.split() == ["root=ro", "etc=ro", "tmp=ro", "volume=rw", "shm=rw"]
    assert (source / "new").exists()
    # the same app without readOnlyRootFS writes everywhere
    record = pods.run(
        sh("rwfs", script, mounts=[{"volume": "data", "path": "/data"}]),
        volumes=[host_volume("data", source)],
    )
    assert pods.log(record, "rwfs").split() == [
        "root=rw",
        "etc=rw",
        "tmp=rw",
        "volume=rw",
        "shm=rw",
    ]


# --- image symlinks at mount targets ----------------------------------------------------------


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_image_symlink_at_the_target_never_reaches_the_host(pods: PodEnv, style: str) -> None:
    """An image whose /data points at a host directory (by absolute path, or by enough
    `..`): the volume lands inside the app's root, and the host directory is untouched."""
    victim = pods.work / "victim"
    victim.mkdir()
    (victim / "canary").write_text("untouched\n")
    rootfs = busybox_rootfs(pods.work / "evil-rootfs")
    link = str(victim) if style == "absolute" else "../" * 12 + str(victim).lstrip("/")
    os.symlink(link, rootfs / "data")
    image = pods.import_image(rootfs, image_manifest(f"example.com/evil-{style}"))
    source = pods.work / "hostdata"
    source.mkdir()
    record = pods.run(
        {
            "name": "evil",
            "image": image,
            "exec": ["/bin/sh", "-c", "echo written > /data/written; ls /data"],
            "mounts": [{"volume": "data", "path": "/data"}],
        },
        volumes=[host_volume("data", source)],
    )
    log = pods.log(record, "evil")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log.split() == ["written"]  # the app saw the volume, not the host directory
    assert (source / "written").read_text() == "written\n"
    assert sorted(os.listdir(victim)) == ["canary"]
    assert (victim / "canary").read_text() == "untouched\n"
    assert host_mounts_touching(victim) == []


def test_image_symlink_to_the_root_is_refused(pods: PodEnv) -> None:
    """`/data -> /` would put the volume over the app's whole root: a clear start error."""
    rootfs = busybox_rootfs(pods.work / "rootlink")
    os.symlink("/", rootfs / "data")
    image = pods.import_image(rootfs, image_manifest("example.com/rootlink"))
    record = pods.run(
        {
            "name": "rootlink",
            "image": image,
            "exec": ["/bin/true"],
            "mounts": [{"volume": "data", "path": "/data"}],
        },
        volumes=[{"name": "data", "kind": "empty"}],
    )
    app = record.apps[0]
    assert app.exit_code == 125
    assert app.error is not None and "/data" in app.error and "rootfs itself" in app.error


# --- the host's mount table ---------------------------------------------------------------------


def test_volumes_never_appear_in_the_hosts_mount_table(pods: PodEnv) -> None:
    """The binds live in the app's mount namespace only: not while the pod runs, not after."""
    source = pods.work / "hostdata"
    source.mkdir()
    watched = (pods.work, pods.state_dir, source)
    assert host_mounts_touching(*watched) == []
    manifest = pods.manifest(
        sh(
            "holder",
            "touch /data/ready; sleep 60",
            mounts=[{"volume": "data", "path": "/data"}, {"volume": "tmp", "path": "/scratch"}],
        ),
        volumes=[host_volume("data", source), {"name": "tmp", "kind": "empty"}],
    )
    record = pods.runtime.create_pod(manifest)
    try:
        pods.runtime.start_pod(record.uuid)
        wait_for((source / "ready").exists, "the app to start")
        assert host_mounts_touching(*watched) == []
    finally:
        pods.runtime.stop_pod(record.uuid, grace=1.0)
    assert host_mounts_touching(*watched) == []
