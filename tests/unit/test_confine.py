"""Least privilege of pods that pods create: host volume translation, seccomp, scopes."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kurma.aci import Mount, PodManifest, RuntimeApp, RuntimeImage, Volume, VolumeKind
from kurma.api._podsockets import allowed
from kurma.errors import ValidationError
from kurma.runtime._confine import NotPermitted, _within, translate_volumes
from kurma.runtime._plan import API_VOLUME, SeccompPlan
from kurma.runtime._volumes import VolumeBind, place_beneath


def creator(*binds: VolumeBind) -> Any:
    rootfs = SimpleNamespace(volumes=binds)
    return SimpleNamespace(name="top", apps=[SimpleNamespace(rootfs=rootfs)])


def host(name: str, source: str, read_only: bool | None = None) -> PodManifest:
    return PodManifest(volumes=(Volume(name, VolumeKind.HOST, source, read_only),))


def test_host_volume_sources_are_paths_in_the_creators_view(tmp_path: Path) -> None:
    """A source in the creator's view becomes (the creator's volume root, steps below it);
    the manifest shows the joined path, never a path resolved now and mounted later."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    os.symlink("/etc", real / "escape")
    os.symlink("sub", real / "inside")
    os.symlink("../../..", real / "up")
    parent = creator(
        VolumeBind("data", VolumeKind.HOST, str(real), "/data"),
        VolumeBind("ro", VolumeKind.HOST, str(real), "/ro", read_only=True),
        VolumeBind(API_VOLUME, VolumeKind.HOST, "/", "/run/kurma", read_only=True),
    )
    manifest, beneath = translate_volumes(host("v", "/data/sub"), parent)
    assert manifest.volumes[0].source == str(real / "sub")
    assert beneath == {str(real / "sub"): (str(real), (("sub", True),))}
    manifest, beneath = translate_volumes(host("v", "/data/inside"), parent)
    assert manifest.volumes[0].source == str(real / "inside")  # resolved at mount, inside
    assert beneath[str(real / "inside")] == (str(real), (("inside", True),))
    manifest, beneath = translate_volumes(host("v", "/data"), parent)
    assert beneath == {str(real): (str(real), ())}
    assert translate_volumes(host("v", "/ro/sub", True), parent)[0].volumes[0].read_only
    for source, says in (
        ("/etc", "not inside"),
        ("/run/kurma", "not inside"),  # the API directory is no volume of the creator's
        ("/data/escape", "leads outside"),
        ("/data/escape/ssl", "leads outside"),
        ("/data/up/etc", "leads outside"),
        ("/data/../etc", "not inside"),
        ("/ro/sub", "readOnly"),
    ):
        with pytest.raises(NotPermitted, match=says):
            translate_volumes(host("v", source), parent)


def test_a_grandchilds_steps_extend_its_parents(tmp_path: Path) -> None:
    """A pod whose own volume came from its creator hands down that volume's root and steps
    plus one more; a non-recursive volume resolves its step without crossing mounts."""
    real = tmp_path / "real"
    (real / "a" / "b" / "c").mkdir(parents=True)
    child = creator(
        VolumeBind("d", VolumeKind.HOST, str(real), "/d", recursive=False, beneath=(("a", True),))
    )
    manifest, beneath = translate_volumes(host("v", "/d/b/c"), child)
    assert manifest.volumes[0].source == str(real / "a" / "b" / "c")
    assert manifest.volumes[0].recursive is False
    assert beneath == {str(real / "a/b/c"): (str(real), (("a", True), ("b/c", False)))}


def test_app_volumes_are_translated_too(tmp_path: Path) -> None:
    """An inline `appVolume` of kind host is a path a pod names like any other: held to the
    creator's volumes (it once went through untranslated, mounting any host path)."""
    (tmp_path / "sub").mkdir()
    parent = creator(VolumeBind("data", VolumeKind.HOST, str(tmp_path), "/data"))

    def with_app_volume(source: str) -> PodManifest:
        volume = Volume("x", VolumeKind.HOST, source)
        image = RuntimeImage("sha512-" + "0" * 128)
        app = RuntimeApp("a", image, mounts=(Mount("x", "/x", volume),))
        return PodManifest(apps=(app,))

    with pytest.raises(NotPermitted, match="not inside"):
        translate_volumes(with_app_volume("/etc"), parent)
    manifest, beneath = translate_volumes(with_app_volume("/data/sub"), parent)
    (mount,) = manifest.apps[0].mounts
    assert mount.app_volume is not None
    assert mount.app_volume.source == str(tmp_path / "sub")
    assert beneath == {str(tmp_path / "sub"): (str(tmp_path), (("sub", True),))}


def test_a_host_source_without_steps_is_refused_in_a_created_pod() -> None:
    """Fail closed: a created pod's host bind whose source the record does not map."""
    bind = VolumeBind("v", VolumeKind.HOST, "/etc", "/v")
    assert place_beneath((bind,), None) == (bind,)  # the host's pod: an admin's path
    with pytest.raises(ValidationError, match="not checked"):
        place_beneath((bind,), {})
    placed = place_beneath((bind,), {"/etc": ("/srv", [["etc", True]])})  # from JSON
    assert placed[0].source == "/srv" and placed[0].beneath == (("etc", True),)


BLOCKED = SeccompPlan("remove", ("mount", "reboot"))


@pytest.mark.parametrize(
    ("child", "parent", "within"),
    [
        (None, None, True),
        (None, BLOCKED, False),
        (BLOCKED, BLOCKED, True),
        (SeccompPlan("remove", ("mount",)), BLOCKED, False),
        (SeccompPlan("remove", ("mount", "reboot", "swapon")), BLOCKED, True),
        (SeccompPlan("retain", ("read", "write")), BLOCKED, True),
        (SeccompPlan("retain", ("read", "mount")), BLOCKED, False),
        (SeccompPlan("retain", ("read",)), SeccompPlan("retain", ("read", "write")), True),
        (SeccompPlan("retain", ("mount",)), SeccompPlan("retain", ("read",)), False),
        (BLOCKED, SeccompPlan("retain", ("read",)), False),
    ],
)
def test_seccomp_within(child: Any, parent: Any, within: bool) -> None:
    assert _within(child, parent) is within


def test_scopes_allow_methods() -> None:
    assert allowed("subtree", "/kurma.v1.Pods/Create")
    assert allowed("subtree", "/kurma.v1.Images/Import")
    assert allowed("subtree", "/kurma.v1.Images/Delete")  # only what it imported: _quota
    assert not allowed("subtree", "/kurma.v1.Trust/Add")
    assert not allowed("subtree", "/kurma.v1.Host/Poweroff")
    assert allowed("host-read", "/kurma.v1.Pods/List")
    assert allowed("host-read", "/kurma.v1.Host/Events")
    assert not allowed("host-read", "/kurma.v1.Pods/Stop")
    assert not allowed("host-read", "/kurma.v1.Images/Import")
    assert allowed("host", "/kurma.v1.Host/Poweroff")
    assert not allowed("host", "/kurma.v1.Nothing/Here")  # fail closed
