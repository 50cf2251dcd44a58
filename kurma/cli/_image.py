"""`kurmactl image ...`: build, validate, and the offline store commands (`--state-dir`).

The offline commands call the same store code the daemon uses, so the initrd's preloaded
store is built exactly as a running system would import it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from ._output import human_size, table


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `image` and its subcommands."""
    image = commands.add_parser("image", help="build, validate, import and manage images")
    sub = image.add_subparsers(dest="image_command", metavar="SUBCOMMAND", required=True)

    build = sub.add_parser("build", help="pack a rootfs directory and a manifest into an .aci")
    build.add_argument("rootfs", type=Path, help="directory that becomes rootfs/")
    build.add_argument("--manifest", type=Path, required=True, help="image manifest (JSON)")
    build.add_argument("-o", "--output", type=Path, required=True, help="the .aci to write")
    build.add_argument(
        "--compression", choices=["gzip", "bzip2", "xz", "zstd", "none"], default="gzip"
    )
    build.add_argument("--mtime", type=int, help="set every entry's mtime (seconds since epoch)")
    build.add_argument("--owner", help="set every entry's owner, UID:GID")
    build.add_argument(
        "--reproducible",
        action="store_true",
        help="same as --mtime $SOURCE_DATE_EPOCH (or 0) --owner 0:0",
    )
    build.set_defaults(run=run_build)

    validate = sub.add_parser("validate", help="validate an .aci, image manifest or pod manifest")
    validate.add_argument("files", type=Path, nargs="+", metavar="FILE")
    validate.set_defaults(run=run_validate)

    for name, helptext, func, aliases in (
        ("import", "import .aci files into a store", run_import, []),
        ("ls", "list the images in a store", run_list, ["list"]),
        ("inspect", "show an image's record and manifest", run_inspect, []),
        ("rm", "delete images from a store", run_remove, []),
    ):
        cmd = sub.add_parser(name, help=helptext, aliases=aliases)
        cmd.add_argument(
            "--state-dir",
            type=Path,
            required=True,
            help="work on this state directory directly, without a daemon",
        )
        if name == "import":
            cmd.add_argument("files", nargs="+", metavar="ACI", help="an .aci file, or - for stdin")
        elif name in ("inspect", "rm"):
            cmd.add_argument("refs", nargs="+", metavar="IMAGE", help="image ID, short ID or name")
        else:
            cmd.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
            cmd.add_argument("-o", "--output", choices=["table", "json"], default="table")
        cmd.set_defaults(run=func)


def run_build(args: argparse.Namespace) -> int:
    from kurma.aci import Compression, build_aci, parse_image_manifest

    manifest_bytes = args.manifest.read_bytes()
    parse_image_manifest(manifest_bytes)  # refuse to build an invalid image
    if not args.rootfs.is_dir():
        raise NotADirectoryError(f"rootfs {args.rootfs} is not a directory")
    mtime, owner = args.mtime, _parse_owner(args.owner) if args.owner else None
    if args.reproducible:
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) if mtime is None else mtime
        owner = owner or (0, 0)
    compression = Compression[args.compression.upper()]
    image_id = build_aci(
        args.rootfs, manifest_bytes, args.output, compression=compression, mtime=mtime, owner=owner
    )
    print(image_id)
    return 0


def _parse_owner(text: str) -> tuple[int, int]:
    from kurma.errors import ValidationError

    uid, sep, gid = text.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise ValidationError("--owner", f"{text!r} is not UID:GID (numbers)")
    return int(uid), int(gid)


def run_validate(args: argparse.Namespace) -> int:
    from kurma.errors import KurmaError

    failed = 0
    for path in args.files:
        try:
            kind = validate_file(path)
        except (KurmaError, OSError) as e:
            print(f"{path}: invalid: {e}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: valid {kind}")
    return 1 if failed else 0


def validate_file(path: Path) -> str:
    """Validate one file and say what it was: a manifest (by acKind) or an ACI."""
    from kurma.aci import parse_image_manifest, parse_manifest, unpack_aci

    with open(path, "rb") as f:
        head = f.read(512).lstrip()
    if head.startswith(b"{"):
        manifest = parse_manifest(path.read_bytes())
        return type(manifest).__name__
    with tempfile.TemporaryDirectory(prefix="kurma-validate-") as tmp:
        unpacked = unpack_aci(path, Path(tmp) / "image")
        parse_image_manifest(unpacked.manifest_bytes)
    return f"ACI {unpacked.image_id}"


def _store(args: argparse.Namespace):
    from kurma.store import ImageStore

    return ImageStore(args.state_dir)


def run_import(args: argparse.Namespace) -> int:
    store = _store(args)
    for path in args.files:
        result = store.import_image(sys.stdin.buffer if path == "-" else Path(path))
        rec = result.record
        note = "" if result.created else " (already present)"
        print(f"{rec.image_id}  {rec.name}{note}")
        for skipped in rec.skipped:
            print(f"  skipped: {skipped}", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    records = _store(args).list()
    if args.quiet:
        print("\n".join(r.image_id for r in records))
    elif args.output == "json":
        print(json.dumps([json.loads(r.info_json()) for r in records], indent=2))
    else:
        rows = [
            (
                r.image_id[:39],
                r.name,
                r.version or "-",
                human_size(r.size),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.imported_at)),
            )
            for r in records
        ]
        print(table(("ID", "NAME", "VERSION", "SIZE", "IMPORTED"), rows))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    docs = []
    for ref in args.refs:
        rec = store.get(ref)
        doc = json.loads(rec.info_json())
        doc["manifest"] = rec.manifest.to_json()
        docs.append(doc)
    print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    for ref in args.refs:
        rec = store.delete(ref)
        print(rec.image_id)
    return 0
