"""The client's errors: one class per gRPC status a caller may want to tell apart.

ClientError                  any failed call; `.code` is the status name, `.message`
├── NotFound                 no such pod, app or image
├── InvalidArgument          bad input: the message names the field
├── FailedPrecondition       the pod or image is not in a state that allows it
├── AlreadyExists
├── PermissionDenied         the caller's role or scope does not allow it
├── Unauthenticated
├── ResourceExhausted        too many concurrent calls, or a quota
├── DeadlineExceeded         a wait or call ran out of time
├── Cancelled
├── Unimplemented            not in this build yet; the message says what is missing
├── Unavailable              no daemon answers (or the launcher failed)
└── Internal                 a daemon bug: its log has the traceback
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """A call failed; `message` is the daemon's explanation, `code` the status name."""

    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(ClientError):
    code = "NOT_FOUND"


class InvalidArgument(ClientError):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(ClientError):
    code = "FAILED_PRECONDITION"


class AlreadyExists(ClientError):
    code = "ALREADY_EXISTS"


class PermissionDenied(ClientError):
    code = "PERMISSION_DENIED"


class Unauthenticated(ClientError):
    code = "UNAUTHENTICATED"


class ResourceExhausted(ClientError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(ClientError):
    code = "DEADLINE_EXCEEDED"


class Cancelled(ClientError):
    code = "CANCELLED"


class Unimplemented(ClientError):
    code = "UNIMPLEMENTED"


class Unavailable(ClientError):
    code = "UNAVAILABLE"


class Internal(ClientError):
    code = "INTERNAL"


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_rpc_error(error: grpc.RpcError) -> ClientError:
    """The typed error for a failed call (ClientError itself for other codes)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, ClientError)
    return cls(details or code.name, code.name)
