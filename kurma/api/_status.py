"""Every failure of a call becomes a gRPC status with a message a person can act on.

One table (`_RULES`) maps Kurma's errors (kurma/errors.py, the runtime's PodNotFound and
PodStateError, the launcher's failures) to status codes; `rpc` wraps each servicer method
(unary or streaming) so that nothing else has to think about it, and logs one line per call.
Servicers raise `ApiError` for what only the API layer knows (a missing field, an
unimplemented method).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from ..errors import (
    AmbiguousImage,
    ArchiveError,
    DependencyError,
    DigestMismatch,
    DownloadInterrupted,
    ImageInUse,
    ImageNotFound,
    InvalidDigest,
    InvalidReference,
    KurmaError,
    NetworkNotFound,
    PlatformNotFound,
    RegistryAuthFailed,
    RegistryNotFound,
    RegistryUnreachable,
    StoreError,
    ValidationError,
)
from ..runtime import NotPermitted, PodNotFound, PodStateError
from ..runtime.launcher import LauncherError
from ..store import StoreFull
from ._logfmt import fields

log = logging.getLogger("kurma.api.rpc")

Code = grpc.StatusCode


class ApiError(Exception):
    """A failure the API layer itself decides: its status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unimplemented(what_is_missing: str) -> ApiError:
    return ApiError(Code.UNIMPLEMENTED, what_is_missing)


# (error type, code, hint appended to the error's own message); the first match wins.
_RULES: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (PodNotFound, Code.NOT_FOUND, "list pods with `kurmactl ps -a`"),
    (PodStateError, Code.FAILED_PRECONDITION, ""),
    (NotPermitted, Code.PERMISSION_DENIED, ""),
    (ValidationError, Code.INVALID_ARGUMENT, ""),
    (InvalidReference, Code.INVALID_ARGUMENT, ""),
    (InvalidDigest, Code.INVALID_ARGUMENT, ""),
    (PlatformNotFound, Code.NOT_FOUND, "pick one with --platform"),
    (DigestMismatch, Code.DATA_LOSS, "nothing was stored; try again, or ask the registry's owner"),
    (ArchiveError, Code.INVALID_ARGUMENT, "not a usable image archive"),
    (ImageNotFound, Code.NOT_FOUND, "import it first (`kurmactl image import`)"),
    (AmbiguousImage, Code.INVALID_ARGUMENT, ""),
    (ImageInUse, Code.FAILED_PRECONDITION, "destroy the pods using it first"),
    (DependencyError, Code.FAILED_PRECONDITION, "import its dependencies first"),
    (StoreFull, Code.RESOURCE_EXHAUSTED, ""),
    (RegistryNotFound, Code.NOT_FOUND, ""),
    (RegistryAuthFailed, Code.PERMISSION_DENIED, "check the credentials for that registry"),
    (DownloadInterrupted, Code.UNAVAILABLE, "pull again"),
    (RegistryUnreachable, Code.UNAVAILABLE, ""),
    (NetworkNotFound, Code.NOT_FOUND, "list them with `kurmactl network ls`"),
    (StoreError, Code.FAILED_PRECONDITION, ""),
    (KurmaError, Code.FAILED_PRECONDITION, ""),
    (TimeoutError, Code.DEADLINE_EXCEEDED, ""),
    (LauncherError, Code.UNAVAILABLE, "the pod launcher failed; kurmad's log has details"),
    (NotImplementedError, Code.UNIMPLEMENTED, ""),
)


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised while serving a call."""
    if isinstance(error, ApiError):
        return error.code, error.message
    for kind, code, hint in _RULES:
        if isinstance(error, kind):
            text = str(error) or type(error).__name__
            return code, f"{text} ({hint})" if hint else text
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return Code.INTERNAL, f"{error.strerror or error}{where} (kurmad's log has details)"
    return (
        Code.INTERNAL,
        f"internal error: {type(error).__name__}: {error} (kurmad's log has the traceback)",
    )


F = TypeVar("F", bound=Callable[..., Any])


def rpc(method: F) -> F:
    """Serve `method(self, request, context)` with errors mapped and one log line per call."""
    name = method.__qualname__.replace("Servicer.", "/")

    def finish(context: grpc.ServicerContext, started: float, error: BaseException | None) -> None:
        ms = round((time.monotonic() - started) * 1000, 1)
        if error is None:
            log.debug("call", extra=fields(rpc=name, code="OK", ms=ms))
            return
        code, message = status_of(error)
        level = logging.ERROR if code is Code.INTERNAL else logging.INFO
        log.log(
            level,
            "call failed",
            exc_info=error if code is Code.INTERNAL else None,
            extra=fields(rpc=name, code=code.name, ms=ms, error=message),
        )
        context.abort(code, message)

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            try:
                yield from method(self, request, context)
            except Exception as e:
                finish(context, started, e)
            else:
                finish(context, started, None)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        started = time.monotonic()
        try:
            result = method(self, request, context)
        except Exception as e:
            finish(context, started, e)
            raise AssertionError("context.abort returned") from e  # abort always raises
        finish(context, started, None)
        return result

    return unary  # type: ignore[return-value]
