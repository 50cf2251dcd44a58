"""Entry point of `kurmactl`: parse the command line, run one command, map errors to exit codes.

Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage; `run`,
`exec` and `wait` exit with the app's code.

Only argparse and the command modules' registration run before a command: each command
imports what it needs (grpc and the generated modules for the daemon's commands, the store
for the offline ones) when it runs, so `kurmactl ps` costs little more than importing grpc.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from typing import Any

from . import _connect

# Which module registers each command. Only the module of the command being run is
# imported (every one for `kurmactl --help` or an unknown command): start-up time is what a
# person feels, and `kurmactl ps` should cost little more than importing grpc.
COMMAND_MODULES = {
    **dict.fromkeys(
        ("run", "create", "start", "ps", "inspect", "stop", "rm", "logs", "wait", "stats"),
        "_pods",
    ),
    "exec": "_pods",
    "image": "_image",
    **dict.fromkeys(
        ("host", "events", "trust", "service", "reboot", "poweroff", "version"), "_host"
    ),
    **dict.fromkeys(("pull", "login", "logout"), "_registry"),
    "network": "_network",
    "pki": "_pki",
    "completion": "_completion",
}
_REGISTER = {"_completion": "add_command"}  # the rest: add_commands


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command tree: only `command`'s module's subcommands when it is a known command,
    else all of them (help, completion, and the error for an unknown command)."""
    parser = argparse.ArgumentParser(
        prog="kurmactl", description="Control Kurma: pods, images and the host."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    _connect.add_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    target: Any = commands
    if command in COMMAND_MODULES:
        names = [COMMAND_MODULES[command]]
        target = _OnlyCommand(commands, command)
    else:
        names = list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in names:
        module = importlib.import_module(f".{name}", __package__)
        getattr(module, _REGISTER.get(name, "add_commands"))(target)
    return parser


class _OnlyCommand:
    """The subparsers action as a module's registration sees it, building only `name`'s
    parser: its sibling commands go to a sink that accepts every call and keeps nothing
    (an argparse parser costs about a millisecond to build; `ps` needs one, not twelve)."""

    def __init__(self, commands: argparse._SubParsersAction, name: str) -> None:
        self.commands = commands
        self.name = name

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self.name or self.name in kwargs.get("aliases", ()):
            return self.commands.add_parser(name, **kwargs)
        return _SINK


class _Sink:
    """Answers any method call with itself: a parser, group or action nobody will use."""

    def __getattr__(self, attr: str) -> Any:
        return self._absorb

    def _absorb(self, *args: Any, **kwargs: Any) -> _Sink:
        return self


_SINK = _Sink()


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse argv, with the `-- CMD ---` groups of run/create lifted out first."""
    index = _connect.subcommand_index(argv)
    command = argv[index] if index is not None else None
    commands: list[list[str]] = []
    if command in ("run", "create"):
        from ._runspec import extract_commands

        argv, commands = extract_commands(argv)
    args = build_parser(command).parse_args(argv)
    if commands:
        args.commands = commands
    return args


def main(argv: list[str] | None = None) -> int:
    """Run kurmactl on `argv`, or as the program on sys.argv: then it ends the process."""
    if argv is not None:
        return run(argv)
    code = run(sys.argv[1:])
    # As the program, end here: the interpreter's teardown of grpc's modules and threads
    # costs ~30 ms, a tenth of `kurmactl ps`, for nothing (kurmad ends the same way).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


def run(argv: list[str]) -> int:
    """Parse and run one command; never lets an expected error escape as a traceback."""
    args = parse(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from kurma.errors import KurmaError

    try:
        return int(args.run(args) or 0)
    except _connect.CommandError as e:
        print(f"kurmactl: {e.message}", file=sys.stderr)
        return e.code
    except KurmaError as e:
        print(f"kurmactl: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `kurmactl logs POD | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        print(f"kurmactl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
