"""The Host service: facts about the machine, the event stream, the system services
(kurma.services' supervisor), power (signals to kurma-init) and kurma-init's boot log."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
from collections.abc import Mapping

import grpc

from .. import __version__
from ..network import NetworkConfig
from ..runtime import AppState, PodNotFound, PodState, Runtime
from ..runtime.cgroups import CONTROLLERS
from ..services import ServiceNotFound, ServiceStatus
from ..services._supervisor import Supervisor
from ._caller import BindsCaller
from ._config import DaemonConfig
from ._convert import timestamp
from ._events import EventHub
from ._logfmt import fields
from ._logs import stream_logs
from ._status import ApiError, Code, rpc
from .v1 import host_pb2, host_pb2_grpc

log = logging.getLogger(__name__)


def uptime_seconds() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def pss_bytes(pid: int | str) -> int:
    """Proportional set size of a process (0 when it cannot be read: gone, or not ours)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_bytes() -> tuple[int, int]:
    """(total, available) from /proc/meminfo."""
    values: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


class HostServicer(BindsCaller, host_pb2_grpc.HostServicer):
    def __init__(
        self,
        runtime: Runtime,
        events: EventHub,
        config: DaemonConfig | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.runtime = runtime
        self.events = events
        self.config = config or DaemonConfig()
        self.supervisor = supervisor

    @rpc
    def Info(self, request: host_pb2.InfoRequest, context: grpc.ServicerContext):
        view = self._caller(context)
        total, available = memory_bytes()
        cgroups = self.runtime.cgroups
        return host_pb2.HostInfo(
            hostname=socket.gethostname(),
            kernel=os.uname().release,
            uptime_seconds=uptime_seconds(),
            memory_total_bytes=total,
            memory_available_bytes=available,
            kurma_version=__version__,
            api_version="v1",
            cgroups=[
                host_pb2.CgroupController(name=c, version=int(cgroups.version(c) or 0))
                for c in CONTROLLERS
            ],
            pods=sum(1 for r in self.runtime.list_pods() if view.sees(r)),
            images=len(self.runtime.store.list()),
            caller=view.name,
            role=view.role,
            init_pss_bytes=pss_bytes(1),
            kurmad_pss_bytes=pss_bytes("self"),
            launcher_pss_bytes=pss_bytes(self.runtime.launcher.pid),
        )

    @rpc
    def Events(self, request: host_pb2.EventsRequest, context: grpc.ServicerContext):
        subscription = self.events.subscribe(self._caller(context))
        context.add_callback(subscription.close)  # the call ended: cancelled or done
        # Headers now, before any event: a client that waits for them knows that every
        # later event reaches it (kurma.client's events() does).
        context.send_initial_metadata(())
        try:
            yield from subscription
        finally:
            subscription.close()

    @rpc
    def Services(self, request: host_pb2.ServicesRequest, context: grpc.ServicerContext):
        view = self._caller(context)
        if self.supervisor is None or view.subtree_of is not None:
            return host_pb2.ServicesResponse()  # none, or none a subtree pod may see
        return host_pb2.ServicesResponse(
            services=[service_to_proto(s) for s in self.supervisor.services()],
            problems=list(self.supervisor.problems),
        )

    @rpc
    def RestartService(self, request: host_pb2.ServiceRef, context: grpc.ServicerContext):
        self._caller(context)  # the method guard decided who may; resolve for the log
        supervisor = self._services(request.name)
        return service_to_proto(supervisor.restart(request.name))

    @rpc
    def ServiceLogs(self, request: host_pb2.ServiceLogsRequest, context: grpc.ServicerContext):
        if self._caller(context).subtree_of is not None:
            raise ApiError(Code.NOT_FOUND, f"no service named {request.name!r}")
        status = self._services(request.name).status(request.name)
        if status.pod is None:
            raise ApiError(
                Code.FAILED_PRECONDITION,
                f"service {status.name} has no pod ({status.state}"
                f"{': ' + status.message if status.message else ''})",
            )
        uuid = status.pod
        try:
            record = self.runtime.get(uuid)
        except PodNotFound:
            raise ApiError(
                Code.FAILED_PRECONDITION, f"service {status.name}'s pod is gone; try again"
            ) from None
        files = {a.name: self.runtime.log_file(uuid, a.name) for a in record.apps}

        def state() -> tuple[bool, set[str]]:
            try:
                now = self.runtime.get(uuid)
            except PodNotFound:
                return True, set(files)
            exited = {a.name for a in now.apps if a.state is AppState.EXITED}
            return now.state is PodState.EXITED, exited

        chunks = stream_logs(files, request.tail, request.follow, state, context.is_active)
        for _app, data in chunks:
            yield host_pb2.ServiceLogChunk(data=data)

    def _services(self, name: str) -> Supervisor:
        """The supervisor, when the service exists (NOT_FOUND naming the known ones)."""
        if self.supervisor is None:
            raise ApiError(
                Code.NOT_FOUND,
                f"no service named {name!r}: kurmad runs no system services "
                f"(it was started without services_file)",
            )
        try:
            self.supervisor.status(name)
        except ServiceNotFound as e:
            raise ApiError(Code.NOT_FOUND, str(e)) from None
        return self.supervisor

    @rpc
    def Reboot(self, request: host_pb2.PowerRequest, context: grpc.ServicerContext):
        return self._power(signal.SIGINT, "reboot")

    @rpc
    def Poweroff(self, request: host_pb2.PowerRequest, context: grpc.ServicerContext):
        return self._power(signal.SIGTERM, "poweroff")

    def _power(self, sig: int, what: str) -> host_pb2.PowerResponse:
        """Ask kurma-init to go down: SIGINT reboots, SIGTERM powers off (its
        SHUTDOWN_SIGNALS); only when it is our parent, never a systemd or a shell."""
        target = self.config.init_pid
        parent = os.getppid()
        if parent != target or not is_kurma_init(target):
            raise ApiError(
                Code.FAILED_PRECONDITION,
                f"kurmad is not running under kurma-init (parent pid {parent}): {what} "
                f"the host with its own init system",
            )
        log.warning("%s requested: signalling kurma-init", what, extra=fields(pid=target))
        os.kill(target, sig)
        return host_pb2.PowerResponse()

    @rpc
    def Networks(self, request: host_pb2.NetworksRequest, context: grpc.ServicerContext):
        return networks_response(self.runtime.networks(), self.config.default_network)

    @rpc
    def BootLog(self, request: host_pb2.BootLogRequest, context: grpc.ServicerContext):
        path = self.config.boot_log_file
        if path is None:
            raise ApiError(
                Code.FAILED_PRECONDITION,
                "no boot log: kurmad was not started by kurma-init (boot_log_file is not set)",
            )
        return read_boot_log(path)


def networks_response(
    networks: Mapping[str, NetworkConfig], default: str | None
) -> host_pb2.NetworksResponse:
    """kurmad's CNI networks as the API lists them (the runtime's: a file that does not
    parse is left out, with a warning in kurmad's log)."""
    return host_pb2.NetworksResponse(
        networks=[
            host_pb2.Network(
                name=name,
                cni_version=net.cni_version,
                plugins=[p.type for p in net.plugins],
                file=str(net.source),
                default=name == default,
                config_json=net.raw.decode("utf-8", "replace"),
            )
            for name, net in sorted(networks.items())
        ]
    )


def is_kurma_init(pid: int) -> bool:
    """Whether process `pid` runs kurma-init: its command line names it, or it is a Python
    running a script that starts kurma.init.main (the initrd's /init, which the kernel runs
    by that name)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = [w for w in f.read().split(b"\0") if w]
    except OSError:
        return False
    if any(os.path.basename(w) == b"kurma-init" or w.startswith(b"kurma.init") for w in words):
        return True
    scripts = [w for w in words[1:] if w.startswith(b"/")]
    if not words or not os.path.basename(words[0]).startswith(b"python") or not scripts:
        return False
    try:
        with open(f"/proc/{pid}/root{os.fsdecode(scripts[0])}", "rb") as f:
            return b"kurma.init.main" in f.read(4096)
    except OSError:
        return False


def read_boot_log(path: str) -> host_pb2.BootLogResponse:
    """kurma-init's JSON boot log as the API's message; FAILED_PRECONDITION when it is
    missing or malformed, naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ApiError(
            Code.FAILED_PRECONDITION, f"no boot log at {path} (kurma-init has not written it)"
        ) from None
    except (OSError, ValueError) as e:
        raise ApiError(Code.FAILED_PRECONDITION, f"boot log {path} unreadable: {e}") from None
    if not isinstance(doc, dict):
        raise ApiError(Code.FAILED_PRECONDITION, f"boot log {path}: not a JSON object")
    steps = []
    for i, step in enumerate(doc.get("steps") or ()):
        try:
            steps.append(
                host_pb2.BootStep(
                    name=str(step["name"]),
                    outcome=str(step.get("outcome", "")),
                    started=float(step.get("started") or 0.0),
                    duration=float(step.get("duration") or 0.0),
                    message=str(step.get("message") or ""),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ApiError(
                Code.FAILED_PRECONDITION, f"boot log {path}: steps[{i}]: malformed ({e!r})"
            ) from None
    problems = [str(p) for p in doc.get("problems") or ()]
    return host_pb2.BootLogResponse(steps=steps, problems=problems)


def service_to_proto(status: ServiceStatus) -> host_pb2.Service:
    return host_pb2.Service(
        name=status.name,
        pod=status.pod or "",
        state=status.state.value,
        restarts=status.restarts,
        message=status.message,
        image=status.image,
        last_exit_code=status.last_exit_code,
        depends_on=list(status.depends_on),
        provides=list(status.provides),
        restart=status.restart,
        started_at=timestamp(status.started_at),
    )
