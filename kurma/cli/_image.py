"""`kurmactl image ...`: build and validate (offline), and the store commands: through kurmad,
or with `--state-dir` directly on a state directory without a daemon.

The offline commands call the same store code the daemon uses, so the initrd's preloaded
store is built exactly as a running system would import it. The daemon-backed ones
(`_daemon_*`) print the same columns and documents.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _connect
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
        (
            "import",
            "import .aci files, docker-archive or OCI layout tars (into kurmad's store, or "
            "--state-dir's)",
            run_import,
            [],
        ),
        ("ls", "list the images", run_list, ["list"]),
        ("inspect", "show an image's record and manifest", run_inspect, []),
        ("rm", "delete images", run_remove, []),
    ):
        cmd = sub.add_parser(name, help=helptext, aliases=aliases)
        cmd.add_argument(
            "--state-dir",
            type=Path,
            help="work on this state directory directly, without a daemon",
        )
        if name == "import":
            cmd.add_argument(
                "files",
                nargs="+",
                metavar="FILE",
                help="an .aci, a docker-archive or oci-archive tar, an OCI layout directory, "
                "or - for stdin",
            )
            cmd.add_argument(
                "--progress",
                choices=["auto", "bar", "plain", "none"],
                default="auto",
                help="progress on stderr: a bar on a terminal, plain lines otherwise (auto)",
            )
        elif name in ("inspect", "rm"):
            cmd.add_argument("refs", nargs="+", metavar="IMAGE", help="image ID, short ID or name")
        else:
            cmd.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
            cmd.add_argument("-o", "--output", choices=["table", "json"], default="table")
        _connect.add_flags(cmd)
        cmd.set_defaults(run=func)

    export = sub.add_parser(
        "export", help="write an image: OCI as oci-archive or docker-archive, appc as .aci"
    )
    export.add_argument("ref", metavar="IMAGE", help="image ID, short ID, name or reference")
    export.add_argument("-o", "--output", metavar="FILE", help="where to write (default: stdout)")
    export.add_argument(
        "--format",
        choices=["oci-archive", "docker-archive", "aci"],
        help="default: oci-archive for an OCI image, aci for an appc one",
    )
    _connect.add_flags(export)
    export.set_defaults(run=run_export)

    from ._registry import add_pull_flags

    add_pull_flags(sub.add_parser("pull", help="pull an image from an OCI registry"))


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
    if args.state_dir is None:
        return _daemon_import(args)
    from kurma.sources import ACI, archive_kind, import_archive

    store = _store(args)
    for path in args.files:
        if path != "-" and archive_kind(path) != ACI:
            results = list(import_archive(store, path).results)
        else:
            results = [store.import_image(sys.stdin.buffer if path == "-" else Path(path))]
        for result in results:
            rec = result.record
            note = "" if result.created else " (already present)"
            shown = rec.oci.references[-1] if rec.oci and rec.oci.references else rec.name
            print(f"{rec.image_id}  {shown}{note}")
            for skipped in rec.skipped:
                print(f"  skipped: {skipped}", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    if args.state_dir is None:
        return _daemon_list(args)
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
    if args.state_dir is None:
        return _daemon_inspect(args)
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
    if args.state_dir is None:
        return _daemon_remove(args)
    store = _store(args)
    for ref in args.refs:
        rec = store.delete(ref)
        print(rec.image_id)
    return 0


# --- through kurmad ---------------------------------------------------------------------


def image_doc(image: Any, with_manifest: bool = False) -> dict[str, Any]:
    """An Image message as the offline commands print a record (same keys)."""
    doc: dict[str, Any] = {
        "id": image.id,
        "name": image.name,
        "labels": dict(image.labels),
        "size": image.size,
        "importedAt": image.imported_at.seconds + image.imported_at.nanos / 1e9,
        "skipped": list(image.skipped),
    }
    if image.kind == "oci":
        doc.update(kind="oci", references=list(image.references), digest=image.digest,
                   configDigest=image.config_digest, platform=image.platform,
                   layers=list(image.layers))  # fmt: skip
    if with_manifest:
        doc["manifest"] = json.loads(image.manifest_json) if image.manifest_json else None
    return doc


def _daemon_import(args: argparse.Namespace) -> int:
    from ._progress import Progress

    with _connect.session(args) as s:
        for path in args.files:
            label = "stdin" if path == "-" else os.path.basename(path)
            progress = _progress(args.progress, label)
            source: Any = sys.stdin.buffer if path == "-" else path
            try:
                if path != "-" and os.path.isdir(path):  # an OCI layout: sent as a tar
                    source = _tar_of(Path(path))
                imported = s.client.import_image(source, progress=progress)
            except FileNotFoundError as e:
                raise _connect.CommandError(f"{path}: {e.strerror}") from None
            finally:
                if isinstance(progress, Progress):
                    progress.finish()
            note = "" if imported.created else " (already present)"
            for image in imported.images:
                print(f"{image.id}  {_shown_reference(image)}{note}")
                for skipped in image.skipped:
                    print(f"  skipped: {skipped}", file=sys.stderr)
    return 0


def _tar_of(directory: Path) -> Any:
    """A directory (an OCI image layout) as a tar in an anonymous temporary file."""
    import tarfile

    tmp = tempfile.TemporaryFile()  # noqa: SIM115 - the upload reads it; closed with the process
    with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(directory / name, arcname=name)
    tmp.seek(0)
    return tmp


def _progress(mode: str, label: str) -> Any:
    from ._progress import Progress

    if mode == "none":
        return None
    return Progress(label, tty={"bar": True, "plain": False}.get(mode))


def _daemon_list(args: argparse.Namespace) -> int:
    with _connect.session(args) as s:
        images = s.client.list_images()
    if args.quiet:
        if images:
            print("\n".join(i.id for i in images))
    elif args.output == "json":
        print(json.dumps([image_doc(i) for i in images], indent=2))
    else:
        rows = [
            (
                i.id[:39],
                _shown_name(i),
                _shown_version(i),
                human_size(i.size),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(i.imported_at.seconds)),
            )
            for i in images
        ]
        print(table(("ID", "NAME", "VERSION", "SIZE", "IMPORTED"), rows))
    return 0


def _daemon_inspect(args: argparse.Namespace) -> int:
    with _connect.session(args) as s:
        docs = [image_doc(s.client.inspect_image(ref), with_manifest=True) for ref in args.refs]
    print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    return 0


def _daemon_remove(args: argparse.Namespace) -> int:
    with _connect.session(args) as s:
        for ref in args.refs:
            print(s.client.delete_image(ref).id)
    return 0


def run_export(args: argparse.Namespace) -> int:
    import contextlib

    from kurma.api.v1 import images_pb2_grpc
    from kurma.atomic import open_atomic
    from kurma.client import images_pb2

    with _connect.session(args) as s:
        stub = images_pb2_grpc.ImagesStub(s.channel)
        request = images_pb2.ImageRef(ref=args.ref, format=args.format or "")
        chunks = s.stream(stub.Export(request))
        first = next(chunks, None)  # the daemon's refusal comes before any file is made
        with contextlib.ExitStack() as stack:
            # A file appears only whole: written to a temporary name, renamed at the end.
            out = (
                stack.enter_context(open_atomic(args.output))
                if args.output
                else (sys.stdout.buffer)
            )
            if first is not None:
                out.write(first.data)
            for chunk in chunks:
                out.write(chunk.data)
    return 0


def _shown_reference(image: Any) -> str:
    """An imported image as one name: the reference the import gave an OCI image (the
    store appends an import's references to those it had), an appc image's name."""
    return image.references[-1] if image.kind == "oci" and image.references else image.name


def _shown_name(image: Any) -> str:
    """NAME column: an OCI image's first reference's repository (docker's REPOSITORY)."""
    if image.kind == "oci":
        if not image.references:
            return "<none>"
        ref = image.references[0].split("@", 1)[0]
        return ref[: ref.rfind(":")] if ref.rfind(":") > ref.rfind("/") else ref
    return image.name


def _shown_version(image: Any) -> str:
    """VERSION column: the version label, or an OCI image's tag (docker's TAG)."""
    if image.kind == "oci":
        ref = image.references[0] if image.references else ""
        if "@" in ref or ref.rfind(":") <= ref.rfind("/"):
            return "<none>"
        return ref[ref.rfind(":") + 1 :]
    return image.labels.get("version", "") or "-"
