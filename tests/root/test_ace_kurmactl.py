"""The appc ACE validator pod, run through kurmactl against a real kurmad: all four OK."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_ace import MAIN, SIDEKICK, _pod_manifest, _statuses, ace_acis
from .test_kurmactl import kurmactl
from .test_kurmad import Daemon, make_daemon

__all__ = ["ace_acis"]  # a fixture, imported for pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


@pytest.fixture
def daemon() -> Daemon:
    for d in make_daemon():
        d.start().close()
        yield d


def test_ace_validator_through_kurmactl(
    daemon: Daemon, ace_acis: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    ids = {}
    for name in (MAIN, SIDEKICK):
        aci, image_id = ace_acis[name]
        imported = kurmactl(daemon, "image", "import", aci, "--progress", "none")
        assert imported.returncode == 0, imported.stderr
        ids[name] = image_id
    manifest = tmp_path / "ace-pod.json"
    manifest.write_bytes(_pod_manifest(ids))
    run = kurmactl(daemon, "run", "--rm", "--name", "ace", "--manifest", manifest, timeout=120)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "FAIL" not in run.stdout + run.stderr, (run.stdout, run.stderr)
    # `run` prefixes each line with its app when a pod has several: "app | line". Across
    # apps the order is the log followers'; the validator checks that order itself.
    by_app: dict[str, list[str]] = {MAIN: [], SIDEKICK: []}
    for line in run.stdout.splitlines():
        app, _, text = line.partition(" | ")
        by_app.setdefault(app.strip(), []).append(text)
    assert _statuses("\n".join(by_app[MAIN])) == ["prestart OK", "main OK", "poststop OK"]
    assert _statuses("\n".join(by_app[SIDEKICK])) == ["sidekick OK"]
    assert kurmactl(daemon, "ps", "-a", "-q").stdout.strip() == ""  # --rm removed it
