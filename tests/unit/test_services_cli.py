"""`kurmactl service ls` and `kurmactl host boot-log` as a person reads them."""

from __future__ import annotations

from kurma.api.v1 import host_pb2
from kurma.cli._host import boot_log_text, services_table


def test_service_table_has_the_columns_and_the_why() -> None:
    services = [
        host_pb2.Service(name="ntp", state="RUNNING", pod="0123456789abcdef", restarts=2),
        host_pb2.Service(
            name="syslog",
            state="BACKOFF",
            restarts=5,
            last_exit_code=1,
            message="exited with code 1; restarting in 8 s",
        ),
        host_pb2.Service(name="web", state="WAITING", message="waiting for network"),
    ]
    lines = services_table(services).splitlines()
    assert lines[0].split() == ["NAME", "STATE", "POD", "RESTARTS", "MESSAGE"]
    assert lines[1].split() == ["ntp", "RUNNING", "01234567", "2", "-"]
    assert lines[2].split(None, 4) == [
        "syslog", "BACKOFF", "-", "5", "exited with code 1; restarting in 8 s",
    ]  # fmt: skip
    assert lines[3].endswith("waiting for network")


def test_boot_log_text_shows_steps_and_problems() -> None:
    boot = host_pb2.BootLogResponse(
        steps=[
            host_pb2.BootStep(name="system_mounts", outcome="ok", started=0.012, duration=0.004),
            host_pb2.BootStep(name="disks", outcome="failed", started=0.02, duration=0.1,
                              message="no disk LABEL=data"),
        ],
        problems=["boot config: hostname: must be a string"],
    )  # fmt: skip
    text = boot_log_text(boot)
    lines = text.splitlines()
    assert lines[0].split() == ["STEP", "OUTCOME", "STARTED", "DURATION", "MESSAGE"]
    assert lines[1].split() == ["system_mounts", "ok", "0.012s", "4.0ms", "-"]
    assert "no disk LABEL=data" in lines[2]
    assert "boot config problems (1):" in text and "  boot config: hostname" in text
    assert "problems: none" in boot_log_text(host_pb2.BootLogResponse())
