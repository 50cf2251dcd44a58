"""`Client`: the Kurma API as typed Python methods over one gRPC channel.

Kept light for the CLI: it imports grpc and the generated modules, nothing of the daemon.
Every failure is a `ClientError` subclass carrying the daemon's message.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Generic, TypeVar

import grpc

from ..api.v1 import (
    host_pb2,
    host_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    pods_pb2,
    pods_pb2_grpc,
)
from ._errors import ClientError, Unavailable, from_rpc_error

SYSTEM_SOCKET = "/run/kurma/kurmad.sock"
POD_SOCKET = "/run/kurma/api.sock"  # inside a pod that has host/api-access
CHUNK = 256 * 1024

T = TypeVar("T")


def default_target() -> str:
    """$KURMA_HOST, else the pod's own socket when there is one, else the system socket."""
    env = os.environ.get("KURMA_HOST")
    if env:
        return env
    return POD_SOCKET if os.path.exists(POD_SOCKET) else SYSTEM_SOCKET


def grpc_target(target: str) -> tuple[str, bool]:
    """(gRPC target, needs TLS) for `unix:///path`, `/path`, or `tcp://host:port`."""
    if target.startswith("unix:"):
        return target, False
    if target.startswith("/"):
        return f"unix:{target}", False
    if target.startswith("tcp://"):
        return target[len("tcp://") :], True
    raise ValueError(f"{target!r}: give unix:///PATH, /PATH or tcp://HOST:PORT")


class Stream(Generic[T]):
    """A server stream (logs, events): iterate it; `cancel()` ends it from another thread."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    def __iter__(self) -> Iterator[T]:
        try:
            yield from self._call
        except grpc.RpcError as e:
            if self._cancelled and e.code() is grpc.StatusCode.CANCELLED:
                return
            raise from_rpc_error(e) from None

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


@dataclass(frozen=True)
class Imported:
    """The outcome of an import: the image, and whether the store did not have it yet."""

    image: images_pb2.Image
    created: bool
    images: tuple[images_pb2.Image, ...] = ()  # an archive's images, all of them


def app_spec(
    image: str,
    *,
    name: str = "",
    exec: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    user: str = "",
    group: str = "",
    working_directory: str = "",
    isolators: Mapping[str, str] | None = None,
    read_only_root_fs: bool = False,
) -> pods_pb2.AppSpec:
    """One app of a RunSpec; `isolators` maps a name to its value as JSON text."""
    return pods_pb2.AppSpec(
        image=image,
        name=name,
        exec=list(exec),
        environment=[pods_pb2.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
        user=user,
        group=group,
        working_directory=working_directory,
        isolators=[pods_pb2.Isolator(name=k, value_json=v) for k, v in (isolators or {}).items()],
        read_only_root_fs=read_only_root_fs,
    )


def run_spec(
    *apps: pods_pb2.AppSpec,
    volumes: Iterable[pods_pb2.VolumeSpec] = (),
    isolators: Mapping[str, str] | None = None,
) -> pods_pb2.RunSpec:
    """A pod from images plus overrides, like `docker run`."""
    return pods_pb2.RunSpec(
        apps=list(apps),
        volumes=list(volumes),
        isolators=[pods_pb2.Isolator(name=k, value_json=v) for k, v in (isolators or {}).items()],
    )


def volume(
    name: str, path: str, *, source: str = "", read_only: bool = False
) -> pods_pb2.VolumeSpec:
    """A volume mounted at `path` in every app: a host directory (`source`), else empty."""
    kind = "host" if source else "empty"
    return pods_pb2.VolumeSpec(name=name, kind=kind, source=source, read_only=read_only, path=path)


class ExecSession:
    """One exec: `send`, `resize` and `close_stdin` from any thread; iterate `output()` for
    (stream, bytes) pairs, stream "stdout" or "stderr"; `exit_code` is set at the end."""

    _END = object()

    def __init__(self, method: Any, start: pods_pb2.ExecStart) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._queue.put(pods_pb2.ExecRequest(start=start))
        self._call = method(iter(self._queue.get, self._END))
        self.exit_code: int | None = None

    def send(self, data: bytes) -> None:
        self._queue.put(pods_pb2.ExecRequest(stdin=data))

    def resize(self, rows: int, cols: int) -> None:
        self._queue.put(pods_pb2.ExecRequest(resize=pods_pb2.WindowSize(rows=rows, cols=cols)))

    def close_stdin(self) -> None:
        self._queue.put(pods_pb2.ExecRequest(close_stdin=True))
        self._queue.put(self._END)

    def output(self) -> Iterator[tuple[str, bytes]]:
        try:
            for response in self._call:
                kind = response.WhichOneof("response")
                if kind == "exit_code":
                    self.exit_code = response.exit_code
                elif kind is not None:
                    yield kind, getattr(response, kind)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            self._queue.put(self._END)

    def cancel(self) -> None:
        self._call.cancel()
        self._queue.put(self._END)


class Client:
    """A connection to kurmad. Use `Client.connect(...)`; close it (or use `with`)."""

    def __init__(self, channel: grpc.Channel, target: str) -> None:
        self.target = target
        self._channel = channel
        self._pods = pods_pb2_grpc.PodsStub(channel)
        self._images = images_pb2_grpc.ImagesStub(channel)
        self._host = host_pb2_grpc.HostStub(channel)

    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        timeout: float | None = 10.0,
        cert: str | None = None,
        key: str | None = None,
        ca: str | None = None,
    ) -> Client:
        """Connect to `target` (see `grpc_target`; default `default_target()`) and wait up
        to `timeout` seconds for it to answer (None: do not wait); Unavailable otherwise."""
        target = target or default_target()
        address, tls = grpc_target(target)
        if tls:
            channel = grpc.secure_channel(address, _tls_credentials(cert, key, ca))
        else:
            channel = grpc.insecure_channel(address)
        if timeout is not None:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout)
            except grpc.FutureTimeoutError:
                channel.close()
                reason = _tls_reason(address, cert, key, ca) if tls else None
                if reason is not None:
                    raise Unavailable(f"cannot connect to kurmad at {target}: {reason}") from None
                raise Unavailable(f"no kurmad answers on {target} (waited {timeout:g} s)") from None
        return cls(channel, target)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pods ---------------------------------------------------------------------------

    def create_pod(
        self,
        *,
        manifest_json: bytes | str | None = None,
        spec: pods_pb2.RunSpec | None = None,
        name: str = "",
        start: bool = False,
    ) -> pods_pb2.Pod:
        """Create a pod from a full pod manifest or a RunSpec (exactly one of them)."""
        if (manifest_json is None) == (spec is None):
            raise ValueError("give exactly one of manifest_json and spec")
        if manifest_json is not None:
            data = manifest_json.encode() if isinstance(manifest_json, str) else manifest_json
            request = pods_pb2.CreatePodRequest(manifest_json=data, name=name, start=start)
        else:
            request = pods_pb2.CreatePodRequest(spec=spec, name=name, start=start)
        return _call(self._pods.Create, request)

    def start(self, pod: str) -> pods_pb2.Pod:
        return _call(self._pods.Start, pods_pb2.PodRef(pod=pod))

    def stop(self, pod: str, grace: float = 0.0) -> pods_pb2.Pod:
        """Stop a pod (grace 0: the daemon's default); returns its final state."""
        return _call(self._pods.Stop, pods_pb2.StopPodRequest(pod=pod, grace_seconds=grace))

    def destroy(self, pod: str, grace: float = 0.0) -> list[str]:
        """Stop if needed and remove the pod; returns the UUIDs removed."""
        request = pods_pb2.DestroyPodRequest(pod=pod, grace_seconds=grace)
        return list(_call(self._pods.Destroy, request).destroyed)

    def list_pods(
        self, states: Iterable[pods_pb2.PodState] = (), name_prefix: str = ""
    ) -> list[pods_pb2.Pod]:
        request = pods_pb2.ListPodsRequest(states=list(states), name_prefix=name_prefix)
        return list(_call(self._pods.List, request).pods)

    def get(self, pod: str) -> pods_pb2.Pod:
        return _call(self._pods.Get, pods_pb2.PodRef(pod=pod))

    def logs(
        self, pod: str, app: str = "", *, follow: bool = False, tail: int = 0
    ) -> Stream[pods_pb2.LogChunk]:
        """An app's output (every app's when `app` is empty): the last `tail` lines (0: all
        kept, -1: none), then with `follow` new output until the apps have exited."""
        request = pods_pb2.LogsRequest(pod=pod, app=app, follow=follow, tail=tail)
        return Stream(self._pods.Logs(request))

    def wait(self, pod: str, timeout: float | None = None) -> pods_pb2.Pod:
        """Block until the pod has exited; DeadlineExceeded after `timeout` seconds."""
        request = pods_pb2.WaitPodRequest(pod=pod, timeout_seconds=timeout or 0.0)
        return _call(self._pods.Wait, request, timeout=None if timeout is None else timeout + 30)

    def stats(self, pod: str) -> pods_pb2.PodStats:
        return _call(self._pods.Stats, pods_pb2.PodRef(pod=pod))

    def exec(
        self,
        pod: str,
        argv: Sequence[str],
        *,
        app: str = "",
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        size: tuple[int, int] = (0, 0),
    ) -> ExecSession:
        """Run `argv` in a running app; talk to it through the returned session."""
        start = pods_pb2.ExecStart(
            pod=pod,
            app=app,
            argv=list(argv),
            environment=[pods_pb2.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
            tty=tty,
            rows=size[0],
            cols=size[1],
        )
        return ExecSession(self._pods.Exec, start)

    # --- images -------------------------------------------------------------------------

    def import_image(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        progress: Callable[[int, int], None] | None = None,
    ) -> Imported:
        """Upload an .aci (a path or a binary file); `progress(done, total)` about every MiB
        (total 0 when unknown)."""
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as f:
                return self._import(f, progress)
        return self._import(source, progress)

    def _import(self, f: IO[bytes], progress: Callable[[int, int], None] | None) -> Imported:
        try:
            total = os.fstat(f.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            total = 0

        def chunks() -> Iterator[images_pb2.ImportRequest]:
            first = True
            while data := f.read(CHUNK):
                yield images_pb2.ImportRequest(data=data, total_size=total if first else 0)
                first = False

        last = None
        try:
            for message in self._images.Import(chunks()):
                if progress is not None:
                    progress(message.bytes_done, message.bytes_total)
                last = message
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        if last is None or not last.HasField("image"):
            raise ClientError("the import ended without an image")
        return Imported(last.image, last.created, tuple(last.images) or (last.image,))

    def list_images(self, name_prefix: str = "") -> list[images_pb2.Image]:
        request = images_pb2.ListImagesRequest(name_prefix=name_prefix)
        return list(_call(self._images.List, request).images)

    def inspect_image(self, ref: str) -> images_pb2.Image:
        return _call(self._images.Inspect, images_pb2.ImageRef(ref=ref))

    def delete_image(self, ref: str) -> images_pb2.Image:
        return _call(self._images.Delete, images_pb2.ImageRef(ref=ref))

    # --- host ---------------------------------------------------------------------------

    def info(self) -> host_pb2.HostInfo:
        return _call(self._host.Info, host_pb2.InfoRequest())

    def events(self) -> Stream[host_pb2.Event]:
        """Pod and image events from now on (returns once the daemon has subscribed us)."""
        call = self._host.Events(host_pb2.EventsRequest())
        try:
            call.initial_metadata()  # the daemon sends it right after subscribing
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return Stream(call)

    # --- system services and power ------------------------------------------------------

    def services(self) -> list[host_pb2.Service]:
        """The system services kurmad supervises (none when it runs without kurma-init)."""
        return list(_call(self._host.Services, host_pb2.ServicesRequest()).services)

    def restart_service(self, name: str) -> host_pb2.Service:
        """Restart a service now (backoff reset); NotFound for an unknown name."""
        return _call(self._host.RestartService, host_pb2.ServiceRef(name=name))

    def service_logs(
        self, name: str, *, follow: bool = False, tail: int = 0
    ) -> Stream[host_pb2.ServiceLogChunk]:
        """The output of a service's current pod, as `logs` gives a pod's."""
        request = host_pb2.ServiceLogsRequest(name=name, follow=follow, tail=tail)
        return Stream(self._host.ServiceLogs(request))

    def boot_log(self) -> host_pb2.BootLogResponse:
        """kurma-init's boot steps and the boot config's problems."""
        return _call(self._host.BootLog, host_pb2.BootLogRequest())

    def reboot(self) -> None:
        _call(self._host.Reboot, host_pb2.PowerRequest())

    def poweroff(self) -> None:
        _call(self._host.Poweroff, host_pb2.PowerRequest())


def _call(method: Any, request: Any, timeout: float | None = None) -> Any:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None


def _tls_reason(address: str, cert: str | None, key: str | None, ca: str | None) -> str | None:
    """Which certificate check failed, in words (None: not a certificate problem)."""
    from ._tlsdiag import diagnose

    return diagnose(address, cert, key, ca) if cert and key and ca else None


def _tls_credentials(cert: str | None, key: str | None, ca: str | None) -> grpc.ChannelCredentials:
    if not (cert and key and ca):
        raise ValueError("a tcp:// target needs a client certificate, its key and the CA")

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
