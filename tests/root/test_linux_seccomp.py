"""Seccomp filters loaded in forked children: remove-sets deny, retain-sets allow only theirs.

A loaded filter can never be removed from a process, so every load happens in a child.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from kurma.runtime import linux
from tests.root.test_linux_forked import run_forked

pytestmark = pytest.mark.root

# What a Python child needs between loading a filter and reporting back through its pipe.
PYTHON_MINIMUM = {
    "brk", "mmap", "munmap", "mremap", "madvise", "mprotect", "futex", "write", "close",
    "exit", "exit_group", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "getpid",
    "gettid", "tgkill", "getcwd", "newfstatat", "fstat", "lseek", "read",
}


def try_calls() -> dict[str, Any]:
    """Call uname(), getcwd() and unshare(0), recording the errno of each or 0."""
    result: dict[str, Any] = {}
    for name, call in (
        ("uname", os.uname),
        ("getcwd", os.getcwd),
        ("unshare", lambda: linux.unshare(0)),
    ):
        try:
            call()
            result[name] = 0
        except OSError as e:
            result[name] = e.errno
    return result


def test_remove_set_blocks_the_syscall_with_eperm() -> None:
    """A remove-set denies its syscalls with EPERM; the rest still work."""

    def child() -> dict[str, Any]:
        linux.set_no_new_privs()
        linux.SeccompFilter.remove({"uname"}).load()
        return try_calls()

    assert run_forked(child) == {"uname": errno.EPERM, "getcwd": 0, "unshare": 0}


def test_remove_set_uses_the_errno_asked_for() -> None:
    """The remove-set's errno is what the blocked call fails with."""

    def child() -> dict[str, Any]:
        linux.set_no_new_privs()
        linux.SeccompFilter.remove({"uname"}, errno=errno.ENOSYS).load()
        return try_calls()

    assert run_forked(child)["uname"] == errno.ENOSYS


def test_retain_set_allows_only_what_is_listed() -> None:
    """With a retain-set, unlisted syscalls fail with EPERM and listed ones work."""

    def child() -> dict[str, Any]:
        linux.set_no_new_privs()
        linux.SeccompFilter.retain(PYTHON_MINIMUM | {"prctl"}).load()
        return try_calls()

    assert run_forked(child) == {"uname": errno.EPERM, "getcwd": 0, "unshare": errno.EPERM}


def test_docker_default_blocked_keeps_namespaces_out_even_for_root() -> None:
    """Docker's blocked set, loaded as a remove-set, stops unshare() though we are root."""
    blocked = linux.docker_default_blocked()
    assert {"mount", "unshare", "setns", "kexec_load", "bpf", "ptrace"} - blocked == {"ptrace"}
    assert not {"execve", "clone", "read", "write", "exit_group"} & blocked
    assert all(isinstance(linux.resolve_syscall(name), int) for name in blocked)

    def child() -> dict[str, Any]:
        linux.set_no_new_privs()
        linux.SeccompFilter.remove(blocked).load()
        return try_calls()

    assert run_forked(child) == {"uname": 0, "getcwd": 0, "unshare": errno.EPERM}


def test_unknown_syscall_names_are_refused() -> None:
    """A typo in a set is an error, not a silently weaker filter."""
    with pytest.raises(ValueError, match="no_such_call"):
        linux.SeccompFilter.remove({"uname", "no_such_call"})
    with pytest.raises(ValueError, match="no_such_call"):
        linux.resolve_syscall("no_such_call")


def test_load_without_no_new_privs_or_sys_admin_fails_with_eacces() -> None:
    """Without no_new_privs, loading needs CAP_SYS_ADMIN: EACCES names seccomp_load."""

    def child() -> list[Any]:
        linux.capset(set(), set(), set())
        try:
            linux.SeccompFilter.remove({"uname"}).load()
        except OSError as e:
            return [e.errno, e.strerror.split(":")[0]]
        return []

    assert run_forked(child) == [errno.EACCES, "seccomp_load failed"]


def test_compiled_program_loads_with_one_syscall() -> None:
    """`bpf()` compiled in the parent and `load_bpf` in the child act like `load()`."""
    program = linux.SeccompFilter.remove({"uname"}, errno=errno.EACCES).bpf()
    assert len(program) % 8 == 0 and program

    def child() -> dict[str, Any]:
        linux.set_no_new_privs()
        linux.load_bpf(program)
        return try_calls()

    assert run_forked(child) == {"uname": errno.EACCES, "getcwd": 0, "unshare": 0}


def test_load_bpf_rejects_what_is_not_a_program() -> None:
    with pytest.raises(ValueError, match="not a BPF program"):
        linux.load_bpf(b"\x00" * 7)
