"""The Host service: facts about the machine, the event stream; services and power later."""

from __future__ import annotations

import os
import socket

import grpc

from .. import __version__
from ..runtime._runtime import Runtime
from ..runtime.cgroups import CONTROLLERS
from ._caller import BindsCaller
from ._events import EventHub
from ._status import rpc, unimplemented
from .v1 import host_pb2, host_pb2_grpc

_PID1_LATER = "system services and power come with the PID 1 issue (kurma-init)"


def uptime_seconds() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


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
    def __init__(self, runtime: Runtime, events: EventHub) -> None:
        self.runtime = runtime
        self.events = events

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
        raise unimplemented(_PID1_LATER)

    @rpc
    def RestartService(self, request: host_pb2.ServiceRef, context: grpc.ServicerContext):
        raise unimplemented(_PID1_LATER)

    @rpc
    def ServiceLogs(self, request: host_pb2.ServiceLogsRequest, context: grpc.ServicerContext):
        raise unimplemented(_PID1_LATER)
        yield  # a server-streaming method  # pragma: no cover

    @rpc
    def Reboot(self, request: host_pb2.PowerRequest, context: grpc.ServicerContext):
        raise unimplemented(_PID1_LATER)

    @rpc
    def Poweroff(self, request: host_pb2.PowerRequest, context: grpc.ServicerContext):
        raise unimplemented(_PID1_LATER)
