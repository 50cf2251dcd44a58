"""Entry point of `kurmactl`: parse the command line, run one command, map errors to exit codes.

Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import _image, _pki


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; each command module adds its own subcommands."""
    parser = argparse.ArgumentParser(
        prog="kurmactl", description="Control Kurma: images, pods and the host."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _image.add_commands(commands)
    _pki.add_commands(commands)
    version = commands.add_parser("version", help="print kurmactl's version")
    version.set_defaults(run=_print_version)
    return parser


def _print_version(args: argparse.Namespace) -> int:
    from kurma import __version__

    print(f"kurmactl {__version__}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run kurmactl; never lets an expected error escape as a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from kurma.errors import KurmaError

    try:
        return int(args.run(args) or 0)
    except KurmaError as e:
        print(f"kurmactl: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"kurmactl: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
