"""Volumes and generated /etc files inside the app's root, and targets that try to escape it.

Sub-mounts for the recursive tests are made in a forked child's private mount namespace,
never on the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kurma.aci import VolumeKind
from kurma.runtime import linux
from kurma.runtime._etc import write_pod_etc
from kurma.runtime._volumes import VolumeBind
from tests.root.test_linux_forked import run_forked
from tests.root.test_rootfs_harness import SETUP_FAILED, make_tree, run_app, spec_for, work

pytestmark = pytest.mark.root
__all__ = ["work"]  # the fixture, imported for these tests


def host(
    source: Path, target: str, *, read_only: bool = False, recursive: bool = True
) -> VolumeBind:
    """A host volume bind."""
    return VolumeBind("data", VolumeKind.HOST, str(source), target, read_only, recursive)


def test_host_volume_is_shared_with_the_host(work: Path) -> None:
    """The app reads the host's files and its writes reach the host directory."""
    tree = make_tree(work / "tree")
    source = work / "vol"
    source.mkdir()
    (source / "hello").write_text("from host\n")
    run = run_app(
        spec_for(work, tree, volumes=(host(source, "/data"),)),
        "cat /data/hello; echo x > /data/new",
    )
    assert run.lines == ["from host"]
    assert (source / "new").read_text() == "x\n"


def test_host_file_volume_is_bound_onto_a_file(work: Path) -> None:
    """A host file is bound onto a file target, created (in the upper) when missing."""
    tree = make_tree(work / "tree")
    source = work / "config"
    source.write_text("key=value\n")
    run = run_app(
        spec_for(work, tree, volumes=(host(source, "/etc/app.conf"),)), "cat /etc/app.conf"
    )
    assert run.lines == ["key=value"]


def test_read_only_host_volume_refuses_writes(work: Path) -> None:
    """readOnly: the bind is read-only; the host directory is unchanged."""
    tree = make_tree(work / "tree")
    source = work / "vol"
    source.mkdir()
    spec = spec_for(work, tree, volumes=(host(source, "/data", read_only=True),))
    run = run_app(spec, "touch /data/x")
    assert "Read-only file system" in run.output
    assert list(source.iterdir()) == []


def _with_sub_mount(work: Path, bind_fields: dict[str, bool], script: str) -> list[str]:
    """Run `script` with a host volume whose source has a tmpfs mounted at `sub` (privately)."""
    tree = make_tree(work / "tree")
    source = work / "vol"
    (source / "sub").mkdir(parents=True)

    def outer() -> list[str]:
        linux.unshare(linux.CLONE_NEWNS)
        linux.make_rprivate("/")
        linux.mount("tmpfs", source / "sub", "tmpfs", 0, "size=1m")
        (source / "sub" / "inner").write_text("inner\n")
        run = run_app(spec_for(work, tree, volumes=(host(source, "/data", **bind_fields),)), script)
        return run.lines

    return run_forked(outer)


def test_recursive_host_volume_brings_sub_mounts(work: Path) -> None:
    """recursive (the default): mounts below the source are visible in the app."""
    assert _with_sub_mount(work, {}, "cat /data/sub/inner") == ["inner"]


def test_non_recursive_host_volume_hides_sub_mounts(work: Path) -> None:
    """recursive false: the app sees the directory beneath the sub-mount (empty)."""
    assert _with_sub_mount(work, {"recursive": False}, "ls -A /data/sub | wc -l") == ["0"]


def test_read_only_recursive_volume_is_read_only_all_the_way_down(work: Path) -> None:
    """readOnly + recursive: sub-mounts are read-only too (mount_setattr AT_RECURSIVE)."""
    lines = _with_sub_mount(
        work, {"read_only": True}, "touch /data/sub/x 2>&1; cat /data/sub/inner"
    )
    assert "Read-only file system" in lines[0]
    assert lines[1] == "inner"


def test_missing_host_source_is_an_error(work: Path) -> None:
    """A host source that does not exist fails the setup, naming the volume and the path."""
    tree = make_tree(work / "tree")
    source = work / "absent"
    run = run_app(spec_for(work, tree, volumes=(host(source, "/data"),)))
    assert run.status == SETUP_FAILED
    assert "'data'" in run.error and str(source) in run.error and "does not exist" in run.error


def test_symlink_host_source_is_an_error(work: Path) -> None:
    """A host source that is a symlink is refused, not followed."""
    tree = make_tree(work / "tree")
    (work / "real").mkdir()
    link = work / "link"
    link.symlink_to(work / "real")
    run = run_app(spec_for(work, tree, volumes=(host(link, "/data"),)))
    assert run.status == SETUP_FAILED
    assert "symlink" in run.error and str(link) in run.error


def test_empty_volume_is_created_with_mode_and_owner_and_shared(work: Path) -> None:
    """An empty volume dir gets its mode/uid/gid once; a second app sees the first's file."""
    tree = make_tree(work / "tree")
    volumes_dir = work / "pod" / "volumes"
    bind = VolumeBind(
        "cache",
        VolumeKind.EMPTY,
        str(volumes_dir / "cache"),
        "/cache",
        mode=0o1770,
        uid=1000,
        gid=1000,
    )
    first = run_app(
        spec_for(work, tree, volumes=(bind,)), "stat -c '%a %u %g' /cache; echo 1 > /cache/f"
    )
    second = run_app(spec_for(work, tree, volumes=(bind,)), "cat /cache/f")
    assert first.lines == ["1770 1000 1000"]
    assert second.lines == ["1"]


def test_nested_volumes_mount_parents_first(work: Path) -> None:
    """A volume inside another volume's target lands on top of it, whatever the list order."""
    tree = make_tree(work / "tree")
    outer, inner = work / "outer", work / "inner"
    outer.mkdir()
    inner.mkdir()
    (inner / "mark").write_text("inner\n")
    binds = (host(inner, "/data/sub"), host(outer, "/data"))
    run = run_app(spec_for(work, tree, volumes=binds), "cat /data/sub/mark")
    assert run.lines == ["inner"]


@pytest.mark.parametrize("link", ["/", "../../..", "../../../../../../../.."])
def test_symlinked_target_stays_inside_the_rootfs(work: Path, link: str) -> None:
    """A target passing through `link -> /` or `-> ../../..` resolves inside the rootfs.

    On the host the same path would be this test's work dir: it must stay untouched.
    """
    tree = make_tree(work / "tree")
    (tree / "escape").symlink_to(link)
    source = work / "vol"
    source.mkdir()
    (source / "mark").write_text("volume\n")
    target = f"/escape{work}/landed"
    run = run_app(spec_for(work, tree, volumes=(host(source, target),)), f"cat {work}/landed/mark")
    assert run.status == 0, run
    assert run.lines == ["volume"]
    assert not (work / "landed").exists()


def test_target_that_is_a_symlink_to_root_is_refused(work: Path) -> None:
    """`/data -> /`: the target is the app's own root; covering it is an error naming it."""
    tree = make_tree(work / "tree")
    (tree / "data").symlink_to("/")
    source = work / "vol"
    source.mkdir()
    run = run_app(spec_for(work, tree, volumes=(host(source, "/data"),)))
    assert run.status == SETUP_FAILED
    assert "/data" in run.error and "rootfs itself" in run.error


def test_dangling_symlink_target_is_created_inside_the_rootfs(work: Path) -> None:
    """`/data -> /srv/missing/dir`: the missing directories are made inside the rootfs."""
    tree = make_tree(work / "tree")
    (tree / "data").symlink_to("/srv/missing/dir")
    source = work / "vol"
    source.mkdir()
    (source / "mark").write_text("ok\n")
    run = run_app(
        spec_for(work, tree, volumes=(host(source, "/data"),)), "cat /srv/missing/dir/mark"
    )
    assert run.lines == ["ok"]
    assert not (tree / "srv").exists()


def test_etc_hosts_and_resolv_conf_are_generated_and_read_only(work: Path) -> None:
    """The pod's files cover the image's: hosts names the pod; neither can be written."""
    tree = make_tree(work / "tree")
    etc = write_pod_etc(str(work), "my-pod", ["192.0.2.53"])
    script = "cat /etc/hosts /etc/resolv.conf; echo x >> /etc/hosts"
    run = run_app(spec_for(work, tree, etc=etc), script)
    assert any(line.split()[1:] == ["my-pod"] for line in run.lines if line.startswith("127."))
    assert "nameserver 192.0.2.53" in run.lines
    assert "Read-only file system" in run.output
    assert (tree / "etc" / "hosts").read_text() == "image-hosts\n"


def test_etc_symlinked_out_of_the_image_stays_inside(work: Path) -> None:
    """An image's `/etc/resolv.conf -> /run/resolv.conf` (dangling) is made inside the root."""
    tree = make_tree(work / "tree")
    (tree / "etc" / "resolv.conf").unlink()
    (tree / "etc" / "resolv.conf").symlink_to("../run/resolv.conf")
    etc = write_pod_etc(str(work), "my-pod", ["192.0.2.53"])
    run = run_app(spec_for(work, tree, etc=etc), "cat /run/resolv.conf")
    assert run.lines == ["nameserver 192.0.2.53"]
    host_file = Path("/run/resolv.conf")
    assert not host_file.exists() or "192.0.2.53" not in host_file.read_text()
