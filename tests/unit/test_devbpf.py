"""The cgroup2 device program's compiler (`cgroups._devbpf`), run by a small interpreter of
the few instructions it emits, so the rules' meaning is checked without a kernel (the
kernel's verdict: tests/security/test_devices.py)."""

from __future__ import annotations

import struct

import pytest

from kurma.runtime._devices import DEFAULT_DEVICE_RULES
from kurma.runtime.cgroups._devbpf import compile_rules, parse_rule

BLOCK, CHAR = 1, 2
MKNOD, READ, WRITE = 1, 2, 4


def run(program: bytes, kind: int, access: int, major: int, minor: int) -> int:
    """Interpret `program` on one access (ctx: access_type, major, minor); r0 at exit."""
    ctx = {0: (access << 16) | kind, 4: major, 8: minor}
    regs = [0] * 11
    pc = 0
    insns = [struct.unpack("<BBhi", program[i : i + 8]) for i in range(0, len(program), 8)]
    for _ in range(10_000):
        code, regs_byte, off, imm = insns[pc]
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if code == 0x61:  # ldx w
            assert src == 1
            regs[dst] = ctx[off]
        elif code == 0x54:  # and32 k
            regs[dst] = regs[dst] & imm & 0xFFFFFFFF
        elif code == 0x74:  # rsh32 k
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xBC:  # mov32 x
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == 0xB7:  # mov64 k
            regs[dst] = imm
        elif code == 0x55:  # jne k
            if regs[dst] != imm:
                pc += off
        elif code == 0x95:  # exit
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("no exit")


def test_default_rules_allow_the_minimal_nodes_and_ptys_only() -> None:
    """c 1:3 (null) in every access, a pty (136:5), ptmx; not c 1:1 (mem), not b 7:0
    (a loop device), not b 1:3 (the block device with null's numbers)."""
    prog = compile_rules(DEFAULT_DEVICE_RULES)
    for access in (MKNOD, READ, WRITE, READ | WRITE | MKNOD):
        assert run(prog, CHAR, access, 1, 3) == 1
    assert run(prog, CHAR, READ | WRITE, 136, 5) == 1
    assert run(prog, CHAR, READ | WRITE, 5, 2) == 1
    assert run(prog, CHAR, READ, 1, 1) == 0
    assert run(prog, BLOCK, READ, 7, 0) == 0
    assert run(prog, BLOCK, READ, 1, 3) == 0
    assert run(prog, CHAR, MKNOD, 8, 0) == 0


def test_access_and_wildcards() -> None:
    """`b 7:6 r` allows reading loop6 only; `c 10:* rw` any minor of 10 but no mknod;
    `a` everything; no rules nothing."""
    prog = compile_rules(("b 7:6 r", "c 10:* rw"))
    assert run(prog, BLOCK, READ, 7, 6) == 1
    assert run(prog, BLOCK, READ | WRITE, 7, 6) == 0
    assert run(prog, BLOCK, MKNOD, 7, 6) == 0
    assert run(prog, BLOCK, READ, 7, 7) == 0
    assert run(prog, CHAR, READ, 7, 6) == 0
    assert run(prog, CHAR, READ | WRITE, 10, 237) == 1
    assert run(prog, CHAR, MKNOD, 10, 237) == 0
    everything = compile_rules(("a",))
    assert run(everything, BLOCK, MKNOD | READ | WRITE, 8, 0) == 1
    assert run(compile_rules(()), CHAR, READ, 1, 3) == 0


@pytest.mark.parametrize("rule", ["", "c", "c 1:3", "x 1:3 rwm", "c 1 rwm", "c 1:3 rx", "c a:3 r"])
def test_bad_rules_are_refused(rule: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(rule)
