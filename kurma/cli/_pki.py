"""`kurmactl pki ...`: the CA, kurmad's server certificate and role-carrying client certificates
for the API's TCP listener (mutual TLS only). Offline: files in, files out, no daemon.

    kurmactl pki init  --dir DIR [--force] [--common-name CN] [--days N]
    kurmactl pki issue server --dir DIR [--out OUT] --host NAME... --ip ADDR... [--days N] [--force]
    kurmactl pki issue client --dir DIR [--out OUT] --name NAME --role reader|operator|admin
                              [--days N] [--force]

`--out` defaults to the CA directory. Each command prints the files it wrote.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kurma.api._pki import CertPaths

# Kept literal so that building the parser imports nothing from kurma.api (test_pki checks it
# matches kurma.api._pki.Role).
ROLE_CHOICES = ("reader", "operator", "admin")
DEFAULT_PORT = 7443

ROLES_HELP = """roles (kurma.api._policy.TABLE decides, for certificates and pods' sockets alike):
  reader    read only: list, inspect, logs, events, wait, stats.
  operator  pods and images within the operator policy: no os/linux/privileged, no host
            namespaces, no host devices, no capabilities beyond the default set, no seccomp
            off or loosened, oom-score-adj >= 0, host/api-access at most subtree, and host
            volumes only under the prefixes kurmad.yml lists in operator_host_volumes
            (default: none; symlinks resolved). Start and exec only pods within that
            policy; import images, but not under the names system services run (nor
            kurma.io/...); restart services. No trust, no reboot or power off.
  admin     everything, like root on kurmad's unix socket: privileged pods, any volume,
            host-read/host api-access, trust, reboot and power off."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `pki` and its subcommands."""
    pki = commands.add_parser(
        "pki", help="make the CA and the certificates of the API's mutual-TLS listener"
    )
    sub = pki.add_subparsers(dest="pki_command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser("init", help="make a CA (ca.crt, ca.key) in a directory")
    init.add_argument("--dir", type=Path, required=True, help="the CA directory (made 0700)")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.add_argument("--common-name", default="Kurma CA", help="the CA's subject CN")
    init.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    init.set_defaults(run=run_init)

    issue = sub.add_parser("issue", help="issue a server or client certificate from the CA")
    kinds = issue.add_subparsers(dest="pki_kind", metavar="KIND", required=True)

    server = kinds.add_parser(
        "server", help="kurmad's certificate (server.crt, server.key, ca.crt in --out)"
    )
    client = kinds.add_parser(
        "client",
        help="a client certificate with a role (NAME.crt, NAME.key, ca.crt in --out)",
        epilog=ROLES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for cmd in (server, client):
        cmd.add_argument("--dir", type=Path, required=True, help="the CA directory")
        cmd.add_argument("--out", type=Path, help="where to write (default: the CA directory)")
        cmd.add_argument("--days", type=int, default=365, help="validity (default 365)")
        cmd.add_argument("--force", action="store_true", help="replace existing files")
    server.add_argument(
        "--host",
        dest="hosts",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="a DNS name clients connect to (repeatable)",
    )
    server.add_argument(
        "--ip",
        dest="ips",
        action="extend",
        nargs="+",
        default=[],
        metavar="ADDR",
        help="an IP address clients connect to (repeatable)",
    )
    server.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the port of the kurmad line it prints (default {DEFAULT_PORT})",
    )
    server.set_defaults(run=run_issue_server)
    client.add_argument("--name", required=True, help="who holds it (the subject CN, file names)")
    client.add_argument(
        "--role", required=True, choices=ROLE_CHOICES, help="what it may do (see below)"
    )
    client.set_defaults(run=run_issue_client)


def _mode(path: Path) -> str:
    return f"{path.stat().st_mode & 0o777:04o}"


def _print_written(paths, *, ca_is_cert: bool = False) -> None:
    print(f"wrote {paths.cert} (certificate, {_mode(paths.cert)})")
    print(f"wrote {paths.key} (private key, {_mode(paths.key)})")
    if not ca_is_cert:
        print(f"wrote {paths.ca} (CA certificate, {_mode(paths.ca)})")


def run_init(args: argparse.Namespace) -> int:
    from kurma.api._pki import init_ca

    paths = init_ca(args.dir, common_name=args.common_name, days=args.days, force=args.force)
    _print_written(paths, ca_is_cert=True)
    directory = shlex.quote(str(Path(args.dir).absolute()))
    print(f"next: kurmactl pki issue server --dir {directory} --host NAME --ip ADDR")
    return 0


def run_issue_server(args: argparse.Namespace) -> int:
    from kurma.api._pki import issue_server
    from kurma.errors import ValidationError

    if not args.hosts and not args.ips:
        raise ValidationError("--host/--ip", "give at least one --host NAME or --ip ADDR")
    if not 1 <= args.port <= 65535:
        raise ValidationError("--port", f"must be in 1..65535, not {args.port}")
    paths = issue_server(
        args.dir, args.out or args.dir, args.hosts, args.ips, args.days, force=args.force
    )
    _print_written(paths)
    names = ", ".join([*args.hosts, *args.ips])
    print(f"server certificate for {names}; start kurmad with:")
    print("  " + kurmad_line(paths, args.ips, args.port))
    print("or put in /etc/kurma/kurmad.yml:")
    for key, value in kurmad_settings(paths, args.ips, args.port).items():
        print(f"  {key}: {value}")
    return 0


def kurmad_settings(paths: CertPaths, ips: list[str], port: int) -> dict[str, str]:
    """kurmad's TCP listener settings for a server certificate: absolute paths, and the
    first --ip as the address (0.0.0.0, every address, with host names only)."""
    address = ips[0] if ips else "0.0.0.0"
    host = f"[{address}]" if ":" in address else address
    return {
        "listen": f"{host}:{port}",
        "tls_cert": str(Path(paths.cert).absolute()),
        "tls_key": str(Path(paths.key).absolute()),
        "tls_ca": str(Path(paths.ca).absolute()),
    }


def kurmad_line(paths: CertPaths, ips: list[str], port: int) -> str:
    """`kurmad --listen ... --tls-cert ... --tls-key ... --tls-ca ...`, quoted for a shell."""
    words = ["kurmad"]
    for key, value in kurmad_settings(paths, ips, port).items():
        words += ["--" + key.replace("_", "-"), value]
    return shlex.join(words)


def run_issue_client(args: argparse.Namespace) -> int:
    from kurma.api._pki import issue_client

    paths = issue_client(
        args.dir, args.out or args.dir, args.name, args.role, args.days, force=args.force
    )
    _print_written(paths)
    print(
        f"client {args.name} ({args.role}): kurmactl --host tcp://HOST:PORT "
        f"--cert {paths.cert} --key {paths.key} --ca {paths.ca} ..."
    )
    return 0
