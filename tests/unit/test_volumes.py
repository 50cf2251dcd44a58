"""Volume planning (which pod volume lands where, with what flags) and host-side checks."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import App, MountPoint, PodManifest, VolumeKind
from kurma.errors import ValidationError
from kurma.runtime._volumes import VolumeBind, ensure_empty_volume, open_source, plan_volumes

ID = "sha512-" + "cd" * 64


def pod(mounts: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> PodManifest:
    """A one-app pod ("web") with the given mounts and volumes."""
    return PodManifest.from_json(
        {
            "acKind": "PodManifest",
            "acVersion": "0.8.11",
            "apps": [{"name": "web", "image": {"id": ID}, "mounts": mounts}],
            "volumes": volumes,
        }
    )


def image_app(*points: MountPoint) -> App:
    return App(user="0", group="0", exec=("/bin/true",), mount_points=points)


def plan(manifest: PodManifest, app: App | None = None) -> tuple[VolumeBind, ...]:
    return plan_volumes(manifest, manifest.apps[0], app, "/pods/p1/volumes")


def test_host_volume_defaults_to_recursive_and_writable() -> None:
    """pods.md: recursive SHOULD default to true; readOnly defaults to false."""
    manifest = pod(
        [{"volume": "data", "path": "/data"}],
        [{"name": "data", "kind": "host", "source": "/srv/data"}],
    )
    assert plan(manifest) == (VolumeBind("data", VolumeKind.HOST, "/srv/data", "/data"),)


def test_host_volume_flags_are_kept() -> None:
    """recursive false and readOnly true pass through."""
    volume = {
        "name": "data",
        "kind": "host",
        "source": "/srv",
        "readOnly": True,
        "recursive": False,
    }
    (bind,) = plan(pod([{"volume": "data", "path": "/data"}], [volume]))
    assert (bind.read_only, bind.recursive) == (True, False)


def test_empty_volume_lives_in_the_pods_volume_dir_with_defaults() -> None:
    """An empty volume: <volumes_dir>/<name>, mode 0755, uid 0, gid 0 unless given."""
    (bind,) = plan(pod([{"volume": "c", "path": "/c"}], [{"name": "c", "kind": "empty"}]))
    assert (bind.source, bind.mode, bind.uid, bind.gid) == ("/pods/p1/volumes/c", 0o755, 0, 0)
    volume = {"name": "c", "kind": "empty", "mode": "0700", "uid": 7, "gid": 8}
    (bind,) = plan(pod([{"volume": "c", "path": "/c"}], [volume]))
    assert (bind.mode, bind.uid, bind.gid) == (0o700, 7, 8)


def test_app_volume_gets_a_directory_of_its_own() -> None:
    """An inline appVolume never shares the directory of a pod volume of the same name."""
    mount = {"volume": "c", "path": "/c", "appVolume": {"name": "c", "kind": "empty"}}
    (bind,) = plan(pod([mount], [{"name": "c", "kind": "empty"}]))
    assert bind.source == "/pods/p1/volumes/web~c"


def test_mount_point_read_only_applies_unless_the_volume_says_otherwise() -> None:
    """The mount point's readOnly is the default; a volume's readOnly overrides it."""
    app = image_app(MountPoint("data", "/data", read_only=True))
    unset = pod([{"volume": "data", "path": "/data"}], [{"name": "data", "kind": "empty"}])
    assert plan(unset, app)[0].read_only is True
    volume = {"name": "data", "kind": "empty", "readOnly": False}
    explicit = pod([{"volume": "data", "path": "/data"}], [volume])
    assert plan(explicit, app)[0].read_only is False


def test_mount_point_is_satisfied_by_path_or_by_name() -> None:
    """A mount at the mount point's path, or naming it, satisfies it."""
    app = image_app(MountPoint("db", "/var/db"))
    volumes = [{"name": "store", "kind": "empty"}, {"name": "db", "kind": "empty"}]
    by_path = pod([{"volume": "store", "path": "/var/db/"}], volumes[:1])
    assert plan(by_path, app)[0].target == "/var/db"
    by_name = pod([{"volume": "db", "path": "/elsewhere"}], volumes[1:])
    assert plan(by_name, app)[0].target == "/elsewhere"


def test_unsatisfied_mount_point_gets_an_empty_volume_of_the_apps_own() -> None:
    """A mount point no mount satisfies (an OCI image's VOLUME) gets an empty volume, as
    rkt and docker give one: private to the app, its mount point's readOnly kept."""
    app = image_app(MountPoint("database", "/db/"), MountPoint("cache", "/cache", read_only=True))
    cache, db = sorted(plan(pod([], [{"name": "database", "kind": "empty"}]), app),
                       key=lambda b: b.target)  # fmt: skip
    assert (cache.target, cache.kind, cache.read_only) == ("/cache", VolumeKind.EMPTY, True)
    assert (db.target, db.source, db.read_only) == ("/db", "/pods/p1/volumes/web~database", False)


def test_runtime_app_override_replaces_the_images_mount_points() -> None:
    """The pod's `app` override, when present, is the app whose mount points count."""
    manifest = PodManifest.from_json(
        {
            "acKind": "PodManifest",
            "acVersion": "0.8.11",
            "apps": [
                {"name": "web", "image": {"id": ID}, "app": {"user": "0", "group": "0"}},
            ],
        }
    )
    assert plan(manifest, image_app(MountPoint("database", "/db"))) == ()


def test_binds_come_parents_first() -> None:
    """/data/sub is mounted after /data, whatever the manifest order."""
    volumes = [{"name": "a", "kind": "empty"}, {"name": "b", "kind": "empty"}]
    mounts = [{"volume": "b", "path": "/data/sub"}, {"volume": "a", "path": "/data"}]
    assert [b.target for b in plan(pod(mounts, volumes))] == ["/data", "/data/sub"]


def test_ensure_empty_volume_sets_mode_and_owner_once(tmp_path: Path) -> None:
    """The first call creates the dir with its mode and owner; later calls leave it alone."""
    bind = VolumeBind(
        "c", VolumeKind.EMPTY, str(tmp_path / "vols" / "c"), "/c", mode=0o750,
        uid=os.getuid(), gid=os.getgid(),
    )  # fmt: skip
    ensure_empty_volume(bind)
    st = os.stat(bind.source)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, os.getuid(), os.getgid())
    os.chmod(bind.source, 0o700)
    ensure_empty_volume(bind)
    assert stat.S_IMODE(os.stat(bind.source).st_mode) == 0o700


def test_open_source_refuses_missing_and_symlinked_sources(tmp_path: Path) -> None:
    """Missing: ENOENT naming volume and path. Symlink: ELOOP, never followed."""
    missing = VolumeBind("v", VolumeKind.HOST, str(tmp_path / "nope"), "/v")
    with pytest.raises(FileNotFoundError, match="'v': host source does not exist"):
        open_source(missing)
    (tmp_path / "link").symlink_to(tmp_path)
    linked = VolumeBind("v", VolumeKind.HOST, str(tmp_path / "link"), "/v")
    with pytest.raises(OSError, match="symlink") as info:
        open_source(linked)
    assert info.value.filename == str(tmp_path / "link")


def test_open_source_resolves_each_step_beneath_the_one_before(tmp_path: Path) -> None:
    """The steps of a created pod's source are opened beneath the volume root through fds:
    what leads outside (symlink swapped in, absolute or relative, `..`, a magic link) is
    refused whenever it happens; a symlink that stays inside is followed."""
    root = tmp_path / "v"
    (root / "d" / "in").mkdir(parents=True)
    os.symlink("d", root / "alias")

    def source(*steps: tuple[str, bool]) -> VolumeBind:
        return VolumeBind("v", VolumeKind.HOST, str(root), "/v", beneath=steps)

    fd = open_source(source(("alias/in", True)))
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(root / "d" / "in"))
    finally:
        os.close(fd)
    fd = open_source(source(("d", True), ("in", True)))
    os.close(fd)
    os.rename(root / "d", root / "gone")
    os.symlink(str(tmp_path), root / "d")  # the swap: d is now a symlink out of the volume
    for steps in (
        (("d/in", True),),
        (("d", True), ("in", True)),
        (("gone/../../v/gone", True),),
        (("gone", True), ("../gone", True)),  # `..` above a step's own directory
        (("/proc/self/root", True),),
    ):
        with pytest.raises(OSError, match="leads outside") as info:
            open_source(source(*steps))
        assert info.value.errno in (errno.EXDEV, errno.ELOOP), steps
    os.symlink("/proc/self/root", root / "magic")
    with pytest.raises(OSError, match="leads outside"):
        open_source(source(("magic", True)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(source(("gone/nope", True)))
    with pytest.raises(OSError, match="NUL"):
        open_source(source(("gone\0/../..", True)))


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("/srv/a\0b", "NUL byte"),
        ("/srv/\ud800", "valid UTF-8"),
        ("/srv/" + "a" * 256, "too long"),
        ("/srv" + "/a" * 2048, "too long"),
    ],
)
def test_an_invalid_host_source_is_refused_by_the_parser_naming_the_volume(
    source: str, says: str
) -> None:
    """Refused when the manifest is read (create), not when the mount fails (start)."""
    with pytest.raises(ValidationError, match=f"volumes\\[0\\].source: volume 'data': .*{says}"):
        pod([], [{"name": "data", "kind": "host", "source": source}])
    mounts = [{"volume": "x", "path": "/x", "appVolume": {"name": "x", "kind": "host",
                                                          "source": source}}]  # fmt: skip
    with pytest.raises(ValidationError, match=f"appVolume.source: volume 'x': .*{says}"):
        pod(mounts, [])


def test_implicit_volume_takes_the_image_directorys_mode(tmp_path: Path) -> None:
    """The image's directory at the mount point gives the empty volume its mode (and
    owner); a symlink there resolves inside the image, never to the host's directory."""
    tree = tmp_path / "tree"
    (tree / "data").mkdir(parents=True)
    os.chmod(tree / "data", 0o711)
    (tree / "etc").mkdir()
    os.chmod(tree / "etc", 0o700)
    os.symlink("/etc", tree / "conf")  # /etc of the image, not of the host (0755 here)
    app = image_app(MountPoint("data", "/data"), MountPoint("conf", "/conf"),
                    MountPoint("none", "/none"))  # fmt: skip
    binds = plan_volumes(pod([], []), pod([], []).apps[0], app, "/v", str(tree))
    modes = {b.target: b.mode for b in binds}
    assert modes == {"/data": 0o711, "/conf": 0o700, "/none": 0o755}
