import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageRef(_message.Message):
    __slots__ = ("ref", "format")
    REF_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ref: str
    format: str
    def __init__(self, ref: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("id", "name", "labels", "size", "imported_at", "manifest_json", "skipped", "kind", "references", "digest", "config_digest", "platform", "layers")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    labels: _containers.ScalarMap[str, str]
    size: int
    imported_at: _timestamp_pb2.Timestamp
    manifest_json: str
    skipped: _containers.RepeatedScalarFieldContainer[str]
    kind: str
    references: _containers.RepeatedScalarFieldContainer[str]
    digest: str
    config_digest: str
    platform: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., size: _Optional[int] = ..., imported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., manifest_json: _Optional[str] = ..., skipped: _Optional[_Iterable[str]] = ..., kind: _Optional[str] = ..., references: _Optional[_Iterable[str]] = ..., digest: _Optional[str] = ..., config_digest: _Optional[str] = ..., platform: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ...) -> None: ...

class ImportRequest(_message.Message):
    __slots__ = ("data", "total_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    total_size: int
    def __init__(self, data: _Optional[bytes] = ..., total_size: _Optional[int] = ...) -> None: ...

class ImportProgress(_message.Message):
    __slots__ = ("bytes_done", "bytes_total", "image", "created", "layers", "status", "images")
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_total: int
    image: Image
    created: bool
    layers: _containers.RepeatedCompositeFieldContainer[LayerStatus]
    status: str
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., created: _Optional[bool] = ..., layers: _Optional[_Iterable[_Union[LayerStatus, _Mapping]]] = ..., status: _Optional[str] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class LayerStatus(_message.Message):
    __slots__ = ("index", "digest", "size", "done", "state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    digest: str
    size: int
    done: int
    state: str
    def __init__(self, index: _Optional[int] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., done: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("name", "insecure", "platform", "username", "password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    insecure: bool
    platform: str
    username: str
    password: str
    def __init__(self, name: _Optional[str] = ..., insecure: _Optional[bool] = ..., platform: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("name_prefix",)
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    name_prefix: str
    def __init__(self, name_prefix: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class AddKeyRequest(_message.Message):
    __slots__ = ("prefix", "armored_key")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    ARMORED_KEY_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    armored_key: bytes
    def __init__(self, prefix: _Optional[str] = ..., armored_key: _Optional[bytes] = ...) -> None: ...

class TrustedKey(_message.Message):
    __slots__ = ("prefix", "fingerprint")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    fingerprint: str
    def __init__(self, prefix: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[TrustedKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[TrustedKey, _Mapping]]] = ...) -> None: ...

class RemoveKeyRequest(_message.Message):
    __slots__ = ("prefix", "fingerprint")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    fingerprint: str
    def __init__(self, prefix: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class RemoveKeyResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: _containers.RepeatedCompositeFieldContainer[TrustedKey]
    def __init__(self, removed: _Optional[_Iterable[_Union[TrustedKey, _Mapping]]] = ...) -> None: ...
