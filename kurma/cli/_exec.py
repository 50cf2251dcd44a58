"""`kurmactl exec [-i] [-t] POD [--app APP] CMD [ARG...]`: run a command in a running pod.

The Exec call is one bidirectional stream: the first request starts the command, then
come stdin data, window sizes (on SIGWINCH) and the end of stdin; the answers are stdout,
stderr and, last, the exit code, which becomes kurmactl's. With -t and a terminal on stdin,
the terminal is in raw mode for the command's lifetime, so keys reach it unchanged.

Registering the command imports nothing: `kurmactl ps` builds this parser too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

from . import _connect
from ._connect import CommandError, UsageError, session

READ_SIZE = 64 * 1024


def add_command(commands: argparse._SubParsersAction) -> None:
    exec_ = commands.add_parser(
        "exec",
        help="run a command in a running pod's app; exits with its code",
        usage="kurmactl exec [-i] [-t] [--app APP] [-e K=V] POD [--] CMD [ARG...]",
    )
    exec_.add_argument("-i", "--interactive", action="store_true", help="send stdin to it")
    exec_.add_argument("-t", "--tty", action="store_true", help="give it a terminal")
    exec_.add_argument("--app", default="", help="which app (default: the pod's first)")
    exec_.add_argument(
        "-e", "--env", action="append", default=[], metavar="K=V", help="extra environment"
    )
    exec_.add_argument("pod", metavar="POD", help="name or UUID prefix")
    exec_.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD", help="the command")
    _connect.add_flags(exec_)
    exec_.set_defaults(run=run_exec)


def run_exec(args: argparse.Namespace) -> int:
    from ._runspec import parse_env

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("give the command to run: kurmactl exec POD CMD [ARG...]")
    env = parse_env(args.env)
    with session(args) as s:
        return Exec(s, args.pod, args.app, argv, env, args.interactive, args.tty).run()


def require_exec(s: _connect.Session, tty: bool) -> None:
    """`run -it` needs the daemon's Exec; ask it (with a start for no pod) and pass on its
    answer when it has none. A daemon that does have Exec answers about the missing pod."""
    from kurma.api.v1 import pods_pb2_grpc
    from kurma.client import ClientError, pods_pb2

    stub = pods_pb2_grpc.PodsStub(s.channel)
    probe = pods_pb2.ExecRequest(start=pods_pb2.ExecStart(tty=tty))
    try:
        for _ in s.stream(stub.Exec(iter([probe]))):
            pass
    except ClientError as e:
        if e.code == "UNIMPLEMENTED":
            raise CommandError(e.message) from None
    raise CommandError(
        "run -it attaches a terminal to the pod's app, which this kurmactl cannot do yet: "
        "run the pod with -d, then `kurmactl exec -it POD CMD`"
    )


class Exec:
    """One exec call: a request queue fed by the stdin reader and SIGWINCH, and the
    answers written to stdout and stderr as they come."""

    def __init__(
        self,
        s: _connect.Session,
        pod: str,
        app: str,
        argv: list[str],
        env: dict[str, str],
        interactive: bool,
        tty: bool,
    ) -> None:
        self.s = s
        self.pod, self.app, self.argv, self.env = pod, app, argv, env
        self.interactive = interactive
        self.tty = tty
        import queue

        self.requests: queue.Queue[Any] = queue.Queue()

    def run(self) -> int:
        import signal
        import threading

        from kurma.api.v1 import pods_pb2_grpc

        stub = pods_pb2_grpc.PodsStub(self.s.channel)
        raw = _RawTerminal() if self.tty and self.interactive and sys.stdin.isatty() else None
        previous_winch = None
        try:
            if raw is not None:
                raw.enter()
            if self.tty:
                previous_winch = signal.signal(signal.SIGWINCH, lambda *_: self._resize())
            if self.interactive:
                threading.Thread(target=self._pump_stdin, daemon=True).start()
            else:
                self.requests.put(self._message(close_stdin=True))
            return self._answers(self.s.stream(stub.Exec(self._requests())))
        finally:
            self.requests.put(None)  # ends the request iterator grpc may still hold
            if previous_winch is not None:
                signal.signal(signal.SIGWINCH, previous_winch)
            if raw is not None:
                raw.leave()

    def _answers(self, responses: Iterator[Any]) -> int:
        out, err = sys.stdout.buffer, sys.stderr.buffer
        for response in responses:
            kind = response.WhichOneof("response")
            if kind == "stdout":
                out.write(response.stdout)
                out.flush()
            elif kind == "stderr":
                err.write(response.stderr)
                err.flush()
            elif kind == "exit_code":
                return response.exit_code
        raise CommandError("the exec ended without an exit code (kurmad's log may say why)")

    def _requests(self) -> Iterator[Any]:
        from kurma.client import pods_pb2

        rows, cols = _window_size() if self.tty else (0, 0)
        yield pods_pb2.ExecRequest(
            start=pods_pb2.ExecStart(
                pod=self.pod,
                app=self.app,
                argv=self.argv,
                environment=[pods_pb2.KeyValue(key=k, value=v) for k, v in self.env.items()],
                tty=self.tty,
                rows=rows,
                cols=cols,
            )
        )
        while (request := self.requests.get()) is not None:
            yield request

    def _message(self, **fields: Any) -> Any:
        from kurma.client import pods_pb2

        return pods_pb2.ExecRequest(**fields)

    def _pump_stdin(self) -> None:
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except OSError:
                data = b""
            if not data:
                self.requests.put(self._message(close_stdin=True))
                return
            self.requests.put(self._message(stdin=data))

    def _resize(self) -> None:
        from kurma.client import pods_pb2

        rows, cols = _window_size()
        self.requests.put(self._message(resize=pods_pb2.WindowSize(rows=rows, cols=cols)))


def _window_size() -> tuple[int, int]:
    import shutil

    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


class _RawTerminal:
    """stdin's terminal in raw mode, and back (termios is imported only for -it)."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self.saved: Any = None

    def enter(self) -> None:
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd)

    def leave(self) -> None:
        import termios

        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
