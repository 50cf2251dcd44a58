"""`kurmad --wait-for-config`: kurma-init starts kurmad early in the boot; it imports what it
can, waits for its settings file, and only then claims its socket and state and serves."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ..waiting import wait_for
from .test_kurmad import REPO, make_daemon

pytestmark = pytest.mark.root


def test_kurmad_waits_for_its_settings_then_serves() -> None:
    for daemon in make_daemon():
        late = daemon.work / "kurmad.yml"
        daemon.log_path = daemon.work / "kurmad-wait.log"
        with open(daemon.log_path, "wb") as log:
            daemon.proc = subprocess.Popen(
                daemon.argv("--config", str(late), "--wait-for-config"),
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        time.sleep(2.0)
        assert daemon.alive(), daemon.log()
        assert not daemon.socket.exists()  # nothing claimed before the settings exist
        assert not daemon.state.exists()
        tmp = late.with_name(".kurmad.yml.tmp")
        tmp.write_text("log_level: debug\n")
        tmp.rename(late)
        wait_for(daemon.socket.exists, "the socket", 30)
        with daemon.client() as client:
            assert client.list_pods() == []


def test_wait_for_config_needs_a_config_file() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "kurma.api.daemon", "--wait-for-config"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "--wait-for-config needs --config FILE" in r.stderr
