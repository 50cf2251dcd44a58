"""Entry point of `kurma-init`, PID 1 of the initrd.

main() reads as a checklist: console logging, the boot steps (kurma/init/_steps.py), the
main loop (signals -> reaper, supervisor, shutdown), the shutdown path. PID 1 never lets an
exception escape: anything that does falls into the emergency shell.

`--test-mode` runs the same code on a host (in a PID namespace of its own, as the tests do):
nothing reboots the machine, the shutdown prints the action chosen and returns, and the
emergency shell returns instead of running.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
import time
from typing import TextIO

from ..backoff import Backoff
from ..reaper import Reaper
from ._log import setup_console_logging
from ._services import RUN_DIR
from ._shutdown import kill_all, unmount_all
from ._signals import SHUTDOWN_SIGNALS, Action, kernel_reboot
from ._steps import BootContext, Step, StepRunner, boot_plan, write_boot_log
from ._supervisor import Supervisor
from .config import INITRD_FILE

log = logging.getLogger("kurma.init")

EMERGENCY_SHELL = "/bin/sh"
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for what kurmad left behind


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kurma-init", description="PID 1 of a kurma machine")
    p.add_argument("--test-mode", action="store_true", help="never reboot; return on shutdown")
    p.add_argument("--config", default=INITRD_FILE, help="the initrd's boot config file")
    p.add_argument("--cmdline", default=None, help="kernel command line (default /proc/cmdline)")
    p.add_argument(
        "--kurmad-command",
        default=shlex.join([sys.executable, "-m", "kurma.api.daemon"]),
        help="how to start kurmad (a shell-quoted command line, not run by a shell)",
    )
    p.add_argument("--restart-initial", type=float, default=1.0, help="first restart delay (s)")
    p.add_argument("--restart-max", type=float, default=30.0, help="largest restart delay (s)")
    p.add_argument("--restart-reset", type=float, default=60.0, help="uptime that resets it (s)")
    p.add_argument("--stop-grace", type=float, default=None, help="default: shutdown_budget")
    p.add_argument("--emergency-shell", default=EMERGENCY_SHELL)
    p.add_argument(
        "--fail-step",
        metavar="NAME",
        help="test mode only: this step raises, to show that the boot goes on without it",
    )
    p.add_argument(
        "--run-dir",
        default=None,
        help=f"where kurmad's settings, services and the boot log go (default {RUN_DIR}; "
        "in test mode: none written)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Boot, supervise, shut down; returns only in test mode (or when not PID 1)."""
    args = parse_args(argv)
    console = sys.stderr  # the kernel gives PID 1 /dev/console on fds 0-2
    setup_console_logging(console)
    reaper = Reaper()
    try:
        return run(args, console, reaper)
    except BaseException as e:  # PID 1 never exits on an exception
        log.critical("PID 1 failed: %s: %s", type(e).__name__, e, exc_info=True)
        return emergency_shell(args, reaper)


def run(args: argparse.Namespace, console: TextIO, reaper: Reaper) -> int:
    run_dir = args.run_dir or (None if args.test_mode else RUN_DIR)
    ctx = BootContext(
        reaper=reaper,
        test_mode=args.test_mode,
        config_file=args.config,
        cmdline=args.cmdline,
        run_dir=run_dir,
    )
    backoff = Backoff(
        initial=args.restart_initial, maximum=args.restart_max, reset=args.restart_reset
    )
    ctx.kurmad = Supervisor("kurmad", shlex.split(args.kurmad_command), reaper, backoff)
    runner = StepRunner(console)
    ctx.boot_log = runner.boot_log
    boot_log = runner.run(with_failing_step(boot_plan(), args), ctx)
    try:
        write_boot_log(ctx)
    except OSError as e:
        log.error("boot log not written: %s", e)
    if boot_log.stopped is not None:
        log.critical("boot stopped: step %s failed", boot_log.stopped)
        return emergency_shell(args, reaper)
    log.info("boot done: %d steps", len(boot_log.records))
    action = serve(ctx)
    return shut_down(ctx, action, args.stop_grace)


def with_failing_step(plan: list[Step], args: argparse.Namespace) -> list[Step]:
    """The plan, with `--fail-step`'s step replaced by one that raises (test mode only)."""
    if not args.fail_step:
        return plan
    if not args.test_mode:
        log.error("--fail-step is for test mode only: ignored")
        return plan

    def fail(ctx: BootContext) -> str:
        raise RuntimeError(f"injected failure of step {args.fail_step} (--fail-step)")

    return [dataclasses.replace(s, run=fail) if s.name == args.fail_step else s for s in plan]


def serve(ctx: BootContext) -> Action:
    """The main loop: reap, restart kurmad when due, until a shutdown signal arrives."""
    assert ctx.signals is not None and ctx.kurmad is not None
    while True:
        ctx.reaper.reap()
        ctx.kurmad.tick()
        deadline = ctx.kurmad.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for sig in sorted(ctx.signals.wait(timeout)):
            if sig in SHUTDOWN_SIGNALS:
                action = SHUTDOWN_SIGNALS[sig]
                log.info("signal %d: %s", sig, action.value)
                return action


def shut_down(ctx: BootContext, action: Action, grace: float | None) -> int:
    """Stop kurmad (it stops the services), then as the machine's PID 1: kill what is left,
    sync, unmount, reboot(2). Elsewhere report the action and return."""
    assert ctx.signals is not None and ctx.kurmad is not None
    signals = ctx.signals
    budget = ctx.config.shutdown_budget if grace is None else grace
    log.info("shutdown (%s): stopping services within %gs", action.value, budget)

    def pump(seconds: float) -> None:
        signals.wait(min(seconds, 0.5))  # further shutdown signals change nothing
        ctx.reaper.reap()

    ctx.kurmad.stop(pump, grace=budget)
    ctx.reaper.reap()
    if ctx.test_mode:
        print(f"kurma-init: shutdown: {action.value}", flush=True)
        return 0
    if not ctx.machine_init:
        log.info("not PID 1 of the machine: no reboot(2)")
        return 0
    finish_machine(ctx, action)
    return 1


def finish_machine(ctx: BootContext, action: Action) -> None:
    """The last moments of the machine; returns only if reboot(2) failed (by raising)."""
    termed, killed = kill_all(KILL_GRACE, ctx.reaper.reap)
    log.info("remaining processes: %d sent SIGTERM, %d needed SIGKILL", termed, killed)
    if ctx.kmsg is not None:  # /dev is about to go; the console stays
        logging.getLogger("kurma").removeHandler(ctx.kmsg)
        ctx.kmsg.close()
    os.sync()
    report = unmount_all("/")
    log.info("unmount: %s; %s", report.summary(), action.value)
    os.sync()
    kernel_reboot(action)  # returns only by raising: main() falls into the emergency shell


def emergency_shell(args: argparse.Namespace, reaper: Reaper) -> int:
    """A shell on the console, again and again; or sleep forever. Test mode returns 1."""
    if args.test_mode:
        print("kurma-init: emergency shell (test mode: returning)", flush=True)
        return 1
    while True:  # PID 1 never exits
        try:
            _run_shell_once(args.emergency_shell, reaper)
        except BaseException as e:  # nothing ends PID 1
            log.critical("emergency shell: %s: %s", type(e).__name__, e)
            time.sleep(1.0)


def _run_shell_once(shell: str, reaper: Reaper) -> None:
    if not os.access(shell, os.X_OK):
        log.critical("no emergency shell at %s: sleeping", shell)
        while True:
            time.sleep(1.0)
            reaper.reap()
    ended: list[int] = []
    log.critical("starting an emergency shell on the console: %s", shell)
    reaper.spawn([shell], lambda pid, status: ended.append(status), setsid=False)
    while not ended:
        time.sleep(0.2)  # polling: nothing else here can be relied on any more
        reaper.reap()
    time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
