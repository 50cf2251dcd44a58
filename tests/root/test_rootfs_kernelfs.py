"""/proc, /sys and /dev inside the app's root: new instances, masked and read-only parts.

Writes that these tests expect to fail target namespaced or harmless files only (the UTS
namespace's hostname), so a regression cannot change the host.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from kurma.runtime._devices import MINIMAL_DEV
from tests.root.test_rootfs_harness import SETUP_FAILED, make_tree, run_app, spec_for, work

pytestmark = pytest.mark.root
__all__ = ["work"]  # the fixture, imported for these tests


def test_proc_shows_only_the_pid_namespace(work: Path) -> None:
    """In its own pid namespace the app is pid 1 and sees a handful of pids, not the host's."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree), "echo $$; echo $(ls -d /proc/[0-9]*)")
    assert run.status == 0, run
    pids = sorted(int(p.rsplit("/", 1)[1]) for p in run.lines[1].split())
    assert run.lines[0] == "1"
    assert pids[0] == 1
    assert len(pids) <= 3
    assert str(os.getpid()) not in run.lines[1].split()


MASKED_FILES = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats", "timer_stats")
MASKED_DIRS = ("acpi", "scsi")


def test_proc_files_are_masked(work: Path) -> None:
    """runc's masked files read as empty (a /dev/null bind), or are absent with the kernel's."""
    tree = make_tree(work / "tree")
    script = "; ".join(
        f"if [ -e /proc/{n} ]; then echo {n} $(wc -c < /proc/{n}) $(stat -c %t,%T /proc/{n}); "
        f"else echo {n} absent; fi"
        for n in MASKED_FILES
    )
    run = run_app(spec_for(work, tree), script)
    expected = [
        f"{n} 0 1,3" if os.path.exists(f"/proc/{n}") else f"{n} absent" for n in MASKED_FILES
    ]
    assert run.lines == expected


def test_proc_dirs_are_masked(work: Path) -> None:
    """runc's masked directories are empty read-only tmpfs mounts (where the kernel has them)."""
    tree = make_tree(work / "tree")
    present = [n for n in MASKED_DIRS if os.path.exists(f"/proc/{n}")]
    if not present:
        pytest.skip("this kernel has none of /proc/acpi, /proc/scsi")
    script = "; ".join(f"ls -A /proc/{n} | wc -l; touch /proc/{n}/x" for n in present)
    run = run_app(spec_for(work, tree), script)
    assert run.lines[0::2] == ["0"] * len(present)
    assert all("Read-only file system" in line for line in run.lines[1::2])


def test_proc_sys_is_read_only(work: Path) -> None:
    """/proc/sys is a read-only bind; the rest of /proc stays writable for the app."""
    tree = make_tree(work / "tree")
    script = "echo other > /proc/sys/kernel/hostname; echo 0 > /proc/self/oom_score_adj && echo ok"
    run = run_app(spec_for(work, tree), script)
    assert "Read-only file system" in run.output
    assert run.lines[-1] == "ok"


def test_proc_sub_mounts_are_read_only(work: Path) -> None:
    """Every runc read-only path this kernel has is mounted ro inside the app."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree), "cat /proc/mounts")
    options = {f.split()[1]: f.split()[3].split(",") for f in run.lines}
    for name in ("sys", "sysrq-trigger", "irq", "bus", "fs"):
        if os.path.exists(f"/proc/{name}"):
            assert "ro" in options[f"/proc/{name}"], name
    assert "rw" in options["/proc"]


def test_sys_is_read_only_sysfs(work: Path) -> None:
    """The app's /sys is a sysfs of its network namespace, mounted read-only."""
    tree = make_tree(work / "tree")
    run = run_app(
        spec_for(work, tree), "grep ' /sys ' /proc/mounts; mkdir /sys/x; ls /sys/class/net"
    )
    fields = run.lines[0].split()
    assert fields[2] == "sysfs"
    assert "ro" in fields[3].split(",")
    assert "Read-only file system" in run.output
    assert run.lines[-1] == "lo"


def test_sys_of_a_host_netns_pod_is_a_read_only_host_bind(work: Path) -> None:
    """Without its own netns the app gets the host's /sys, recursively and read-only."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree, own_netns=False), "grep ' /sys' /proc/mounts", netns=False)
    mounts = {f.split()[1]: f.split()[3].split(",") for f in run.lines}
    assert "ro" in mounts["/sys"]
    if os.path.ismount("/sys/fs/cgroup"):
        assert "ro" in mounts["/sys/fs/cgroup"]


def test_dev_holds_exactly_the_minimal_set(work: Path) -> None:
    """/dev: the appc devices, ptmx, pts, shm, mqueue and the fd links, nothing else."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree), "ls -A /dev; stat -c '%n %t,%T %a' /dev/null /dev/urandom")
    assert set(run.lines[:-2]) == MINIMAL_DEV
    assert run.lines[-2:] == ["/dev/null 1,3 666", "/dev/urandom 1,9 666"]
    assert "console" not in MINIMAL_DEV


def test_dev_pts_is_a_private_instance_that_works(work: Path) -> None:
    """Opening /dev/ptmx allocates pty 0 in the app's own devpts instance."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree), "exec 3<>/dev/ptmx; ls /dev/pts; grep devpts /proc/mounts")
    assert run.status == 0, run
    assert run.lines[:2] == ["0", "ptmx"]
    assert "newinstance" not in run.lines[2]  # not shown, but the mode and gid are ours
    assert "gid=5" in run.lines[2] and "ptmxmode=666" in run.lines[2]


def test_console_is_bound_to_the_apps_terminal(work: Path) -> None:
    """With a terminal, /dev/console is that terminal: what the app writes there arrives."""
    tree = make_tree(work / "tree")
    master, slave = os.openpty()
    try:
        spec = spec_for(work, tree, console=os.ttyname(slave))
        run = run_app(spec, "echo hello-console > /dev/console; ls /dev | grep -c console")
        assert run.lines == ["1"]
        assert select.select([master], [], [], 5)[0]
        assert b"hello-console" in os.read(master, 1024)
    finally:
        os.close(master)
        os.close(slave)


def test_devices_isolator_binds_host_nodes(work: Path) -> None:
    """os/linux/devices: chosen host nodes appear in the app's /dev with their numbers."""
    tree = make_tree(work / "tree")
    wanted = [d for d in ("/dev/kmsg", "/dev/net/tun", "/dev/loop-control") if os.path.exists(d)]
    if not wanted:
        pytest.skip("no candidate device node on this host")
    spec = spec_for(work, tree, devices=tuple(wanted))
    run = run_app(spec, "stat -c '%n %t,%T' " + " ".join(wanted))
    expected = []
    for device in wanted:
        rdev = os.stat(device).st_rdev
        expected.append(f"{device} {os.major(rdev):x},{os.minor(rdev):x}")
    assert run.lines == expected


def test_devices_isolator_refuses_a_non_device(work: Path) -> None:
    """A path that is not a device node on the host is an error naming it."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree, devices=("/dev/shm",)))
    assert run.status == SETUP_FAILED
    assert "/dev/shm" in run.error and "not a device" in run.error


def test_privileged_gets_the_host_dev_and_a_writable_sys(work: Path) -> None:
    """os/linux/privileged: the host's /dev (its own disks are there) and sysfs rw."""
    tree = make_tree(work / "tree")
    host_only = sorted(set(os.listdir("/dev")) - MINIMAL_DEV)[0]
    run = run_app(
        spec_for(work, tree, privileged=True), f"ls -d /dev/{host_only}; grep ' /sys ' /proc/mounts"
    )
    assert run.lines[0] == f"/dev/{host_only}"
    assert "rw" in run.lines[1].split()[3].split(",")
