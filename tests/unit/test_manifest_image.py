"""ImageManifest: parsing, every validation rule (good and bad), serialisation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from kurma.aci import (
    App,
    Dependency,
    EventHandler,
    ImageManifest,
    MountPoint,
    Port,
    parse_image_manifest,
    parse_manifest,
)
from kurma.errors import ValidationError

ID = "sha512-" + "ab" * 64
BASE: dict[str, Any] = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/app",
    "labels": [
        {"name": "version", "value": "1.0.0"},
        {"name": "os", "value": "linux"},
        {"name": "arch", "value": "amd64"},
    ],
    "app": {"exec": ["/bin/app"], "user": "0", "group": "0"},
}
Mutation = Callable[[dict[str, Any]], object]


def build(mutate: Mutation) -> dict[str, Any]:
    """A copy of BASE changed by `mutate`."""
    m = copy.deepcopy(BASE)
    mutate(m)
    return m


def app(**fields: Any) -> Mutation:
    """A mutation setting fields of `app`."""
    return lambda m: m["app"].update(fields)


def top(**fields: Any) -> Mutation:
    """A mutation setting top-level fields."""
    return lambda m: m.update(fields)


def test_parses_the_spec_example() -> None:
    """The typed fields and conveniences the store uses."""
    m = parse_image_manifest(json.dumps(BASE))
    assert m.name == "example.com/app"
    assert m.version == "1.0.0"
    assert dict(m.labels) == {"version": "1.0.0", "os": "linux", "arch": "amd64"}
    assert list(m.labels) == ["version", "os", "arch"]
    assert m.app == App(user="0", group="0", exec=("/bin/app",))
    assert m.dependencies == () and m.path_whitelist == () and dict(m.annotations) == {}


def test_labels_are_read_only() -> None:
    """`labels` cannot be changed in place."""
    m = ImageManifest.from_json(BASE)
    with pytest.raises(TypeError):
        m.labels["version"] = "2"  # type: ignore[index]


def test_accepts_bytes_str_and_mapping() -> None:
    """All three inputs give the same manifest."""
    text = json.dumps(BASE)
    assert ImageManifest.from_json(text) == ImageManifest.from_json(text.encode())
    assert ImageManifest.from_json(BASE) == ImageManifest.from_json(text)


def test_keys_match_case_insensitively_and_unknown_fields_are_ignored() -> None:
    """Go's decoder habits: `NAME`, `App`, `supplementaryGids`; extra members ignored."""
    doc = build(lambda m: m.update(NAME=m.pop("name"), App=m.pop("app"), extra=[1]))
    doc["App"]["supplementaryGids"] = [5]
    m = parse_image_manifest(doc)
    assert m.name == "example.com/app"
    assert m.app is not None and m.app.supplementary_gids == (5,)


def test_full_app_round_trips() -> None:
    """Every app field parses into its type and serialises back to the same manifest."""
    doc = build(
        app(
            exec=["run", "--x"],
            supplementaryGIDs=[1, 2],
            eventHandlers=[{"name": "pre-start", "exec": ["/bin/pre"]}],
            workingDirectory="/w",
            environment=[{"name": "A", "value": "1"}, {"name": "b.c-d", "value": ""}],
            mountPoints=[{"name": "data", "path": "/data", "readOnly": True}],
            ports=[{"name": "http", "protocol": "tcp", "port": 80, "count": 2}],
            userAnnotations={"Any Key": "v"},
            userLabels={"tier": "web"},
        )
    )
    doc.update(
        dependencies=[{"imageName": "example.com/base", "imageID": ID, "size": 10}],
        pathWhitelist=["/bin/app"],
        annotations=[{"name": "created", "value": "2014-10-27T19:32:27Z"}],
    )
    m = parse_image_manifest(doc)
    assert m.app is not None
    assert m.app.event_handlers == (EventHandler("pre-start", ("/bin/pre",)),)
    assert m.app.mount_points == (MountPoint("data", "/data", True),)
    assert m.app.ports == (Port("http", "tcp", 80, 2, False),)
    assert dict(m.app.environment) == {"A": "1", "b.c-d": ""}
    assert m.dependencies == (Dependency("example.com/base", ID, size=10),)
    assert parse_image_manifest(m.to_bytes()) == m
    assert parse_image_manifest(m.to_json()).to_bytes() == m.to_bytes()


def test_to_bytes_is_canonical() -> None:
    """Sorted keys, no whitespace."""
    out = parse_image_manifest(BASE).to_bytes()
    assert out.startswith(b'{"acKind":"ImageManifest","acVersion":"0.8.11","app":{')
    assert b" " not in out


def test_parse_manifest_dispatches_on_ac_kind() -> None:
    """parse_manifest returns an ImageManifest for an image manifest, rejects other kinds."""
    assert isinstance(parse_manifest(BASE), ImageManifest)
    with pytest.raises(ValidationError) as e:
        parse_manifest(build(top(acKind="Other")))
    assert e.value.path == "acKind"


GOOD: dict[str, Mutation] = {
    "no labels, no app": lambda m: (m.pop("labels"), m.pop("app")),
    "arch without os": top(labels=[{"name": "arch", "value": "anything"}]),
    "os without arch": top(labels=[{"name": "os", "value": "darwin"}]),
    "darwin x86_64": top(
        labels=[{"name": "os", "value": "darwin"}, {"name": "arch", "value": "x86_64"}]
    ),
    "linux s390x": lambda m: m["labels"][2].update(value="s390x"),
    "older acVersion": top(acVersion="0.5.1"),
    "acVersion build metadata": top(acVersion="0.8.11+git"),
    "exec relative (PATH lookup)": app(exec=["sh"]),
    "exec empty": app(exec=[]),
    "null optional fields": top(dependencies=None, annotations=None, pathWhitelist=None),
    "env name with dot and dash": app(environment=[{"name": "a.b-c", "value": "1"}]),
    "port range up to 65535": app(
        ports=[{"name": "p", "protocol": "udp", "port": 65535, "count": 1}]
    ),
    "both event handlers": app(
        eventHandlers=[{"name": "pre-start", "exec": ["/a"]}, {"name": "post-stop", "exec": ["b"]}]
    ),
    "dependency name only": top(dependencies=[{"imageName": "base"}]),
    "annotation urls": top(
        annotations=[
            {"name": "homepage", "value": "http://x.org"},
            {"name": "documentation", "value": "https://x.org/d"},
        ]
    ),
    "free-form authors": top(annotations=[{"name": "authors", "value": "anything <at all>"}]),
    "user by path": app(user="/usr/bin/ping", group="/usr/bin/ping"),
}


@pytest.mark.parametrize("mutate", GOOD.values(), ids=GOOD.keys())
def test_valid(mutate: Mutation) -> None:
    """These variations are valid and survive a round trip."""
    m = parse_image_manifest(build(mutate))
    assert parse_image_manifest(m.to_bytes()) == m


BAD: dict[str, tuple[Mutation, str, str]] = {
    "kind": (top(acKind="PodManifest"), "acKind", "must be 'ImageManifest'"),
    "kind missing": (lambda m: m.pop("acKind"), "acKind", "required"),
    "version not semver": (top(acVersion="1.0"), "acVersion", "SemVer"),
    "version zero": (top(acVersion="0.0.0"), "acVersion", "from 0.1.0"),
    "version too new": (top(acVersion="0.9.0"), "acVersion", "to 0.8.11"),
    "version other major": (top(acVersion="1.0.0"), "acVersion", "to 0.8.11"),
    "version not a string": (top(acVersion=1), "acVersion", "must be a string"),
    "name missing": (lambda m: m.pop("name"), "name", "required"),
    "name format": (top(name="Example"), "name", "AC Identifier"),
    "labels not a list": (top(labels={}), "labels", "must be an array"),
    "label not an object": (top(labels=["os"]), "labels[0]", "must be an object"),
    "label name format": (
        lambda m: m["labels"].append({"name": "A", "value": ""}),
        "labels[3].name",
        "AC Identifier",
    ),
    "label name missing": (
        lambda m: m["labels"].append({"value": ""}),
        "labels[3].name",
        "required",
    ),
    "label value missing": (
        lambda m: m["labels"].append({"name": "a"}),
        "labels[3].value",
        "required",
    ),
    "label value not a string": (
        lambda m: m["labels"][0].update(value=1),
        "labels[0].value",
        "must be a string",
    ),
    "label duplicate": (
        lambda m: m["labels"].append({"name": "os", "value": "linux"}),
        "labels[3].name",
        "duplicate",
    ),
    "label called name": (
        lambda m: m["labels"].append({"name": "name", "value": "x"}),
        "labels[3].name",
        "'name'",
    ),
    "unknown os": (
        lambda m: m["labels"][1].update(value="windows"),
        "labels[1].value",
        "unknown os",
    ),
    "unknown arch": (
        lambda m: m["labels"][2].update(value="arm64"),
        "labels[2].value",
        "unknown arch",
    ),
    "app not an object": (top(app=[]), "app", "must be an object"),
    "user missing": (lambda m: m["app"].pop("user"), "app.user", "required"),
    "group missing": (lambda m: m["app"].pop("group"), "app.group", "required"),
    "user empty": (app(user=""), "app.user", "must not be empty"),
    "exec not a list": (app(exec="/bin/sh"), "app.exec", "must be an array"),
    "exec item": (app(exec=["/bin/sh", None]), "app.exec[1]", "must be a string"),
    "workdir relative": (app(workingDirectory="w"), "app.workingDirectory", "absolute"),
    "gid negative": (app(supplementaryGIDs=[1, -1]), "app.supplementaryGIDs[1]", "between 0 and"),
    "gid float": (app(supplementaryGIDs=[1.0]), "app.supplementaryGIDs[0]", "integer"),
    "gid bool": (app(supplementaryGIDs=[True]), "app.supplementaryGIDs[0]", "integer"),
    "gid too big": (app(supplementaryGIDs=[2**32]), "app.supplementaryGIDs[0]", "between 0 and"),
    "handler name": (
        app(eventHandlers=[{"name": "on-stop", "exec": ["/x"]}]),
        "app.eventHandlers[0].name",
        "pre-start",
    ),
    "handler duplicate": (
        app(
            eventHandlers=[
                {"name": "post-stop", "exec": ["/x"]},
                {"name": "post-stop", "exec": ["/y"]},
            ]
        ),
        "app.eventHandlers[1].name",
        "duplicate",
    ),
    "handler exec missing": (
        app(eventHandlers=[{"name": "post-stop"}]),
        "app.eventHandlers[0].exec",
        "program",
    ),
    "handler exec empty": (
        app(eventHandlers=[{"name": "post-stop", "exec": [""]}]),
        "app.eventHandlers[0].exec",
        "program",
    ),
    "env name": (
        app(environment=[{"name": "A=B", "value": ""}]),
        "app.environment[0].name",
        "letters, digits",
    ),
    "env name digit": (
        app(environment=[{"name": "1A", "value": ""}]),
        "app.environment[0].name",
        "not starting",
    ),
    "env duplicate": (
        app(environment=[{"name": "A", "value": ""}, {"name": "A", "value": "x"}]),
        "app.environment[1].name",
        "duplicate",
    ),
    "env value missing": (app(environment=[{"name": "A"}]), "app.environment[0].value", "required"),
    "mount point name": (
        app(mountPoints=[{"name": "a_b", "path": "/x"}]),
        "app.mountPoints[0].name",
        "AC Name",
    ),
    "mount point path": (
        app(mountPoints=[{"name": "a", "path": "x"}]),
        "app.mountPoints[0].path",
        "absolute",
    ),
    "mount point path missing": (
        app(mountPoints=[{"name": "a"}]),
        "app.mountPoints[0].path",
        "required",
    ),
    "mount point readOnly": (
        app(mountPoints=[{"name": "a", "path": "/x", "readOnly": "yes"}]),
        "app.mountPoints[0].readOnly",
        "boolean",
    ),
    "mount point duplicate": (
        app(mountPoints=[{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}]),
        "app.mountPoints[1].name",
        "duplicate",
    ),
    "port name": (
        app(ports=[{"name": "HTTP", "protocol": "tcp", "port": 80}]),
        "app.ports[0].name",
        "AC Name",
    ),
    "port protocol missing": (
        app(ports=[{"name": "h", "port": 80}]),
        "app.ports[0].protocol",
        "required",
    ),
    "port protocol empty": (
        app(ports=[{"name": "h", "protocol": "", "port": 80}]),
        "app.ports[0].protocol",
        "empty",
    ),
    "port missing": (
        app(ports=[{"name": "h", "protocol": "tcp"}]),
        "app.ports[0].port",
        "required",
    ),
    "port zero": (
        app(ports=[{"name": "h", "protocol": "tcp", "port": 0}]),
        "app.ports[0].port",
        "between 1 and 65535",
    ),
    "port too big": (
        app(ports=[{"name": "h", "protocol": "tcp", "port": 65536}]),
        "app.ports[0].port",
        "between 1 and 65535",
    ),
    "port string": (
        app(ports=[{"name": "h", "protocol": "tcp", "port": "80"}]),
        "app.ports[0].port",
        "integer",
    ),
    "port count zero": (
        app(ports=[{"name": "h", "protocol": "tcp", "port": 80, "count": 0}]),
        "app.ports[0].count",
        ">= 1",
    ),
    "port range end": (
        app(ports=[{"name": "h", "protocol": "tcp", "port": 65000, "count": 537}]),
        "app.ports[0].count",
        "beyond 65535",
    ),
    "port socketActivated": (
        app(ports=[{"name": "h", "protocol": "tcp", "port": 80, "socketActivated": 1}]),
        "app.ports[0].socketActivated",
        "boolean",
    ),
    "port duplicate": (
        app(
            ports=[
                {"name": "h", "protocol": "tcp", "port": 80},
                {"name": "h", "protocol": "udp", "port": 80},
            ]
        ),
        "app.ports[1].name",
        "duplicate",
    ),
    "user annotations value": (
        app(userAnnotations={"a": 1}),
        "app.userAnnotations.a",
        "must be a string",
    ),
    "user labels not object": (app(userLabels=["a"]), "app.userLabels", "must be an object"),
    "dependency name missing": (top(dependencies=[{}]), "dependencies[0].imageName", "required"),
    "dependency name": (
        top(dependencies=[{"imageName": "A"}]),
        "dependencies[0].imageName",
        "AC Identifier",
    ),
    "dependency id": (
        top(dependencies=[{"imageName": "a", "imageID": "sha512-abc"}]),
        "dependencies[0].imageID",
        "128 lowercase hex",
    ),
    "dependency id uppercase": (
        top(dependencies=[{"imageName": "a", "imageID": ID.upper()}]),
        "dependencies[0].imageID",
        "image ID",
    ),
    "dependency size": (
        top(dependencies=[{"imageName": "a", "size": -1}]),
        "dependencies[0].size",
        ">= 0",
    ),
    "dependency labels": (
        top(dependencies=[{"imageName": "a", "labels": [{"name": "os", "value": "beos"}]}]),
        "dependencies[0].labels[0].value",
        "unknown os",
    ),
    "whitelist relative": (top(pathWhitelist=["/a", "b"]), "pathWhitelist[1]", "absolute"),
    "whitelist duplicate": (top(pathWhitelist=["/a", "/a"]), "pathWhitelist[1]", "duplicate"),
    "whitelist not strings": (top(pathWhitelist=[1]), "pathWhitelist[0]", "string"),
    "annotation name": (
        top(annotations=[{"name": "A", "value": ""}]),
        "annotations[0].name",
        "AC Identifier",
    ),
    "annotation duplicate": (
        top(annotations=[{"name": "a", "value": ""}, {"name": "a", "value": ""}]),
        "annotations[1].name",
        "duplicate",
    ),
    "annotation created": (
        top(annotations=[{"name": "created", "value": "yesterday"}]),
        "annotations[0].value",
        "RFC 3339",
    ),
    "annotation homepage": (
        top(annotations=[{"name": "homepage", "value": "example.com"}]),
        "annotations[0].value",
        "http or https",
    ),
    "annotation documentation": (
        top(annotations=[{"name": "documentation", "value": "file:///doc"}]),
        "annotations[0].value",
        "http or https",
    ),
}


@pytest.mark.parametrize(("mutate", "path", "words"), BAD.values(), ids=BAD.keys())
def test_invalid(mutate: Mutation, path: str, words: str) -> None:
    """Each rule's violation is reported at the offending field, saying what is wrong."""
    with pytest.raises(ValidationError) as e:
        parse_image_manifest(build(mutate))
    assert e.value.path == path
    assert words in e.value.message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xff", "UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        ('{"a": NaN}', "not valid JSON"),
        ("[" * 100000 + "]" * 100000, "JSON"),
    ],
)
def test_malformed_documents(data: bytes | str, words: str) -> None:
    """Undecodable input is a ValidationError at the root, never another exception."""
    with pytest.raises(ValidationError) as e:
        parse_image_manifest(data)
    assert e.value.path == ""
    assert words in e.value.message
