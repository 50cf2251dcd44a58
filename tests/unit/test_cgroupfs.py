"""A privileged pod's cgroup binds (kurma/runtime/_cgroupfs.py): which directory of each
hierarchy is bound where, for a hybrid host, a pure cgroup2 system and a nested view."""

from __future__ import annotations

from kurma.runtime._cgroupfs import CgroupBind, own_cgroup_binds

HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:39 / /mnt/elsewhere rw,relatime - cgroup cgroup rw,freezer
"""
HYBRID_PROC = """\
9:name=systemd:/
8:pids:/k/pod-1/app-a
4:memory:/sandbox/k/pod-1/app-a
1:cpu:/k/pod-1/app-a
6:freezer:/k/pod-1/app-a
0::/k/pod-1/app-a
"""


def test_hybrid_host_binds_each_hierarchy_below_sys_fs_cgroup() -> None:
    binds = own_cgroup_binds(HYBRID_MOUNTS, HYBRID_PROC)
    assert set(binds) == {
        CgroupBind("/sys/fs/cgroup/cpu/k/pod-1/app-a", "/sys/fs/cgroup/cpu"),
        CgroupBind("/sys/fs/cgroup/memory/sandbox/k/pod-1/app-a", "/sys/fs/cgroup/memory"),
        CgroupBind("/sys/fs/cgroup/pids/k/pod-1/app-a", "/sys/fs/cgroup/pids"),
        CgroupBind("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/systemd"),
        CgroupBind("/sys/fs/cgroup/unified/k/pod-1/app-a", "/sys/fs/cgroup/unified"),
    }  # the freezer mounted outside /sys/fs/cgroup is left out


def test_pure_cgroup2_binds_over_sys_fs_cgroup_itself() -> None:
    mounts = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    assert own_cgroup_binds(mounts, "0::/kurma/pod-2/app-x\n") == (
        CgroupBind("/sys/fs/cgroup/kurma/pod-2/app-x", "/sys/fs/cgroup"),
    )


def test_nested_view_mount_roots_are_taken_off() -> None:
    """Inside a pod that got these binds (seen without its cgroup namespace: exec), the mount
    root is the pod's cgroup and the process path lies below it."""
    mounts = (
        "70 60 0:32 /k/pod-1/app-a /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "71 60 0:38 /k/pod-1/app-a /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    proc = "4:memory:/k/pod-1/app-a/kurma/pod-9/app-b\n0::/k/pod-1/app-a\n"
    assert own_cgroup_binds(mounts, proc) == (
        CgroupBind("/sys/fs/cgroup/memory/kurma/pod-9/app-b", "/sys/fs/cgroup/memory"),
        CgroupBind("/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified"),
    )


def test_a_cgroup_outside_the_mounted_root_is_left_out() -> None:
    mounts = "70 60 0:32 /other /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert own_cgroup_binds(mounts, "4:memory:/k/pod-1\n") == ()
    assert own_cgroup_binds(mounts, "4:memory:/otherwise\n") == ()
