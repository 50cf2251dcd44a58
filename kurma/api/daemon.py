"""Entry point of `kurmad`, the API daemon (DESIGN.md: process model).

The order matters: kurmad becomes a child subreaper, claims its socket and state directory,
creates the Runtime (which forks the thread-free launcher and re-adopts running pods), starts
the system services of `services_file` (their pods need no gRPC: a booting machine's console
comes up while kurmad still imports it), and only then imports gRPC and serves. It never
forks after the launcher. Signals are handled in the
main thread through a wakeup pipe: SIGTERM/SIGINT shut down (pods keep running unless
`stop_pods_on_exit`; the system services of `services_file` are stopped first, dependents
first, unless `stop_services_on_exit` is off), SIGCHLD reaps orphans and notices a dead
launcher.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import KurmaError
from ..reaper import Reaper, describe_status
from ._claims import ClaimError, StateLock, claim_socket_path
from ._config import ConfigError, DaemonConfig, load_config
from ._logfmt import fields, setup_logging
from ._tcp import check_tcp_support

if TYPE_CHECKING:
    from ..runtime import PodRecord

log = logging.getLogger("kurma.api.daemon")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


WAIT_FLAG = "--wait-for-config"
FIRST_STEP_WAIT = 2.0  # s: the most the API waits for the services' first step


def main(argv: list[str] | None = None) -> int:
    """Run kurmad; returns only for a bad command line or configuration (exit 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if WAIT_FLAG in argv:
        argv.remove(WAIT_FLAG)
        if not await_config(argv):
            return EXIT_USAGE
    try:
        config = load_config(argv)
        check_tcp_support(config)
    except (ConfigError, OSError, ValueError) as e:
        print(f"kurmad: {e}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.log_level_number)
    code = serve(config)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # grpc's and the runtime's worker threads may still sit in a blocking call (a Stop
    # with its grace period); they have nothing left to do once we are here.
    os._exit(code)


def await_config(argv: list[str], poll: float = 0.01) -> bool:
    """`--wait-for-config`: kurma-init starts kurmad early in the boot, before it has written
    kurmad's settings, so that kurmad's slow imports (seconds under qemu without KVM) overlap
    with the boot steps. Import what does not fork or start threads and what comes before
    gRPC (the runtime, the services' supervisor and its protobuf manifest builder; not
    gRPC: it comes after the launcher's fork; not YAML: kurma-init writes JSON, see
    kurma/documents.py), then wait until the `--config` file exists.

    Importing gRPC here would be safe: it starts no thread (/proc/self/task has one entry
    after `import kurma.api._server`) and registers no fork handler (grpc_init and, with
    GRPC_ENABLE_FORK_SUPPORT, gRPC's at-fork handlers come with the first server or channel).
    It is left out because under qemu the imports above already end about when the config
    comes: it would move gRPC's import from beside the services' first pods to before them."""
    try:  # the last --config, as argparse reads it
        path = argv[len(argv) - 1 - argv[::-1].index("--config") + 1]
    except (ValueError, IndexError):
        print(f"kurmad: {WAIT_FLAG} needs --config FILE", file=sys.stderr)
        return False
    from ..runtime import Runtime  # noqa: F401  (the bulk of kurmad's imports)
    from ..services import _supervisor  # noqa: F401
    from . import _convert  # noqa: F401

    while not os.path.exists(path):
        time.sleep(poll)
    return True


@dataclass
class _Signals:
    """Signals as bytes on a pipe the main thread reads (Python runs handlers there)."""

    read_fd: int

    @classmethod
    def install(cls) -> _Signals:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        return cls(r)

    def wait(self) -> list[int]:
        select.select([self.read_fd], [], [])
        try:
            return list(os.read(self.read_fd, 256))
        except BlockingIOError:
            return []


def serve(config: DaemonConfig) -> int:
    """The daemon's life: claim, start the runtime, serve until told to stop, clean up."""
    from ..runtime.linux import set_child_subreaper

    set_child_subreaper(True)  # orphans of what we start come back to us, not to PID 1
    try:
        claim_socket_path(config.socket)
        lock = StateLock(config.state_dir)
    except (ClaimError, OSError) as e:
        log.error("cannot start: %s", e)
        return EXIT_FAILED
    try:
        runtime = _start_runtime(config)
    except Exception as e:
        log.error("cannot start the runtime: %s", e, exc_info=not isinstance(e, OSError))
        lock.release()
        return EXIT_FAILED
    signals = _Signals.install()  # after the fork: the launcher keeps default handlers
    sockets = _PodSocketsLater()
    supervisor = server = None
    try:
        supervisor = _start_services(runtime, config, sockets)
        from ._server import ApiServer  # grpc is imported here, after the launcher's fork

        server = ApiServer(runtime, config, supervisor)
        sockets.serve_with(server.pod_sockets.open)
        server.start()  # opens the sockets of every api-access pod so far, services' too
    except Exception as e:
        usage = isinstance(e, KurmaError)  # e.g. the TLS key does not match its certificate
        log.error("cannot serve: %s", e, exc_info=not isinstance(e, OSError | KurmaError))
        _shutdown(server, supervisor, runtime, config, grace=0.0)
        lock.release()
        return EXIT_USAGE if usage else EXIT_FAILED
    log.info(
        "kurmad ready",
        extra=fields(
            pid=os.getpid(),
            socket=config.socket,
            state_dir=config.state_dir,
            pods=len(runtime.list_pods()),
        ),
    )
    code = _serve_until_signalled(signals, runtime.launcher.pid)
    _shutdown(server, supervisor, runtime, config, grace=config.shutdown_grace)
    lock.release()
    log.info("kurmad stopped", extra=fields(code=code))
    return code


def _start_runtime(config: DaemonConfig):  # -> Runtime (imported lazily, like everything)
    from ..runtime import Runtime, RuntimeConfig
    from ..runtime.cgroups import CgroupSystem, enter_leaf

    cgroups = CgroupSystem.detect()
    leaf = enter_leaf(cgroups)  # a delegated cgroup2 subtree (kurma in kurma): pods beside us
    if leaf is not None:
        log.info("moved into a leaf of our delegated cgroup", extra=fields(leaf=leaf))
    runtime = Runtime(
        config.state_dir,
        cgroups=cgroups,
        config=RuntimeConfig(
            cgroup_parent=config.cgroup_parent,
            stop_grace=config.stop_grace,
            log_max_bytes=config.log_max_bytes,
            log_keep=config.log_keep,
            warm_pods=config.warm_pods,
            pods_dir=config.pods_dir,
            api_sockets=True,
            networks_dir=config.networks_dir,
        ),
    )
    swept = runtime.store.sweep_temporaries()  # crashed imports and uploads; none run yet
    if swept:
        log.info("swept %d temporaries of crashed imports", swept)
    return runtime


class _PodSocketsLater:
    """The services' `on_created` until the API server exists: a service pod with
    `host/api-access` created before then gets its socket when the server starts (it opens
    the socket of every api-access pod there is), a moment after the pod; clients such as
    kurmactl and kurma-logfwd wait for a socket to answer. Afterwards, the pod's socket is
    opened before the pod starts, as for a pod made through the API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: Callable[[PodRecord], None] | None = None

    def __call__(self, record: PodRecord) -> None:
        with self._lock:
            open_socket = self._open
        if open_socket is not None:
            open_socket(record)

    def serve_with(self, open_socket: Callable[[PodRecord], None]) -> None:
        """From now on, open sockets with `open_socket` (before `ApiServer.start`)."""
        with self._lock:
            self._open = open_socket


def _start_services(runtime, config: DaemonConfig, on_created: _PodSocketsLater):
    """The system services' supervisor (None without a `services_file`), started: its
    thread loads the file and starts the services' pods right away."""
    if config.services_file is None:
        return None
    from ..services._supervisor import Supervisor
    from ._convert import service_manifest_builder, tenant_imports  # protobuf, no gRPC

    supervisor = Supervisor(
        runtime,
        config.services_file,
        service_manifest_builder(runtime.store, runtime.state_dir),
        on_created=on_created,  # a service with api-access gets its socket
        # never a pod's or an operator's image, for a dependency either
        images_visible=lambda image_id: image_id not in tenant_imports(runtime.state_dir),
    )
    supervisor.start()
    # Its first step's pods start before gRPC's import holds the GIL for a while: on 2 CPUs
    # that brought a service's pod up about a quarter sooner; the API waits that long.
    supervisor.wait_first_step(FIRST_STEP_WAIT)
    return supervisor


def _serve_until_signalled(signals: _Signals, launcher_pid: int) -> int:
    """Wait for SIGTERM/SIGINT (exit 0), or for the launcher to die (exit 1)."""
    launcher_ended: list[int] = []
    reaper = Reaper()  # orphans re-parented to us (e.g. pods' PID 1s if the launcher died)
    reaper.register(launcher_pid, lambda _pid, status: launcher_ended.append(status))
    while True:
        for sig in signals.wait():
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("shutting down", extra=fields(signal=signal.Signals(sig).name))
                return EXIT_OK
            if sig == signal.SIGHUP:
                log.info("SIGHUP ignored: restart kurmad to apply a new configuration")
            if sig == signal.SIGCHLD:
                orphans = reaper.orphans_reaped
                reaper.reap()
                if reaper.orphans_reaped > orphans:
                    log.info("reaped orphans", extra=fields(count=reaper.orphans_reaped - orphans))
                if launcher_ended:
                    log.error(
                        "the launcher died (%s); exiting so that a supervisor restarts kurmad",
                        describe_status(launcher_ended[0]),
                    )
                    return EXIT_FAILED


def _shutdown(server, supervisor, runtime, config: DaemonConfig, grace: float) -> None:
    """Stop the system services (under kurma-init: dependents first, within the shutdown
    grace), stop serving, then stop the pods if told to, then close the runtime."""
    if supervisor is not None:
        supervisor.close(stop_services=config.stops_services, budget=config.shutdown_grace)
    if server is not None:
        server.stop(grace)
    if config.stop_pods_on_exit:
        _stop_all_pods(runtime)
    runtime.close(stop_pods=config.stop_pods_on_exit)
    if server is not None:
        server.remove_socket()


def _stop_all_pods(runtime) -> None:
    """Stop every running pod at once (each gets its own grace period, not one after another)."""
    from ..runtime import PodState

    running = [r for r in runtime.list_pods() if r.state in (PodState.RUNNING, PodState.STOPPING)]
    if not running:
        return
    log.info("stopping pods", extra=fields(count=len(running)))
    with ThreadPoolExecutor(min(len(running), 32)) as pool:
        for record, error in zip(
            running, pool.map(lambda r: _stop_quietly(runtime, r.uuid), running), strict=True
        ):
            if error:
                log.warning("pod did not stop cleanly", extra=fields(pod=record.name, error=error))


def _stop_quietly(runtime, uuid: str) -> str | None:
    try:
        runtime.stop_pod(uuid)
    except Exception as e:
        return str(e)
    return None


if __name__ == "__main__":
    sys.exit(main())
