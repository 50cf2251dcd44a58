"""cgroup2's device rules: a BPF_CGROUP_DEVICE program, as crun and runc attach.

cgroup2 has no devices controller: the kernel asks the eBPF programs attached to a cgroup
(type BPF_PROG_TYPE_CGROUP_DEVICE) on every open and mknod of a device node by a process
in it, and refuses (EPERM) unless they return 1. `program(rules)` compiles v1-style allow
rules (`c 1:3 rwm`, `c 136:* rwm`, `b 7:6 r`) into one such program (compiled and loaded
once per rule set per process, the fd kept), `attach` puts it on a cgroup directory
(replacing the one there: attached without BPF_F_ALLOW_MULTI, so a cgroup holds one and
`detach` needs no fd; descendants of a cgroup with such a program cannot attach their own,
and Kurma attaches only to leaves), `detach` lifts it.

The program (ctx: `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`,
access_type = access << 16 | type) tests each rule in turn: type, then that the access
asked is within the rule's, then major and minor where not `*`; a match returns 1, the end 0.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import struct
from collections.abc import Iterable

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())

_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH = 5, 8, 9
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6  # attach type

_TYPES = {"a": 0, "b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR; `a`: any
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE
_ALL_ACCESS = 7

# Instruction classes and ops (linux/bpf_common.h, linux/bpf.h)
_LDX_MEM_W = 0x61
_ALU32_AND_K, _ALU32_RSH_K, _ALU32_MOV_X = 0x54, 0x74, 0xBC
_ALU64_MOV_K = 0xB7
_JMP_JNE_K = 0x55
_EXIT = 0x95
_R0, _R1, _R2, _R3, _R4, _R5 = range(6)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def parse_rule(rule: str) -> tuple[int, int | None, int | None, int]:
    """`c 1:3 rwm` -> (type, major or None for *, minor or None, access bits); `a` alone
    means every device, every access. ValueError for anything else."""
    parts = rule.split()
    if parts == ["a"]:
        return 0, None, None, _ALL_ACCESS
    if len(parts) != 3 or parts[0] not in _TYPES or ":" not in parts[1]:
        raise ValueError(f"not a device rule: {rule!r}")
    major_s, minor_s = parts[1].split(":", 1)
    numbers = [None if n == "*" else int(n) for n in (major_s, minor_s)]
    if not parts[2] or any(c not in _ACCESS for c in parts[2]):
        raise ValueError(f"not a device rule: {rule!r}")
    access = 0
    for c in parts[2]:
        access |= _ACCESS[c]
    return _TYPES[parts[0]], numbers[0], numbers[1], access


def compile_rules(rules: Iterable[str]) -> bytes:
    """The program's instructions for these allow rules (see the module docstring)."""
    code = [
        _insn(_LDX_MEM_W, _R2, _R1, 0),
        _insn(_ALU32_AND_K, _R2, imm=0xFFFF),  # type
        _insn(_LDX_MEM_W, _R3, _R1, 0),
        _insn(_ALU32_RSH_K, _R3, imm=16),  # access asked
        _insn(_LDX_MEM_W, _R4, _R1, 4),  # major
        _insn(_LDX_MEM_W, _R5, _R1, 8),  # minor
    ]
    for rule in rules:
        kind, major, minor, access = parse_rule(rule)
        tests: list[tuple[int, int, int] | tuple[int, int]] = []
        if kind:
            tests.append((_R2, kind))
        if access != _ALL_ACCESS:  # r1 = asked & ~allowed, must be 0
            tests.append((_R3, ~access & _ALL_ACCESS, 0))
        if major is not None:
            tests.append((_R4, major))
        if minor is not None:
            tests.append((_R5, minor))
        block_len = sum(3 if len(t) == 3 else 1 for t in tests) + 2
        done = 0
        for test in tests:
            if len(test) == 3:
                reg, mask, value = test
                code.append(_insn(_ALU32_MOV_X, _R1, reg))
                code.append(_insn(_ALU32_AND_K, _R1, imm=mask))
                done += 2
                reg, imm = _R1, value
            else:
                reg, imm = test
            done += 1
            code.append(_insn(_JMP_JNE_K, reg, off=block_len - done, imm=imm))
        code.append(_insn(_ALU64_MOV_K, _R0, imm=1))
        code.append(_insn(_EXIT))
    code.append(_insn(_ALU64_MOV_K, _R0, imm=0))
    code.append(_insn(_EXIT))
    return b"".join(code)


class _ProgLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


class _ProgAttach(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
    ]


def _bpf(cmd: int, attr: ctypes.Structure, what: str, target: object) -> int:
    if _SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"{what} failed: bpf(2) on {platform.machine()}", target)
    result = _libc.syscall(
        ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.sizeof(attr)
    )
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {os.strerror(err)}", str(target))
    return int(result)


@functools.cache
def program(rules: tuple[str, ...]) -> int:
    """The fd (close-on-exec, kept for the process's life) of the loaded program for
    `rules`; loaded once per rule set."""
    insns = compile_rules(rules)
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(4096)
    attr = _ProgLoad(
        prog_type=_BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(license_),
        prog_name=b"kurma_devices",
    )
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "load device program", rules)
    except OSError as e:
        if e.errno != errno.EACCES:  # the verifier refused it: say why
            raise
    attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "load device program", rules)
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror}: {log.value.decode(errors='replace')}") from e


def attach(directory: str, rules: tuple[str, ...]) -> None:
    """Attach the program for `rules` to the cgroup2 `directory`, replacing its own."""
    prog = program(rules)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = _ProgAttach(target_fd=fd, attach_bpf_fd=prog, attach_type=_BPF_CGROUP_DEVICE)
        _bpf(_BPF_PROG_ATTACH, attr, "attach device program", directory)
    finally:
        os.close(fd)


def detach(directory: str) -> None:
    """Detach the device program of the cgroup2 `directory`; none there is not an error."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = _ProgAttach(target_fd=fd, attach_bpf_fd=0, attach_type=_BPF_CGROUP_DEVICE)
        try:
            _bpf(_BPF_PROG_DETACH, attr, "detach device program", directory)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
    finally:
        os.close(fd)
