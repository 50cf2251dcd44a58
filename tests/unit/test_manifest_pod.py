"""PodManifest: parsing, every validation rule (good and bad), serialisation."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from kurma.aci import (
    ExposedPort,
    MemoryIsolator,
    Mount,
    PodManifest,
    RuntimeImage,
    Volume,
    VolumeKind,
    parse_manifest,
    parse_pod_manifest,
)
from kurma.errors import ValidationError

ID = "sha512-" + "cd" * 64
BASE: dict[str, Any] = {
    "acKind": "PodManifest",
    "acVersion": "0.8.11",
    "apps": [
        {
            "name": "web",
            "image": {"name": "example.com/web", "id": ID},
            "mounts": [{"volume": "data", "path": "/data"}],
        }
    ],
    "volumes": [{"name": "data", "kind": "host", "source": "/srv/data"}],
}
Mutation = Callable[[dict[str, Any]], object]


def build(mutate: Mutation) -> dict[str, Any]:
    """A copy of BASE changed by `mutate`."""
    m = copy.deepcopy(BASE)
    mutate(m)
    return m


def top(**fields: Any) -> Mutation:
    """A mutation setting top-level fields."""
    return lambda m: m.update(fields)


def app0(**fields: Any) -> Mutation:
    """A mutation setting fields of the first app."""
    return lambda m: m["apps"][0].update(fields)


def volume(**fields: Any) -> Mutation:
    """A mutation replacing the volumes with one built from `fields`."""
    return top(volumes=[{"name": "data", **fields}])


def with_app(name: str, **fields: Any) -> Mutation:
    """A mutation appending an app."""
    return lambda m: m["apps"].append({"name": name, "image": {"id": ID}, **fields})


def test_parses_typed_objects() -> None:
    """Apps, images, mounts, volumes come out typed; `app()` finds an app by name."""
    pod = parse_pod_manifest(BASE)
    web = pod.app("web")
    assert web is not None and pod.app("nope") is None
    assert web.image == RuntimeImage(ID, "example.com/web")
    assert web.mounts == (Mount("data", "/data"),)
    assert pod.volumes == (Volume("data", VolumeKind.HOST, "/srv/data"),)
    assert isinstance(parse_manifest(BASE), PodManifest)


def test_full_pod_round_trips() -> None:
    """Every field survives to_bytes/from_json."""
    doc = build(
        top(
            isolators=[{"name": "resource/memory", "value": {"limit": "4G"}}],
            annotations=[{"name": "ip-address", "value": "10.1.2.3"}],
            ports=[
                {"name": "ftp", "hostPort": 2121, "hostIP": "127.0.0.1"},
                {
                    "name": "x",
                    "hostPort": 1,
                    "podPort": {"name": "x", "protocol": "tcp", "port": 8},
                },
            ],
            userAnnotations={"K": "v"},
            userLabels={"l": "v"},
        )
    )
    doc["volumes"].append({"name": "tmp", "kind": "empty", "mode": "1777", "uid": 5, "gid": 6})
    doc["apps"][0].update(
        readOnlyRootFS=True,
        annotations=[{"name": "foo", "value": "baz"}],
        app={"user": "0", "group": "0", "ports": [{"name": "ftp", "protocol": "tcp", "port": 21}]},
    )
    pod = parse_pod_manifest(doc)
    assert pod.isolators == (MemoryIsolator(limit=pod.isolators[0].limit),)  # type: ignore[attr-defined]
    assert pod.ports[0] == ExposedPort("ftp", 2121, "127.0.0.1")
    assert pod.volumes[1].mode_bits == 0o1777
    assert pod.apps[0].read_only_root_fs
    assert parse_pod_manifest(pod.to_bytes()) == pod


def test_empty_volume_defaults() -> None:
    """An empty volume without mode gets 0755."""
    pod = parse_pod_manifest(build(volume(kind="empty")))
    assert pod.volumes[0].mode_bits == 0o755
    assert pod.volumes[0].uid is None


GOOD: dict[str, Mutation] = {
    "no volumes, no mounts": lambda m: (m.pop("volumes"), m["apps"][0].pop("mounts")),
    "empty app list": top(apps=[], volumes=[]),
    "app volume instead of pod volume": app0(
        mounts=[{"volume": "own", "path": "/o", "appVolume": {"name": "own", "kind": "empty"}}]
    ),
    "host volume flags": volume(kind="host", source="/s", readOnly=True, recursive=False),
    "mode on host volume is ignored": volume(kind="host", source="/s", mode="0700", uid=1),
    "source on empty volume is ignored": volume(kind="empty", source="/x"),
    "image without name": app0(image={"id": ID}),
    "same image, two apps": with_app("web2", image={"name": "example.com/web", "id": ID}),
    "app port names unique across apps": lambda m: (
        with_app(
            "a",
            app={"user": "0", "group": "0", "ports": [{"name": "p", "protocol": "tcp", "port": 1}]},
        )(m),
        with_app(
            "b",
            app={"user": "0", "group": "0", "ports": [{"name": "q", "protocol": "tcp", "port": 1}]},
        )(m),
    ),
}


@pytest.mark.parametrize("mutate", GOOD.values(), ids=GOOD.keys())
def test_valid(mutate: Mutation) -> None:
    """These variations are valid and survive a round trip."""
    pod = parse_pod_manifest(build(mutate))
    assert parse_pod_manifest(pod.to_bytes()) == pod


def test_ignored_volume_fields_are_dropped() -> None:
    """Fields "only interpreted" for the other kind do not survive serialisation."""
    pod = parse_pod_manifest(build(volume(kind="host", source="/s", mode="0700")))
    assert "mode" not in pod.to_json()["volumes"][0]


PORT = {"name": "p", "protocol": "tcp", "port": 1}
BAD: dict[str, tuple[Mutation, str, str]] = {
    "kind": (top(acKind="ImageManifest"), "acKind", "'PodManifest'"),
    "apps missing": (lambda m: m.pop("apps"), "apps", "required"),
    "apps not a list": (top(apps={}), "apps", "array"),
    "app name missing": (lambda m: m["apps"][0].pop("name"), "apps[0].name", "required"),
    "app name format": (app0(name="Web"), "apps[0].name", "AC Name"),
    "app duplicate": (with_app("web"), "apps[1].name", "duplicate"),
    "image missing": (lambda m: m["apps"][0].pop("image"), "apps[0].image", "required"),
    "image id missing": (app0(image={"name": "a"}), "apps[0].image.id", "required"),
    "image id format": (app0(image={"id": "sha512-..."}), "apps[0].image.id", "image ID"),
    "image name": (app0(image={"id": ID, "name": "A"}), "apps[0].image.name", "AC Identifier"),
    "image labels": (
        app0(
            image={
                "id": ID,
                "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "x"}],
            }
        ),
        "apps[0].image.labels[1].value",
        "unknown arch",
    ),
    "app override validated": (app0(app={"user": "0"}), "apps[0].app.group", "required"),
    "readOnlyRootFS": (app0(readOnlyRootFS="true"), "apps[0].readOnlyRootFS", "boolean"),
    "mount volume missing": (app0(mounts=[{"path": "/d"}]), "apps[0].mounts[0].volume", "required"),
    "mount volume name": (
        app0(mounts=[{"volume": "D", "path": "/d"}]),
        "apps[0].mounts[0].volume",
        "AC Name",
    ),
    "mount path missing": (app0(mounts=[{"volume": "data"}]), "apps[0].mounts[0].path", "required"),
    "mount path relative": (
        app0(mounts=[{"volume": "data", "path": "d"}]),
        "apps[0].mounts[0].path",
        "absolute",
    ),
    "mount unknown volume": (
        app0(mounts=[{"volume": "nope", "path": "/d"}]),
        "apps[0].mounts[0].volume",
        "no pod volume",
    ),
    "mount app volume validated": (
        app0(mounts=[{"volume": "x", "path": "/d", "appVolume": {"name": "x", "kind": "host"}}]),
        "apps[0].mounts[0].appVolume.source",
        "required",
    ),
    "app annotation name": (
        app0(annotations=[{"name": "a.b", "value": ""}]),
        "apps[0].annotations[0].name",
        "AC Name",
    ),
    "app annotation duplicate": (
        app0(annotations=[{"name": "a", "value": ""}, {"name": "a", "value": ""}]),
        "apps[0].annotations[1].name",
        "duplicate",
    ),
    "app ports clash across apps": (
        lambda m: (
            with_app("a", app={"user": "0", "group": "0", "ports": [PORT]})(m),
            with_app("b", app={"user": "0", "group": "0", "ports": [PORT]})(m),
        ),
        "apps[2].app.ports[0].name",
        "already used by app 'a'",
    ),
    "volume name missing": (top(volumes=[{"kind": "empty"}]), "volumes[0].name", "required"),
    "volume name": (volume(name="Data", kind="empty"), "volumes[0].name", "AC Name"),
    "volume duplicate": (
        lambda m: m["volumes"].append(dict(m["volumes"][0])),
        "volumes[1].name",
        "duplicate",
    ),
    "volume kind missing": (volume(), "volumes[0].kind", "required"),
    "volume kind": (volume(kind="tmpfs"), "volumes[0].kind", "'host' or 'empty'"),
    "host source missing": (volume(kind="host"), "volumes[0].source", "required"),
    "host source relative": (volume(kind="host", source="s"), "volumes[0].source", "absolute"),
    "readOnly": (volume(kind="host", source="/s", readOnly=1), "volumes[0].readOnly", "boolean"),
    "recursive": (
        volume(kind="host", source="/s", recursive="yes"),
        "volumes[0].recursive",
        "boolean",
    ),
    "empty mode": (volume(kind="empty", mode="0999"), "volumes[0].mode", "octal"),
    "empty mode number": (volume(kind="empty", mode=755), "volumes[0].mode", "string"),
    "empty uid": (volume(kind="empty", uid=-1), "volumes[0].uid", "between 0 and"),
    "empty gid": (volume(kind="empty", gid="0"), "volumes[0].gid", "integer"),
    "pod isolator": (
        top(isolators=[{"name": "resource/memory", "value": {"limit": "lots"}}]),
        "isolators[0].value.limit",
        "quantity",
    ),
    "annotation name": (
        top(annotations=[{"name": "example.com/x", "value": ""}]),
        "annotations[0].name",
        "AC Name",
    ),
    "annotation created": (
        top(annotations=[{"name": "created", "value": "now"}]),
        "annotations[0].value",
        "RFC 3339",
    ),
    "port name": (top(ports=[{"name": "P", "hostPort": 1}]), "ports[0].name", "AC Name"),
    "port hostPort missing": (top(ports=[{"name": "p"}]), "ports[0].hostPort", "required"),
    "port hostPort range": (
        top(ports=[{"name": "p", "hostPort": 70000}]),
        "ports[0].hostPort",
        "between 1 and 65535",
    ),
    "port hostIP v6": (
        top(ports=[{"name": "p", "hostPort": 1, "hostIP": "::1"}]),
        "ports[0].hostIP",
        "IPv4",
    ),
    "port podPort": (
        top(ports=[{"name": "p", "hostPort": 1, "podPort": {"name": "p", "port": 1}}]),
        "ports[0].podPort.protocol",
        "required",
    ),
    "port duplicate": (
        top(ports=[{"name": "p", "hostPort": 1}, {"name": "p", "hostPort": 2}]),
        "ports[1].name",
        "duplicate",
    ),
    "userAnnotations": (top(userAnnotations={"a": None}), "userAnnotations.a", "string"),
    "userLabels": (top(userLabels="x"), "userLabels", "object"),
}


@pytest.mark.parametrize(("mutate", "path", "words"), BAD.values(), ids=BAD.keys())
def test_invalid(mutate: Mutation, path: str, words: str) -> None:
    """Each rule's violation is reported at the offending field, saying what is wrong."""
    with pytest.raises(ValidationError) as e:
        parse_pod_manifest(build(mutate))
    assert e.value.path == path
    assert words in e.value.message
