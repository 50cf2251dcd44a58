"""`kurmactl` as a person uses it: the real program in a subprocess, against a real kurmad.

The daemon and its cleanup come from test_kurmad (`shared`: one kurmad for this module with
busybox imported; `kurma`: a client that destroys whatever pods a test leaves). Every
command runs as `python -m kurma.cli.main --host unix://SOCKET ...`, and the tests check
what a person sees: stdout, the one-line error on stderr, and the exit code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kurma.aci import build_aci
from kurma.client import Client

from ..waiting import wait_for
from .runtime_support import IMAGE_NAME, busybox_rootfs, image_manifest
from .test_kurmad import REPO, Daemon, kurma, pod_manifest, shared

__all__ = ["kurma", "shared"]  # fixtures, imported for pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


def kurmactl(
    daemon: Daemon | str, *args: str | Path, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run kurmactl against `daemon` (or a --host URL) and return what it did."""
    host = daemon if isinstance(daemon, str) else f"unix://{daemon.socket}"
    return subprocess.run(
        [sys.executable, "-m", "kurma.cli.main", "--host", host, *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        cwd=REPO,
        env=_env(),
    )


def popen(daemon: Daemon, *args: str) -> subprocess.Popen[str]:
    host = f"unix://{daemon.socket}"
    return subprocess.Popen(
        [sys.executable, "-m", "kurma.cli.main", "--host", host, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KURMA_HOST"}
    env["COLUMNS"] = "200"
    return env


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one-line message of a failed command (exit `code`)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result.stderr


SH = ["--", "/bin/sh", "-c"]


@pytest.fixture
def daemon(shared: tuple[Daemon, str], kurma: Client) -> Daemon:
    """The shared kurmad; pods a test leaves are destroyed after it (by `kurma`)."""
    return shared[0]


# --- images -----------------------------------------------------------------------------------


def test_image_import_ls_inspect_run_rm(daemon: Daemon, tmp_path: Path) -> None:
    """import prints the ID and name (progress as plain lines on stderr when not a
    terminal); ls and inspect show it; `run` with no command runs the image's own app;
    rm removes it."""
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "payload").write_bytes(os.urandom(3 << 20))  # progress every MiB
    app = {"exec": ["/bin/sh", "-c", "echo hello from the image"], "user": "0", "group": "0"}
    aci = tmp_path / "hello.aci"
    build_aci(rootfs, image_manifest("example.com/hello", app=app, version="1.2"), aci, mtime=0)
    imported = kurmactl(daemon, "image", "import", aci)
    image_id, name = ok(imported).split()
    assert image_id.startswith("sha512-") and name == "example.com/hello"
    progress = imported.stderr.splitlines()
    assert progress[-1].startswith("hello.aci  100%"), imported.stderr
    assert "\r" not in imported.stderr
    assert "(already present)" in ok(kurmactl(daemon, "image", "import", aci))

    listing = ok(kurmactl(daemon, "image", "ls")).splitlines()
    assert listing[0].split() == ["ID", "NAME", "VERSION", "SIZE", "IMPORTED"]
    assert any(line.split()[1:3] == ["example.com/hello", "1.2"] for line in listing[1:])
    assert image_id in ok(kurmactl(daemon, "image", "list", "-q")).split()
    doc = json.loads(ok(kurmactl(daemon, "image", "inspect", "example.com/hello")))
    assert doc["id"] == image_id and doc["manifest"]["name"] == "example.com/hello"

    assert ok(kurmactl(daemon, "run", "--rm", "example.com/hello")) == "hello from the image\n"
    assert ok(kurmactl(daemon, "image", "rm", "example.com/hello")).strip() == image_id
    assert image_id not in ok(kurmactl(daemon, "image", "ls", "-q"))


def test_image_import_from_stdin(daemon: Daemon, busybox_aci: Path) -> None:
    """`image import -` reads the archive from stdin (size unknown: bytes and rate only)."""
    with open(busybox_aci, "rb") as f:
        result = subprocess.run(
            [sys.executable, "-m", "kurma.cli.main", "-H", str(daemon.socket), "image",
             "import", "-"],
            stdin=f, capture_output=True, text=True, timeout=60, cwd=REPO, env=_env(),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1:] == [IMAGE_NAME, "(already", "present)"]


# --- run ----------------------------------------------------------------------------------------


def test_run_prints_the_output_and_exits_with_the_app_code(daemon: Daemon) -> None:
    """Without -d: the app's stdout and stderr as they come, then its exit code; the exited
    pod stays (ps -a shows it, ps does not)."""
    result = kurmactl(
        daemon, "run", "--name", "three", IMAGE_NAME, *SH, "echo out; echo err >&2; exit 3"
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out\nerr\n"
    assert result.stderr == ""
    assert "three" not in ok(kurmactl(daemon, "ps")).split()
    row = next(line for line in ok(kurmactl(daemon, "ps", "-a")).splitlines() if " three " in line)
    assert "exited (3)" in row


def test_run_several_images_and_rm(daemon: Daemon) -> None:
    """Two images, each with its command (`---` between): lines prefixed by app, the exit
    code is the first non-zero one, and --rm leaves no pod behind."""
    result = kurmactl(
        daemon, "run", "--rm", "--name", "duo",
        IMAGE_NAME, *SH, "echo one; sleep 0.3; echo two", "---",
        IMAGE_NAME, *SH, "echo three; exit 4",
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines) == ["busybox   | one", "busybox   | two", "busybox-2 | three"]
    assert lines.index("busybox   | one") < lines.index("busybox   | two")
    assert "duo" not in ok(kurmactl(daemon, "ps", "-a", "-o", "name")).split()


def test_run_with_env_and_volumes(daemon: Daemon, tmp_path: Path) -> None:
    """--env reaches every app; a host directory mounts read-only with :ro; an empty
    volume is writable."""
    (tmp_path / "note").write_text("from the host\n")
    script = (
        "echo $GREETING; cat /host/note; "
        "touch /host/x 2>/dev/null || echo ro; touch /scratch/y && echo rw"
    )
    result = kurmactl(
        daemon, "run", "--rm", "-e", "GREETING=hi", "-v", f"{tmp_path}:/host:ro",
        "--volume", "scratch:/scratch", IMAGE_NAME, *SH, script,
    )  # fmt: skip
    assert ok(result) == "hi\nfrom the host\nro\nrw\n"
    assert not (tmp_path / "x").exists()


def test_run_with_host_network(daemon: Daemon) -> None:
    """--net host: the pod is in the host's network namespace."""
    mine = os.readlink("/proc/self/ns/net")
    inside = ok(
        kurmactl(
            daemon, "run", "--rm", "--net", "host", IMAGE_NAME, *SH, "readlink /proc/self/ns/net"
        )
    )
    own = ok(kurmactl(daemon, "run", "--rm", IMAGE_NAME, *SH, "readlink /proc/self/ns/net"))
    assert inside.strip() == mine
    assert own.strip() != mine


def test_run_with_a_memory_isolator(daemon: Daemon) -> None:
    """--isolator NAME=JSON is a pod-wide isolator: the pod's cgroup has the limit."""
    uuid = ok(kurmactl(
        daemon, "run", "-d", "--isolator", 'resource/memory={"limit": "64M"}',
        IMAGE_NAME, *SH, "sleep 100",
    )).strip()  # fmt: skip
    stats = json.loads(ok(kurmactl(daemon, "stats", uuid, "-o", "json")))
    assert stats["memory_limit_bytes"] in (64_000_000, 64 << 20)
    table = ok(kurmactl(daemon, "stats", uuid)).splitlines()
    assert table[0].split() == ["UUID", "MEMORY", "LIMIT", "CPU", "PIDS", "OOM", "KILLS"]


def test_run_from_a_manifest_file(
    daemon: Daemon, shared: tuple[Daemon, str], tmp_path: Path
) -> None:
    """--manifest FILE runs a full pod manifest."""
    manifest = tmp_path / "pod.json"
    manifest.write_bytes(pod_manifest(shared[1], ("first", ["/bin/echo", "from a manifest"])))
    assert ok(kurmactl(daemon, "run", "--rm", "--manifest", manifest)) == "from a manifest\n"


def test_interrupting_run_stops_the_pod(daemon: Daemon, kurma: Client) -> None:
    """Ctrl-C on an attached run stops the pod (like a foreground process) and exits 130;
    with --rm the pod is gone."""
    proc = popen(
        daemon, "run", "--rm", "--name", "interrupted", IMAGE_NAME, *SH, "echo up; sleep 100"
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "up\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        proc.kill()
        proc.wait()
    assert "stopping pod interrupted" in proc.stderr.read()
    assert [p for p in kurma.list_pods() if p.name == "interrupted"] == []


# --- detached pods: ps, logs, stop, rm ----------------------------------------------------------


def test_detached_pod_ps_logs_stop_rm(daemon: Daemon) -> None:
    """run -d prints the UUID; ps lists it running (table, -q, json); logs --tail gives the
    last lines; logs -f follows until the pod stops; rm refuses a running pod, then works."""
    script = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done"
    uuid = ok(kurmactl(daemon, "run", "-d", "--name", "ticker", IMAGE_NAME, *SH, script)).strip()
    assert len(uuid) == 36
    table = ok(kurmactl(daemon, "ps")).splitlines()
    assert table[0].split() == ["UUID", "NAME", "STATE", "APPS", "AGE"]
    assert [line.split()[:4] for line in table[1:] if "ticker" in line] == [
        [uuid[:8], "ticker", "running", "busybox"]
    ]
    assert uuid in ok(kurmactl(daemon, "ps", "-q")).split()
    (doc,) = [p for p in json.loads(ok(kurmactl(daemon, "ps", "-o", "json"))) if p["uuid"] == uuid]
    assert doc["state"] == "POD_STATE_RUNNING" and doc["apps"][0]["image_name"] == IMAGE_NAME
    assert uuid in ok(kurmactl(daemon, "ps", "-o", "wide"))

    wait_for(lambda: "line 3" in ok(kurmactl(daemon, "logs", "ticker")), "three lines", 20.0)
    last = ok(kurmactl(daemon, "logs", "ticker", "--tail", "2")).splitlines()
    assert len(last) == 2 and all(line.startswith("line ") for line in last)
    assert ok(kurmactl(daemon, "logs", "ticker", "--tail", "0")) == ""

    follower = popen(daemon, "logs", "-f", "--tail", "1", "ticker")
    try:
        assert follower.stdout is not None
        first = int(follower.stdout.readline().split()[1])
        second = int(follower.stdout.readline().split()[1])
        assert second == first + 1
        assert "is running" in failed(kurmactl(daemon, "rm", "ticker"))
        assert ok(kurmactl(daemon, "stop", "--time", "1", "ticker")).strip() == uuid
        assert follower.wait(20) == 0  # the follow ends once the pod has exited
    finally:
        follower.kill()
        follower.wait()
    assert "exited" in ok(kurmactl(daemon, "ps", "-a"))
    assert ok(kurmactl(daemon, "rm", uuid[:8])).split() == [uuid]
    assert "ticker" not in ok(kurmactl(daemon, "ps", "-a", "-o", "name")).split()


def test_rm_force_stops_first(daemon: Daemon) -> None:
    uuid = ok(kurmactl(daemon, "run", "-d", IMAGE_NAME, *SH, "sleep 100")).strip()
    assert ok(kurmactl(daemon, "rm", "-f", uuid)).split() == [uuid]
    assert uuid not in ok(kurmactl(daemon, "ps", "-a", "-q"))


def test_create_start_wait(daemon: Daemon) -> None:
    """create makes a pod that ps shows as created; start by UUID prefix; wait prints
    and exits with the app's code."""
    uuid = ok(
        kurmactl(daemon, "create", "--name", "later", IMAGE_NAME, *SH, "sleep 0.5; exit 5")
    ).strip()
    assert "created" in next(
        line for line in ok(kurmactl(daemon, "ps")).splitlines() if "later" in line
    )
    assert ok(kurmactl(daemon, "start", uuid[:8])).strip() == uuid
    waited = kurmactl(daemon, "wait", "later")
    assert (waited.returncode, waited.stdout) == (5, "5\n")


def test_inspect_prints_json(daemon: Daemon) -> None:
    """inspect: the pod as JSON, its manifest as an object."""
    ok(kurmactl(daemon, "create", "--name", "looked-at", IMAGE_NAME, *SH, "true"))
    doc = json.loads(ok(kurmactl(daemon, "inspect", "looked-at")))
    assert doc["name"] == "looked-at"
    assert doc["state"] == "POD_STATE_CREATED"
    assert doc["manifest"]["acKind"] == "PodManifest"
    assert doc["apps"][0]["image_name"] == IMAGE_NAME


def test_logs_of_one_app_of_several(daemon: Daemon) -> None:
    """logs POD shows every app prefixed; logs POD APP only that app's output."""
    ok(kurmactl(
        daemon, "run", "--name", "pair",
        IMAGE_NAME, *SH, "echo a", "---", IMAGE_NAME, *SH, "echo b",
    ))  # fmt: skip
    assert sorted(ok(kurmactl(daemon, "logs", "pair")).splitlines()) == [
        "busybox   | a",
        "busybox-2 | b",
    ]
    assert ok(kurmactl(daemon, "logs", "pair", "busybox-2")) == "b\n"


# --- host, events, what answers UNIMPLEMENTED --------------------------------------------------


def test_host_info_and_version(daemon: Daemon) -> None:
    info = ok(kurmactl(daemon, "host", "info"))
    assert f"kernel:   {os.uname().release}" in info
    assert "caller:   host (admin)" in info
    doc = json.loads(ok(kurmactl(daemon, "host", "info", "-o", "json")))
    assert doc["api_version"] == "v1" and doc["memory_total_bytes"] > 0
    version = ok(kurmactl(daemon, "version")).splitlines()
    assert version[0].startswith("kurmactl ")
    assert version[1].startswith("kurmad ") and f"unix://{daemon.socket}" in version[1]


def test_events_prints_pod_events(daemon: Daemon, kurma: Client) -> None:
    """events -n N prints N events as they happen, then ends."""
    from .test_kurmad import sh

    watcher = popen(daemon, "events", "-n", "1")
    try:
        # The watcher subscribes at some point after it starts: create pods until it sees one.
        wait_for(
            lambda: kurma.create_pod(spec=sh("true")) and watcher.poll() is not None,
            "an event",
            20.0,
        )
        out = watcher.stdout.read() if watcher.stdout else ""
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0
    (line,) = out.splitlines()
    assert " pod.created " in line


def test_exec_and_run_it(daemon: Daemon) -> None:
    """exec passes the daemon's answer on: today UNIMPLEMENTED with what is missing (exit
    1); run -it, which needs exec, says the same and creates no pod."""
    uuid = ok(kurmactl(daemon, "run", "-d", IMAGE_NAME, *SH, "sleep 100")).strip()
    result = kurmactl(daemon, "exec", uuid, "/bin/sh", "-c", "echo inside; exit 6")
    if result.returncode == 6:  # kurmad has exec now
        assert result.stdout == "inside\n"
    else:
        assert "exec" in failed(result)
    before = ok(kurmactl(daemon, "ps", "-a", "-q"))
    message = failed(kurmactl(daemon, "run", "-it", IMAGE_NAME, "--", "/bin/sh"))
    assert message.startswith("kurmactl: ") and message.count("\n") == 1
    assert ok(kurmactl(daemon, "ps", "-a", "-q")) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["trust", "ls"], "trusted signing keys"),
        (["trust", "rm", "example.com/"], "trusted signing keys"),
        (["service", "restart", "ntp"], "no service named 'ntp'"),
        (["service", "logs", "ntp"], "no service named 'ntp'"),
        (["reboot"], "not running under kurma-init"),
        (["poweroff"], "not running under kurma-init"),
        (["host", "boot-log"], "boot_log_file is not set"),
    ],
)
def test_unimplemented_answers_pass_through(daemon: Daemon, args: list[str], says: str) -> None:
    """What later issues bring: the daemon's message, on one line, exit 1."""
    message = failed(kurmactl(daemon, *args))
    assert message.startswith("kurmactl: ") and says in message
    assert message.count("\n") == 1


def test_trust_add_reads_the_key_first(daemon: Daemon, tmp_path: Path) -> None:
    key = tmp_path / "key.asc"
    key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    assert "trusted signing keys" in failed(kurmactl(daemon, "trust", "add", "example.com/", key))
    assert "cannot read the key" in failed(kurmactl(daemon, "trust", "add", "x/", tmp_path / "no"))


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "no-such-pod"],
        ["start", "no-such-pod"],
        ["stop", "no-such-pod"],
        ["rm", "no-such-pod"],
        ["logs", "no-such-pod"],
        ["wait", "no-such-pod"],
        ["stats", "no-such-pod"],
    ],
)
def test_unknown_pod(daemon: Daemon, args: list[str]) -> None:
    """Exit 1 and one line naming the pod."""
    message = failed(kurmactl(daemon, *args))
    assert message == (
        "kurmactl: no pod has the UUID or name 'no-such-pod' (list pods with `kurmactl ps -a`)\n"
    )


def test_invalid_manifest_file(daemon: Daemon, shared: tuple[Daemon, str], tmp_path: Path) -> None:
    """The daemon's message names the field; not JSON says so."""
    bad = tmp_path / "bad.json"
    bad.write_bytes(pod_manifest(shared[1], ("Bad_Name", ["/bin/true"])))
    assert "apps[0].name" in failed(kurmactl(daemon, "run", "--manifest", bad))
    bad.write_text("{not json")
    assert "JSON" in failed(kurmactl(daemon, "create", "--manifest", bad))
    assert "cannot read the manifest" in failed(
        kurmactl(daemon, "run", "--manifest", tmp_path / "no")
    )


def test_missing_image(daemon: Daemon) -> None:
    message = failed(kurmactl(daemon, "run", "example.com/missing", "--", "/bin/true"))
    assert "example.com/missing" in message and "import it first" in message
    assert "example.com/missing" in failed(
        kurmactl(daemon, "image", "inspect", "example.com/missing")
    )


@pytest.mark.parametrize(
    "args",
    [
        ["ps", "--bogus"],
        ["nope"],
        ["logs"],
        ["stop", "--time", "soon", "x"],
        ["run"],
        ["run", "--volume", "relative/dir:/x", IMAGE_NAME],
        ["run", "--isolator", "resource/memory={", IMAGE_NAME],
        ["run", "-d", "--rm", IMAGE_NAME],
        ["run", "--manifest", "pod.json", IMAGE_NAME],
        ["run", "--", "/bin/true"],
        ["exec", "somepod"],
    ],
)
def test_bad_flags_exit_2(daemon: Daemon, args: list[str]) -> None:
    """Bad usage: exit 2 with the reason, before anything is sent."""
    assert failed(kurmactl(daemon, *args), code=2).strip()


def test_daemon_not_running(tmp_path: Path) -> None:
    """No socket, or a socket nobody listens on: the same clear line, exit 1."""
    missing = tmp_path / "missing.sock"
    expected = f"kurmactl: cannot reach kurmad at unix://{missing}: is it running?\n"
    assert failed(kurmactl(f"unix://{missing}", "ps")) == expected
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # bound, never listening: connection refused
    expected = f"kurmactl: cannot reach kurmad at unix://{stale}: is it running?\n"
    started = time.monotonic()
    assert failed(kurmactl(f"unix://{stale}", "ps")) == expected
    assert time.monotonic() - started < 10
    env = {**_env(), "KURMA_HOST": f"unix://{missing}"}
    result = subprocess.run(
        [sys.executable, "-m", "kurma.cli.main", "ps"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 1
    assert result.stderr == f"kurmactl: cannot reach kurmad at unix://{missing}: is it running?\n"
