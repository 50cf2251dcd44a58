"""Capabilities against the real kernel: capget/capset and drop_capabilities, in children.

What counts is what an exec'd program holds, so the main tests exec `cat /proc/self/status`
after dropping, as root and as nobody, and read all five sets from it.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from kurma.runtime import linux
from kurma.runtime.linux import Capability
from tests.root.test_linux_forked import run_forked

pytestmark = pytest.mark.root

KEEP = {Capability.CAP_CHOWN, Capability.CAP_NET_BIND_SERVICE, Capability.CAP_KILL}
NOBODY = 65534


def status_sets(text: str) -> dict[str, list[str]]:
    """The Cap* lines of a /proc/PID/status text, as sorted capability names."""
    sets = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            sets[key] = sorted(c.name for c in linux.caps_from_mask(int(value, 16)))
    return sets


def exec_status_after_drop(uid: int) -> dict[str, list[str]]:
    """In a child: become `uid` (keeping caps), drop to KEEP, exec cat /proc/self/status."""

    def child() -> str:
        if uid != 0:
            linux.set_keepcaps(True)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        linux.drop_capabilities(KEEP)
        out = subprocess.run(["cat", "/proc/self/status"], capture_output=True, check=True)
        return out.stdout.decode()

    return status_sets(run_forked(child))


@pytest.mark.parametrize("uid", [0, NOBODY], ids=["root", "nobody"])
def test_exec_after_drop_holds_exactly_the_keep_set(uid: int) -> None:
    """Root or not, the exec'd program's five sets are exactly the keep-set."""
    want = sorted(c.name for c in KEEP)
    assert exec_status_after_drop(uid) == {
        "CapInh": want,
        "CapPrm": want,
        "CapEff": want,
        "CapBnd": want,
        "CapAmb": want,
    }


def test_drop_to_nothing_leaves_an_exec_with_no_capabilities() -> None:
    """An empty keep-set leaves a root exec with empty sets, bounding included."""

    def child() -> str:
        linux.drop_capabilities(set())
        return subprocess.run(
            ["cat", "/proc/self/status"], capture_output=True, check=True
        ).stdout.decode()

    assert set(map(tuple, status_sets(run_forked(child)).values())) == {()}


def test_capset_then_capget_round_trips_in_the_caller() -> None:
    """capset() with a smaller set reads back exactly via capget() and /proc/self/status."""

    def child() -> list[Any]:
        linux.capset(KEEP, KEEP, set())
        got = linux.capget()
        status = linux.read_status_capabilities()
        return [
            sorted(c.name for c in got.effective),
            sorted(c.name for c in got.permitted),
            sorted(c.name for c in got.inheritable),
            sorted(c.name for c in status["CapEff"]),
        ]

    want = sorted(c.name for c in KEEP)
    assert run_forked(child) == [want, want, [], want]


def test_drop_reports_capabilities_the_host_withholds() -> None:
    """Capabilities not permitted or not in the bounding set are left out of the result."""
    missing = sorted(set(Capability) - linux.capget().permitted)

    def child() -> list[str]:
        linux.capbset_drop(Capability.CAP_SYS_TIME)
        # An empty-ish effective set, as after setuid() with keepcaps: drop must raise it.
        linux.capset({Capability.CAP_CHOWN}, linux.capget().permitted, set())
        kept = linux.drop_capabilities({Capability.CAP_CHOWN, Capability.CAP_SYS_TIME, *missing})
        return sorted(c.name for c in kept)

    assert run_forked(child) == ["CAP_CHOWN"]


def test_capset_beyond_permitted_fails_with_eperm() -> None:
    """Raising a capability back after dropping it is refused: EPERM, naming the call."""

    def child() -> list[Any]:
        linux.capset(set(), set(), set())
        try:
            linux.capset(KEEP, KEEP, set())
        except OSError as e:
            return [e.errno, e.strerror.split(":")[0]]
        return []

    assert run_forked(child) == [1, "capset failed"]


def test_capability_names_and_numbers() -> None:
    """Every CAP_* of current kernels, by name either way, numbered as the kernel does."""
    assert len(Capability) == 41 and max(Capability) == Capability.CAP_CHECKPOINT_RESTORE == 40
    assert [Capability(n).value for n in range(linux.last_cap() + 1)] == list(range(41))
    assert Capability.from_name("net_admin") is Capability.CAP_NET_ADMIN
    assert Capability.from_name("CAP_SYS_ADMIN") == 21
    assert Capability(24).name == "CAP_SYS_RESOURCE"
    with pytest.raises(ValueError, match="CAP_BOGUS"):
        Capability.from_name("CAP_BOGUS")
    assert linux.caps_to_mask(KEEP) == (1 << 0) | (1 << 5) | (1 << 10)
    assert linux.caps_from_mask(linux.caps_to_mask(KEEP)) == KEEP
