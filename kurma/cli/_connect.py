"""How kurmactl reaches kurmad: the --host/--cert/--key/--ca flags, one connection per
command, and the daemon's errors turned into one-line messages.

Importing this module is cheap (argparse and os only); grpc and the generated modules are
imported when a command actually connects, so `kurmactl image build` never pays for them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from kurma.client import Client, ClientError

EXIT_FAILED, EXIT_USAGE = 1, 2


class CommandError(Exception):
    """A command failed in a way the user can act on; main() prints `kurmactl: <message>`
    and exits with `code` (1: the command failed, 2: bad usage)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class UsageError(CommandError):
    """The command line is wrong in a way argparse cannot see (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def host_url(text: str) -> str:
    """argparse type of --host: `unix:///path`, `unix:/path`, `/path` or `tcp://host:port`."""
    if text.startswith("unix:"):
        path = text[len("unix:") :].lstrip("/")
        if path:
            return text
    elif text.startswith("/"):
        return text
    elif text.startswith("tcp://"):
        host, sep, port = text[len("tcp://") :].rpartition(":")
        if host and sep and port.isdigit():
            return text
    raise argparse.ArgumentTypeError(f"{text!r}: give unix:///PATH or tcp://HOST:PORT")


def display(target: str) -> str:
    """A target as people read it: plain socket paths become `unix:///path`."""
    if target.startswith("/"):
        return f"unix://{target}"
    if target.startswith("unix:") and not target.startswith("unix://"):
        return "unix://" + target[len("unix:") :]
    return target


def socket_path(target: str) -> str | None:
    """The filesystem path of a unix target, None for tcp."""
    if target.startswith("/"):
        return target
    if target.startswith("unix:"):
        return "/" + target[len("unix:") :].lstrip("/")
    return None


# The top-level options that take a value (ours), to find the subcommand in argv.
VALUED_TOP_OPTIONS = ("-H", "--host", "--cert", "--key", "--ca")


def subcommand_index(argv: list[str]) -> int | None:
    """Where the subcommand is in argv (the first word that is not a top-level option or
    an option's value), None when there is none."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in VALUED_TOP_OPTIONS:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return i
    return None


def add_flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """--host and the TLS files. On subcommands the defaults are suppressed so that a value
    given before the subcommand (`kurmactl --host X ps`) is not reset by the subparser."""
    default: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("connection")
    group.add_argument(
        "-H",
        "--host",
        type=host_url,
        default=default,
        metavar="URL",
        help="kurmad to talk to: unix:///PATH or tcp://HOST:PORT (default: $KURMA_HOST, "
        "then /run/kurma/api.sock inside a pod, then /run/kurma/kurmad.sock)",
    )
    group.add_argument("--cert", default=default, metavar="FILE", help="client certificate (tcp)")
    group.add_argument("--key", default=default, metavar="FILE", help="its private key (tcp)")
    group.add_argument("--ca", default=default, metavar="FILE", help="the CA of kurmad (tcp)")


@dataclass
class Session:
    """One connection: the typed client, plus the channel for the calls it has no method
    for yet (exec, trust, services, power, export, fetch)."""

    client: Client
    channel: grpc.Channel
    target: str

    def unary(self, method: Any, request: Any) -> Any:
        """Call a unary method of a raw stub; ClientError on failure, like the client."""
        import grpc

        from kurma.client import ClientError

        try:
            return method(request)
        except grpc.RpcError as e:
            raise ClientError(e.details() or e.code().name, e.code().name) from None

    def stream(self, call: Any) -> Iterator[Any]:
        """Iterate a raw server stream; ClientError on failure."""
        from kurma.client import Stream

        return iter(Stream(call))


@contextmanager
def session(args: argparse.Namespace) -> Iterator[Session]:
    """Connect as the flags say; every ClientError inside becomes a CommandError."""
    from kurma.client import ClientError, default_target

    target = getattr(args, "host", None) or default_target()
    shown = display(target)
    path = socket_path(target)
    if path is not None and not os.path.exists(path):
        raise CommandError(f"cannot reach kurmad at {shown}: is it running?")
    channel = _channel(target, args)
    from kurma.client import Client

    client = Client(channel, target)
    try:
        yield Session(client, channel, target)
    except ClientError as e:
        raise CommandError(_tls_problem(e, target, args) or describe(e, shown)) from None
    finally:
        client.close()


def _channel(target: str, args: argparse.Namespace) -> grpc.Channel:
    """A channel that does not wait: the first call fails fast when nobody answers."""
    import grpc

    path = socket_path(target)
    if path is not None:
        return grpc.insecure_channel(f"unix:{path}")
    cert, key, ca = (getattr(args, name, None) for name in ("cert", "key", "ca"))
    if not (cert and key and ca):
        raise UsageError(f"{target} is a TCP listener (mutual TLS): give --cert, --key and --ca")
    try:
        files = [_read(ca), _read(key), _read(cert)]
    except OSError as e:
        raise CommandError(f"cannot read {e.filename}: {e.strerror}") from None
    address = target[len("tcp://") :]
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(*files))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tls_problem(error: ClientError, target: str, args: argparse.Namespace) -> str | None:
    """For a tcp:// target that failed to connect: which certificate check failed."""
    if error.code != "UNAVAILABLE" or not target.startswith("tcp://"):
        return None
    from kurma.client._tlsdiag import diagnose

    reason = diagnose(target[len("tcp://") :], args.cert, args.key, args.ca)
    return f"cannot connect to kurmad at {target}: {reason}" if reason else None


def describe(error: ClientError, shown: str) -> str:
    """The one-line message of a failed call. A call that found nobody listening says so
    in words; everything else is the daemon's own message (it names what to do)."""
    if error.code == "UNAVAILABLE" and "failed to connect" in error.message:
        if "Connection refused" in error.message or "No such file" in error.message:
            return f"cannot reach kurmad at {shown}: is it running?"
        reason = error.message.rpartition("last error: ")[2] or error.message
        return f"cannot reach kurmad at {shown}: {reason}"
    return error.message
