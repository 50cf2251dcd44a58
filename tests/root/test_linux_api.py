"""The public surface of kurma.runtime.linux; a change here is an API change."""

from __future__ import annotations

from kurma.runtime import linux


def test_public_names() -> None:
    """Every public name, re-exported from the private modules."""
    public = {name for name in dir(linux) if not name.startswith("_")}
    assert public == {
        "CLONE_NEWCGROUP", "CLONE_NEWIPC", "CLONE_NEWNET", "CLONE_NEWNS", "CLONE_NEWPID",
        "CLONE_NEWTIME", "CLONE_NEWUSER", "CLONE_NEWUTS", "CapSets", "Capability",
        "MNT_DETACH", "MNT_EXPIRE", "MNT_FORCE", "MS_BIND", "MS_MOVE", "MS_NOATIME", "MS_NODEV",
        "MS_NOEXEC", "MS_NOSUID", "MS_PRIVATE", "MS_RDONLY", "MS_REC", "MS_RELATIME",
        "MS_REMOUNT", "MS_SHARED", "MS_SLAVE", "MS_STRICTATIME", "MS_UNBINDABLE", "MountFlags",
        "Namespace", "SeccompFilter", "UMOUNT_NOFOLLOW", "ambient_clear_all", "ambient_is_set",
        "ambient_raise", "capbset_drop", "capbset_read", "capget", "caps_from_mask",
        "caps_to_mask", "capset", "docker_default_blocked", "drop_capabilities", "load_bpf",
        "get_no_new_privs", "is_child_subreaper", "last_cap", "make_rprivate", "mount",
        "ns_path", "pivot_root", "prctl", "read_status_capabilities", "resolve_syscall",
        "set_child_subreaper", "set_keepcaps", "set_no_new_privs", "set_pdeathsig",
        "sethostname", "setns", "umount2", "unshare",
    }


def test_pid1_imports_no_seccomp_or_capabilities() -> None:
    """kurma-init mounts with this package; the seccomp and capability parts (pyseccomp,
    ctypes.util) load only when a name of theirs is first used."""
    import subprocess
    import sys

    code = (
        "import sys, kurma.init.main, kurma.runtime.linux as l; "
        "print(sorted(m for m in ('pyseccomp', 'kurma.runtime.linux._seccomp', "
        "'kurma.runtime.linux._caps') if m in sys.modules)); "
        "l.SeccompFilter, l.last_cap; print('kurma.runtime.linux._seccomp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out
