"""The API's conversions: RunSpec -> PodManifest, records -> messages, errors -> statuses,
and log files -> the chunks Pods.Logs streams (tail, follow, rotation)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from kurma.aci import ImageManifest, MemoryIsolator, parse_image_manifest
from kurma.api import _convert
from kurma.api._logs import LogFollower, last_lines, stream_logs
from kurma.api._status import ApiError, status_of
from kurma.api.v1 import pods_pb2
from kurma.client import app_spec, run_spec, volume
from kurma.errors import (
    AmbiguousImage,
    ArchiveError,
    ImageInUse,
    ImageNotFound,
    ValidationError,
)
from kurma.runtime._podrecord import AppRecord, AppState, PodRecord, PodState
from kurma.runtime._runtime import PodEvent, PodNotFound, PodStateError
from kurma.store import parse_image_ref

ID = "sha512-" + "a" * 128
OTHER_ID = "sha512-" + "b" * 128


@dataclass
class FakeImage:
    image_id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    app: dict[str, Any] | None = None

    @property
    def manifest(self) -> ImageManifest:
        doc: dict[str, Any] = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": self.name}
        if self.app is not None:
            doc["app"] = self.app
        return parse_image_manifest(json.dumps(doc))


BUSYBOX = FakeImage(
    ID,
    "example.com/busybox",
    {"version": "1.36", "os": "linux"},
    {
        "exec": ["/bin/sh"],
        "user": "1000",
        "group": "1000",
        "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "isolators": [{"name": "resource/memory", "value": {"limit": "64M"}}],
    },
)
BARE = FakeImage(OTHER_ID, "example.com/tools/my_tool")  # no app section


def resolve(ref: str) -> FakeImage:
    parse_image_ref(ref)  # ValidationError for a malformed reference, like the store
    for image in (BUSYBOX, BARE):
        if ref in (image.name, image.image_id) or ref.split(":")[0] == image.name:
            return image
    raise ImageNotFound(f"no image {ref} in the store")


def build(*apps: pods_pb2.AppSpec, **kw: Any) -> Any:
    return _convert.manifest_from_spec(run_spec(*apps, **kw), resolve)


# --- RunSpec -> PodManifest ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("example.com/busybox", "busybox"),
        ("example.com/tools/my_tool", "my-tool"),
        ("registry/Some.App", "some-app"),
        ("x/___", "app"),
    ],
)
def test_default_app_name_is_the_last_path_element(image: str, name: str) -> None:
    assert _convert.default_app_name(image) == name


def test_app_starts_from_the_images_app() -> None:
    """Without overrides the app is a copy of the image's: exec, identity, env, isolators."""
    manifest = build(app_spec("example.com/busybox"))
    (app,) = manifest.apps
    assert app.name == "busybox"
    assert app.image.id == ID
    assert app.image.name == "example.com/busybox"
    assert dict(app.image.labels) == {"version": "1.36", "os": "linux"}
    assert app.app is not None
    assert app.app.exec == ("/bin/sh",)
    assert (app.app.user, app.app.group) == ("1000", "1000")
    assert dict(app.app.environment) == {"A": "1", "B": "2"}


def test_overrides_replace_fields_and_merge_environment_and_isolators() -> None:
    """exec/user/group/workdir replace; env merges by name; isolators replace by name."""
    manifest = build(
        app_spec(
            "example.com/busybox",
            name="web",
            exec=["/bin/echo", "hi"],
            env={"B": "20", "C": "3"},
            user="0",
            group="10",
            working_directory="/tmp",
            isolators={
                "resource/memory": '{"limit": "128M"}',
                "os/linux/no-new-privileges": "true",
            },
            read_only_root_fs=True,
        )
    )
    (app,) = manifest.apps
    assert app.name == "web"
    assert app.read_only_root_fs is True
    assert app.app is not None
    assert app.app.exec == ("/bin/echo", "hi")
    assert (app.app.user, app.app.group) == ("0", "10")
    assert app.app.working_directory == "/tmp"
    assert dict(app.app.environment) == {"A": "1", "B": "20", "C": "3"}
    names = [i.name for i in app.app.isolators]
    assert sorted(names) == ["os/linux/no-new-privileges", "resource/memory"]
    memory = next(i for i in app.app.isolators if isinstance(i, MemoryIsolator))
    assert memory.limit is not None and memory.limit.text == "128M"  # not the image's 64M


def test_image_without_app_needs_exec_and_runs_as_root() -> None:
    """An image with no app section runs only with an exec given, as user and group 0."""
    with pytest.raises(ValidationError) as e:
        build(app_spec("example.com/tools/my_tool"))
    assert e.value.path == "spec.apps[0].exec"
    (app,) = build(app_spec("example.com/tools/my_tool", exec=["/x"])).apps
    assert app.name == "my-tool"
    assert app.app is not None and (app.app.user, app.app.group) == ("0", "0")


def test_default_names_are_made_unique() -> None:
    """Two apps of one image get busybox and busybox-2; a given name is never renamed."""
    manifest = build(
        app_spec("example.com/busybox"),
        app_spec("example.com/busybox"),
        app_spec("example.com/busybox", name="busybox-3"),
    )
    assert [a.name for a in manifest.apps] == ["busybox", "busybox-2", "busybox-3"]


def test_volumes_are_mounted_in_every_app_at_their_path() -> None:
    manifest = build(
        app_spec("example.com/busybox", name="a"),
        app_spec("example.com/busybox", name="b"),
        volumes=[
            volume("data", "/data"),
            volume("etc", "/host-etc", source="/etc", read_only=True),
        ],
    )
    assert [(v.name, v.kind.value, v.source, v.read_only) for v in manifest.volumes] == [
        ("data", "empty", None, None),
        ("etc", "host", "/etc", True),
    ]
    for app in manifest.apps:
        assert [(m.volume, m.path) for m in app.mounts] == [("data", "/data"), ("etc", "/host-etc")]


def test_pod_isolators_are_parsed() -> None:
    manifest = build(
        app_spec("example.com/busybox"), isolators={"resource/memory": '{"limit": "1G"}'}
    )
    assert [i.name for i in manifest.isolators] == ["resource/memory"]


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (run_spec(), "spec.apps"),
        (run_spec(app_spec("")), "spec.apps[0].image"),
        (run_spec(app_spec("Not An Image")), "spec.apps[0].image"),
        (
            run_spec(app_spec("example.com/busybox", env={"1bad": "x"})),
            "spec.apps[0].environment[0].name",
        ),
        (
            run_spec(app_spec("example.com/busybox", isolators={"resource/memory": "{oops"})),
            "spec.apps[0].isolators[0].value_json",
        ),
        (
            run_spec(
                app_spec("example.com/busybox", isolators={"resource/memory": '{"limit": "lots"}'})
            ),
            "spec.apps[0].isolators[0].value.limit",
        ),
        (
            run_spec(app_spec("example.com/busybox", working_directory="tmp")),
            "spec.apps[0].workingDirectory",
        ),
        (run_spec(app_spec("example.com/busybox", name="Bad_Name")), "spec.apps[0].name"),
        (
            run_spec(
                app_spec("example.com/busybox", name="x"), app_spec("example.com/busybox", name="x")
            ),
            "spec.apps[1].name",
        ),
        (
            run_spec(
                app_spec("example.com/busybox"), volumes=[pods_pb2.VolumeSpec(name="v", kind="nfs")]
            ),
            "spec.volumes[0].kind",
        ),
        (
            run_spec(
                app_spec("example.com/busybox"),
                volumes=[pods_pb2.VolumeSpec(name="v", kind="host")],
            ),
            "spec.volumes[0].source",
        ),
        (
            run_spec(app_spec("example.com/busybox"), volumes=[volume("v", "rel")]),
            "spec.volumes[0].path",
        ),
        (
            run_spec(app_spec("example.com/busybox"), isolators={"resource/memory": '"x"'}),
            "spec.isolators[0].value",
        ),
    ],
)
def test_spec_errors_name_the_spec_field(spec: pods_pb2.RunSpec, path: str) -> None:
    """Every invalid RunSpec is a ValidationError whose path is the RunSpec's field."""
    with pytest.raises(ValidationError) as e:
        _convert.manifest_from_spec(spec, resolve)
    assert e.value.path == path, str(e.value)


def test_missing_image_names_the_app() -> None:
    with pytest.raises(ImageNotFound, match=r"spec\.apps\[0\]\.image: no image example\.com/nope"):
        build(app_spec("example.com/nope"))


# --- records -> messages -------------------------------------------------------------------


def record(**kw: Any) -> PodRecord:
    manifest = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {"name": "web", "image": {"id": ID, "name": "example.com/web"}},
            {"name": "side", "image": {"id": OTHER_ID}},
        ],
        "isolators": [{"name": "host/api-access", "value": {}}],
    }
    base: dict[str, Any] = {
        "uuid": "0f9c2d5e-0000-4000-8000-000000000001",
        "name": "web",
        "manifest": json.dumps(manifest),
        "created_at": 1700000000.5,
        "state": PodState.EXITED,
        "apps": [
            AppRecord("web", ID, AppState.EXITED, None, 3, None, 1700000001.0, 1700000002.0),
            AppRecord("side", OTHER_ID, AppState.EXITED, None, None, "exec failed", None, 1.0),
        ],
        "isolators": [{"scope": "pod", "name": "resource/memory", "enforced": True, "note": "64M"}],
        "cgroup": "kurma/pod-1",
    }
    return PodRecord(**{**base, **kw})


def test_pod_facts_fill_in_image_names_and_api_access() -> None:
    """Names come from the manifest, else from the store; the api-access scope defaults."""
    facts = _convert.pod_facts(record(), lambda image_id: {OTHER_ID: "example.com/side"}[image_id])
    assert facts.image_names == {"web": "example.com/web", "side": "example.com/side"}
    assert facts.api_access == "subtree"


def test_pod_to_proto_carries_states_codes_and_times() -> None:
    rec = record()
    pod = _convert.pod_to_proto(rec, _convert.pod_facts(rec, lambda _: "x"))
    assert pod.state == pods_pb2.POD_STATE_EXITED
    assert pod.apps[0].state == pods_pb2.APP_STATE_EXITED
    assert pod.apps[0].HasField("exit_code") and pod.apps[0].exit_code == 3
    assert not pod.apps[1].HasField("exit_code")
    assert pod.apps[1].error == "exec failed"
    assert pod.apps[0].image_name == "example.com/web"
    assert pod.created_at.ToNanoseconds() == 1700000000_500000000
    assert not pod.HasField("started_at")
    assert pod.isolators[0].enforced and pod.isolators[0].note == "64M"
    assert pod.cgroup == "kurma/pod-1"
    assert json.loads(pod.manifest_json)["apps"][0]["name"] == "web"


def test_list_state_filter_rejects_unknown_numbers() -> None:
    assert _convert.pod_states([pods_pb2.POD_STATE_RUNNING]) == {PodState.RUNNING}
    with pytest.raises(ValidationError, match=r"states\[0\]"):
        _convert.pod_states([42])


def test_events_read_as_sentences() -> None:
    rec = record()
    exited = _convert.event_to_proto(PodEvent("app.exited", rec, "web", time=5.0))
    assert (exited.kind, exited.pod) == ("app.exited", rec.uuid)
    assert exited.message == "app web of pod web exited with code 3"
    failed = _convert.event_to_proto(PodEvent("app.exited", rec, "side"))
    assert failed.message == "app side of pod web failed to start: exec failed"
    assert _convert.event_to_proto(PodEvent("pod.exited", rec)).message == (
        "pod web exited (web=3, side=None)"
    )
    assert _convert.event_to_proto(PodEvent("pod.created", rec)).message == "pod web created"
    image = _convert.image_event("image.deleted", ID, "example.com/web", 1.0)
    assert (image.image, image.message) == (ID, "image example.com/web deleted")


# --- errors -> statuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (PodNotFound("no pod has the UUID or name 'x'"), grpc.StatusCode.NOT_FOUND, "'x'"),
        (
            PodStateError("pod x is running, not created"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "running",
        ),
        (
            ValidationError("apps[0].name", "must be an AC Name"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "apps[0].name: must",
        ),
        (ImageNotFound("no image a/b"), grpc.StatusCode.NOT_FOUND, "import it first"),
        (
            ImageInUse("image x is used by p"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "destroy the pods",
        ),
        (AmbiguousImage("x matches 2 images"), grpc.StatusCode.INVALID_ARGUMENT, "matches 2"),
        (ArchiveError("not a tar"), grpc.StatusCode.INVALID_ARGUMENT, "not a tar"),
        (TimeoutError("pod x still running"), grpc.StatusCode.DEADLINE_EXCEEDED, "still"),
        (ApiError(grpc.StatusCode.UNIMPLEMENTED, "later"), grpc.StatusCode.UNIMPLEMENTED, "later"),
        (
            OSError(28, "No space left on device", "/var/lib/kurma"),
            grpc.StatusCode.INTERNAL,
            "No space",
        ),
        (KeyError("boom"), grpc.StatusCode.INTERNAL, "internal error: KeyError"),
    ],
)
def test_errors_map_to_statuses_with_their_message(
    error: BaseException, code: grpc.StatusCode, text: str
) -> None:
    got_code, message = status_of(error)
    assert got_code is code
    assert text in message


# --- log files -> chunks --------------------------------------------------------------------


def test_last_lines_counts_an_unterminated_last_line() -> None:
    assert last_lines(b"a\nb\nc\n", 2) == (b"b\nc\n", 2)
    assert last_lines(b"a\nb\nc", 2) == (b"b\nc", 2)
    assert last_lines(b"a\n", 5) == (b"a\n", 1)
    assert last_lines(b"", 3) == (b"", 0)


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(b"line %d\n" % i for i in range(start, start + n))


def test_tail_reaches_into_rotated_files(tmp_path: Path) -> None:
    """tail N takes the last N lines across NAME.log.1 and NAME.log; 0 is all; -1 none."""
    log = tmp_path / "app.log"
    (tmp_path / "app.log.2").write_bytes(lines(3, 0))
    (tmp_path / "app.log.1").write_bytes(lines(3, 3))
    log.write_bytes(lines(2, 6))
    assert b"".join(LogFollower(log).initial(4)) == lines(4, 4)
    assert b"".join(LogFollower(log).initial(0)) == lines(8)
    assert b"".join(LogFollower(log).initial(-1)) == b""


def test_follow_survives_rotation(tmp_path: Path) -> None:
    """Data written before and after a rename to .1 arrives once each, in order."""
    log = tmp_path / "app.log"
    log.write_bytes(b"one\n")
    follower = LogFollower(log)
    assert b"".join(follower.initial(0)) == b"one\n"
    with open(log, "ab") as f:
        f.write(b"two\n")
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b"three\n")
    assert b"".join(follower.poll()) == b"two\nthree\n"
    with open(log, "ab") as f:
        f.write(b"four\n")
    assert b"".join(follower.poll()) == b"four\n"
    follower.close()


def test_follow_survives_two_rotations_between_polls(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\n")
    follower = LogFollower(log)
    assert b"".join(follower.initial(0)) == b"a\n"
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b"b\n")
    (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b"c\n")
    assert b"".join(follower.poll()) == b"b\nc\n"


def test_stream_ends_once_the_app_has_exited_and_everything_is_read(tmp_path: Path) -> None:
    """Follow returns the late output of an exited app, then ends by itself."""
    log = tmp_path / "app.log"
    log.write_bytes(b"early\n")
    state = {"pod": False, "apps": set()}

    def writer() -> None:
        time.sleep(0.2)
        with open(log, "ab") as f:
            f.write(b"late\n")
        state["apps"] = {"app"}
        time.sleep(0.1)
        with open(log, "ab") as f:
            f.write(b"after exit\n")  # podinit still draining the pipe

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    got = list(
        stream_logs(
            {"app": log},
            0,
            True,
            lambda: (state["pod"], state["apps"]),
            lambda: True,
            poll=0.02,
            settle=0.3,
        )
    )
    thread.join()
    assert b"".join(d for _, d in got) == b"early\nlate\nafter exit\n"
    assert time.monotonic() - started < 3


def test_stream_ends_when_the_client_goes_away(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"x\n")
    calls = iter([True, True, False])
    got = list(
        stream_logs({"app": log}, -1, True, lambda: (False, set()), lambda: next(calls), poll=0.01)
    )
    assert got == []
