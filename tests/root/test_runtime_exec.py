"""Exec: a command run inside a running app sees the app's live root, runs as the app runs,
and its exit code comes back; with a terminal it has a controlling tty."""

from __future__ import annotations

import os
import select

import pytest

from kurma.runtime._podrecord import PodRecord

from ..waiting import wait_for
from .runtime_support import PodEnv

pytestmark = pytest.mark.root

LONG = "echo started > /tmp/marker; exec sleep 1000"


def _running(pods: PodEnv, **app: object) -> PodRecord:
    manifest = pods.manifest({"name": "web", "exec": ["/bin/sh", "-c", LONG], **app})
    record = pods.runtime.create_pod(manifest)
    pods.runtime.start_pod(record.uuid)
    wait_for(lambda: pods.runtime.get(record.uuid).apps[0].pid, "the app to register")
    return pods.runtime.get(record.uuid)


def _exec(pods: PodEnv, record: PodRecord, argv: list[str], **kw: object) -> tuple[int, bytes]:
    """Run argv with pipes; returns (exit code, stdout + stderr)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        proc = pods.runtime.exec_in_pod(record.uuid, None, argv, stdio=(in_r, out_w, out_w), **kw)
    finally:
        os.close(in_r)
        os.close(out_w)
    os.close(in_w)
    output = b""
    while chunk := os.read(out_r, 65536):
        output += chunk
    os.close(out_r)
    pods.runtime.wait_exec(proc, 10)
    assert proc.exit_code is not None
    return proc.exit_code, output


def test_exec_sees_the_apps_live_files(pods: PodEnv) -> None:
    record = _running(pods)

    def marker() -> tuple[int, bytes] | None:  # the app writes it right after start
        code, out = _exec(pods, record, ["cat", "/tmp/marker"])
        return (code, out) if code == 0 else None

    assert wait_for(marker, "the app's /tmp/marker") == (0, b"started\n")


def test_exec_runs_as_the_app_with_extra_environment(pods: PodEnv) -> None:
    record = _running(pods, user="app", group="app", workingDirectory="/home")
    code, out = _exec(
        pods, record, ["/bin/sh", "-c", "id -u; hostname; echo $FOO; pwd"], env=[("FOO", "bar")]
    )
    assert code == 0
    assert out.decode().split() == ["1000", "web", "bar", "/home"]


def test_exec_exit_code_and_missing_command(pods: PodEnv) -> None:
    record = _running(pods)
    assert _exec(pods, record, ["/bin/sh", "-c", "exit 7"])[0] == 7
    code, out = _exec(pods, record, ["no-such-command"])
    assert code == 127
    assert b"no-such-command" in out


def test_exec_is_in_the_pods_pid_namespace(pods: PodEnv) -> None:
    record = _running(pods)
    code, out = _exec(pods, record, ["cat", "/proc/1/comm"])
    assert (code, out) == (0, b"kurma-podinit\n")


def test_exec_with_a_terminal_from_the_pods_devpts(pods: PodEnv) -> None:
    record = _running(pods)
    proc = pods.runtime.exec_in_pod(
        record.uuid, "web", ["/bin/sh", "-c", "tty; test -t 0 && echo TTY"], stdio=None, tty=True
    )
    master = proc.terminal
    assert master is not None
    output = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 10)
            assert ready, "no output from the terminal"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every slave closed
                break
            if not chunk:
                break
            output += chunk
        pods.runtime.wait_exec(proc, 10)
    finally:
        os.close(master)
    assert proc.exit_code == 0
    lines = output.decode().split()
    # The pod's own devpts: the name resolves inside the pod, and it is the controlling tty.
    assert lines[0].startswith("/dev/pts/") and "TTY" in lines, lines


def test_exec_in_a_pod_that_is_not_running(pods: PodEnv) -> None:
    from kurma.runtime._runtime import PodStateError

    record = pods.run({"name": "done", "exec": ["/bin/true"]})
    with pytest.raises(PodStateError):
        pods.runtime.exec_in_pod(record.uuid, None, ["true"], stdio=(0, 1, 2))
