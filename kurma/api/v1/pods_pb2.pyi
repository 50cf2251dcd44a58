import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PodState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POD_STATE_UNSPECIFIED: _ClassVar[PodState]
    POD_STATE_CREATED: _ClassVar[PodState]
    POD_STATE_RUNNING: _ClassVar[PodState]
    POD_STATE_STOPPING: _ClassVar[PodState]
    POD_STATE_EXITED: _ClassVar[PodState]

class AppState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APP_STATE_UNSPECIFIED: _ClassVar[AppState]
    APP_STATE_CREATED: _ClassVar[AppState]
    APP_STATE_RUNNING: _ClassVar[AppState]
    APP_STATE_EXITED: _ClassVar[AppState]
POD_STATE_UNSPECIFIED: PodState
POD_STATE_CREATED: PodState
POD_STATE_RUNNING: PodState
POD_STATE_STOPPING: PodState
POD_STATE_EXITED: PodState
APP_STATE_UNSPECIFIED: AppState
APP_STATE_CREATED: AppState
APP_STATE_RUNNING: AppState
APP_STATE_EXITED: AppState

class PodRef(_message.Message):
    __slots__ = ("pod",)
    POD_FIELD_NUMBER: _ClassVar[int]
    pod: str
    def __init__(self, pod: _Optional[str] = ...) -> None: ...

class App(_message.Message):
    __slots__ = ("name", "image_id", "image_name", "state", "pid", "exit_code", "error", "started_at", "finished_at", "post_stop_exit_code")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    POST_STOP_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    image_id: str
    image_name: str
    state: AppState
    pid: int
    exit_code: int
    error: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    post_stop_exit_code: int
    def __init__(self, name: _Optional[str] = ..., image_id: _Optional[str] = ..., image_name: _Optional[str] = ..., state: _Optional[_Union[AppState, str]] = ..., pid: _Optional[int] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., post_stop_exit_code: _Optional[int] = ...) -> None: ...

class IsolatorOutcome(_message.Message):
    __slots__ = ("scope", "name", "enforced", "note")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENFORCED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    name: str
    enforced: bool
    note: str
    def __init__(self, scope: _Optional[str] = ..., name: _Optional[str] = ..., enforced: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class Pod(_message.Message):
    __slots__ = ("uuid", "name", "state", "apps", "created_at", "started_at", "finished_at", "parents", "api_access", "isolators", "manifest_json", "cgroup", "quota", "networks")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    API_ACCESS_FIELD_NUMBER: _ClassVar[int]
    ISOLATORS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    state: PodState
    apps: _containers.RepeatedCompositeFieldContainer[App]
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    parents: _containers.RepeatedScalarFieldContainer[str]
    api_access: str
    isolators: _containers.RepeatedCompositeFieldContainer[IsolatorOutcome]
    manifest_json: str
    cgroup: str
    quota: SubtreeQuota
    networks: _containers.RepeatedCompositeFieldContainer[PodNetwork]
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[PodState, str]] = ..., apps: _Optional[_Iterable[_Union[App, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parents: _Optional[_Iterable[str]] = ..., api_access: _Optional[str] = ..., isolators: _Optional[_Iterable[_Union[IsolatorOutcome, _Mapping]]] = ..., manifest_json: _Optional[str] = ..., cgroup: _Optional[str] = ..., quota: _Optional[_Union[SubtreeQuota, _Mapping]] = ..., networks: _Optional[_Iterable[_Union[PodNetwork, _Mapping]]] = ...) -> None: ...

class PodNetwork(_message.Message):
    __slots__ = ("name", "interface", "addresses", "gateways", "routes", "nameservers", "search", "ports")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    NAMESERVERS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    interface: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    gateways: _containers.RepeatedScalarFieldContainer[str]
    routes: _containers.RepeatedScalarFieldContainer[str]
    nameservers: _containers.RepeatedScalarFieldContainer[str]
    search: _containers.RepeatedScalarFieldContainer[str]
    ports: _containers.RepeatedCompositeFieldContainer[PortSpec]
    def __init__(self, name: _Optional[str] = ..., interface: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., gateways: _Optional[_Iterable[str]] = ..., routes: _Optional[_Iterable[str]] = ..., nameservers: _Optional[_Iterable[str]] = ..., search: _Optional[_Iterable[str]] = ..., ports: _Optional[_Iterable[_Union[PortSpec, _Mapping]]] = ...) -> None: ...

class SubtreeQuota(_message.Message):
    __slots__ = ("pods", "image_bytes", "log_bytes")
    PODS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    pods: QuotaUse
    image_bytes: QuotaUse
    log_bytes: QuotaUse
    def __init__(self, pods: _Optional[_Union[QuotaUse, _Mapping]] = ..., image_bytes: _Optional[_Union[QuotaUse, _Mapping]] = ..., log_bytes: _Optional[_Union[QuotaUse, _Mapping]] = ...) -> None: ...

class QuotaUse(_message.Message):
    __slots__ = ("limited", "limit", "used")
    LIMITED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    limited: bool
    limit: int
    used: int
    def __init__(self, limited: _Optional[bool] = ..., limit: _Optional[int] = ..., used: _Optional[int] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Isolator(_message.Message):
    __slots__ = ("name", "value_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    value_json: str
    def __init__(self, name: _Optional[str] = ..., value_json: _Optional[str] = ...) -> None: ...

class VolumeSpec(_message.Message):
    __slots__ = ("name", "kind", "source", "read_only", "path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    source: str
    read_only: bool
    path: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., source: _Optional[str] = ..., read_only: _Optional[bool] = ..., path: _Optional[str] = ...) -> None: ...

class AppSpec(_message.Message):
    __slots__ = ("image", "name", "exec", "environment", "user", "group", "working_directory", "isolators", "read_only_root_fs")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXEC_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    ISOLATORS_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_ROOT_FS_FIELD_NUMBER: _ClassVar[int]
    image: str
    name: str
    exec: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.RepeatedCompositeFieldContainer[KeyValue]
    user: str
    group: str
    working_directory: str
    isolators: _containers.RepeatedCompositeFieldContainer[Isolator]
    read_only_root_fs: bool
    def __init__(self, image: _Optional[str] = ..., name: _Optional[str] = ..., exec: _Optional[_Iterable[str]] = ..., environment: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., user: _Optional[str] = ..., group: _Optional[str] = ..., working_directory: _Optional[str] = ..., isolators: _Optional[_Iterable[_Union[Isolator, _Mapping]]] = ..., read_only_root_fs: _Optional[bool] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("apps", "volumes", "isolators", "networks", "ports")
    APPS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    ISOLATORS_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[AppSpec]
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeSpec]
    isolators: _containers.RepeatedCompositeFieldContainer[Isolator]
    networks: _containers.RepeatedScalarFieldContainer[str]
    ports: _containers.RepeatedCompositeFieldContainer[PortSpec]
    def __init__(self, apps: _Optional[_Iterable[_Union[AppSpec, _Mapping]]] = ..., volumes: _Optional[_Iterable[_Union[VolumeSpec, _Mapping]]] = ..., isolators: _Optional[_Iterable[_Union[Isolator, _Mapping]]] = ..., networks: _Optional[_Iterable[str]] = ..., ports: _Optional[_Iterable[_Union[PortSpec, _Mapping]]] = ...) -> None: ...

class PortSpec(_message.Message):
    __slots__ = ("host_port", "container_port", "protocol", "host_ip")
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HOST_IP_FIELD_NUMBER: _ClassVar[int]
    host_port: int
    container_port: int
    protocol: str
    host_ip: str
    def __init__(self, host_port: _Optional[int] = ..., container_port: _Optional[int] = ..., protocol: _Optional[str] = ..., host_ip: _Optional[str] = ...) -> None: ...

class CreatePodRequest(_message.Message):
    __slots__ = ("manifest_json", "spec", "name", "start")
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    manifest_json: bytes
    spec: RunSpec
    name: str
    start: bool
    def __init__(self, manifest_json: _Optional[bytes] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., name: _Optional[str] = ..., start: _Optional[bool] = ...) -> None: ...

class StopPodRequest(_message.Message):
    __slots__ = ("pod", "grace_seconds")
    POD_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    pod: str
    grace_seconds: float
    def __init__(self, pod: _Optional[str] = ..., grace_seconds: _Optional[float] = ...) -> None: ...

class DestroyPodRequest(_message.Message):
    __slots__ = ("pod", "grace_seconds")
    POD_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    pod: str
    grace_seconds: float
    def __init__(self, pod: _Optional[str] = ..., grace_seconds: _Optional[float] = ...) -> None: ...

class DestroyPodResponse(_message.Message):
    __slots__ = ("destroyed",)
    DESTROYED_FIELD_NUMBER: _ClassVar[int]
    destroyed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, destroyed: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPodsRequest(_message.Message):
    __slots__ = ("states", "name_prefix")
    STATES_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[PodState]
    name_prefix: str
    def __init__(self, states: _Optional[_Iterable[_Union[PodState, str]]] = ..., name_prefix: _Optional[str] = ...) -> None: ...

class ListPodsResponse(_message.Message):
    __slots__ = ("pods",)
    PODS_FIELD_NUMBER: _ClassVar[int]
    pods: _containers.RepeatedCompositeFieldContainer[Pod]
    def __init__(self, pods: _Optional[_Iterable[_Union[Pod, _Mapping]]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("pod", "app", "follow", "tail")
    POD_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    pod: str
    app: str
    follow: bool
    tail: int
    def __init__(self, pod: _Optional[str] = ..., app: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("app", "data")
    APP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    app: str
    data: bytes
    def __init__(self, app: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("pod", "app", "argv", "environment", "tty", "rows", "cols")
    POD_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    pod: str
    app: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.RepeatedCompositeFieldContainer[KeyValue]
    tty: bool
    rows: int
    cols: int
    def __init__(self, pod: _Optional[str] = ..., app: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., environment: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., tty: _Optional[bool] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class WindowSize(_message.Message):
    __slots__ = ("rows", "cols")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("start", "stdin", "resize", "close_stdin")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    stdin: bytes
    resize: WindowSize
    close_stdin: bool
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., stdin: _Optional[bytes] = ..., resize: _Optional[_Union[WindowSize, _Mapping]] = ..., close_stdin: _Optional[bool] = ...) -> None: ...

class ExecResponse(_message.Message):
    __slots__ = ("stdout", "stderr", "exit_code")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exit_code: int
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit_code: _Optional[int] = ...) -> None: ...

class WaitPodRequest(_message.Message):
    __slots__ = ("pod", "timeout_seconds")
    POD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    pod: str
    timeout_seconds: float
    def __init__(self, pod: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class PodStats(_message.Message):
    __slots__ = ("uuid", "memory_bytes", "memory_limit_bytes", "cpu_usage_ns", "pids", "oom_kills")
    UUID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_NS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    OOM_KILLS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    memory_bytes: int
    memory_limit_bytes: int
    cpu_usage_ns: int
    pids: int
    oom_kills: int
    def __init__(self, uuid: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., memory_limit_bytes: _Optional[int] = ..., cpu_usage_ns: _Optional[int] = ..., pids: _Optional[int] = ..., oom_kills: _Optional[int] = ...) -> None: ...
