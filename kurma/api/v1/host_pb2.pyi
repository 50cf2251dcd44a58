import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NetworksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Network(_message.Message):
    __slots__ = ("name", "cni_version", "plugins", "file", "default", "config_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CNI_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    cni_version: str
    plugins: _containers.RepeatedScalarFieldContainer[str]
    file: str
    default: bool
    config_json: str
    def __init__(self, name: _Optional[str] = ..., cni_version: _Optional[str] = ..., plugins: _Optional[_Iterable[str]] = ..., file: _Optional[str] = ..., default: _Optional[bool] = ..., config_json: _Optional[str] = ...) -> None: ...

class NetworksResponse(_message.Message):
    __slots__ = ("networks",)
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[Network]
    def __init__(self, networks: _Optional[_Iterable[_Union[Network, _Mapping]]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CgroupController(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class HostInfo(_message.Message):
    __slots__ = ("hostname", "kernel", "uptime_seconds", "memory_total_bytes", "memory_available_bytes", "kurma_version", "api_version", "cgroups", "pods", "images", "caller", "role", "init_pss_bytes", "kurmad_pss_bytes", "launcher_pss_bytes")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KURMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    CGROUPS_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    INIT_PSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    KURMAD_PSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAUNCHER_PSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    kernel: str
    uptime_seconds: float
    memory_total_bytes: int
    memory_available_bytes: int
    kurma_version: str
    api_version: str
    cgroups: _containers.RepeatedCompositeFieldContainer[CgroupController]
    pods: int
    images: int
    caller: str
    role: str
    init_pss_bytes: int
    kurmad_pss_bytes: int
    launcher_pss_bytes: int
    def __init__(self, hostname: _Optional[str] = ..., kernel: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., kurma_version: _Optional[str] = ..., api_version: _Optional[str] = ..., cgroups: _Optional[_Iterable[_Union[CgroupController, _Mapping]]] = ..., pods: _Optional[int] = ..., images: _Optional[int] = ..., caller: _Optional[str] = ..., role: _Optional[str] = ..., init_pss_bytes: _Optional[int] = ..., kurmad_pss_bytes: _Optional[int] = ..., launcher_pss_bytes: _Optional[int] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Event(_message.Message):
    __slots__ = ("time", "kind", "pod", "image", "message")
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    kind: str
    pod: str
    image: str
    message: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., pod: _Optional[str] = ..., image: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Service(_message.Message):
    __slots__ = ("name", "pod", "state", "restarts", "message", "image", "last_exit_code", "depends_on", "provides", "restart", "started_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    PROVIDES_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    pod: str
    state: str
    restarts: int
    message: str
    image: str
    last_exit_code: int
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    provides: _containers.RepeatedScalarFieldContainer[str]
    restart: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., pod: _Optional[str] = ..., state: _Optional[str] = ..., restarts: _Optional[int] = ..., message: _Optional[str] = ..., image: _Optional[str] = ..., last_exit_code: _Optional[int] = ..., depends_on: _Optional[_Iterable[str]] = ..., provides: _Optional[_Iterable[str]] = ..., restart: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ServicesResponse(_message.Message):
    __slots__ = ("services", "problems")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class ServiceRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ServiceLogsRequest(_message.Message):
    __slots__ = ("name", "follow", "tail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    follow: bool
    tail: int
    def __init__(self, name: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class ServiceLogChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class BootLogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BootStep(_message.Message):
    __slots__ = ("name", "outcome", "started", "duration", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    outcome: str
    started: float
    duration: float
    message: str
    def __init__(self, name: _Optional[str] = ..., outcome: _Optional[str] = ..., started: _Optional[float] = ..., duration: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class BootLogResponse(_message.Message):
    __slots__ = ("steps", "problems")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[BootStep]
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, steps: _Optional[_Iterable[_Union[BootStep, _Mapping]]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class PowerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PowerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
