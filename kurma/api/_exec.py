"""Pods.Exec: a command in a running app, its stdio carried over one bidirectional stream.

The first request carries `start`. With `tty` the runtime opens a pseudo-terminal inside
the pod (from its own devpts, so the command sees /dev/pts/N), gives the command its slave as
stdin/stdout/stderr and controlling terminal; the daemon sizes it from the request and on
every `resize`. Without, three pipes. A thread feeds the client's stdin
(and resizes) to the command; the call's own thread sends what the command writes, then
its exit code as the last message. A client that goes away closes the terminal or the
pipes, which ends an interactive command (SIGHUP, or EOF and EPIPE).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import struct
import termios
import threading
from collections.abc import Iterator

import grpc

from ..runtime import Runtime
from ._status import ApiError, Code
from .v1 import pods_pb2

_CHUNK = 32768


def set_window_size(fd: int, rows: int, cols: int) -> None:
    if rows and cols:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def serve_exec(
    runtime: Runtime,
    pod: str,
    start: pods_pb2.ExecStart,
    requests: Iterator[pods_pb2.ExecRequest],
    context: grpc.ServicerContext,
) -> Iterator[pods_pb2.ExecResponse]:
    """Run `start` in pod `pod` (already resolved for the caller) and relay its stdio."""
    if not start.argv:
        raise ApiError(Code.INVALID_ARGUMENT, "exec: start.argv is empty: name a command")
    env = [(kv.key, kv.value) for kv in start.environment]
    if start.tty:  # the terminal is opened inside the pod, from its own devpts
        proc = runtime.exec_in_pod(
            pod,
            start.app or None,
            list(start.argv),
            stdio=None,
            env=env,
            tty=True,
            size=(start.rows, start.cols),
        )
        assert proc.terminal is not None
        ours = {"stdin": proc.terminal, "out": proc.terminal}
    else:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ours = {"stdin": in_w, "out": out_r, "err": err_r}
        theirs = (in_r, out_w, err_w)
        try:
            proc = runtime.exec_in_pod(
                pod, start.app or None, list(start.argv), stdio=theirs, env=env
            )
        except BaseException:
            for fd in (*ours.values(), *theirs):
                os.close(fd)
            raise
        for fd in theirs:
            os.close(fd)
    feeder = threading.Thread(
        target=_feed, args=(requests, ours["stdin"], start.tty), daemon=True, name="exec-stdin"
    )
    feeder.start()
    try:
        yield from _relay(ours, start.tty, context)
        runtime.wait_exec(proc)
        yield pods_pb2.ExecResponse(exit_code=proc.exit_code or 0)
    finally:
        for name, fd in ours.items():
            if name != "stdin" or not start.tty:  # the terminal's master is closed once
                with contextlib.suppress(OSError):
                    os.close(fd)


def _relay(
    ours: dict[str, int], tty: bool, context: grpc.ServicerContext
) -> Iterator[pods_pb2.ExecResponse]:
    """Send stdout/stderr until the command's side is closed (EOF, or EIO on a terminal)."""
    with selectors.DefaultSelector() as sel:
        for name in ("out", "err"):
            if name in ours:
                sel.register(ours[name], selectors.EVENT_READ, name)
        while sel.get_map():
            for key, _ in sel.select(1.0):
                try:
                    data = os.read(key.fd, _CHUNK)
                except OSError:  # EIO: every slave of the terminal is closed
                    data = b""
                if not data:
                    sel.unregister(key.fd)
                elif key.data == "err":
                    yield pods_pb2.ExecResponse(stderr=data)
                else:
                    yield pods_pb2.ExecResponse(stdout=data)
            if not context.is_active():
                return


def _feed(requests: Iterator[pods_pb2.ExecRequest], fd: int, tty: bool) -> None:
    """Client → command: stdin bytes, resizes, the end of stdin."""
    try:
        for request in requests:
            kind = request.WhichOneof("request")
            if kind == "stdin":
                os.write(fd, request.stdin)
            elif kind == "resize" and tty:
                set_window_size(fd, request.resize.rows, request.resize.cols)
            elif kind == "close_stdin":
                break
    except (OSError, grpc.RpcError, ValueError):
        pass  # the command or the client went away
    finally:
        if tty:
            with contextlib.suppress(OSError):
                os.write(fd, b"\x04")  # end of input at the terminal's line discipline
        else:
            with contextlib.suppress(OSError):
                os.close(fd)
