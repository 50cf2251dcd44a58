"""The appc ACE validator (v0.8.11) passes on a real Runtime: all four modes print OK.

Built from Debian's `golang-github-appc-spec-dev` by `build/ace/build.sh` (see
`build/ace/README.md`), packed as two ACIs, run as one pod with a shared `empty` volume
`database`. The main app's pre-start handler, the app and its post-stop handler write their
lines to `logs/ace-validator-main.log`; the sidekick to `logs/ace-validator-sidekick.log`.
On failure the validator prints `<mode> FAIL` and one `==> <reason>` line per failed check;
the assertion messages carry those lines.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from kurma.aci import build_aci, parse_pod_manifest
from kurma.runtime._podrecord import AppState, PodRecord, PodState

from .runtime_support import PodEnv

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
ACE = REPO / "build" / "ace"
MAIN, SIDEKICK = "ace-validator-main", "ace-validator-sidekick"
STATUS = re.compile(r"^(\w+) (OK|FAIL)$")
RUN_TIMEOUT = 60.0  # the validator waits at most 5 s for the other app; the rest is slack


@pytest.fixture(scope="module")
def ace_acis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Build the validator and pack both layouts: {app name: (ACI path, image ID)}."""
    out = tmp_path_factory.mktemp("ace")
    t0 = time.monotonic()
    r = subprocess.run(
        ["bash", str(ACE / "build.sh"), str(out / "layouts")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert r.returncode == 0, f"build/ace/build.sh failed:\n{r.stdout}\n{r.stderr}"
    print(f"ace build: {time.monotonic() - t0:.1f} s; {r.stderr.strip()}")
    acis: dict[str, tuple[Path, str]] = {}
    for name in (MAIN, SIDEKICK):
        layout = out / "layouts" / name
        aci = out / f"{name}.aci"
        image_id = build_aci(
            layout / "rootfs", (layout / "manifest").read_bytes(), aci, mtime=0, owner=(0, 0)
        )
        acis[name] = (aci, image_id)
    return acis


def _pod_manifest(ids: dict[str, str]) -> bytes:
    text = (ACE / "pod.manifest.json").read_text()
    text = text.replace("@MAIN_ID@", ids[MAIN]).replace("@SIDEKICK_ID@", ids[SIDEKICK])
    return text.encode()


def _statuses(log: str) -> list[str]:
    return [line for line in log.splitlines() if STATUS.match(line)]


def _reasons(logs: dict[str, str]) -> str:
    """Every `==>` line (the validator's reasons) and every kurma error, by app."""
    lines = []
    for app, log in logs.items():
        for line in log.splitlines():
            if line.startswith("==>") or line.startswith("kurma:") or "FAIL" in line:
                lines.append(f"{app}: {line}")
    return "\n".join(lines) or "(no FAIL reason in the logs)"


def _explain(pods: PodEnv, record: PodRecord) -> tuple[dict[str, str], str]:
    """The apps' logs, and an assertion message that leads with the validator's reasons."""
    logs = {app: pods.log(record, app) for app in (MAIN, SIDEKICK)}
    shown = "\n".join(f"--- {app}.log\n{log}" for app, log in logs.items())
    return logs, f"{_reasons(logs)}\n{shown}\napps: {record.apps}"


def test_ace_validator_passes(pods: PodEnv, ace_acis: dict[str, tuple[Path, str]]) -> None:
    """`pods` is a real Runtime; its teardown destroys the pod and fails on any leftover."""
    ids: dict[str, str] = {}
    for name, (aci, built_id) in ace_acis.items():
        imported = pods.runtime.store.import_image(aci).record.image_id
        assert imported == built_id
        ids[name] = imported
    manifest = parse_pod_manifest(_pod_manifest(ids))

    t0 = time.monotonic()
    try:
        record = pods.runtime.run(manifest, timeout=RUN_TIMEOUT)
    except TimeoutError:
        (stuck,) = pods.runtime.list_pods()
        pytest.fail(f"the pod did not end in {RUN_TIMEOUT} s\n{_explain(pods, stuck)[1]}")
    print(f"ace pod ran in {time.monotonic() - t0:.2f} s")
    logs, why = _explain(pods, record)

    assert record.state is PodState.EXITED, why
    assert not any("FAIL" in line for log in logs.values() for line in log.splitlines()), why
    # The pre-start handler, the app and the post-stop handler share the main app's log, in
    # that order: `prestart OK` first, `poststop OK` last. Across the two apps the order is
    # the validator's to check (marker files, the shared /db volume).
    assert _statuses(logs[MAIN]) == ["prestart OK", "main OK", "poststop OK"], why
    assert _statuses(logs[SIDEKICK]) == ["sidekick OK"], why
    for app in record.apps:
        assert app.state is AppState.EXITED, why
        assert app.error is None, why
        assert app.exit_code == 0, why
    main, sidekick = record.app(MAIN), record.app(SIDEKICK)
    assert main.post_stop_code == 0, why
    assert sidekick.post_stop_pid is None and sidekick.post_stop_code is None, why
    served = json.loads(record.manifest)  # what the metadata service served as pod/manifest
    assert [a["image"]["id"] for a in served["apps"]] == [ids[MAIN], ids[SIDEKICK]]
