"""Entry point of `kurmactl`: parse the command line, run one command, map errors to exit codes.

Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage; `run`,
`exec` and `wait` exit with the app's code.

Only argparse and the command modules' registration run before a command: each command
imports what it needs (grpc and the generated modules for the daemon's commands, the store
for the offline ones) when it runs, so `kurmactl ps` costs little more than importing grpc.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import _completion, _connect, _host, _image, _pki, _pods


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; each command module adds its own subcommands."""
    parser = argparse.ArgumentParser(
        prog="kurmactl", description="Control Kurma: pods, images and the host."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    _connect.add_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _pods.add_commands(commands)
    _image.add_commands(commands)
    _host.add_commands(commands)
    _pki.add_commands(commands)
    _completion.add_command(commands)
    return parser


def parse(argv: list[str], parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse argv, with the `-- CMD ---` groups of run/create lifted out first."""
    from ._runspec import extract_commands

    parser = parser or build_parser()
    argv, commands = extract_commands(argv)
    args = parser.parse_args(argv)
    if commands:
        args.commands = commands
    return args


def main(argv: list[str] | None = None) -> int:
    """Run kurmactl; never lets an expected error escape as a traceback."""
    args = parse(sys.argv[1:] if argv is None else argv)
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
