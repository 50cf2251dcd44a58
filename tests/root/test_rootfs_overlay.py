"""The app's root: an overlay of the rendered tree, fresh per run, pivoted into, never leaking.

Each test runs a busybox script in an app prepared by `prepare_app_rootfs` in a forked child
(see test_rootfs_harness) and checks what the app saw and what the host kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kurma.aci import App, MountPoint, PodManifest, VolumeKind
from kurma.runtime import linux
from kurma.runtime._etc import write_pod_etc
from kurma.runtime._rootfs import rootfs_spec
from kurma.runtime._volumes import VolumeBind
from tests.root.test_linux_forked import run_forked
from tests.root.test_rootfs_harness import (
    SETUP_FAILED,
    make_tree,
    mounts_under,
    run_app,
    spec_for,
    tree_snapshot,
    work,
)

pytestmark = pytest.mark.root
__all__ = ["work"]  # the fixture, imported for these tests


def test_app_sees_its_overlay_root_and_not_the_host(work: Path) -> None:
    """/ is the overlay of the tree; the host's files (this work dir) are not reachable."""
    tree = make_tree(work / "tree")
    (tree / "image-file").write_text("from the image\n")
    run = run_app(spec_for(work, tree), f"cat /image-file; ls {work} 2>&1; ls /")
    assert run.status == 0, run
    assert run.lines[0] == "from the image"
    assert "No such file or directory" in run.lines[1]
    assert set(run.lines[2:]) == {"bin", "dev", "etc", "image-file", "proc", "sys"}


def test_writes_land_in_the_upper_dir_never_in_the_tree(work: Path) -> None:
    """Creating, changing and deleting files touches only the run's upper directory."""
    tree = make_tree(work / "tree")
    (tree / "etc" / "motd").write_text("original\n")
    before = tree_snapshot(tree)
    spec = spec_for(work, tree)
    script = "echo new > /new-file && echo changed > /etc/motd && rm /bin/ls && mkdir /d"
    run = run_app(spec, script)
    assert run.status == 0, run
    assert tree_snapshot(tree) == before
    upper = Path(spec.run_dir) / "upper"
    assert (upper / "new-file").read_text() == "new\n"
    assert (upper / "etc" / "motd").read_text() == "changed\n"
    assert (upper / "d").is_dir()
    assert (tree / "bin" / "ls").is_symlink()


def test_each_run_starts_from_the_tree_again(work: Path) -> None:
    """A second run (a fresh run dir) does not see the first run's writes."""
    tree = make_tree(work / "tree")
    assert run_app(spec_for(work, tree), "echo x > /left-over").status == 0
    run = run_app(spec_for(work, tree), "test -e /left-over; echo $?")
    assert run.lines == ["1"]


def test_run_dir_must_be_fresh(work: Path) -> None:
    """An existing run dir is refused rather than reusing an old upper layer."""
    tree = make_tree(work / "tree")
    spec = spec_for(work, tree)
    os.mkdir(spec.run_dir)
    run = run_app(spec)
    assert run.status == SETUP_FAILED
    assert spec.run_dir in run.error


def test_read_only_root_fs_fails_writes_with_erofs(work: Path) -> None:
    """readOnlyRootFS: writing anywhere on / fails with EROFS; /dev/shm stays writable."""
    tree = make_tree(work / "tree")
    spec = spec_for(work, tree, read_only=True)
    run = run_app(spec, "touch /x 2>&1; mkdir /etc/y 2>&1; touch /dev/shm/ok && echo shm-ok")
    assert run.status == 0, run
    assert run.lines == [
        "touch: /x: Read-only file system",
        "mkdir: can't create directory '/etc/y': Read-only file system",
        "shm-ok",
    ]
    assert list((Path(spec.run_dir) / "upper").iterdir()) == []


def test_read_only_root_fs_keeps_volumes_writable(work: Path) -> None:
    """A writable volume inside a read-only root can still be written."""
    tree = make_tree(work / "tree")
    source = work / "vol"
    source.mkdir()
    bind = VolumeBind("data", VolumeKind.HOST, str(source), "/data")
    run = run_app(spec_for(work, tree, read_only=True, volumes=(bind,)), "echo hi > /data/f")
    assert run.status == 0, run
    assert (source / "f").read_text() == "hi\n"


def test_missing_kernel_fs_dirs_are_created_in_the_upper_only(work: Path) -> None:
    """An image without /proc, /sys, /dev or /etc still gets them; the tree stays as it was."""
    tree = make_tree(work / "tree", standard_dirs=False)
    (tree / "etc" / "passwd").unlink()
    (tree / "etc" / "group").unlink()
    (tree / "etc").rmdir()
    before = tree_snapshot(tree)
    etc = write_pod_etc(str(work), "pod-x", ["192.0.2.53"])
    run = run_app(spec_for(work, tree, etc=etc), "ls /; ls /proc/self/ >/dev/null && echo proc-ok")
    assert run.status == 0, run
    assert {"proc", "sys", "dev", "etc"} <= set(run.lines)
    assert "proc-ok" in run.lines
    assert tree_snapshot(tree) == before


def test_working_directory_is_entered(work: Path) -> None:
    """The app starts in its workingDirectory."""
    tree = make_tree(work / "tree")
    (tree / "srv" / "app").mkdir(parents=True)
    run = run_app(spec_for(work, tree, working_directory="/srv/app"), "pwd")
    assert run.lines == ["/srv/app"]


def test_missing_working_directory_is_an_error_naming_it(work: Path) -> None:
    """appc: the working directory must exist; the error names the app and the directory."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree, working_directory="/opt/missing"), "echo ran")
    assert run.status == SETUP_FAILED
    assert "test-app" in run.error
    assert "/opt/missing" in run.error
    assert "ran" not in run.output


def test_nothing_stays_mounted_on_the_host(work: Path) -> None:
    """After the app exits the host's mount table holds nothing under the test's paths."""
    tree = make_tree(work / "tree")
    source = work / "vol"
    source.mkdir()
    bind = VolumeBind("data", VolumeKind.HOST, str(source), "/data")
    spec = spec_for(work, tree, volumes=(bind,), read_only=True)
    assert run_app(spec, "sleep 0.1").status == 0
    assert mounts_under(work) == []
    assert mounts_under(tree) == []


def test_shared_propagation_leaks_nothing_back(work: Path) -> None:
    """With `/` and the run dir's tmpfs MS_SHARED (as on the VM), the parent sees no mount."""
    shared = work / "shared"
    shared.mkdir()
    tree = make_tree(work / "tree")
    source = work / "vol"
    source.mkdir()

    def outer() -> dict[str, object]:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_SHARED)
        linux.mount("tmpfs", shared, "tmpfs", 0, "size=16m")
        linux.mount(None, shared, None, linux.MS_SHARED)
        bind = VolumeBind("data", VolumeKind.HOST, str(source), "/data")
        spec = spec_for(shared, tree, volumes=(bind,))
        run = run_app(spec, "echo hi > /data/f && cat /proc/self/mountinfo | wc -l")
        return {"status": run.status, "error": run.error, "mounts": mounts_under(work)}

    result = run_forked(outer)
    assert result == {"status": 0, "error": "", "mounts": [str(shared)]}
    assert (source / "f").read_text() == "hi\n"


def test_spec_from_a_pod_manifest_runs_the_app(work: Path) -> None:
    """rootfs_spec: the ACE validator's shape (mount point `database` at /db, workdir,
    readOnlyRootFS) turns into a working root; two apps share the empty volume."""
    tree = make_tree(work / "tree")
    (tree / "opt" / "acvalidator").mkdir(parents=True)
    image_app = App(
        user="0",
        group="0",
        working_directory="/opt/acvalidator",
        mount_points=(MountPoint("database", "/db"),),
    )
    manifest = PodManifest.from_json(
        {
            "acKind": "PodManifest",
            "acVersion": "0.8.11",
            "apps": [
                {
                    "name": name,
                    "image": {"id": "sha512-" + "ab" * 64},
                    "readOnlyRootFS": True,
                    "mounts": [{"volume": "database", "path": "/db"}],
                }
                for name in ("main", "sidekick")
            ],
            "volumes": [{"name": "database", "kind": "empty"}],
        }
    )
    etc = write_pod_etc(str(work), "ace-pod", [])
    outputs = []
    for app, script in zip(manifest.apps, ("pwd; echo hi > /db/f", "cat /db/f"), strict=True):
        spec = rootfs_spec(
            manifest,
            app,
            image_app,
            tree=str(tree),
            run_dir=spec_for(work, tree).run_dir,
            volumes_dir=str(work / "pod" / "volumes"),
            etc=etc,
        )
        assert spec.read_only and spec.own_netns and not spec.privileged
        outputs.append(run_app(spec, script).lines)
    assert outputs == [["/opt/acvalidator"], ["hi"]]
