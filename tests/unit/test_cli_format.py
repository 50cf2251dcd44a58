"""What kurmactl prints: ps rows, ages, exit codes, JSON documents, log prefixes, host info,
events, image records, and the progress of an import (bar on a terminal, plain lines
otherwise)."""

from __future__ import annotations

import io
import json

import pytest

from kurma.cli._format import LogPrinter, age, exit_code, message_dict, pod_state, ps_table
from kurma.cli._host import event_line, info_text
from kurma.cli._image import image_doc
from kurma.cli._progress import Progress
from kurma.client import host_pb2, images_pb2, pods_pb2

NOW = 1_700_000_000.0


def pod(
    state: int = pods_pb2.POD_STATE_RUNNING, codes: tuple[int | None, ...] = (None,)
) -> pods_pb2.Pod:
    apps = []
    for i, code in enumerate(codes):
        app = pods_pb2.App(name=f"app{i}" if i else "web", image_name="example.com/web")
        if code is not None:
            app.exit_code = code
        apps.append(app)
    p = pods_pb2.Pod(
        uuid="0123456789ab-cdef-0123-4567-89abcdef0123", name="web", state=state, apps=apps
    )
    p.created_at.FromSeconds(int(NOW) - 150)
    return p


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (7200, "2h"), (200000, "2d"), (-5, "0s")],
)
def test_age(seconds: float, text: str) -> None:
    assert age(seconds) == text


def test_exit_code_is_the_first_non_zero() -> None:
    assert exit_code(pod(codes=(0, 3, 4)).apps) == 3
    assert exit_code(pod(codes=(0, 0)).apps) == 0
    assert exit_code(pod(codes=(7,)).apps) == 7
    assert exit_code(pod(codes=(None, 0)).apps) == 0


def test_pod_state_names() -> None:
    assert pod_state(pod()) == "running"
    assert pod_state(pod(pods_pb2.POD_STATE_CREATED)) == "created"
    assert pod_state(pod(pods_pb2.POD_STATE_EXITED, (0, 137))) == "exited (137)"


def test_ps_table_and_wide() -> None:
    rows = ps_table([pod(codes=(None, None))], now=NOW).splitlines()
    assert rows == [
        "UUID      NAME  STATE    APPS      AGE",
        "01234567  web   running  web,app1  2m",
    ]
    wide = ps_table([pod()], wide=True, now=NOW).splitlines()
    assert wide[0].split() == ["UUID", "NAME", "STATE", "APPS", "AGE", "IMAGES", "PARENT"]
    assert wide[1].split() == [pod().uuid, "web", "running", "web", "2m", "example.com/web", "-"]


def test_message_dict_unfolds_the_manifest() -> None:
    p = pod(codes=(0,))
    p.manifest_json = '{"acKind": "PodManifest"}'
    doc = message_dict(p)
    assert doc["manifest"] == {"acKind": "PodManifest"}
    assert "manifest_json" not in doc
    assert doc["state"] == "POD_STATE_RUNNING"
    assert doc["apps"][0]["exit_code"] == 0
    assert doc["parents"] == []  # fields at their default are there too
    json.dumps(doc)


def test_message_dict_numbers_stay_numbers() -> None:
    doc = message_dict(pods_pb2.PodStats(memory_bytes=1 << 40, pids=3))
    assert doc["memory_bytes"] == 1 << 40 and doc["pids"] == 3


# --- logs -------------------------------------------------------------------------------------


def test_one_app_is_written_as_it_comes() -> None:
    out = io.BytesIO()
    printer = LogPrinter(out, ["web"])
    printer.write("web", b"partial")
    assert out.getvalue() == b"partial"
    printer.write("web", b" line\n")
    printer.close()
    assert out.getvalue() == b"partial line\n"


def test_several_apps_are_prefixed_by_whole_lines() -> None:
    """A partial line waits for its end, so apps never mix within a line."""
    out = io.BytesIO()
    printer = LogPrinter(out, ["web", "db"])
    printer.write("web", b"GET /")
    printer.write("db", b"ready\nlistening\n")
    printer.write("web", b" 200\nGET /x")
    printer.close()
    assert out.getvalue().decode().splitlines() == [
        "db  | ready",
        "db  | listening",
        "web | GET / 200",
        "web | GET /x",
    ]


# --- host, events, images -----------------------------------------------------------------------


def test_info_text() -> None:
    info = host_pb2.HostInfo(
        hostname="box", kernel="6.1.0", uptime_seconds=90000, memory_total_bytes=8 << 30,
        memory_available_bytes=6 << 30, kurma_version="0.1.0", api_version="v1",
        cgroups=[host_pb2.CgroupController(name="memory", version=2),
                 host_pb2.CgroupController(name="hugetlb", version=0)],
        pods=2, images=1, caller="host", role="admin",
    )  # fmt: skip
    assert info_text(info).splitlines() == [
        "hostname: box",
        "kernel:   6.1.0",
        "uptime:   1d",
        "memory:   6.0 GiB available of 8.0 GiB",
        "kurma:    0.1.0 (API v1)",
        "cgroups:  memory v2, hugetlb -",
        "pods:     2",
        "images:   1",
        "caller:   host (admin)",
    ]


def test_event_line() -> None:
    event = host_pb2.Event(kind="pod.exited", pod="0123456789", message="pod web exited")
    event.time.FromMilliseconds(1_700_000_000_250)
    assert event_line(event) == "2023-11-14T22:13:20.250Z pod.exited 01234567 pod web exited"
    image = host_pb2.Event(kind="image.deleted", image="sha512-" + "a" * 128)
    assert event_line(image).split()[1:] == ["image.deleted", "sha512-aaaaaaaaaaaa"]


def test_image_doc_has_the_offline_keys() -> None:
    image = images_pb2.Image(id="sha512-x", name="example.com/a", labels={"version": "1"}, size=10)
    image.imported_at.FromSeconds(100)
    image.manifest_json = '{"name": "example.com/a"}'
    assert image_doc(image) == {
        "id": "sha512-x",
        "name": "example.com/a",
        "labels": {"version": "1"},
        "size": 10,
        "importedAt": 100.0,
        "skipped": [],
    }
    assert image_doc(image, with_manifest=True)["manifest"] == {"name": "example.com/a"}


# --- progress ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_every_ten_percent() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("big.aci", out, tty=False, clock=clock)
    total = 100 << 20
    for mib in range(0, 101):
        clock.now = mib / 10
        progress(mib << 20, total)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # 0%, 10% ... 100%
    assert lines[0].startswith("big.aci    0%")
    assert lines[-1] == "big.aci  100%  100.0 MiB / 100.0 MiB  10.0 MiB/s"


def test_plain_progress_of_unknown_size_every_ten_mib() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("stdin", out, tty=False, clock=clock)
    clock.now = 1
    for mib in range(1, 31):
        progress(mib << 20, 0)
    assert out.getvalue().splitlines() == [
        "stdin  1.0 MiB  1.0 MiB/s",
        "stdin  10.0 MiB  10.0 MiB/s",
        "stdin  20.0 MiB  20.0 MiB/s",
        "stdin  30.0 MiB  30.0 MiB/s",
    ]


def test_terminal_progress_redraws_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("a.aci", out, tty=True, clock=clock)
    clock.now = 2
    progress(1 << 20, 4 << 20)
    progress(4 << 20, 4 << 20)
    progress.finish()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    last = text.split("\r")[-1].rstrip()
    assert last == "a.aci  [########################] 100%  4.0 MiB / 4.0 MiB  2.0 MiB/s"
    assert "[######------------------]  25%" in text
