"""Least privilege of pods that pods create: host volume translation, seccomp, scopes."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kurma.aci import PodManifest, Volume, VolumeKind
from kurma.api._podsockets import allowed
from kurma.runtime._confine import NotPermitted, _within, translate_volumes
from kurma.runtime._plan import API_VOLUME, SeccompPlan
from kurma.runtime._volumes import VolumeBind


def creator(*binds: VolumeBind) -> Any:
    rootfs = SimpleNamespace(volumes=binds)
    return SimpleNamespace(name="top", apps=[SimpleNamespace(rootfs=rootfs)])


def host(name: str, source: str, read_only: bool | None = None) -> PodManifest:
    return PodManifest(volumes=(Volume(name, VolumeKind.HOST, source, read_only),))


def test_host_volume_sources_are_paths_in_the_creators_view(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    os.symlink("/etc", real / "escape")
    os.symlink("sub", real / "inside")
    parent = creator(
        VolumeBind("data", VolumeKind.HOST, str(real), "/data"),
        VolumeBind("ro", VolumeKind.HOST, str(real), "/ro", read_only=True),
        VolumeBind(API_VOLUME, VolumeKind.HOST, "/", "/run/kurma", read_only=True),
    )
    (volume,) = translate_volumes(host("v", "/data/sub"), parent).volumes
    assert volume.source == str(real / "sub")
    (volume,) = translate_volumes(host("v", "/data/inside"), parent).volumes
    assert volume.source == str(real / "sub")  # a symlink that stays inside is resolved
    assert translate_volumes(host("v", "/ro/sub", True), parent).volumes[0].read_only
    for source, says in (
        ("/etc", "not inside"),
        ("/run/kurma", "not inside"),  # the API directory is no volume of the creator's
        ("/data/escape", "leads outside"),
        ("/data/../etc", "not inside"),
        ("/ro/sub", "readOnly"),
    ):
        with pytest.raises(NotPermitted, match=says):
            translate_volumes(host("v", source), parent)


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
