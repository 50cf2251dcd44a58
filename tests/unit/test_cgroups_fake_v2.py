"""The cgroup2 code path against a fake cgroupfs directory tree.

Why a fake: this development host is hybrid (v1 for memory, pids, cpu ...; its cgroup2
carries hugetlb only), so the v2 files for limits, stats and OOM counts cannot be exercised
on the real kernel here. A tmp_path tree with the v2 file names stands in for a pure-v2 host;
the directories the code will create are laid out in advance, with the files the kernel
would put there. The real v2 path is tested in the VM, which mounts a pure cgroup2.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from kurma.runtime.cgroups import CgroupSystem, Version, set_frozen
from kurma.runtime.cgroups import _system as system_module

BASE = "kurma"
TREE = ("", "pod1", "pod1/self", "pod1/child", "pod1/child/self")


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, CgroupSystem]:
    """A fake proc (mountinfo, cgroup) and a fake cgroup2 mount with our cgroup `/kurma`."""
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    mount = tmp_path / "cgroup"
    (proc / "mountinfo").write_text(
        f"30 25 0:26 / {mount} rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    (proc / "cgroup").write_text(f"0::/{BASE}\n")
    files = {
        "cgroup.controllers": "cpuset cpu io memory hugetlb pids",
        "cgroup.subtree_control": "",
        "cgroup.procs": "",
        "cgroup.freeze": "0",
        "cgroup.events": "populated 0\nfrozen 0\n",
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.current": "0",
        "memory.peak": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        "cpu.max": "max 100000",
        "cpu.weight": "100",
        "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
        "pids.max": "max",
        "pids.current": "0",
    }
    for rel in TREE:
        directory = mount / BASE / rel
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (directory / name).write_text(content)
    return mount / BASE, CgroupSystem.detect(proc_root=str(tmp_path / "proc"))


def test_every_controller_is_v2_below_our_cgroup(fake: tuple[Path, CgroupSystem]) -> None:
    """On a pure cgroup2 every controller, core ones included, is v2 with base /kurma."""
    base, system = fake
    assert {c: system.version(c) for c in system.placements} == {
        c: Version.V2
        for c in ("memory", "pids", "cpu", "cpuacct", "freezer", "devices", "hugetlb")
    }
    assert len(system.hierarchies) == 1
    assert system.hierarchies[0].directory() == str(base)


def test_create_enables_controllers_in_every_parent(fake: tuple[Path, CgroupSystem]) -> None:
    """Creating pod1/self enables cpu, memory and pids in /kurma and in /kurma/pod1."""
    base, system = fake
    pod = system.create("pod1")
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (base / "pod1" / "cgroup.subtree_control").read_text() == ""
    pod.child("self")
    assert (base / "pod1" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"


def test_already_enabled_controllers_are_not_written_again(
    fake: tuple[Path, CgroupSystem],
) -> None:
    """A parent whose subtree_control lists cpu and memory only gets +pids."""
    base, system = fake
    (base / "cgroup.subtree_control").write_text("cpu memory\n")
    system.create("pod1")
    assert (base / "cgroup.subtree_control").read_text() == "+pids"


def test_no_internal_process_rule_is_explained(
    fake: tuple[Path, CgroupSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EBUSY from subtree_control becomes an error that says to move processes to a leaf."""
    _, system = fake
    real_write = system_module.write_file

    def busy(directory: str, name: str, value: object) -> None:
        if name == "cgroup.subtree_control":
            raise OSError(errno.EBUSY, "Device or resource busy", f"{directory}/{name}")
        real_write(directory, name, value)

    monkeypatch.setattr(system_module, "write_file", busy)
    with pytest.raises(OSError, match="leaf") as info:
        system.create("pod1")
    assert info.value.errno == errno.EBUSY


def test_limits_land_in_the_v2_files(fake: tuple[Path, CgroupSystem]) -> None:
    """memory.max (+ swap.max 0), cpu.max, cpu.weight from shares, pids.max."""
    base, system = fake
    system.create("pod1").set_limits(
        memory_bytes=64 << 20, cpu_millicores=250, cpu_shares=1024, pids_max=32
    )
    pod = base / "pod1"
    assert (pod / "memory.max").read_text() == str(64 << 20)
    assert (pod / "memory.swap.max").read_text() == "0"
    assert (pod / "cpu.max").read_text() == "25000 100000"
    assert (pod / "cpu.weight").read_text() == "39"
    assert (pod / "pids.max").read_text() == "32"


def test_stats_and_oom_kills_read_the_v2_files(fake: tuple[Path, CgroupSystem]) -> None:
    """memory.current/peak, cpu.stat usage_usec (as ns), pids.current, memory.events."""
    base, system = fake
    pod = base / "pod1"
    (pod / "memory.current").write_text("1048576\n")
    (pod / "memory.peak").write_text("4194304\n")
    (pod / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    (pod / "pids.current").write_text("3\n")
    (pod / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    cgroup = system.open("pod1")
    stats = cgroup.stats()
    assert (stats.memory_current, stats.memory_peak) == (1 << 20, 4 << 20)
    assert (stats.cpu_usage_ns, stats.pids_current) == (2_500_000, 3)
    assert cgroup.oom_kills() == 2


def test_add_process_and_recursive_pids(fake: tuple[Path, CgroupSystem]) -> None:
    """add_process writes the one v2 cgroup.procs; pids() gathers the whole subtree."""
    base, system = fake
    system.open("pod1/self").add_process(4242)
    assert (base / "pod1" / "self" / "cgroup.procs").read_text() == "4242"
    (base / "pod1" / "child" / "self" / "cgroup.procs").write_text("7\n8\n")
    assert system.open("pod1").pids() == {4242, 7, 8}
    assert system.open("pod1/child").pids() == {7, 8}


def test_freeze_uses_cgroup_freeze(fake: tuple[Path, CgroupSystem]) -> None:
    """v2 freezing writes cgroup.freeze and waits for `frozen 1` in cgroup.events."""
    base, system = fake
    directory = system.open("pod1").directory("freezer")
    assert directory == str(base / "pod1")
    (base / "pod1" / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert set_frozen(Version.V2, directory, True)
    assert (base / "pod1" / "cgroup.freeze").read_text() == "1"


def test_a_missing_controller_is_an_enodev_error(tmp_path: Path) -> None:
    """Limits for a controller the system lacks fail with ENODEV naming the controller."""
    system = CgroupSystem({})
    with pytest.raises(OSError, match="no memory controller") as info:
        system.open("pod1").set_limits(memory_bytes=1 << 20)
    assert info.value.errno == errno.ENODEV
