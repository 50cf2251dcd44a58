"""`kurmactl pull`, `login`, `logout`: images from OCI registries, as docker users expect.

Credentials stay on the client's side, as docker keeps them: `login` checks them against
the registry (through kurmad, which reaches it) and writes them to `--authfile` (default
`$XDG_CONFIG_HOME/kurma/auth.json`, docker's config.json form, mode 0600); `pull` reads
them from there (then from docker's own `~/.docker/config.json`) and passes them in the
call for the reference's registry only.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from . import _connect


def default_authfile() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kurma" / "auth.json"


def docker_config() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def add_pull_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("reference", metavar="IMAGE", help="[REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]")
    cmd.add_argument("--platform", help="os/arch[/variant] of an index's image (linux/amd64)")
    cmd.add_argument("--authfile", type=Path, help="credentials file (default: kurmactl login's)")
    cmd.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    cmd.add_argument(
        "--progress",
        choices=["auto", "bar", "plain", "none"],
        default="auto",
        help="per-layer progress on stderr: bars on a terminal, plain lines otherwise (auto)",
    )
    _connect.add_flags(cmd)
    cmd.set_defaults(run=run_pull)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `pull`, `login` and `logout`."""
    pull = commands.add_parser("pull", help="pull an image from a registry (= image pull)")
    add_pull_flags(pull)

    login = commands.add_parser("login", help="check and keep credentials for a registry")
    login.add_argument("registry", metavar="REGISTRY", help="HOST[:PORT] (docker.io by default)")
    login.add_argument("-u", "--username", help="user name (asked on a terminal otherwise)")
    login.add_argument("-p", "--password", help="password (prefer --password-stdin)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument("--authfile", type=Path, help="where to keep them (default: %(default)s)")
    login.add_argument(
        "--check-with",
        metavar="IMAGE",
        help="an image to try the credentials on before keeping them",
    )
    _connect.add_flags(login)
    login.set_defaults(run=run_login)

    logout = commands.add_parser("logout", help="forget the credentials of a registry")
    logout.add_argument("registry", metavar="REGISTRY")
    logout.add_argument("--authfile", type=Path)
    logout.set_defaults(run=run_logout)


def credentials_for(registry: str, authfile: Path | None) -> Any:
    """The credentials the client keeps for `registry`, or None."""
    from kurma.registry import DockerConfig

    for path in (authfile or default_authfile(), docker_config()):
        found = DockerConfig(path).get(registry)
        if found is not None:
            return found
        if authfile is not None:
            break  # an explicit file is the only place looked
    return None


def run_pull(args: argparse.Namespace) -> int:
    from kurma.api.v1 import images_pb2_grpc
    from kurma.client import images_pb2
    from kurma.oci import parse_reference

    from ._pullprogress import LayerBars

    ref = parse_reference(args.reference)
    creds = credentials_for(ref.domain, args.authfile)
    request = images_pb2.FetchRequest(
        name=args.reference,
        platform=args.platform or "",
        username=creds.username if creds else "",
        password=creds.password if creds else "",
    )
    bars = (
        None
        if args.quiet or args.progress == "none"
        else LayerBars(args.reference, tty={"bar": True, "plain": False}.get(args.progress))
    )
    last = None
    with _connect.session(args) as s:
        stub = images_pb2_grpc.ImagesStub(s.channel)
        try:
            for last in s.stream(stub.Fetch(request)):
                if bars is not None:
                    bars.update(last)
        finally:
            if bars is not None:
                bars.finish()
    if last is None or not last.HasField("image"):
        raise _connect.CommandError("the pull ended without an image")
    image = last.image
    if args.quiet:
        print(image.id)
        return 0
    note = "" if last.created else " (already present)"
    pulled = str(ref.with_default_tag())
    shown = pulled if pulled in image.references else (image.references or [image.name])[0]
    print(f"{image.id}  {shown}{note}")
    print(f"Digest: {image.digest}", file=sys.stderr)
    return 0


def run_login(args: argparse.Namespace) -> int:
    from kurma.registry import DockerConfig

    username = args.username or (input("Username: ") if sys.stdin.isatty() else "")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        raise _connect.CommandError("give the password with --password-stdin (or -p)")
    if not username or not password:
        raise _connect.CommandError("a user name and a password are both needed")
    if args.check_with:
        _check_login(args, username, password)
    path = args.authfile or default_authfile()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    DockerConfig(path).set(args.registry, username, password)
    print(f"Login kept for {args.registry} in {path}")
    return 0


def _check_login(args: argparse.Namespace, username: str, password: str) -> None:
    """Pull the manifest of --check-with through kurmad with these credentials: a wrong
    password fails here, naming the registry, before anything is written."""
    from kurma.api.v1 import images_pb2_grpc
    from kurma.client import images_pb2

    request = images_pb2.FetchRequest(name=args.check_with, username=username, password=password)
    with _connect.session(args) as s:
        stub = images_pb2_grpc.ImagesStub(s.channel)
        for _ in s.stream(stub.Fetch(request)):
            pass


def run_logout(args: argparse.Namespace) -> int:
    from kurma.registry import DockerConfig

    path = args.authfile or default_authfile()
    if not DockerConfig(path).remove(args.registry):
        raise _connect.CommandError(f"not logged in to {args.registry} (in {path})")
    print(f"Removed login credentials for {args.registry}")
    return 0
