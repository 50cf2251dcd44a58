"""kurmad's side of the services: its settings, the boot log as the API serves it, who counts
as kurma-init, and a status as a Service message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kurma.api._config import ConfigError, load_config
from kurma.api._host import is_kurma_init, read_boot_log, service_to_proto
from kurma.api._status import ApiError, Code
from kurma.services import ServiceState, ServiceStatus

from ..waiting import wait_for


def test_settings_from_flags() -> None:
    config = load_config(
        ["--config", "/dev/null", "--services-file", "/run/kurma/services.yml",
         "--boot-log-file", "/run/kurma/boot-log.json", "--init-pid", "42"]
    )  # fmt: skip
    assert config.services_file == "/run/kurma/services.yml"
    assert config.boot_log_file == "/run/kurma/boot-log.json"
    assert config.init_pid == 42
    assert config.stops_services  # under kurma-init by default
    assert not load_config(["--config", "/dev/null"]).stops_services
    flags = ["--config", "/dev/null", "--services-file", "/x", "--no-stop-services-on-exit"]
    assert not load_config(flags).stops_services
    with pytest.raises(ConfigError, match="--services-file: must be an absolute path"):
        load_config(["--config", "/dev/null", "--services-file", "relative.yml"])
    with pytest.raises(ConfigError, match="--init-pid: must be an integer"):
        load_config(["--config", "/dev/null", "--init-pid", "0"])


def test_boot_log_is_read_with_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "boot-log.json"
    path.write_text(
        json.dumps(
            {
                "steps": [{"name": "system_mounts", "outcome": "ok", "started": 0.012,
                           "duration": 0.004, "message": "done"}],
                "problems": ["boot config: hostname: must be a string"],
            }
        )
    )  # fmt: skip
    boot = read_boot_log(str(path))
    (step,) = boot.steps
    assert (step.name, step.outcome, step.message) == ("system_mounts", "ok", "done")
    assert step.started == pytest.approx(0.012) and step.duration == pytest.approx(0.004)
    assert list(boot.problems) == ["boot config: hostname: must be a string"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no boot log at"),
        ("{not json", "unreadable"),
        ("[]", "not a JSON object"),
        ('{"steps": [{"outcome": "ok"}]}', "steps[0]: malformed"),
    ],
)
def test_boot_log_errors_say_what_is_wrong(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "boot-log.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ApiError) as e:
        read_boot_log(str(path))
    assert e.value.code is Code.FAILED_PRECONDITION and says in e.value.message


def test_kurma_init_is_recognised_by_its_command_line(tmp_path: Path) -> None:
    assert not is_kurma_init(os.getpid())  # pytest
    script = tmp_path / "kurma-init"
    script.write_text("import time; time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        # a loaded machine: the exec may still be under way
        wait_for(lambda: is_kurma_init(proc.pid), "the stand-in's exec", every=0.05)
    finally:
        proc.kill()
        proc.wait()
    assert not is_kurma_init(proc.pid)  # gone


def test_status_as_a_message() -> None:
    status = ServiceStatus(
        name="ntp", state=ServiceState.BACKOFF, pod="u-1", restarts=3, last_exit_code=1,
        message="exited with code 1; restarting in 4 s", image="kurma.io/ntp",
        depends_on=("network",), provides=("clock",), restart="always", started_at=10.5,
    )  # fmt: skip
    message = service_to_proto(status)
    assert (message.name, message.state, message.pod, message.restarts) == (
        "ntp", "BACKOFF", "u-1", 3,
    )  # fmt: skip
    assert message.HasField("last_exit_code") and message.last_exit_code == 1
    assert list(message.depends_on) == ["network"] and list(message.provides) == ["clock"]
    assert message.started_at.ToNanoseconds() == 10_500_000_000
    empty = service_to_proto(ServiceStatus(name="x", state=ServiceState.WAITING))
    assert not empty.HasField("last_exit_code") and not empty.HasField("started_at")


def test_the_initrds_init_script_is_recognised_as_kurma_init(tmp_path: Path) -> None:
    """The kernel runs the initrd's /init (a Python script) by that name: what it starts
    decides, not the name; another script run by Python is not kurma-init."""
    import subprocess
    import sys

    init = tmp_path / "init"
    init.write_text("import time\n# from kurma.init.main import main\ntime.sleep(30)\n")
    other = tmp_path / "other"
    other.write_text("import time\ntime.sleep(30)\n")
    procs = [subprocess.Popen([sys.executable, "-I", str(p)]) for p in (init, other)]
    try:
        assert is_kurma_init(procs[0].pid)
        assert not is_kurma_init(procs[1].pid)
    finally:
        for p in procs:
            p.kill()
            p.wait()
