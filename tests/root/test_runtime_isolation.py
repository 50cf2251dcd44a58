"""A pod's apps are isolated: their own PID 1, only `lo`, no mounts, no host processes,
exactly the capabilities asked for, the pod's hostname and generated /etc files."""

from __future__ import annotations

import socket

import pytest

from kurma.runtime.linux import Capability, caps_from_mask

from .runtime_support import PodEnv

pytestmark = pytest.mark.root


def _status_caps(log: str, key: str) -> frozenset[Capability]:
    for line in log.splitlines():
        if line.startswith(key + ":"):
            return caps_from_mask(int(line.split()[1], 16))
    raise AssertionError(f"{key} not in output:\n{log}")


DEFAULT = {
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
}


def test_app_sees_podinit_as_pid_1_and_no_host_process(pods: PodEnv) -> None:
    # An app may run in the moment before P1's exec of podinit completes (its go byte is
    # written just before the exec, see runtime/README.md): give that exec a moment.
    settle = (
        "for i in $(seq 100); do [ $(cat /proc/1/comm) = kurma-podinit ] && break; sleep 0.02; done"
    )
    app, log = pods.sh(
        f"{settle}; cat /proc/1/comm; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '"
    )
    assert app.exit_code == 0, log
    lines = log.splitlines()
    assert lines[0] == "kurma-podinit"
    visible = {int(p) for p in lines[1].split()}
    # podinit, the shell and its children (ls, grep, sort, tr) only; the host has hundreds.
    assert 1 in visible and len(visible) < 10, visible


def test_only_loopback_and_it_is_up(pods: PodEnv) -> None:
    app, log = pods.sh(
        "ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -o addr show lo | grep -c 127.0.0.1"
    )
    assert app.exit_code == 0, log
    lines = log.split()
    assert lines[0] == "lo" and len([x for x in lines if x.startswith("eth")]) == 0
    assert lines[-1] == "1"  # lo carries 127.0.0.1


def test_app_cannot_mount(pods: PodEnv) -> None:
    app, log = pods.sh("mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo MOUNTED")
    assert app.exit_code != 0
    assert "MOUNTED" not in log


def test_default_capabilities_exactly(pods: PodEnv) -> None:
    app, log = pods.sh("grep Cap /proc/self/status")
    assert app.exit_code == 0, log
    want = {Capability[c] for c in DEFAULT}
    kept_by_host = want  # CAP_SYS_RESOURCE is not in the default set: all are available
    for key in ("CapPrm", "CapEff", "CapBnd"):
        assert _status_caps(log, key) == kept_by_host, key


def test_retain_set_gives_exactly_those_capabilities(pods: PodEnv) -> None:
    isolators = [
        {
            "name": "os/linux/capabilities-retain-set",
            "value": {"set": ["CAP_NET_ADMIN", "CAP_CHOWN"]},
        }
    ]
    app, log = pods.sh("grep Cap /proc/self/status", isolators=isolators)
    assert app.exit_code == 0, log
    for key in ("CapPrm", "CapEff", "CapBnd"):
        assert _status_caps(log, key) == {Capability.CAP_NET_ADMIN, Capability.CAP_CHOWN}


def test_remove_set_takes_from_the_default(pods: PodEnv) -> None:
    isolators = [
        {"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_NET_RAW", "CAP_MKNOD"]}}
    ]
    _app, log = pods.sh("grep Cap /proc/self/status", isolators=isolators)
    assert _status_caps(log, "CapEff") == {Capability[c] for c in DEFAULT} - {
        Capability.CAP_NET_RAW,
        Capability.CAP_MKNOD,
    }


def test_non_root_user_has_no_effective_capabilities(pods: PodEnv) -> None:
    _app, log = pods.sh("id -u; grep Cap /proc/self/status", user="app", group="app")
    assert log.splitlines()[0] == "1000"
    assert _status_caps(log, "CapEff") == frozenset()
    assert _status_caps(log, "CapBnd") == {Capability[c] for c in DEFAULT}


def test_hostname_and_etc_files(pods: PodEnv) -> None:
    record = pods.run(
        {"name": "web", "exec": ["/bin/sh", "-c", "hostname; cat /etc/hosts; ls /etc/resolv.conf"]},
        name="my-pod",
    )
    log = pods.log(record, "web")
    assert record.apps[0].exit_code == 0, log
    assert log.splitlines()[0] == "my-pod"
    assert "127.0.0.1" in log and "my-pod" in log.splitlines()[1] + log
    assert socket.gethostname() != "my-pod"


def test_proc_masked_and_sys_read_only(pods: PodEnv) -> None:
    _app, log = pods.sh(
        "wc -c < /proc/timer_list; (echo 1 > /proc/sys/kernel/domainname) 2>&1 | grep -c Read-only;"
        " touch /sys/x 2>&1 | grep -c Read-only; ls /dev | tr '\\n' ' '"
    )
    lines = log.splitlines()
    assert lines[0].strip() == "0"  # masked with /dev/null (like /proc/kcore, where present)
    assert lines[1] == "1" and lines[2] == "1"
    devices = set(lines[3].split())
    assert {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "pts",
        "shm",
        "mqueue",
        "ptmx",
    } <= devices
    assert not {"sda", "vda", "kmsg", "mem"} & devices


def test_no_new_privileges_by_default_and_off_when_asked(pods: PodEnv) -> None:
    _, log = pods.sh("grep NoNewPrivs /proc/self/status")
    assert log.split()[-1] == "1"
    off = [{"name": "os/linux/no-new-privileges", "value": False}]
    _, log = pods.sh("grep NoNewPrivs /proc/self/status", isolators=off)
    assert log.split()[-1] == "0"


def test_seccomp_default_blocks_what_docker_blocks(pods: PodEnv) -> None:
    # unshare(2) is in Docker's blocked list; a plain app cannot make namespaces.
    _app, log = pods.sh("unshare -u true && echo UNSHARED || echo BLOCKED")
    assert "BLOCKED" in log, log
    assert "Seccomp:\t2" in pods.sh("grep Seccomp: /proc/self/status")[1]
