"""Pure cgroup logic against fixture text: this hybrid host, a systemd v2 host, a booted Kurma."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import kurma.runtime.cgroups as cgroups
from kurma.runtime.cgroups import (
    CgroupMount,
    Placement,
    Version,
    cpu_quota,
    decide,
    parse_cpu_max,
    parse_keyed,
    parse_limit,
    parse_mountinfo,
    parse_proc_cgroup,
    shares_to_weight,
    weight_to_shares,
)
from kurma.runtime.cgroups._parse import check_relpath

# This development host: v1 for most controllers (cpu and cpuacct mounted apart), cgroup2 at
# /sys/fs/cgroup/unified with hugetlb alone; our memory cgroup is a nested one.
HYBRID_MOUNTINFO = """\
23 1 0:21 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_PROC_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/f546
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

# A systemd host with a pure cgroup2 (Debian 12): kurmad runs in its service's cgroup.
V2_MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""
V2_PROC_CGROUP = "0::/system.slice/kurmad.service\n"

# A classic Debian 10 hybrid: cpu and cpuacct share one v1 hierarchy.
COMBINED_MOUNTINFO = """\
27 26 0:24 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
28 26 0:25 / /sys/fs/cgroup/memory rw shared:10 - cgroup cgroup rw,memory
"""
COMBINED_PROC_CGROUP = "3:cpu,cpuacct:/user.slice\n2:memory:/user.slice\n"


def offers(*names: str) -> Callable[[Placement], frozenset[str]]:
    """A cgroup.controllers reader that offers `names` everywhere."""
    return lambda placement: frozenset(names)


def test_parse_mountinfo_finds_every_cgroup_mount_with_its_version() -> None:
    """Only cgroup/cgroup2 lines are kept, with mount point, root, version and options."""
    mounts = parse_mountinfo(HYBRID_MOUNTINFO)
    assert [m.mount_point.rsplit("/", 1)[1] for m in mounts] == [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
        "systemd", "unified",
    ]
    assert mounts[3] == CgroupMount(
        "/sys/fs/cgroup/memory", "/", Version.V1, frozenset({"rw", "memory"})
    )
    assert mounts[-1].version is Version.V2


def test_parse_mountinfo_unescapes_octal_paths() -> None:
    """A space in a mount point arrives as \\040 and is decoded."""
    line = "41 31 0:38 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n"
    assert parse_mountinfo(line)[0].mount_point == "/mnt/my cgroup"


def test_parse_proc_cgroup_splits_v1_controllers_and_the_v2_path() -> None:
    """Each v1 controller gets its path (named hierarchies too); `0::` is the v2 path."""
    proc = parse_proc_cgroup(HYBRID_PROC_CGROUP)
    assert proc.v1["memory"] == "/process_api/f546"
    assert proc.v1["name=systemd"] == "/" and proc.v2 == "/"
    combined = parse_proc_cgroup(COMBINED_PROC_CGROUP)
    assert combined.v1 == {"cpu": "/user.slice", "cpuacct": "/user.slice", "memory": "/user.slice"}
    assert combined.v2 is None


def test_decide_on_the_hybrid_host() -> None:
    """v1 wherever a v1 hierarchy has the controller; hugetlb on cgroup2; our nested base."""
    placements = decide(
        parse_mountinfo(HYBRID_MOUNTINFO), parse_proc_cgroup(HYBRID_PROC_CGROUP), offers("hugetlb")
    )
    assert {c: p.version for c, p in placements.items()} == {
        "memory": Version.V1, "pids": Version.V1, "cpu": Version.V1, "cpuacct": Version.V1,
        "freezer": Version.V1, "devices": Version.V1, "hugetlb": Version.V2,
    }
    memory = placements["memory"].directory("kurma-x")
    assert memory == "/sys/fs/cgroup/memory/process_api/f546/kurma-x"
    assert placements["cpuacct"].directory("a/b") == "/sys/fs/cgroup/cpuacct/a/b"
    assert placements["hugetlb"].directory("a") == "/sys/fs/cgroup/unified/a"


def test_decide_on_a_pure_v2_host() -> None:
    """Everything on cgroup2 below the service's own cgroup; core features count as present."""
    placements = decide(
        parse_mountinfo(V2_MOUNTINFO),
        parse_proc_cgroup(V2_PROC_CGROUP),
        offers("cpuset", "cpu", "io", "memory", "pids"),
    )
    expected = Placement(Version.V2, "/sys/fs/cgroup", "/system.slice/kurmad.service")
    assert placements == {c: expected for c in ("memory", "pids", "cpu", "cpuacct", "freezer",
                                                "devices")}
    assert "hugetlb" not in placements  # not offered there


def test_decide_with_a_combined_v1_mount_and_no_v2() -> None:
    """cpu and cpuacct share one hierarchy; nothing lands on v2 when there is none."""
    placements = decide(
        parse_mountinfo(COMBINED_MOUNTINFO), parse_proc_cgroup(COMBINED_PROC_CGROUP), offers()
    )
    assert placements["cpu"] == placements["cpuacct"]
    assert placements["cpu"].directory("p") == "/sys/fs/cgroup/cpu,cpuacct/user.slice/p"
    assert set(placements) == {"cpu", "cpuacct", "memory"}


def test_decide_strips_a_bind_mounted_root() -> None:
    """Inside a container whose cgroupfs root is its own cgroup, paths are made relative."""
    mountinfo = "50 40 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    placements = decide(
        parse_mountinfo(mountinfo), parse_proc_cgroup("0::/kubepods/pod1/c\n"), offers("memory")
    )
    assert placements["memory"].directory("x") == "/sys/fs/cgroup/c/x"


def test_check_relpath_keeps_cgroups_below_our_own() -> None:
    """Relative, normalized paths pass; absolute, empty and escaping ones are refused."""
    assert check_relpath("pod//a/") == "pod/a"
    for bad in ("", ".", "/abs", "../up", "a/../../b"):
        with pytest.raises(ValueError):
            check_relpath(bad)


def test_cpu_quota_from_millicores() -> None:
    """1000 millicores are one full period; tiny limits clamp to the kernel's 1 ms minimum."""
    assert cpu_quota(500) == (50_000, 100_000)
    assert cpu_quota(2000) == (200_000, 100_000)
    assert cpu_quota(1) == (1_000, 100_000)
    with pytest.raises(ValueError):
        cpu_quota(0)


def test_shares_and_weight_convert_both_ways() -> None:
    """The OCI mapping: 2 -> 1, 1024 -> 39, 262144 -> 10000, and back within rounding."""
    assert [shares_to_weight(s) for s in (2, 1024, 262_144, 1, 10**9)] == [1, 39, 10_000, 1, 10_000]
    assert [weight_to_shares(w) for w in (1, 100, 10_000)] == [2, 2597, 262_144]
    for shares in (2, 512, 1024, 4096, 262_144):
        assert abs(weight_to_shares(shares_to_weight(shares)) - shares) <= 27


def test_flat_keyed_and_limit_files() -> None:
    """memory.events / oom_control / cpu.stat parse to ints; `max` and v1's huge value to None."""
    assert parse_keyed("low 0\nhigh 3\nmax 7\noom 1\noom_kill 1\n")["oom_kill"] == 1
    assert parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")["oom_kill"] == 2
    assert parse_keyed("usage_usec 1234\nnr_periods 0\n") == {"usage_usec": 1234, "nr_periods": 0}
    assert parse_limit("max\n") is None
    assert parse_limit("9223372036854771712\n") is None
    assert parse_limit("67108864\n") == 64 << 20
    assert parse_cpu_max("max 100000\n") == (None, 100_000)
    assert parse_cpu_max("50000 100000\n") == (50_000, 100_000)


def test_public_names() -> None:
    """The package's public surface; a change here is an API change."""
    public = {name for name in dir(cgroups) if not name.startswith("_")}
    assert public == {
        "CONTROLLERS", "Cgroup", "CgroupMount", "CgroupStats", "CgroupSystem", "Placement",
        "DAEMON_LEAF", "enter_leaf",
        "ProcCgroups", "Version", "cpu_quota", "decide", "enable_controllers", "is_frozen",
        "parse_cpu_max", "parse_keyed", "parse_limit", "parse_mountinfo", "parse_proc_cgroup",
        "set_frozen", "shares_to_weight", "weight_to_shares",
    }
