"""Signals of PID 1, read synchronously in the main loop, and the shutdown they ask for.

Strategy: the Python-level handler only notes the signal number in a set; the C-level
handler writes a byte to a wakeup pipe (`signal.set_wakeup_fd`) so the main loop's
`select()` returns. All work (reaping, shutdown) happens in the loop. A full pipe loses only
wakeup bytes, never a signal: the set still holds it, and SIGCHLD needs no count because the
reaper collects every ended child in one pass.

Which signal means what (DESIGN.md, with busybox's and systemd's conventions beside it):

    SIGTERM        poweroff  (DESIGN.md; busybox init reboots on it, systemd re-executes)
    SIGPWR         poweroff  (power failure, as sysvinit; systemd starts sigpwr.target)
    SIGINT         reboot    (ctrl-alt-del, once reboot(RB_DISABLE_CAD) is set; as systemd)
    SIGUSR1        halt      (busybox `halt`)
    SIGUSR2        poweroff  (busybox `poweroff`)
    SIGRTMIN+3/4/5 halt / poweroff / reboot (systemd's `systemctl --force` signals)
    SIGHUP, SIGQUIT, SIGTTIN, SIGTTOU: ignored by PID 1 (its console must not stop it).

So busybox's `reboot` (SIGTERM) powers a kurma machine off; `kurmactl` is the way to reboot.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import select
import signal
from dataclasses import dataclass, field


class Action(enum.Enum):
    """What a shutdown ends in."""

    POWEROFF = "poweroff"
    REBOOT = "reboot"
    HALT = "halt"


SHUTDOWN_SIGNALS: dict[int, Action] = {
    signal.SIGTERM: Action.POWEROFF,
    signal.SIGPWR: Action.POWEROFF,
    signal.SIGINT: Action.REBOOT,
    signal.SIGUSR1: Action.HALT,
    signal.SIGUSR2: Action.POWEROFF,
    signal.SIGRTMIN + 3: Action.HALT,
    signal.SIGRTMIN + 4: Action.POWEROFF,
    signal.SIGRTMIN + 5: Action.REBOOT,
}
IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGTTIN, signal.SIGTTOU)

# reboot(2) commands (linux/reboot.h)
RB_DISABLE_CAD = 0
RB_AUTOBOOT = 0x01234567
RB_POWER_OFF = 0x4321FEDC
RB_HALT_SYSTEM = 0xCDEF0123
_REBOOT_CMD = {
    Action.POWEROFF: RB_POWER_OFF,
    Action.REBOOT: RB_AUTOBOOT,
    Action.HALT: RB_HALT_SYSTEM,
}


@dataclass
class SignalPipe:
    """Signals noted by tiny handlers and read in the main loop."""

    read_fd: int
    write_fd: int
    pending: set[int] = field(default_factory=set)

    @classmethod
    def install(cls) -> SignalPipe:
        """Handlers for SIGCHLD and the shutdown signals; the ignored ones ignored."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        pipe = cls(r, w)
        for sig in (signal.SIGCHLD, *SHUTDOWN_SIGNALS):
            signal.signal(sig, pipe._note)
        for sig in IGNORED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        return pipe

    def _note(self, signum: int, frame: object) -> None:
        self.pending.add(signum)

    def wait(self, timeout: float | None) -> set[int]:
        """Signals that arrived, waiting at most `timeout` seconds (None: until one does)."""
        if not self.pending:
            with contextlib.suppress(InterruptedError):
                select.select([self.read_fd], [], [], timeout)
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        got, self.pending = self.pending, set()
        return got

    def close(self) -> None:
        """Back to default handlers (tests run more than one PID 1 in one process)."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, *SHUTDOWN_SIGNALS, *IGNORED_SIGNALS):
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.read_fd)
        os.close(self.write_fd)


def _libc_reboot(cmd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.reboot(ctypes.c_int(cmd)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"reboot failed: {os.strerror(err)}", hex(cmd))


def disable_ctrl_alt_del() -> None:
    """ctrl-alt-del sends SIGINT to PID 1 instead of rebooting at once."""
    _libc_reboot(RB_DISABLE_CAD)


def kernel_reboot(action: Action) -> None:
    """The reboot(2) system call for `action`; returns only if it failed (then it raises)."""
    _libc_reboot(_REBOOT_CMD[action])
