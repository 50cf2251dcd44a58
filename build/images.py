#!/usr/bin/env python3
"""The standard service images: each folder under images/ built into a reproducible ACI.

    python3 build/images.py [--out out/images] [NAME...]

Each images/<folder>/image.yml is data (see images/README.md): the image name, the images
it depends on, where its rootfs comes from (`busybox`, `debian`, `python_runtime`, `files`,
`dirs`) and the appc `app` section with the service's defaults (isolators, mount points,
environment). Images are built dependencies first into OUT/<folder>.aci; each dependency is
pinned by the image ID just built. OUT/index.json lists {folder: {name, file, id}}.

Same inputs, same bytes: Debian packages at apt's candidate version (cached under
build/.cache/debs), entries sorted, mtimes 0, owners 0:0, gzip without a timestamp (all of
it kurma.aci.build_aci). Every ACI is unpacked and its manifest validated by kurma.aci, and
by `actool validate` when Debian's appc-spec is installed.

For Python callers (the initrd build): `build_images(out, names=None) -> {folder: path}`.
An image that cannot be built here (the python runtime before build/pyruntime.py exists) is
skipped with a message, and so is everything that depends on it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGES_DIR = ROOT / "images"
DEFAULT_OUT = ROOT / "out" / "images"
SPEC_FILE = "image.yml"
AC_VERSION = "0.8.11"
LABELS = {"os": "linux", "arch": "amd64"}
SPEC_KEYS = {
    "name", "dependencies", "busybox", "debian", "python_runtime", "files", "dirs", "app",
    "annotations",
}  # fmt: skip

for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import debs  # noqa: E402  (build/debs.py)

from kurma import __version__ as KURMA_VERSION  # noqa: E402
from kurma.aci import (  # noqa: E402
    ApiAccessIsolator,
    DevicesIsolator,
    ImageManifest,
    NamespacesIsolator,
    PrivilegedIsolator,
    build_aci,
    unpack_aci,
)
from kurma.atomic import write_atomic  # noqa: E402
from kurma.errors import ValidationError  # noqa: E402

KURMA_ISOLATOR_NAMES = {
    c.name for c in (ApiAccessIsolator, DevicesIsolator, NamespacesIsolator, PrivilegedIsolator)
}


class SpecError(ValueError):
    """An image.yml is malformed; the message names the file and the field."""


class ImageUnavailable(RuntimeError):
    """An image cannot be built on this machine yet (its builder is missing)."""


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr)


# --- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """One images/<folder>/image.yml, checked."""

    folder: Path
    name: str
    dependencies: tuple[str, ...] = ()
    busybox: bool = False
    debian_packages: tuple[str, ...] = ()
    debian_paths: tuple[str, ...] = ()
    python_runtime: bool = False
    files: dict[str, str] = field(default_factory=dict)  # rootfs path -> file in the folder
    dirs: dict[str, int] = field(default_factory=dict)  # rootfs path -> mode
    app: dict[str, Any] | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The folder's name: the image's short name and its file name under out/."""
        return self.folder.name


def _abs_path(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/"):
        raise SpecError(f"{where}: must be an absolute path without '..', got {value!r}")
    return value


def _str_list(doc: dict, key: str, where: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{where}: {key}: must be a list of strings, got {value!r}")
    return tuple(value)


def _flag(doc: dict, key: str, where: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise SpecError(f"{where}: {key}: must be true or false, got {value!r}")
    return value


def _files(doc: dict, where: str, folder: Path) -> dict[str, str]:
    files = doc.get("files", {})
    if not isinstance(files, dict):
        raise SpecError(f"{where}: files: must be a map of rootfs path -> file, got {files!r}")
    for dest, src in files.items():
        _abs_path(dest, f"{where}: files")
        if not isinstance(src, str) or src.startswith("/") or ".." in src.split("/"):
            raise SpecError(f"{where}: files: {dest}: must name a file in {folder}, got {src!r}")
        if not (folder / src).is_file():
            raise SpecError(f"{where}: files: {dest}: {folder / src} does not exist")
    return dict(files)


def _dirs(doc: dict, where: str) -> dict[str, int]:
    raw = doc.get("dirs", [])
    items = raw.items() if isinstance(raw, dict) else ((d, "755") for d in raw or [])
    if not isinstance(raw, dict | list):
        raise SpecError(f"{where}: dirs: must be a list of paths or a map path -> mode")
    dirs = {}
    for path, mode in items:
        _abs_path(path, f"{where}: dirs")
        if not isinstance(mode, str) or not re.fullmatch(r"[0-7]{3,4}", mode):
            raise SpecError(f"{where}: dirs: {path}: mode must be octal text like '1777'")
        dirs[path] = int(mode, 8)
    return dirs


def _debian(doc: dict, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    deb = doc.get("debian")
    if deb is None:
        return (), ()
    if not isinstance(deb, dict) or set(deb) - {"packages", "paths"}:
        raise SpecError(f"{where}: debian: must be a map with 'packages' and 'paths'")
    packages = _str_list(deb, "packages", f"{where}: debian")
    paths = tuple(_abs_path(p, f"{where}: debian: paths") for p in _str_list(deb, "paths", where))
    if not packages or not paths:
        raise SpecError(f"{where}: debian: needs both 'packages' and the 'paths' to keep")
    return packages, paths


def load_spec(folder: Path) -> ImageSpec:
    """Parse and check images/<folder>/image.yml; SpecError names the file and field."""
    path = folder / SPEC_FILE
    where = str(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError(f"{where}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise SpecError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise SpecError(f"{where}: must be a map of fields, got {type(doc).__name__}")
    unknown = sorted(set(doc) - SPEC_KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown} (known: {sorted(SPEC_KEYS)})")
    name = doc.get("name")
    if not isinstance(name, str):
        raise SpecError(f"{where}: name: required, an AC Identifier like 'kurma.io/{folder.name}'")
    app = doc.get("app")
    if app is not None and not isinstance(app, dict):
        raise SpecError(f"{where}: app: must be an appc app section (a map)")
    annotations = doc.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise SpecError(f"{where}: annotations: must be a map of name -> text")
    packages, paths = _debian(doc, where)
    spec = ImageSpec(
        folder=folder,
        name=name,
        dependencies=_str_list(doc, "dependencies", where),
        busybox=_flag(doc, "busybox", where),
        debian_packages=packages,
        debian_paths=paths,
        python_runtime=_flag(doc, "python_runtime", where),
        files=_files(doc, where, folder),
        dirs=_dirs(doc, where),
        app=app,
        annotations=dict(annotations),
    )
    try:  # the manifest it makes must be valid, with placeholder IDs for the dependencies
        ImageManifest.from_json(manifest_json(spec, {d: None for d in spec.dependencies}))
    except ValidationError as e:
        raise SpecError(f"{where}: the manifest it makes is invalid: {e}") from e
    return spec


def load_specs(images_dir: Path = IMAGES_DIR) -> dict[str, ImageSpec]:
    """Every images/*/image.yml by folder name; names and dependencies checked across them."""
    specs = {d.name: load_spec(d) for d in sorted(images_dir.iterdir()) if (d / SPEC_FILE).exists()}
    by_name = {}
    for spec in specs.values():
        if spec.name in by_name:
            raise SpecError(f"{spec.folder}: name {spec.name} is also {by_name[spec.name]}'s")
        by_name[spec.name] = spec.key
    for spec in specs.values():
        for dep in spec.dependencies:
            if dep not in by_name:
                raise SpecError(f"{spec.folder / SPEC_FILE}: dependencies: no image named {dep}")
    build_order(specs, list(specs))  # cycles
    return specs


def build_order(specs: dict[str, ImageSpec], names: list[str]) -> list[str]:
    """`names` and what they depend on, every image after its dependencies."""
    folder_of = {s.name: k for k, s in specs.items()}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(key: str) -> None:
        if key in order:
            return
        if key in visiting:
            raise SpecError(f"dependency cycle through {specs[key].name}")
        visiting.add(key)
        for dep in specs[key].dependencies:
            visit(folder_of[dep])
        visiting.discard(key)
        order.append(key)

    for key in names:
        if key not in specs:
            raise SpecError(f"no image folder {key!r} under {IMAGES_DIR} (have {sorted(specs)})")
        visit(key)
    return order


def manifest_json(spec: ImageSpec, dep_ids: dict[str, str | None]) -> dict[str, Any]:
    """The image manifest; each dependency pinned to `dep_ids[name]` (if not None)."""
    labels = {"version": KURMA_VERSION, **LABELS}
    doc: dict[str, Any] = {
        "acKind": "ImageManifest",
        "acVersion": AC_VERSION,
        "name": spec.name,
        "labels": [{"name": k, "value": v} for k, v in labels.items()],
    }
    if spec.app is not None:
        doc["app"] = spec.app
    if spec.dependencies:
        doc["dependencies"] = [
            {
                "imageName": dep,
                **({"imageID": dep_ids[dep]} if dep_ids.get(dep) else {}),
                "labels": [{"name": k, "value": v} for k, v in labels.items()],
            }
            for dep in spec.dependencies
        ]
    if spec.annotations:
        doc["annotations"] = [{"name": k, "value": v} for k, v in spec.annotations.items()]
    return doc


# --- the rootfs --------------------------------------------------------------------------------


def stage_busybox(rootfs: Path) -> None:
    """Debian's busybox-static at /bin/busybox and a symlink per applet (/bin/sh, /sbin/ip, ...)."""
    with tempfile.TemporaryDirectory(prefix="busybox.", dir=rootfs.parent) as tmp:
        debs.fetch_tree(["busybox-static"], Path(tmp), libraries=False)
        debs.copy_paths(Path(tmp), rootfs, ["bin/busybox"])
    busybox = rootfs / "bin" / "busybox"
    listed = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in sorted(listed):
        if "/" not in applet or applet == "bin/busybox":
            continue  # linuxrc belongs to no service image
        link = rootfs / applet
        if link.exists() or link.is_symlink():
            continue
        debs.make_parents(rootfs, applet)
        os.symlink("/bin/busybox", link)


def stage_debian(spec: ImageSpec, rootfs: Path) -> None:
    """The spec's paths from its Debian packages, with the libraries they load."""
    with tempfile.TemporaryDirectory(prefix="debian.", dir=rootfs.parent) as tmp:
        tree = Path(tmp)
        debs.fetch_tree(list(spec.debian_packages), tree)
        paths = [p.lstrip("/") for p in spec.debian_paths]
        debs.copy_paths(tree, rootfs, debs.elf_closure(tree, paths) + paths)


def stage_python(rootfs: Path) -> None:
    """build/pyruntime.py's stage(): Debian's python3 with kurma (another part of the build)."""
    if not (HERE / "pyruntime.py").exists():
        raise ImageUnavailable("build/pyruntime.py (the python runtime) does not exist yet")
    pyruntime = importlib.import_module("pyruntime")
    if not hasattr(pyruntime, "stage"):
        raise ImageUnavailable("build/pyruntime.py has no stage(dest) yet")
    pyruntime.stage(rootfs)


def stage_files(spec: ImageSpec, rootfs: Path) -> None:
    """The spec's files (0755 when executable in the folder, else 0644) and directories."""
    for dest, src in sorted(spec.files.items()):
        rel = dest.lstrip("/")
        debs.make_parents(rootfs, rel)
        target = rootfs / rel
        if target.is_symlink() or target.exists():
            target.unlink()
        shutil.copyfile(spec.folder / src, target)
        executable = os.stat(spec.folder / src).st_mode & 0o111
        os.chmod(target, 0o755 if executable else 0o644)
    for path, mode in sorted(spec.dirs.items()):
        rel = path.strip("/")
        debs.make_parents(rootfs, rel + "/x")
        os.chmod(rootfs / rel, mode)


def stage_rootfs(spec: ImageSpec, rootfs: Path) -> None:
    """Everything the spec says, in a fixed order: python runtime, busybox, Debian, files."""
    rootfs.mkdir(mode=0o755)
    os.chmod(rootfs, 0o755)
    if spec.python_runtime:
        stage_python(rootfs)
    if spec.busybox:
        stage_busybox(rootfs)
    if spec.debian_packages:
        stage_debian(spec, rootfs)
    stage_files(spec, rootfs)


# --- building and checking ---------------------------------------------------------------------


def validate_aci(aci: Path) -> ImageManifest:
    """Unpack with kurma's safe unpacker and parse the manifest; `actool validate` if present."""
    with tempfile.TemporaryDirectory(prefix=".validate.", dir=aci.parent) as tmp:
        result = unpack_aci(aci, Path(tmp) / "x")
        if result.skipped:
            raise ValidationError(str(aci), f"entries not unpackable: {result.skipped[:5]}")
        manifest = ImageManifest.from_json(result.manifest_bytes)
        _actool_validate(aci, manifest, Path(tmp))
    return manifest


def _actool_validate(aci: Path, manifest: ImageManifest, tmp: Path) -> None:
    """actool knows only appc's isolators and calls Kurma's own invalid: for an image that
    has some, actool checks the manifest without them (kurma.aci has checked them all)."""
    actool = shutil.which("actool")
    if not actool:
        return
    target = aci
    doc = manifest.to_json()
    app = doc.get("app")
    if isinstance(app, dict) and isinstance(app.get("isolators"), list):
        standard = [i for i in app["isolators"] if i["name"] not in KURMA_ISOLATOR_NAMES]
        if len(standard) != len(app["isolators"]):
            app["isolators"] = standard
            target = tmp / "manifest"
            target.write_text(json.dumps(doc))
    r = subprocess.run([actool, "validate", str(target)], capture_output=True, text=True)
    if r.returncode != 0:
        raise ValidationError(str(aci), f"actool validate: {(r.stdout + r.stderr).strip()}")


def build_one(spec: ImageSpec, out: Path, dep_ids: dict[str, str]) -> tuple[Path, str]:
    """Build spec's ACI into OUT/<folder>.aci; returns (path, image ID)."""
    manifest = ImageManifest.from_json(manifest_json(spec, dep_ids)).to_bytes()
    with tempfile.TemporaryDirectory(prefix=f".build-{spec.key}.", dir=out) as tmp:
        rootfs = Path(tmp) / "rootfs"
        stage_rootfs(spec, rootfs)
        aci = out / f"{spec.key}.aci"
        image_id = build_aci(rootfs, manifest, aci, mtime=0, owner=(0, 0))
    validate_aci(aci)
    return aci, image_id


@dataclass
class BuildResult:
    built: dict[str, Path] = field(default_factory=dict)  # folder -> ACI
    ids: dict[str, str] = field(default_factory=dict)  # image name -> image ID
    skipped: dict[str, str] = field(default_factory=dict)  # folder -> why


def build_all(out: Path, names: list[str] | None = None, images_dir: Path = IMAGES_DIR
              ) -> BuildResult:  # fmt: skip
    """Build `names` (default: every folder) and their dependencies into `out`."""
    specs = load_specs(images_dir)
    order = build_order(specs, names or list(specs))
    out.mkdir(parents=True, exist_ok=True)
    debs.ensure_host_packages()
    result = BuildResult()
    folder_of = {s.name: k for k, s in specs.items()}
    for key in order:
        spec = specs[key]
        missing = [d for d in spec.dependencies if folder_of[d] in result.skipped]
        if missing:
            result.skipped[key] = f"needs {', '.join(missing)}, which was skipped"
            _log(f"skipped {key}: {result.skipped[key]}")
            continue
        try:
            aci, image_id = build_one(spec, out, result.ids)
        except ImageUnavailable as e:
            result.skipped[key] = str(e)
            _log(f"skipped {key}: {e}")
            continue
        result.built[key], result.ids[spec.name] = aci, image_id
        _log(f"{spec.name} -> {aci} ({image_id[:39]}, {aci.stat().st_size} bytes)")
    _write_index(out, specs, result)
    return result


def _write_index(out: Path, specs: dict[str, ImageSpec], result: BuildResult) -> None:
    index_path = out / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    for key, aci in result.built.items():
        name = specs[key].name
        index[key] = {"name": name, "file": aci.name, "id": result.ids[name]}
    write_atomic(index_path, json.dumps(index, indent=1, sort_keys=True) + "\n", sync=False)


def build_images(out: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build the images (default: all) and their dependencies; {folder: ACI path} of the
    ones built (skipped ones are reported on stderr)."""
    return build_all(Path(out), names).built


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    ap.add_argument("names", nargs="*", help="image folders to build (default: all)")
    args = ap.parse_args(argv)
    try:
        result = build_all(args.out, args.names or None)
    except (SpecError, debs.DebError, ValidationError, OSError) as e:
        _log(f"error: {e}")
        return 1
    for aci in result.built.values():
        print(aci)
    asked_skipped = [n for n in args.names if n in result.skipped]
    return 1 if asked_skipped else 0


if __name__ == "__main__":
    sys.exit(main())
