#!/usr/bin/env python3
"""The VM's kernel: Debian's linux-image-amd64, fetched and unpacked without installing it.

    python3 build/kernel.py [--out DIR] [--cache DIR] [--json]

Resolves the metapackage `linux-image-amd64` to its versioned package
(`linux-image-6.1.0-NN-amd64`) at build time, downloads that .deb with `apt-get download`,
unpacks it with `dpkg-deb -x` into build/.cache/kernel/<release>/, extracts the ELF vmlinux
from the xz-compressed bzImage with Python's lzma, checks that it carries a PVH entry note
(qemu boots such an ELF directly with -kernel), and runs `depmod` on the unpacked
lib/modules/<release> so the initrd build has a modules.dep (the .deb ships none: Debian
runs depmod in its postinst).

Cached: a complete tree has a `.complete` stamp naming the Debian package version; a run
whose resolved version has a complete tree does nothing (well under a second). Without apt
lists (offline), the newest complete tree is used. Safe to run concurrently (a lock file).

Prints three lines: the vmlinux path, the kernel release, the modules directory. With
`--out DIR`, DIR/vmlinux (a hard link or a copy) and DIR/kernel.json are written as well and
the vmlinux path printed is DIR/vmlinux.

For Python callers (tests, the initrd build): `ensure_kernel()` -> `KernelBuild`, and
`module_closure(modules_dir, names)` -> the .ko paths to load, dependencies first.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: kurma (the repository) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kurma.atomic import write_atomic
from kurma.init._modules import load_order, module_name, parse_modules_dep

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("KURMA_KERNEL_CACHE", HERE / ".cache" / "kernel"))
METAPACKAGE = "linux-image-amd64"
HOST_PACKAGES = ("kmod",)  # depmod; dpkg-deb and apt-get come with every Debian

XZ_MAGIC = b"\xfd7zXZ\x00"
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the PVH entry point (include/xen/interface/elfnote.h)
PT_NOTE = 4


class KernelError(RuntimeError):
    pass


@dataclass(frozen=True)
class KernelBuild:
    version: str  # the kernel release, `uname -r` inside the VM, e.g. 6.1.0-56-amd64
    vmlinux: Path  # the ELF with the PVH note
    modules_dir: Path  # .../lib/modules/<version>, with modules.dep
    package_version: str = ""  # the Debian version of linux-image-<version>, e.g. 6.1.192-2
    pvh_entry: int = 0  # the 32-bit physical entry address from the PVH note

    @property
    def root(self) -> Path:
        """The unpacked package (boot/, lib/modules/, usr/)."""
        return self.modules_dir.parents[2]


def _log(msg: str) -> None:
    print(f"kernel: {msg}", file=sys.stderr)


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise KernelError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


# --- host packages -----------------------------------------------------------------------------


def ensure_host_packages(packages: tuple[str, ...] = HOST_PACKAGES) -> None:
    """Installs the Debian packages the build needs on the host (kmod for depmod), if missing."""
    missing = []
    for p in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            missing.append(p)
    if not missing:
        return
    if os.geteuid() != 0:
        raise KernelError(f"missing Debian packages {missing} (run as root to install them)")
    _log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if r.returncode != 0:  # stale lists on a fresh machine: update once and retry
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


# --- resolving the version ---------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    package: str  # linux-image-6.1.0-56-amd64
    release: str  # 6.1.0-56-amd64
    version: str  # 6.1.192-2


APT_STATE = (
    "/var/lib/apt/lists",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
    "/etc/apt/preferences",
    "/etc/apt/preferences.d",
    "/etc/apt/apt.conf.d",
    "/var/lib/dpkg/status",
)


def _apt_fingerprint() -> str:
    """What apt's answer depends on: names, sizes and mtimes of the lists and the config."""
    parts = []
    for top in APT_STATE:
        p = Path(top)
        for f in sorted(p.iterdir()) if p.is_dir() else [p]:
            with contextlib.suppress(OSError):
                st = f.stat()
                parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts)


def resolve_cached(cache: Path, metapackage: str = METAPACKAGE) -> Resolved:
    """resolve(), remembered while apt's lists and config stay the same.

    apt-cache takes about a second per call here (the Docker image turns off apt's binary
    cache, so each call parses the lists), which a cached build must not pay.
    """
    memo = cache / "resolved.json"
    key = _apt_fingerprint()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(memo.read_text())
        if data["key"] == key and data["metapackage"] == metapackage:
            return Resolved(**data["resolved"])
    resolved = resolve(metapackage)
    data = {"key": key, "metapackage": metapackage, "resolved": resolved.__dict__}
    write_atomic(memo, json.dumps(data) + "\n", sync=False)
    return resolved


def resolve(metapackage: str = METAPACKAGE) -> Resolved:
    """The versioned image package the metapackage's candidate depends on, and its candidate."""
    out = _run(["apt-cache", "depends", "--important", metapackage]).stdout
    names = re.findall(r"Depends:\s*(linux-image-(\d\S*))", out)
    if not names:
        raise KernelError(f"apt-cache depends {metapackage}: no linux-image-* dependency:\n{out}")
    package, release = names[0]
    policy = _run(["apt-cache", "policy", package]).stdout
    m = re.search(r"Candidate:\s*(\S+)", policy)
    if not m or m.group(1) == "(none)":
        raise KernelError(f"apt-cache policy {package}: no candidate")
    return Resolved(package, release, m.group(1))


# --- vmlinux -----------------------------------------------------------------------------------


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF vmlinux inside an xz-compressed bzImage.

    The boot protocol header (2.08+) says where the compressed payload is; if it does not
    point at an xz stream, every xz magic in the image is tried in turn.
    """
    candidates: list[int] = []
    if bzimage[0x202:0x206] == b"HdrS" and struct.unpack_from("<H", bzimage, 0x206)[0] >= 0x208:
        setup_sects = bzimage[0x1F1] or 4
        offset, _length = struct.unpack_from("<II", bzimage, 0x248)
        candidates.append((setup_sects + 1) * 512 + offset)
    start = 0
    while (i := bzimage.find(XZ_MAGIC, start)) >= 0:
        candidates.append(i)
        start = i + 1
    for pos in dict.fromkeys(candidates):  # in order, without repeats
        if bzimage[pos : pos + len(XZ_MAGIC)] != XZ_MAGIC:
            continue
        try:
            data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[pos:])
        except lzma.LZMAError:
            continue
        if data[:4] == b"\x7fELF":
            return data
    raise KernelError("no xz stream holding an ELF found in the kernel image")


def pvh_entry(elf: bytes) -> int:
    """The PVH entry address (Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY) of a 64-bit ELF, or 0."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise KernelError("not a little-endian ELF64")
    e_phoff, _shoff = struct.unpack_from("<QQ", elf, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(e_phnum):
        ph = e_phoff + i * e_phentsize
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", elf, ph)
        if p_type != PT_NOTE:
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            desc_at = pos + 12 + (namesz + 3) // 4 * 4
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                size = 8 if descsz >= 8 else 4
                return int.from_bytes(elf[desc_at : desc_at + size], "little")
            pos = desc_at + (descsz + 3) // 4 * 4
    return 0


# --- modules -----------------------------------------------------------------------------------


def read_modules_dep(modules_dir: Path) -> dict[str, tuple[str, list[str]]]:
    """modules.dep as {module name: (relative path, [relative paths of its dependencies])},
    parsed by the code PID 1 loads modules with."""
    return parse_modules_dep((Path(modules_dir) / "modules.dep").read_text())


def builtin_modules(modules_dir: Path) -> set[str]:
    f = Path(modules_dir) / "modules.builtin"
    return {module_name(x) for x in f.read_text().split()} if f.exists() else set()


def module_closure(modules_dir: Path | str, names: list[str] | tuple[str, ...]) -> list[Path]:
    """The .ko files to load for `names`, each once, every module after all its dependencies
    (PID 1's own load order, so the initrd holds what the machine loads).

    Names may use `-` or `_`. A module built into the kernel needs nothing and is skipped; a
    name that is neither a module nor built in raises KeyError.
    """
    modules_dir = Path(modules_dir)
    deps = read_modules_dep(modules_dir)
    order, missing = load_order(deps, names, builtin_modules(modules_dir))
    if missing:
        raise KeyError(
            f"no module {missing[0]!r} in {modules_dir} (neither loadable nor built in)"
        )
    return [modules_dir / path for path in order]


# --- the build ---------------------------------------------------------------------------------


def _complete(tree: Path) -> dict | None:
    try:
        return json.loads((tree / ".complete").read_text())
    except (OSError, ValueError):
        return None


def _build_from(stamp: dict, tree: Path) -> KernelBuild:
    return KernelBuild(
        version=stamp["release"],
        vmlinux=tree / "vmlinux",
        modules_dir=tree / "lib" / "modules" / stamp["release"],
        package_version=stamp["package_version"],
        pvh_entry=stamp["pvh_entry"],
    )


def _newest_cached(cache: Path) -> KernelBuild | None:
    found = []
    for tree in cache.iterdir() if cache.is_dir() else ():
        stamp = _complete(tree)
        if stamp:
            found.append((tree.stat().st_mtime, stamp, tree))
    if not found:
        return None
    _, stamp, tree = max(found, key=lambda t: t[0])
    return _build_from(stamp, tree)


def _build(resolved: Resolved, cache: Path) -> KernelBuild:
    t0 = time.monotonic()
    ensure_host_packages()
    stage = Path(tempfile.mkdtemp(prefix=f".{resolved.release}.", dir=cache))
    try:
        _log(f"downloading {resolved.package} {resolved.version}")
        _run(["apt-get", "download", f"{resolved.package}={resolved.version}"], cwd=stage)
        debs = list(stage.glob("*.deb"))
        if len(debs) != 1:
            raise KernelError(f"apt-get download left {debs}")
        tree = stage / "tree"
        _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        debs[0].unlink()

        vmlinuz = tree / "boot" / f"vmlinuz-{resolved.release}"
        elf = extract_vmlinux(vmlinuz.read_bytes())
        entry = pvh_entry(elf)
        if not entry:
            raise KernelError(f"{vmlinuz}: the vmlinux has no PVH note (Xen ELF note 18)")
        (tree / "vmlinux").write_bytes(elf)
        vmlinuz.unlink()  # the vmlinux is what qemu boots

        modules_dir = tree / "lib" / "modules" / resolved.release
        _run(["depmod", "-b", str(tree), resolved.release])
        if not (modules_dir / "modules.dep").stat().st_size:
            raise KernelError(f"depmod wrote an empty {modules_dir}/modules.dep")
        shutil.rmtree(tree / "usr" / "share", ignore_errors=True)  # docs, bug scripts

        stamp = {
            "package": resolved.package,
            "package_version": resolved.version,
            "release": resolved.release,
            "pvh_entry": entry,
        }
        (tree / ".complete").write_text(json.dumps(stamp, indent=1) + "\n")
        final = cache / resolved.release
        if final.exists():  # an older build of the same release (another package version)
            old = Path(tempfile.mkdtemp(prefix=".old.", dir=cache))
            final.rename(old / "tree")
            shutil.rmtree(old)
        tree.rename(final)
        _log(f"{resolved.release} ({resolved.version}) ready in {time.monotonic() - t0:.1f} s")
        return _build_from(stamp, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def ensure_kernel(cache: Path | str | None = None, *, offline_ok: bool = True) -> KernelBuild:
    """The kernel for the VM: cached when the resolved package version has a complete tree.

    Without apt lists (no network, no `apt-get update` yet) the newest cached tree is used
    when `offline_ok`; otherwise the resolution error is raised.
    """
    cache = Path(cache) if cache else DEFAULT_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            resolved = resolve_cached(cache)
        except (KernelError, FileNotFoundError) as e:
            cached = _newest_cached(cache) if offline_ok else None
            if cached is None:
                raise
            _log(f"cannot resolve {METAPACKAGE} ({e}); using the cached {cached.version}")
            return cached
        tree = cache / resolved.release
        stamp = _complete(tree)
        if stamp and stamp.get("package_version") == resolved.version:
            return _build_from(stamp, tree)
        return _build(resolved, cache)


def publish(build: KernelBuild, out: Path) -> Path:
    """DIR/vmlinux (hard link, else a copy) and DIR/kernel.json; returns DIR/vmlinux."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "vmlinux"
    tmp = out / ".vmlinux.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(build.vmlinux, tmp)
    except OSError:
        shutil.copyfile(build.vmlinux, tmp)
    tmp.replace(target)
    info = {
        "version": build.version,
        "package_version": build.package_version,
        "vmlinux": str(target),
        "modules_dir": str(build.modules_dir),
    }
    write_atomic(out / "kernel.json", json.dumps(info, indent=1) + "\n", sync=False)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="also write DIR/vmlinux and DIR/kernel.json")
    ap.add_argument("--cache", type=Path, help=f"cache directory (default {DEFAULT_CACHE})")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args(argv)
    try:
        build = ensure_kernel(args.cache)
    except (KernelError, OSError) as e:
        _log(str(e))
        return 1
    vmlinux = publish(build, args.out) if args.out else build.vmlinux
    if args.json:
        print(
            json.dumps(
                {
                    "vmlinux": str(vmlinux),
                    "version": build.version,
                    "package_version": build.package_version,
                    "modules_dir": str(build.modules_dir),
                }
            )
        )
    else:
        print(vmlinux)
        print(build.version)
        print(build.modules_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
