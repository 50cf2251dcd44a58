"""`kurmactl network ls|inspect`: the CNI networks kurmad's pods may join."""

from __future__ import annotations

import argparse
import json

from . import _connect
from ._output import table


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `network` and its subcommands."""
    network = commands.add_parser("network", help="the CNI networks pods may join")
    sub = network.add_subparsers(dest="network_command", metavar="SUBCOMMAND", required=True)
    ls = sub.add_parser("ls", help="list the networks", aliases=["list"])
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    _connect.add_flags(ls)
    ls.set_defaults(run=run_list)
    inspect = sub.add_parser("inspect", help="show a network's configuration (JSON)")
    inspect.add_argument("names", nargs="+", metavar="NETWORK")
    _connect.add_flags(inspect)
    inspect.set_defaults(run=run_inspect)


def _networks(args: argparse.Namespace) -> list:
    from kurma.api.v1 import host_pb2, host_pb2_grpc

    with _connect.session(args) as s:
        stub = host_pb2_grpc.HostStub(s.channel)
        return list(s.unary(stub.Networks, host_pb2.NetworksRequest()).networks)


def run_list(args: argparse.Namespace) -> int:
    networks = _networks(args)
    if args.quiet:
        for n in networks:
            print(n.name)
        return 0
    rows = [(n.name, " ".join(n.plugins), "yes" if n.default else "", n.file) for n in networks]
    print(table(("NAME", "PLUGINS", "DEFAULT", "FILE"), rows))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    by_name = {n.name: n for n in _networks(args)}
    docs = []
    for name in args.names:
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise _connect.CommandError(f"no network {name!r} (kurmad has: {known})")
        n = by_name[name]
        docs.append({"name": n.name, "default": n.default, "file": n.file,
                     "config": json.loads(n.config_json)})  # fmt: skip
    print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    return 0
