"""The boot step runner and the boot plan: order, durations, failures, skips (no real time)."""

from __future__ import annotations

import dataclasses
import io
import os

import pytest

from kurma.init._steps import (
    BootContext,
    OnFailure,
    Outcome,
    Step,
    StepRunner,
    StepSkipped,
    boot_plan,
    load_config,
    load_modules,
    mount_disks,
    set_hostname,
)
from kurma.reaper import Reaper


class FakeClock:
    """Each reading advances by `step` seconds."""

    def __init__(self, step: float = 0.5) -> None:
        self.now, self.step = 100.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def ctx() -> BootContext:
    return BootContext(reaper=Reaper(), test_mode=True, config_file=None, cmdline="")


def run(steps: list[Step]) -> tuple[list[tuple[str, Outcome, str]], str, StepRunner]:
    console = io.StringIO()
    runner = StepRunner(console, clock=FakeClock(), since=lambda: 1.0)
    boot_log = runner.run(steps, ctx())
    return [(r.name, r.outcome, r.message) for r in boot_log.records], console.getvalue(), runner


def ok(message: str = "") -> Step:
    return Step(f"ok_{message or 'step'}", lambda c: message or None)


def boom(c: BootContext) -> None:
    raise ValueError("disk on fire")


def test_steps_run_in_order_and_record_their_duration() -> None:
    """Every step runs once, in order; the duration comes from the clock around the call."""
    calls: list[str] = []
    steps = [Step(n, lambda c, n=n: calls.append(n)) for n in ("a", "b", "c")]
    records, console, runner = run(steps)
    assert calls == ["a", "b", "c"]
    assert [r[:2] for r in records] == [(n, Outcome.OK) for n in "abc"]
    assert [r.duration for r in runner.boot_log.records] == [0.5, 0.5, 0.5]
    assert console.splitlines()[:2] == [
        "[   1.000] kurma-init: step a: start",
        "[   1.000] kurma-init: step a: ok (500.0 ms)",
    ]


def test_a_failing_step_is_logged_and_the_boot_goes_on() -> None:
    """The error's type and message are recorded and shown; the next step still runs."""
    records, console, _ = run([Step("mounts", boom), ok("after")])
    assert records == [
        ("mounts", Outcome.FAILED, "ValueError: disk on fire"),
        ("ok_after", Outcome.OK, "after"),
    ]
    assert "step mounts: failed (500.0 ms): ValueError: disk on fire" in console


def test_a_step_that_needs_a_failed_one_is_skipped_with_the_reason() -> None:
    """`needs` names earlier steps; unless they succeeded, the step does not run."""
    ran: list[str] = []
    steps = [
        Step("net", boom),
        Step("dhcp", lambda c: ran.append("dhcp"), needs=("net",)),
        Step("ntp", lambda c: ran.append("ntp"), needs=("nowhere",)),
        Step("after", lambda c: ran.append("after")),
    ]
    records, _, _ = run(steps)
    assert ran == ["after"]
    assert records[1] == ("dhcp", Outcome.SKIPPED, "needs net (failed)")
    assert records[2] == ("ntp", Outcome.SKIPPED, "needs nowhere (not run)")


def test_a_skipped_step_does_not_satisfy_needs() -> None:
    """A step that raised StepSkipped did nothing, so what needs it is skipped too."""

    def skip(c: BootContext) -> None:
        raise StepSkipped("nothing here")

    records, _, _ = run([Step("a", skip), Step("b", lambda c: None, needs=("a",))])
    assert records == [
        ("a", Outcome.SKIPPED, "nothing here"),
        ("b", Outcome.SKIPPED, "needs a (skipped)"),
    ]


def test_a_stop_boot_failure_skips_the_rest() -> None:
    """Only a STOP_BOOT step's failure stops the boot; the log says which one."""
    records, _, runner = run([Step("signals", boom, OnFailure.STOP_BOOT), ok("x")])
    assert records[1] == ("ok_x", Outcome.SKIPPED, "boot stopped after signals failed")
    assert runner.boot_log.stopped == "signals"


def test_boot_log_is_plain_data_for_the_api() -> None:
    """Records turn into plain dicts (the outcome as its string)."""
    _, _, runner = run([Step("a", boom)])
    assert runner.boot_log.to_plain() == [
        {
            "name": "a",
            "outcome": "failed",
            "started": 1.0,
            "duration": 0.5,
            "message": "ValueError: disk on fire",
        }
    ]


def test_the_boot_plan_follows_the_design_order() -> None:
    """DESIGN.md's boot sequence, step names stable; kurmad gets its settings and the
    console before the host network is set up, the services (which may need it) only after."""
    assert [s.name for s in boot_plan()] == [
        "signals_and_reaping",
        "leave_initramfs",
        "system_mounts",
        "kurmad_preload",
        "boot_config",
        "logging",
        "kernel_modules",
        "hostname",
        "disks",
        "image_store",
        "kurmad",  # before the network: it needs none, and its start takes seconds under TCG
        "console",  # needs no network either: the login prompt while the services start
        "host_network",
        "services",
    ]


HANDED_TO_KURMAD = ["services", "console"]
MACHINE_ONLY = [
    "leave_initramfs",
    "system_mounts",
    "kurmad_preload",
    "logging",
    "image_store",
    "host_network",
]


@pytest.mark.parametrize("name", HANDED_TO_KURMAD)
def test_service_steps_write_nothing_without_a_run_dir(name: str) -> None:
    """In test mode there is no run directory: the services file is not written anywhere."""
    step = next(s for s in boot_plan() if s.name == name)
    with pytest.raises(StepSkipped, match=r"^no run directory"):
        step.run(ctx())


@pytest.mark.parametrize("name", MACHINE_ONLY)
def test_machine_steps_leave_a_test_run_alone(name: str) -> None:
    """In test mode (and anywhere but the machine's PID 1) the host is never touched."""
    step = next(s for s in boot_plan() if s.name == name)
    with pytest.raises(StepSkipped, match=r"^not PID 1 of the machine: .* left alone$"):
        step.run(ctx())


def test_modules_and_disks_have_nothing_to_do_without_config() -> None:
    """No modules or disks configured: done, and saying so (even in test mode)."""
    c = ctx()
    assert load_modules(c) == "no modules configured"
    assert mount_disks(c) == "no disks configured"


def test_configured_modules_are_not_loaded_in_test_mode() -> None:
    c = ctx()
    c.config = dataclasses.replace(c.config, modules=("ext4",))
    with pytest.raises(StepSkipped, match="kernel's modules left alone"):
        load_modules(c)


def test_boot_config_step_loads_the_layers_and_keeps_problems(tmp_path: os.PathLike) -> None:
    """The initrd file and the command line are merged; faults are kept for the API."""
    cfg = os.path.join(tmp_path, "kurma.yml")
    with open(cfg, "w") as f:
        f.write("hostname: from-file\nshutdown_budget: 7\n")
    c = BootContext(reaper=Reaper(), config_file=cfg, cmdline="quiet kurma.hostname=cmd kurma.x=1")
    message = load_config(c)
    assert (c.config.hostname, c.config.shutdown_budget) == ("cmd", 7.0)
    assert [p.path for p in c.problems] == ["x"]
    assert message.startswith("1 problem(s)")
    assert "OEM disk not looked for" in message


def test_the_oem_layer_sits_between_the_initrd_and_the_command_line(tmp_path: os.PathLike) -> None:
    """An OEM file overrides the initrd's and may hold secrets; `kurma.oem=` is no config key."""
    initrd, oem = os.path.join(tmp_path, "initrd.yml"), os.path.join(tmp_path, "oem.yml")
    with open(initrd, "w") as f:
        f.write("hostname: initrd\nshutdown_budget: 7\n")
    with open(oem, "w") as f:
        f.write("hostname: oem\nconsole: {password_hash: '$6$salt$hash'}\n")
    c = BootContext(reaper=Reaper(), config_file=initrd, cmdline="kurma.oem=MY-OEM quiet")
    c.oem_file = oem
    message = load_config(c)
    assert (c.config.hostname, c.config.shutdown_budget) == ("oem", 7.0)
    assert c.config.console.password_hash == "$6$salt$hash"
    assert c.problems == [] and message.startswith("0 problem(s)")


@pytest.mark.skipif(os.getpid() == 1, reason="the test runner is PID 1")
def test_hostname_is_left_alone_unless_pid_1() -> None:
    """Not PID 1 of a UTS namespace of its own: skipped, the host's name unchanged."""
    before = os.uname().nodename
    with pytest.raises(StepSkipped, match="not PID 1"):
        set_hostname(ctx())
    assert os.uname().nodename == before
