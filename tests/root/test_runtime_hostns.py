"""Pods sharing the host's namespaces (`os/linux/namespaces`, e.g. `{"pid": "host"}`).

net, ipc and uts: the zygote simply does not unshare them. pid: no PID namespace at all;
kurma-podinit runs in reaper mode (`-r` the pod cgroup's cgroup.procs), a child subreaper
that signals the cgroup where PID 1 would kill(-1), and post-stop handlers are recorded by
the launcher's child that forked them (see launcher/_spawn.py and podinit/README.md).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.runtime._podrecord import AppState, PodState
from kurma.runtime._runtime import RuntimeConfig
from kurma.runtime.metadata import MetadataConfig

from ..waiting import wait_for
from .runtime_support import PodEnv, make_env
from .runtime_support import sh_app as _sh
from .runtime_support import start as _start

pytestmark = pytest.mark.root

GET = "wget -q -O - --header 'Metadata-Flavor: AppContainer'"


def _host(*namespaces: str) -> list[dict[str, Any]]:
    """The pod-level isolator sharing `namespaces` with the host."""
    return [{"name": "os/linux/namespaces", "value": {ns: "host" for ns in namespaces}}]


def _values(log: str, key: str) -> list[str]:
    """The words after `key` on each log line starting with it."""
    return [line.split()[1] for line in log.splitlines() if line.startswith(key + " ")]


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def hostnet_pods(busybox_aci: Path) -> Iterator[PodEnv]:
    """A runtime whose host-side metadata listener takes a free port: 8775 may be in use."""
    config = RuntimeConfig(stop_grace=2.0, metadata_config=MetadataConfig(host_port=0))
    yield from make_env(busybox_aci, config)


# --- net, ipc, uts ---------------------------------------------------------------------------


def test_host_net_sees_the_hosts_interfaces_and_reaches_metadata(hostnet_pods: PodEnv) -> None:
    pods = hostnet_pods
    record = pods.run(
        _sh(
            "net",
            "readlink /proc/self/ns/net; ls /sys/class/net | tr '\\n' ' '; echo;"
            f" {GET} $AC_METADATA_URL/acMetadata/v1/pod/uuid",
        ),
        isolators=_host("net"),
    )
    app = record.apps[0]
    log = pods.log(record, "net")
    assert app.exit_code == 0, (app.error, log)
    netns, interfaces, uuid = log.splitlines()
    assert netns == os.readlink("/proc/self/ns/net")
    assert sorted(interfaces.split()) == sorted(os.listdir("/sys/class/net"))
    assert uuid == record.uuid


def test_host_uts_keeps_the_hosts_hostname(pods: PodEnv) -> None:
    host = socket.gethostname()
    assert host != "renamed-pod"
    record = pods.run(
        _sh("uts", "hostname; readlink /proc/self/ns/uts"),
        name="renamed-pod",
        isolators=_host("uts"),
    )
    log = pods.log(record, "uts")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log.splitlines() == [host, os.readlink("/proc/self/ns/uts")]
    assert socket.gethostname() == host  # the pod's name did not rename the host


def test_host_ipc_is_the_hosts_ipc_namespace(pods: PodEnv) -> None:
    script = "readlink /proc/self/ns/ipc"
    shared = pods.run(_sh("ipc", script), isolators=_host("ipc"))
    own = pods.run(_sh("ipc", script))
    assert [r.apps[0].exit_code for r in (shared, own)] == [0, 0]
    host = os.readlink("/proc/self/ns/ipc")
    assert pods.log(shared, "ipc") == host + "\n"
    assert pods.log(own, "ipc").strip() not in ("", host)  # the default is a namespace of its own


def test_sharing_net_ipc_uts_keeps_a_pid_namespace_of_its_own(hostnet_pods: PodEnv) -> None:
    pods = hostnet_pods
    record = pods.run(
        # P1 lets the apps go just before it execs podinit (launcher/_spawn.py): wait for it.
        _sh("mixed", "i=0; until [ \"$(cat /proc/1/comm)\" = kurma-podinit ] || [ $i = 100 ]; "
                     "do sleep 0.05; i=$((i+1)); done; cat /proc/1/comm; "
                     "readlink /proc/self/ns/pid"),
        isolators=_host("net", "ipc", "uts"),
    )
    log = pods.log(record, "mixed")
    assert record.apps[0].exit_code == 0, log
    comm, pidns = log.splitlines()
    assert comm == "kurma-podinit"
    assert pidns != os.readlink("/proc/self/ns/pid")


# --- pid ---------------------------------------------------------------------------------------


def test_all_four_shared(hostnet_pods: PodEnv) -> None:
    """net, ipc, uts and pid all the host's: the zygote unshares nothing at all."""
    pods = hostnet_pods
    kinds = ("net", "ipc", "uts", "pid")
    record = pods.run(
        _sh("all", "; ".join(f"readlink /proc/self/ns/{ns}" for ns in kinds)),
        isolators=_host(*kinds),
    )
    log = pods.log(record, "all")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    assert log.splitlines() == [os.readlink(f"/proc/self/ns/{ns}") for ns in kinds]


def test_host_pid_app_sees_host_processes_and_podinit_is_its_parent(pods: PodEnv) -> None:
    record = pods.run(
        _sh(
            "pid",
            f"readlink /proc/self/ns/pid; ls -d /proc/{os.getpid()}; echo me $$;"
            " echo parent $PPID $(cat /proc/$PPID/comm)",
        ),
        isolators=_host("pid"),
    )
    app = record.apps[0]
    log = pods.log(record, "pid")
    assert app.exit_code == 0, (app.error, log)
    lines = log.splitlines()
    assert lines[0] == os.readlink("/proc/self/ns/pid")
    assert lines[1] == f"/proc/{os.getpid()}"  # the test itself is visible from the pod
    assert _values(log, "me") == [str(app.pid)]  # registered under its host pid
    assert lines[3] == f"parent {record.podinit_pid} kurma-podinit"


@pytest.mark.parametrize(("script", "code"), [("exit 7", 7), ("kill -KILL $$", 137)])
def test_host_pid_exit_codes_are_recorded(pods: PodEnv, script: str, code: int) -> None:
    record = pods.run(_sh("ends", script), _sh("also", "exit 0"), isolators=_host("pid"))
    assert record.state is PodState.EXITED
    assert [(a.name, a.exit_code) for a in record.apps] == [("ends", code), ("also", 0)]


def test_host_pid_orphans_go_to_podinit(pods: PodEnv) -> None:
    """podinit is a child subreaper: an app's orphan is re-parented to it (not the host's
    init), and it is ended with the pod."""
    uuid = _start(
        pods,
        _sh(
            "parent",
            "(sleep 1000 & echo orphan $!); echo ready; exec sleep 1000",
        ),
        ready="ready",
        isolators=_host("pid"),
    )
    record = pods.runtime.get(uuid)
    log = pods.log(record, "parent")
    (orphan,) = (int(p) for p in _values(log, "orphan"))
    wait_for(
        lambda: (
            Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[1]
            == str(record.podinit_pid)
        ),
        "the orphan's re-parenting",
    )
    record = pods.runtime.stop_pod(uuid, grace=2.0)
    assert record.apps[0].exit_code == 143
    assert not _alive(orphan)


def test_host_pid_stop_within_grace_kills_background_child(pods: PodEnv) -> None:
    """stop_pod: the app ends on its SIGTERM within the grace; a background child that
    ignores SIGTERM is SIGKILLed when podinit ends the pod; nothing of the pod is left."""
    uuid = _start(
        pods,
        _sh(
            "web",
            "trap 'echo got TERM; exit 0' TERM; (trap '' TERM; exec sleep 1000) & echo bg $!;"
            " echo ready; while :; do sleep 0.1; done",
        ),
        ready="ready",
        isolators=_host("pid"),
    )
    before = pods.runtime.get(uuid)
    (bg,) = (int(p) for p in _values(pods.log(before, "web"), "bg"))
    assert _alive(bg)
    began = time.monotonic()
    record = pods.runtime.stop_pod(uuid, grace=10.0)
    took = time.monotonic() - began
    assert record.state is PodState.EXITED
    assert record.apps[0].exit_code == 0
    assert "got TERM" in pods.log(record, "web")
    # The app took no grace; the leftover got podinit's leftover grace (2 s), then SIGKILL.
    assert took < 5.0, f"stop took {took:.1f} s"
    assert not _alive(bg)
    assert before.podinit_pid is not None and not _alive(before.podinit_pid)


def test_host_pid_stop_kills_an_app_ignoring_term_after_the_grace(pods: PodEnv) -> None:
    uuid = _start(
        pods,
        _sh("stubborn", "trap '' TERM; echo ready; sleep 1000"),
        ready="ready",
        isolators=_host("pid"),
    )
    began = time.monotonic()
    record = pods.runtime.stop_pod(uuid, grace=1.5)
    took = time.monotonic() - began
    assert record.apps[0].exit_code == 137
    assert 1.4 <= took < 4.5, f"stop took {took:.2f} s with a 1.5 s grace"


def test_host_pid_stop_reaches_an_app_in_its_own_cgroup(pods: PodEnv) -> None:
    """An app with limits of its own sits in a child cgroup: podinit walks the subtree."""
    uuid = _start(
        pods,
        _sh(
            "limited",
            "trap '' TERM; echo ready; exec sleep 1000",
            isolators=[{"name": "resource/memory", "value": {"limit": "64Mi"}}],
        ),
        ready="ready",
        isolators=_host("pid"),
    )
    record = pods.runtime.get(uuid)
    pid = record.apps[0].pid
    assert pid is not None
    cgroup_line = next(
        line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":pids:" in line
    )
    assert cgroup_line.endswith(f"{record.cgroup}/app-limited"), cgroup_line
    began = time.monotonic()
    record = pods.runtime.stop_pod(uuid, grace=1.0)
    took = time.monotonic() - began
    assert record.apps[0].exit_code == 137
    assert took < 4.0, f"stop took {took:.1f} s with a 1 s grace"
    assert not _alive(pid)


def test_host_pid_destroy_leaves_no_process(pods: PodEnv) -> None:
    uuid = _start(
        pods,
        _sh(
            "busy",
            "for i in 1 2 3; do (trap '' TERM; exec sleep 1000) & echo child $!; done;"
            " echo me $$; echo ready; trap '' TERM; while :; do sleep 0.1; done",
        ),
        _sh("other", "exec sleep 1000"),
        ready="ready",
        isolators=_host("pid"),
    )
    record = pods.runtime.get(uuid)
    wait_for(lambda: all(a.pid for a in pods.runtime.get(uuid).apps), "both apps' pids")
    record = pods.runtime.get(uuid)
    log = pods.log(record, "busy")
    pids = {int(p) for p in _values(log, "child") + _values(log, "me")}
    pids |= {a.pid for a in record.apps if a.pid is not None}
    pids.add(record.podinit_pid or 0)
    assert len(pids) == 6 and all(_alive(p) for p in pids), pids
    cgroup = pods.runtime.cgroups.open(record.cgroup or "")
    assert pids <= cgroup.pids() | {0}
    pods.runtime.destroy_pod(uuid, grace=0.5)
    assert [p for p in pids if _alive(p)] == []
    assert not cgroup.exists()


def test_host_pid_post_stop_handler_runs_in_the_pod_and_is_recorded(pods: PodEnv) -> None:
    """The post-stop handler runs in the pod's cgroup; the launcher-side process that
    forked it records its exit code (podinit is not its ancestor)."""
    record = pods.run(
        _sh(
            "app",
            "echo app $$",
            eventHandlers=[
                {
                    "name": "post-stop",
                    "exec": [
                        "/bin/sh",
                        "-c",
                        "echo post $$; grep :pids: /proc/self/cgroup; exit 3",
                    ],
                }
            ],
        ),
        isolators=_host("pid"),
    )
    app = record.apps[0]
    log = pods.log(record, "app")
    assert (app.state, app.exit_code, app.post_stop_code) == (AppState.EXITED, 0, 3), log
    assert _values(log, "post") == [str(app.post_stop_pid)]  # its host pid
    assert log.splitlines()[-1].endswith(f"/{record.cgroup}/self"), log  # the pod's leaf
    assert not (pods.state_dir / "pods" / record.uuid / "exits" / str(app.post_stop_pid)).exists()


def test_host_pid_post_stop_after_stop_pod(pods: PodEnv) -> None:
    out = pods.work / "out"
    out.mkdir()
    uuid = _start(
        pods,
        _sh(
            "server",
            "echo started > /out/log; echo ready; exec sleep 1000",
            mounts=[{"volume": "out", "path": "/out"}],
            eventHandlers=[
                {"name": "post-stop", "exec": ["/bin/sh", "-c", "echo stopped >> /out/log"]}
            ],
        ),
        ready="ready",
        isolators=_host("pid"),
        volumes=[{"name": "out", "kind": "host", "source": str(out)}],
    )
    record = pods.runtime.stop_pod(uuid, grace=2.0)
    app = record.apps[0]
    assert record.state is PodState.EXITED
    assert (app.exit_code, app.post_stop_code) == (143, 0)
    assert (out / "log").read_text().splitlines() == ["started", "stopped"]


def test_host_pid_apps_cannot_stop_podinit(pods: PodEnv) -> None:
    """Signals from the pod's own processes (senders listed in its cgroup) are ignored."""
    uuid = _start(
        pods,
        _sh(
            "rebel",
            "kill -TERM $PPID; kill -63 $PPID; kill -64 $PPID; kill -HUP $PPID;"
            " echo ready; exec sleep 1000",
        ),
        ready="ready",
        isolators=_host("pid"),
    )
    record = pods.runtime.get(uuid)
    time.sleep(0.5)
    assert record.podinit_pid is not None and _alive(record.podinit_pid)
    assert pods.runtime.get(uuid).state is PodState.RUNNING
    assert pods.runtime.get(uuid).apps[0].state is AppState.RUNNING
    record = pods.runtime.stop_pod(uuid, grace=2.0)
    assert record.apps[0].exit_code == 143


def test_host_pid_running_handler_does_not_hold_the_launcher(pods: PodEnv) -> None:
    """The launcher-side process waiting for a host-pid pod's handler keeps none of the
    launcher's descriptors: closing the launcher (it ends its warm zygotes) does not wait
    for the handler."""
    uuid = _start(
        pods,
        _sh(
            "brief",
            "echo ready",
            eventHandlers=[{"name": "post-stop", "exec": ["/bin/sh", "-c", "sleep 3; exit 4"]}],
        ),
        ready="ready",
        isolators=_host("pid"),
    )
    wait_for(lambda: pods.runtime.get(uuid).apps[0].post_stop_pid is not None, "the handler")
    began = time.monotonic()
    pods.runtime.launcher.close()
    assert time.monotonic() - began < 1.5
    record = pods.runtime.wait(uuid, timeout=10.0)  # the handler is still recorded
    assert record.apps[0].post_stop_code == 4
