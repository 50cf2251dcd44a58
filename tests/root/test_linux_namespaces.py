"""Namespaces, mounts, pivot_root and hostname against the real kernel, each in forked children.

Everything happens in children that unshared their own mount and UTS namespaces, so the
host's hostname and mount table are never touched; the tests check that too.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from kurma.runtime import linux
from tests.root.test_linux_forked import forked, run_forked

pytestmark = pytest.mark.root


def mounted(path: Path, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether `path` is a mount point in the given mountinfo."""
    with open(mountinfo) as f:
        return any(line.split()[4] == str(path) for line in f)


def test_unshare_uts_and_mount_leave_the_host_alone(tmp_path: Path) -> None:
    """A child's hostname and tmpfs live in its own namespaces; the host sees neither."""
    target = tmp_path / "mnt"
    target.mkdir()
    host_name = socket.gethostname()

    def child() -> dict[str, Any]:
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS)
        linux.make_rprivate("/")
        linux.sethostname("kurma-test-uts")
        linux.mount("tmpfs", target, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=1m")
        (target / "inside").write_text("x")
        return {"hostname": socket.gethostname(), "mounted": mounted(target)}

    assert run_forked(child) == {"hostname": "kurma-test-uts", "mounted": True}
    assert socket.gethostname() == host_name
    assert not mounted(target)
    assert list(target.iterdir()) == []


def test_setns_joins_another_childs_namespaces(tmp_path: Path) -> None:
    """A second child that setns()es into the first sees its hostname and its tmpfs."""
    target = tmp_path / "mnt"
    target.mkdir()
    hold_r, hold_w = os.pipe()
    ready_r, ready_w = os.pipe()

    def holder() -> None:
        os.close(hold_w)
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS)
        linux.make_rprivate("/")
        linux.sethostname("kurma-test-holder")
        linux.mount("tmpfs", target, "tmpfs", 0, "size=1m")
        (target / "marker").write_text("holder")
        os.write(ready_w, b"r")
        os.read(hold_r, 1)  # hold the namespaces until the test closes the pipe

    try:
        with forked(holder) as (holder_pid, _):
            os.close(ready_w)
            assert select.select([ready_r], [], [], 10)[0], "holder never got ready"

            def joiner() -> dict[str, Any]:
                linux.setns(linux.ns_path(holder_pid, linux.Namespace.UTS), linux.CLONE_NEWUTS)
                linux.setns(linux.ns_path(holder_pid, linux.Namespace.MNT), linux.CLONE_NEWNS)
                return {
                    "hostname": socket.gethostname(),
                    "marker": (target / "marker").read_text(),
                }

            assert run_forked(joiner) == {"hostname": "kurma-test-holder", "marker": "holder"}
    finally:
        for fd in (hold_r, hold_w, ready_r):
            os.close(fd)
    assert not mounted(target)


def test_pivot_root_into_a_tmpfs(tmp_path: Path) -> None:
    """pivot_root refuses a shared mount (EINVAL, naming new_root), works once made private."""
    new_root = tmp_path / "root"
    new_root.mkdir()

    def child() -> dict[str, Any]:
        linux.unshare(linux.CLONE_NEWNS)
        # Shared propagation as on a systemd host (the VM's Debian kernel), in our namespace.
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_SHARED)
        linux.mount("tmpfs", new_root, "tmpfs", 0, "size=1m")
        (new_root / "old").mkdir()
        (new_root / "etc").mkdir()
        try:
            linux.pivot_root(new_root, new_root / "old")
            refused = None
        except OSError as e:
            refused = [e.errno, e.filename]
        linux.make_rprivate("/")
        linux.pivot_root(new_root, new_root / "old")
        os.chdir("/")
        linux.umount2("/old", linux.MNT_DETACH)
        os.rmdir("/old")
        return {"refused": refused, "root": sorted(os.listdir("/"))}

    assert run_forked(child) == {"refused": [errno.EINVAL, str(new_root)], "root": ["etc"]}
    assert not mounted(new_root)
    assert list(new_root.iterdir()) == []


def test_failures_carry_errno_what_and_target(tmp_path: Path) -> None:
    """Every wrapper raises OSError(errno, '<what> failed: ...', target)."""
    missing = tmp_path / "missing"
    with pytest.raises(OSError) as info:
        linux.mount("tmpfs", missing, "tmpfs")
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, str(missing))
    assert info.value.strerror.startswith("mount failed: ")

    with pytest.raises(OSError) as info:
        linux.umount2(tmp_path)
    assert (info.value.errno, info.value.filename) == (errno.EINVAL, str(tmp_path))
    assert info.value.strerror.startswith("umount2 failed: ")

    not_a_namespace = tmp_path / "file"
    not_a_namespace.write_text("")
    with pytest.raises(OSError) as info:
        linux.setns(not_a_namespace)
    assert (info.value.errno, info.value.filename) == (errno.EINVAL, str(not_a_namespace))

    with pytest.raises(OSError) as info:
        linux.pivot_root(missing, missing)
    assert info.value.errno == errno.ENOENT and info.value.filename == str(missing)


def test_sethostname_rejects_a_too_long_name_in_a_child_uts() -> None:
    """An over-long hostname fails with EINVAL and names the attempted value."""

    def child() -> list[Any]:
        linux.unshare(linux.CLONE_NEWUTS)
        try:
            linux.sethostname("x" * 100)
        except OSError as e:
            return [e.errno, e.filename, e.strerror]
        return []

    err, target, message = run_forked(child)
    assert (err, target) == (errno.EINVAL, "x" * 100)
    assert message.startswith("sethostname failed: ")


def test_prctl_helpers_in_a_child() -> None:
    """Subreaper and no_new_privs read back as set; unshare(0) is a harmless no-op."""

    def child() -> list[bool]:
        before = [linux.is_child_subreaper(), linux.get_no_new_privs()]
        linux.set_child_subreaper()
        linux.set_no_new_privs()
        linux.set_pdeathsig(signal.SIGKILL)
        linux.unshare(0)
        return [*before, linux.is_child_subreaper(), linux.get_no_new_privs()]

    assert run_forked(child) == [False, False, True, True]


def test_namespace_flags_match_the_kernel_headers() -> None:
    """The CLONE_NEW* values and their /proc/PID/ns names."""
    assert linux.CLONE_NEWNS == 0x20000 and linux.CLONE_NEWTIME == 0x80
    assert linux.CLONE_NEWCGROUP == 0x02000000 and linux.CLONE_NEWNET == 0x40000000
    names = {kind.proc_name for kind in linux.Namespace}
    assert names == {entry for entry in os.listdir("/proc/self/ns") if "for_children" not in entry}
