"""The gRPC server: every service on one grpc.server, on the unix socket (mode 0600) and,
when configured, a TCP port with mutual TLS whose calls are checked per method by role;
plus one small server per pod with `host/api-access` on that pod's own socket, serving the
same servicers bound to the pod's view (`_podsockets`), on the same thread pool.

Imported only after the Runtime has forked its launcher (grpc starts threads). The socket is
bound inside a fresh 0700 directory next to its final path, made 0600, then renamed into
place, so at no moment can anyone but root connect to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..runtime import Runtime
from ..services._supervisor import Supervisor
from ._caller import CallerView
from ._config import DaemonConfig
from ._events import EventHub
from ._host import HostServicer
from ._images import ImagesServicer, TrustServicer
from ._logfmt import fields
from ._pods import PodsServicer
from ._podsockets import PodSockets
from ._policy import Policy
from ._quota import Quotas, subtree_defaults
from ._registries import Registries
from ._tcp import certificate_budget, interceptors, tcp_server_credentials
from .v1 import host_pb2, host_pb2_grpc, images_pb2, images_pb2_grpc, pods_pb2, pods_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = (
    pods_pb2.DESCRIPTOR.services_by_name["Pods"].full_name,
    images_pb2.DESCRIPTOR.services_by_name["Images"].full_name,
    images_pb2.DESCRIPTOR.services_by_name["Trust"].full_name,
    host_pb2.DESCRIPTOR.services_by_name["Host"].full_name,
)


class ApiServer:
    """The daemon's services, health and reflection on one server."""

    def __init__(
        self, runtime: Runtime, config: DaemonConfig, supervisor: Supervisor | None = None
    ) -> None:
        """`supervisor`: the system services' (the daemon starts it before it imports gRPC,
        see `daemon.serve`); the Host service lists and restarts them through it."""
        self.config = config
        self.socket_path = config.socket
        self._socket_ino: int | None = None
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="kurmad-rpc")
        # A stream (logs -f, events) holds a worker for its whole life: past `workers`
        # concurrent calls a new one fails fast with RESOURCE_EXHAUSTED instead of queueing.
        self.server = grpc.server(
            self.executor, maximum_concurrent_rpcs=config.workers, interceptors=interceptors(config)
        )
        # The TCP listener (certificates, down to a reader's) is a server with workers of its
        # own: no certificate's calls can keep the system socket's (root's) waiting.
        self.tcp_executor: ThreadPoolExecutor | None = None
        self.tcp_server: grpc.Server | None = None
        if config.listen is not None:
            self.tcp_executor = ThreadPoolExecutor(config.workers, thread_name_prefix="kurmad-tcp")
            self.tcp_server = grpc.server(
                self.tcp_executor,
                maximum_concurrent_rpcs=config.workers,
                interceptors=[*interceptors(config), certificate_budget(config)],
            )
        self.events = EventHub(runtime)
        # The pods' servers have workers of their own, so no pod can keep the host's calls
        # waiting; a tree of pods may hold a quarter of them at most (streams hold one each).
        self.pod_executor = ThreadPoolExecutor(config.workers, thread_name_prefix="kurmad-pods")
        self.pod_sockets = PodSockets(
            runtime, self.pod_executor, self._add_pod_servicers, max(2, config.workers // 4)
        )
        self.quotas = Quotas(runtime, subtree_defaults(config))
        runtime.log_cap = self.quotas.log_cap
        runtime.store.min_free = config.state_min_free  # imports stop short of a full disk
        policy = Policy(config.operator_host_volumes, self._service_images, self._service_names)
        self.pods = PodsServicer(
            runtime,
            on_created=self.pod_sockets.open,
            quotas=self.quotas,
            policy=policy,
            default_network=config.default_network,
            tenant_ports=config.tenant_publish_ports,
        )
        registries = Registries(config.registries, config.registry_auth_file)
        runtime.store.qualify = registries.qualify  # `alpine` names what `pull alpine` stored
        self.images = ImagesServicer(runtime.store, self.events, self.quotas, policy, registries)
        self.trust = TrustServicer()
        self.supervisor = supervisor
        self.host = HostServicer(runtime, self.events, config, self.supervisor)
        self.health = health.HealthServicer()
        for server in (self.server, self.tcp_server):
            if server is None:
                continue
            pods_pb2_grpc.add_PodsServicer_to_server(self.pods, server)
            images_pb2_grpc.add_ImagesServicer_to_server(self.images, server)
            images_pb2_grpc.add_TrustServicer_to_server(self.trust, server)
            host_pb2_grpc.add_HostServicer_to_server(self.host, server)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            reflection.enable_server_reflection(
                (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )

    def _service_images(self) -> list[str]:
        """The images the system services run (their names are the host's to import)."""
        supervisor = getattr(self, "supervisor", None)
        return [s.image for s in supervisor.services()] if supervisor is not None else []

    def _service_names(self) -> list[str]:
        """The system services' names (their pods' names are the host's to give)."""
        supervisor = getattr(self, "supervisor", None)
        return [s.name for s in supervisor.services()] if supervisor is not None else []

    def _add_pod_servicers(self, server: grpc.Server, view: CallerView) -> None:
        """A pod's server: the same servicers, bound to the pod's view (no health or
        reflection there: nothing on a pod's socket is meant for generic tools)."""
        pods_pb2_grpc.add_PodsServicer_to_server(self.pods.bound(view), server)
        images_pb2_grpc.add_ImagesServicer_to_server(self.images.bound(view), server)
        images_pb2_grpc.add_TrustServicer_to_server(self.trust, server)
        host_pb2_grpc.add_HostServicer_to_server(self.host.bound(view), server)

    def start(self) -> None:
        """Bind the unix socket (and TCP, when configured), start serving, mark SERVING."""
        if self.tcp_server is not None and self.config.listen is not None:
            credentials = tcp_server_credentials(self.config)
            self.tcp_server.add_secure_port(self.config.listen, credentials)
            self.tcp_server.start()
        self._bind_unix(self.socket_path)
        self.pod_sockets.open_existing()
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra=fields(socket=self.socket_path, listen=self.config.listen))

    def _bind_unix(self, path: str) -> None:
        private = tempfile.mkdtemp(prefix=".kurmad-", dir=os.path.dirname(path))  # 0700
        staged = os.path.join(private, "sock")
        try:
            if self.server.add_insecure_port(f"unix:{staged}") == 0:
                raise OSError(f"cannot bind the unix socket at {staged}")
            self.server.start()
            os.chmod(staged, 0o600)
            os.rename(staged, path)
            self._socket_ino = os.lstat(path).st_ino
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            os.rmdir(private)

    def stop(self, grace: float) -> None:
        """Stop accepting calls, give in-flight ones `grace` seconds, end every stream."""
        self.health.enter_graceful_shutdown()
        self.events.close()  # event streams end now rather than at the deadline
        self.pod_sockets.close_all(grace)
        stopping = [self.server.stop(grace)]
        if self.tcp_server is not None:
            stopping.append(self.tcp_server.stop(grace))
        for done in stopping:
            done.wait(grace + 5.0)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.tcp_executor is not None:
            self.tcp_executor.shutdown(wait=False, cancel_futures=True)
        self.pod_executor.shutdown(wait=False, cancel_futures=True)
        self.remove_socket()

    def remove_socket(self) -> None:
        """Remove the socket file, if it is still the one we made."""
        try:
            if (
                self._socket_ino is not None
                and os.lstat(self.socket_path).st_ino == self._socket_ino
            ):
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
