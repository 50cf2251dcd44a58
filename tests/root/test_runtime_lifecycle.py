"""A pod's life as a user sees it: exit codes and signals, stop with and without a grace,
event handlers in order, start errors, logs and their rotation, a restarted runtime finding
its pods again, and destroy leaving nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.errors import ImageInUse, ValidationError
from kurma.runtime._podrecord import AppState, PodState, process_start_time
from kurma.runtime._runtime import PodNotFound, PodStateError, Runtime, RuntimeConfig

from ..waiting import wait_for
from .runtime_support import PodEnv, _teardown, make_env, mounts_under
from .runtime_support import sh_app as _sh
from .runtime_support import start as _start

pytestmark = pytest.mark.root


def _host_volume(pods: PodEnv) -> tuple[Path, dict[str, Any]]:
    """A host directory shared with the apps at /out (pod manifest `volumes`, app `mounts`)."""
    out = pods.work / f"out-{os.urandom(4).hex()}"
    out.mkdir()
    return out, {"volumes": [{"name": "out", "kind": "host", "source": str(out)}]}


OUT_MOUNT = {"mounts": [{"volume": "out", "path": "/out"}]}


# --- exit codes and signals -------------------------------------------------------------------


def test_exit_code_propagates(pods: PodEnv) -> None:
    app, log = pods.sh("echo bye; exit 3")
    assert (app.state, app.exit_code, app.error) == (AppState.EXITED, 3, None), log
    assert log == "bye\n"


def test_two_apps_each_record_their_own_code(pods: PodEnv) -> None:
    record = pods.run(_sh("first", "exit 5"), _sh("second", "sleep 0.3; exit 7"))
    assert record.state is PodState.EXITED
    assert {a.name: a.exit_code for a in record.apps} == {"first": 5, "second": 7}
    first, second = record.apps
    assert first.finished_at is not None and second.finished_at is not None
    assert first.finished_at < second.finished_at  # the pod waited for the slower app


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGKILL, 137), (signal.SIGTERM, 143)])
def test_app_killed_by_a_signal_is_128_plus_the_signal(
    pods: PodEnv, sig: signal.Signals, code: int
) -> None:
    app, log = pods.sh(f"kill -{sig.name[3:]} $$; echo survived")
    assert app.exit_code == code, log
    assert "survived" not in log


# --- stop ---------------------------------------------------------------------------------


def test_stop_an_app_that_exits_on_term_is_quick_and_clean(pods: PodEnv) -> None:
    uuid = _start(
        pods,
        _sh("web", "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.1; done"),
        ready="ready",
    )
    began = time.monotonic()
    record = pods.runtime.stop_pod(uuid, grace=10.0)
    took = time.monotonic() - began
    assert record.state is PodState.EXITED
    assert record.apps[0].exit_code == 0
    assert took < 3.0, f"stop took {took:.1f} s although the app exited at once"
    assert "got TERM" in pods.log(record, "web")


def test_stop_an_app_that_ignores_term_kills_it_after_the_grace(pods: PodEnv) -> None:
    uuid = _start(pods, _sh("stubborn", "trap '' TERM; echo ready; sleep 1000"), ready="ready")
    began = time.monotonic()
    record = pods.runtime.stop_pod(uuid, grace=1.5)
    took = time.monotonic() - began
    assert record.state is PodState.EXITED
    assert record.apps[0].exit_code == 137
    assert 1.4 <= took < 4.0, f"stop took {took:.2f} s with a 1.5 s grace"


def test_a_created_pod_is_destroyed_without_starting(pods: PodEnv) -> None:
    record = pods.runtime.create_pod(pods.manifest(_sh("idle", "true")))
    began = time.monotonic()
    pods.runtime.destroy_pod(record.uuid)
    assert time.monotonic() - began < 1.0
    assert pods.runtime.list_pods() == []
    assert not (pods.state_dir / "pods" / record.uuid).exists()
    pods.runtime.store.delete(pods.image_id)  # its hold on the image went with it


def test_stop_of_a_created_pod_then_destroy_is_immediate(pods: PodEnv) -> None:
    record = pods.runtime.create_pod(pods.manifest(_sh("idle", "true")))
    stopped = pods.runtime.stop_pod(record.uuid)
    assert stopped.state is PodState.EXITED
    assert stopped.apps[0].exit_code is None  # it never ran
    began = time.monotonic()
    pods.runtime.destroy_pod(record.uuid, grace=0.1)
    took = time.monotonic() - began
    assert took < 0.5, f"destroy of a stopped, never-started pod took {took:.1f} s"


# --- event handlers -----------------------------------------------------------------------------


def _handlers(pre: str | None, post: str | None) -> list[dict[str, Any]]:
    found = []
    if pre is not None:
        found.append({"name": "pre-start", "exec": ["/bin/sh", "-c", pre]})
    if post is not None:
        found.append({"name": "post-stop", "exec": ["/bin/sh", "-c", post]})
    return found


def test_handlers_run_in_order_in_the_apps_root(pods: PodEnv) -> None:
    out, volumes = _host_volume(pods)
    record = pods.run(
        _sh(
            "app",
            "echo app >> /tmp/order; echo app >> /out/order",
            eventHandlers=_handlers(
                "echo pre-start >> /tmp/order; echo pre-start >> /out/order",
                "echo post-stop >> /tmp/order; echo post-stop >> /out/order; cat /tmp/order",
            ),
            **OUT_MOUNT,
        ),
        **volumes,
    )
    app = record.apps[0]
    assert (app.exit_code, app.post_stop_code, app.error) == (0, 0, None)
    assert (out / "order").read_text().splitlines() == ["pre-start", "app", "post-stop"]
    # The post-stop handler saw what the app and its pre-start wrote in their own rootfs.
    assert pods.log(record, "app").splitlines()[-3:] == ["pre-start", "app", "post-stop"]


@pytest.mark.parametrize(
    ("script", "code"),
    [("exec sleep 1000", 143), ("trap '' TERM; sleep 1000", 137)],
    ids=["term", "kill-after-grace"],
)
def test_post_stop_runs_after_stop_pod(pods: PodEnv, script: str, code: int) -> None:
    out, volumes = _host_volume(pods)
    uuid = _start(
        pods,
        _sh(
            "server",
            f"echo started > /out/server; echo ready; {script}",
            eventHandlers=_handlers(None, "echo stopped >> /out/server"),
            **OUT_MOUNT,
        ),
        ready="ready",
        **volumes,
    )
    record = pods.runtime.stop_pod(uuid, grace=1.0)
    app = record.apps[0]
    assert record.state is PodState.EXITED
    assert app.exit_code == code
    assert app.post_stop_code == 0
    assert (out / "server").read_text().splitlines() == ["started", "stopped"]


def test_every_pre_start_runs_before_any_app_of_the_pod(pods: PodEnv) -> None:
    out, volumes = _host_volume(pods)
    record = pods.run(
        _sh(
            "slow-setup",
            "echo slow-setup app >> /out/order",
            eventHandlers=_handlers("sleep 0.5; echo slow-setup pre-start >> /out/order", None),
            **OUT_MOUNT,
        ),
        _sh("eager", "echo eager app >> /out/order", **OUT_MOUNT),
        **volumes,
    )
    assert [a.exit_code for a in record.apps] == [0, 0]
    lines = (out / "order").read_text().splitlines()
    assert lines[0] == "slow-setup pre-start", lines
    assert sorted(lines[1:]) == ["eager app", "slow-setup app"]


def test_failing_pre_start_keeps_the_app_from_starting(pods: PodEnv) -> None:
    out, volumes = _host_volume(pods)
    record = pods.run(
        _sh(
            "guarded",
            "echo ran > /out/app",
            eventHandlers=_handlers("echo checking; exit 4", None),
            **OUT_MOUNT,
        ),
        **volumes,
    )
    app = record.apps[0]
    assert app.exit_code == 125  # a setup failure
    assert app.error is not None
    assert "pre-start" in app.error and "status 4" in app.error, app.error
    assert not (out / "app").exists()
    assert "checking" in pods.log(record, "guarded")


# --- start errors -------------------------------------------------------------------------------


def test_exec_not_found_is_127_with_an_error_naming_it(pods: PodEnv) -> None:
    record = pods.run({"name": "ghost", "exec": ["/bin/no-such-program", "--flag"]})
    app = record.apps[0]
    assert app.exit_code == 127
    assert app.error is not None and "/bin/no-such-program" in app.error, app.error
    assert "/bin/no-such-program" in pods.log(record, "ghost")  # the log says why, too


def test_a_pod_whose_init_fails_runs_no_app_and_says_why(pods: PodEnv) -> None:
    """The first app builds its root while the pod's PID 1 registers it; when PID 1 fails
    (here: its registration directory is gone) the app must not run, and the start says
    why."""
    out, volumes = _host_volume(pods)
    manifest = pods.manifest(_sh("never", "echo ran > /out/app", **OUT_MOUNT), **volumes)
    created = pods.runtime.create_pod(manifest)
    shutil.rmtree(pods.state_dir / "pods" / created.uuid / "pids")
    started = pods.runtime.start_pod(created.uuid)
    error = started.apps[0].error
    assert error is not None and "cannot start" in error and "pids" in error, error
    final = pods.runtime.wait(created.uuid, timeout=10)
    assert final.state is PodState.EXITED
    assert final.apps[0].exit_code != 0
    assert not (out / "app").exists()


def _warm_shells(launcher_pid: int) -> list[int]:
    """The launcher's children that are still Python: warm pod shells' P1s (a started pod's
    P1 is kurma-podinit)."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    shells = []
    for pid in children:
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{pid}/comm").read_text().strip() != "kurma-podinit":
                shells.append(int(pid))
    return shells


def test_a_start_survives_a_warm_shell_killed_while_it_waited(pods: PodEnv) -> None:
    launcher = pods.runtime.launcher.pid
    wait_for(lambda: _warm_shells(launcher), "a warm shell")
    for pid in _warm_shells(launcher):
        os.kill(pid, signal.SIGKILL)
    app, log = pods.sh("echo started anyway")
    assert (app.exit_code, app.error, log) == (0, None, "started anyway\n")


def test_an_app_that_fails_at_once_is_recorded_every_time(pods: PodEnv) -> None:
    """The first app builds its root while the pod's PID 1 registers it: one that fails
    before PID 1 is done must still get its exit record from podinit (125), not be lost
    with PID 1 (137), however the two race."""
    manifest = pods.manifest(_sh("quick", "true", workingDirectory="/no/such/dir"))
    codes = [pods.runtime.run(manifest, timeout=30).apps[0].exit_code for _ in range(12)]
    assert codes == [125] * 12


def test_missing_working_directory_is_an_error(pods: PodEnv) -> None:
    record = pods.run(_sh("lost", "echo should not run", workingDirectory="/no/such/dir"))
    app = record.apps[0]
    assert app.exit_code == 125  # a setup failure
    assert app.error is not None and "/no/such/dir" in app.error, app.error
    assert "should not run" not in pods.log(record, "lost")


# --- logs ----------------------------------------------------------------------------------


def test_stdout_and_stderr_go_to_the_apps_log(pods: PodEnv) -> None:
    record = pods.run(
        _sh("chatty", "echo to-stdout; echo to-stderr >&2; echo again"),
        _sh("quiet", "echo other-app"),
    )
    assert pods.log(record, "chatty").splitlines() == ["to-stdout", "to-stderr", "again"]
    assert pods.log(record, "quiet") == "other-app\n"


@pytest.fixture
def small_logs(busybox_aci: Path) -> Iterator[PodEnv]:
    yield from make_env(busybox_aci, RuntimeConfig(stop_grace=2.0, log_max_bytes=4096, log_keep=2))


def test_logs_rotate_by_size_and_keep_only_some(small_logs: PodEnv) -> None:
    # 400 numbered lines of 100 bytes: 40 000 bytes, ten times the 4096-byte limit.
    script = 'i=0; while [ $i -lt 400 ]; do printf "%04d%095d\\n" $i 0; i=$((i+1)); done'
    record = small_logs.run(_sh("noisy", script))
    assert record.apps[0].exit_code == 0
    logs = small_logs.state_dir / "pods" / record.uuid / "logs"
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["noisy.log", "noisy.log.1", "noisy.log.2"]
    sizes = {name: (logs / name).stat().st_size for name in names}
    assert all(0 < size <= 4096 for size in sizes.values()), sizes
    # Oldest first: .2, .1, then the current file: the newest lines, in order, ending at 399.
    text = "".join((logs / n).read_text() for n in ("noisy.log.2", "noisy.log.1", "noisy.log"))
    lines = text.splitlines()[1:]  # rotation cuts anywhere: the oldest line may be a tail
    assert all(len(line) == 99 for line in lines)
    numbers = [int(line[:4]) for line in lines]
    assert numbers[-1] == 399
    assert numbers == list(range(numbers[0], 400))
    assert len(text) < 3 * 4096


# --- a new runtime on the same state ----------------------------------------------------------


class Restartable:
    """A PodEnv whose runtime can be closed and replaced by a new one on the same state."""

    def __init__(self, env: PodEnv) -> None:
        self.env = env

    def restart(self, between: Callable[[], None] | None = None) -> Runtime:
        old = self.env.runtime
        old.close()  # pods keep running
        if between is not None:
            between()
        self.env.runtime = Runtime(self.env.state_dir, config=old.config)
        return self.env.runtime


def _kill_podinits(runtime: Runtime) -> None:
    """Clean-up of a failed test: end running pods at once (the kernel ends the namespace)."""
    for record in runtime.list_pods():
        pid = record.podinit_pid
        if record.state in (PodState.RUNNING, PodState.STOPPING) and pid is not None:
            if process_start_time(pid) == record.podinit_start:
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                runtime.wait(record.uuid, timeout=5)


@pytest.fixture
def restartable(busybox_aci: Path) -> Iterator[Restartable]:
    work = Path(tempfile.mkdtemp(prefix="kurma-rt-"))
    state = work / "state"
    config = RuntimeConfig(
        stop_grace=2.0, handler_timeout=3.0, cgroup_parent=f"kurma-test-{work.name[-8:]}"
    )
    env = PodEnv(Runtime(state, config=config), state, work, "")
    try:
        env.image_id = env.runtime.store.import_image(busybox_aci).record.image_id
        yield Restartable(env)
    finally:
        try:
            _kill_podinits(env.runtime)
        finally:
            _teardown(env.runtime, work)


def _on_disk(env: PodEnv, uuid: str) -> dict[str, Any]:
    return json.loads((env.state_dir / "pods" / uuid / "pod.json").read_text())


def _log_lines(env: PodEnv, uuid: str, app: str) -> int:
    path = env.state_dir / "pods" / uuid / "logs" / f"{app}.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_new_runtime_lists_a_running_pod_that_ran_on(restartable: Restartable) -> None:
    env = restartable.env
    uuid = _start(env, _sh("ticker", "echo ready; while :; do echo tick; sleep 0.05; done"))
    wait_for(lambda: _log_lines(env, uuid, "ticker") > 0, "output")
    before = env.runtime.get(uuid)
    runtime = restartable.restart()
    adopted = runtime.get(uuid)
    assert adopted.state is PodState.RUNNING
    assert [p.uuid for p in runtime.list_pods()] == [uuid]
    assert adopted.podinit_pid == before.podinit_pid
    assert process_start_time(before.podinit_pid or 0) == before.podinit_start
    assert [a.state for a in adopted.apps] == [AppState.RUNNING]
    seen = _log_lines(env, uuid, "ticker")
    wait_for(lambda: _log_lines(env, uuid, "ticker") > seen, "more output after the restart")


def test_new_runtime_stops_an_adopted_pod_and_records_the_exit(restartable: Restartable) -> None:
    env = restartable.env
    uuid = _start(env, _sh("long", "echo ready; exec sleep 1000"), ready="ready")
    wait_for(lambda: env.runtime.get(uuid).apps[0].pid is not None, "the app's pid")
    before = env.runtime.get(uuid)
    runtime = restartable.restart()
    assert runtime.get(uuid).apps[0].pid == before.apps[0].pid, "the new runtime lost the pid"
    began = time.monotonic()
    record = runtime.stop_pod(uuid, grace=5.0)
    assert time.monotonic() - began < 5.0  # sleep dies of the SIGTERM, no grace needed
    assert record.state is PodState.EXITED
    assert record.apps[0].exit_code == 143
    assert _on_disk(env, uuid)["apps"][0]["exit_code"] == 143
    assert not runtime.cgroups.open(record.cgroup or "").exists()


def test_a_pod_started_just_before_a_restart_is_adopted_with_its_apps(
    restartable: Restartable,
) -> None:
    env = restartable.env
    uuid = _start(env, _sh("quick", "exec sleep 1000"))  # no wait for anything
    runtime = restartable.restart()
    assert runtime.get(uuid).state is PodState.RUNNING
    assert runtime.get(uuid).apps[0].pid is not None, "the new runtime does not know the pid"
    record = runtime.stop_pod(uuid, grace=5.0)
    assert record.apps[0].exit_code == 143


def test_an_exit_while_no_runtime_watched_is_recorded_by_the_next(
    restartable: Restartable,
) -> None:
    env = restartable.env
    out, volumes = _host_volume(env)
    uuid = _start(
        env,
        _sh(
            "short", "echo ready; while [ ! -e /out/go ]; do sleep 0.05; done; exit 3", **OUT_MOUNT
        ),
        _sh("long", "exec sleep 1000"),
        ready="ready",
        **volumes,
    )
    wait_for(lambda: all(a.pid for a in env.runtime.get(uuid).apps), "the pids")

    def let_short_exit() -> None:
        (out / "go").touch()
        time.sleep(0.5)

    runtime = restartable.restart(between=let_short_exit)
    assert runtime.get(uuid).app("short").pid is not None, "the new runtime lost the pid"
    wait_for(lambda: runtime.get(uuid).app("short").state is AppState.EXITED, "the exit")
    record = runtime.get(uuid)
    assert record.state is PodState.RUNNING
    assert (record.app("short").exit_code, record.app("long").state) == (3, AppState.RUNNING)
    record = runtime.stop_pod(uuid, grace=2.0)
    assert (record.app("short").exit_code, record.app("long").exit_code) == (3, 143)


def test_post_stop_runs_when_an_adopted_pod_is_stopped(restartable: Restartable) -> None:
    env = restartable.env
    out, volumes = _host_volume(env)
    uuid = _start(
        env,
        _sh(
            "server",
            "echo started > /out/server; echo ready; exec sleep 1000",
            eventHandlers=_handlers(None, "echo stopped >> /out/server"),
            **OUT_MOUNT,
        ),
        ready="ready",
        **volumes,
    )
    wait_for(lambda: env.runtime.get(uuid).apps[0].pid is not None, "the app's pid")
    runtime = restartable.restart()
    assert runtime.get(uuid).apps[0].pid is not None, "the new runtime lost the pid"
    record = runtime.stop_pod(uuid, grace=2.0)
    assert record.apps[0].exit_code == 143
    assert (out / "server").read_text().splitlines() == ["started", "stopped"]
    assert record.apps[0].post_stop_code == 0


def test_pod_whose_podinit_died_unwatched_is_found_exited(restartable: Restartable) -> None:
    env = restartable.env
    uuid = _start(env, _sh("victim", "echo ready; exec sleep 1000"), ready="ready")
    before = env.runtime.get(uuid)
    assert before.podinit_pid is not None and before.cgroup is not None

    def kill_podinit() -> None:
        assert before.podinit_pid is not None
        os.kill(before.podinit_pid, signal.SIGKILL)

    runtime = restartable.restart(between=kill_podinit)
    record = runtime.wait(uuid, timeout=10)
    assert record.state is PodState.EXITED
    assert record.apps[0].state is AppState.EXITED
    assert record.apps[0].exit_code == 137  # the kernel ended the namespace: SIGKILL
    assert not runtime.cgroups.open(before.cgroup).exists()
    assert _on_disk(env, uuid)["state"] == "exited"
    assert mounts_under(env.state_dir) == []


# --- destroy, queries, errors --------------------------------------------------------------------


def test_destroy_leaves_nothing_behind(pods: PodEnv) -> None:
    runtime = pods.runtime
    uuid = _start(pods, _sh("doomed", "echo ready; sleep 1000"), ready="ready")
    record = runtime.get(uuid)
    assert record.cgroup is not None
    cgroup = runtime.cgroups.open(record.cgroup)
    assert cgroup.exists() and cgroup.pids()
    runtime.destroy_pod(uuid, grace=1.0)
    assert not (pods.state_dir / "pods" / uuid).exists()
    assert not cgroup.exists()
    with open("/proc/self/mountinfo") as f:
        assert uuid not in f.read()
    assert mounts_under(pods.state_dir) == []
    with pytest.raises(PodNotFound):
        runtime.get(uuid)
    assert uuid not in [p.uuid for p in runtime.list_pods()]
    runtime.store.delete(pods.image_id)  # no holder is left
    assert runtime.store.list() == []


def test_image_in_use_by_a_created_pod_cannot_be_deleted_until_destroy(pods: PodEnv) -> None:
    record = pods.runtime.create_pod(pods.manifest(_sh("holder", "true")))
    with pytest.raises(ImageInUse):
        pods.runtime.store.delete(pods.image_id)
    pods.runtime.destroy_pod(record.uuid)
    pods.runtime.store.delete(pods.image_id)


def test_get_by_name_uuid_and_uuid_prefix(pods: PodEnv) -> None:
    runtime = pods.runtime
    alpha = runtime.create_pod(pods.manifest(_sh("a", "true")), name="alpha")
    beta = runtime.create_pod(pods.manifest(_sh("b", "true")), name="beta")
    assert runtime.get("alpha").uuid == alpha.uuid
    assert runtime.get(beta.uuid).name == "beta"
    assert runtime.get(alpha.uuid[:8]).name == "alpha"
    with pytest.raises(PodNotFound):
        runtime.get("gamma")
    twin = runtime.create_pod(pods.manifest(_sh("c", "true")), name="alpha")
    with pytest.raises(PodNotFound, match="2 pods"):
        runtime.get("alpha")
    assert runtime.get(twin.uuid).name == "alpha"
    # the default name is the first app's
    assert runtime.create_pod(pods.manifest(_sh("first-app", "true"))).name == "first-app"


def test_starting_twice_is_an_error(pods: PodEnv) -> None:
    uuid = _start(pods, _sh("once", "echo ready; sleep 1000"), ready="ready")
    with pytest.raises(PodStateError):
        pods.runtime.start_pod(uuid)
    assert pods.runtime.get(uuid).state is PodState.RUNNING
    record = pods.runtime.stop_pod(uuid, grace=1.0)
    with pytest.raises(PodStateError):
        pods.runtime.start_pod(uuid)
    assert record.state is PodState.EXITED


@pytest.mark.parametrize(
    "name", ["Upper", "under_score", "-lead", "trail-", "a" * 64, "dot.ted", "sp ace"]
)
def test_pod_name_must_be_a_hostname(pods: PodEnv, name: str) -> None:
    manifest = pods.manifest(_sh("app", "true"))
    with pytest.raises(ValidationError):
        pods.runtime.create_pod(manifest, name=name)
    assert pods.runtime.list_pods() == []
    assert list((pods.state_dir / "pods").iterdir()) == []
