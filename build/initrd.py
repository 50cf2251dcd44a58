"""The Kurma initrd: PID 1, kurmad, the modules, the service images, the default config.

    python3 build/initrd.py [--out out] [--compression zstd|xz|gzip] [--no-images]

Writes OUT/initrd.img and OUT/vmlinux (the kernel it was built for), and OUT/initrd.json
(what is in it: kernel, sizes, images, modules). The same inputs give the same bytes: entries
sorted, mtimes 0, inode numbers by position, the store's import times fixed
(SOURCE_DATE_EPOCH, default 0), squashfs and compressors without timestamps.

The kernel copies every byte of an initramfs into RAM before PID 1 runs; under qemu without
KVM that costs ~45 ms per MB, plus the decompression: the ~90 MB of a plain archive took
~8 s from zstd. So the initrd is two cpio archives, one after the other:
  1. /usr.squashfs, as it is (zstd inside, 256 KiB blocks, no fragments): /usr, mounted
     by /init, not unpacked; a block is decompressed when a page of it is first read.
     Fragments (small files packed together) save 1.2 MB but cost seconds at boot: the
     kernel caches only 3 fragment blocks, so the ~700 small .pyc files read in import
     order decompress the same blocks again and again. Blocks of 1 MiB (with fragments)
     cost ~5 s more to login; xz compresses 10% better and costs ~5 s more too (TCG).
  2. everything else, zstd -19 (the kernel unpacks it).

The root of the initrd:
    /init                     kurma-stage0 (initrd/stage0/stage0.c): modules, squashfs,
                              leaves the initramfs, starts kurmad, becomes kurma-init
    /usr.squashfs -> /usr     Debian's python3.11, the dependencies, kurma (build/pyruntime.py),
                              busybox, and the store's rendered trees (kurma/init/_seed.py)
    /usr/lib/cni, /usr/sbin/iptables (nft)       CNI plugins for pod networks, for portmap
    /lib64, /sbin/ldconfig, /etc/ld.so.cache     the loader, and ldconfig for ctypes
    /bin/busybox, /bin/sh     the emergency shell (in /usr)
    /etc/kurma.yml            the default boot config (initrd/kurma.yml)
    /etc/kurma/modules        the modules always loaded (initrd/modules)
    /etc/kurma/stage0-modules what /init loads to mount the squashfs (loop, squashfs)
    /lib/modules/<release>/   those modules and their dependencies, with a modules.dep
    /var/lib/kurma            kurmad's store: records and manifests; each rootfs is bound
                              from the squashfs at boot
    /dev/console, /dev/null, /dev/urandom
The `python` image layer holds the same files as /usr: squashfs stores identical files once.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `vm`, `kernel`, `pyruntime` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernel
import pyruntime
from vm import cpio

import images
from kurma.atomic import write_atomic
from kurma.init._modules import module_name, parse_name_list
from kurma.init._seed import ROOTFS, SEED_DIR, SEEDED_KINDS, STORE_DIR

REPO = Path(__file__).resolve().parents[1]
INITRD_DIR = REPO / "initrd"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
STATE_DIR = STORE_DIR.lstrip("/")  # kurmad's store, as kurma/init/_seed.py binds it

SYSTEM_IMAGE = "usr.squashfs"  # at the initrd's root, mounted on /usr by /init
STAGE0_MODULES = ("loop", "squashfs")  # what mounting it needs (Debian builds both as modules)
SQUASHFS_OPTIONS = (
    "-comp", "zstd", "-Xcompression-level", "19", "-b", "262144", "-no-fragments",
    "-noappend", "-no-xattrs", "-mkfs-time", "0", "-all-time", "0", "-no-progress", "-quiet",
)  # fmt: skip

# Pod networks (kurma.network): Debian's CNI plugins that the initrd's kurma.yml network
# uses (and loopback), and iptables with the nf_tables backend, which portmap runs; with
# only the xtables extensions portmap's rules use (go-iptables calls `iptables`).
NETWORK_PACKAGES = ("containernetworking-plugins", "iptables")
CNI_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
XTABLES_NFT = Path("/usr/sbin/xtables-nft-multi")
XTABLES_NAMES = tuple(
    f"{family}{tool}" for family in ("iptables", "ip6tables") for tool in ("", "-save", "-restore")
)
XTABLES_DIR = Path("/usr/lib/x86_64-linux-gnu/xtables")
XTABLES_EXTENSIONS = (
    "standard", "tcp", "udp", "comment", "multiport", "addrtype", "mark", "MARK", "DNAT",
    "SNAT", "MASQUERADE", "conntrack",
)  # fmt: skip

STAGE0_DIR = INITRD_DIR / "stage0"  # /init: kurma-stage0 (stage0.c), static
STAGE0_MODULE_LIST = "etc/kurma/stage0-modules"


@dataclass
class InitrdResult:
    initrd: str
    vmlinux: str
    kernel: str
    compression: str
    compressed_bytes: int
    uncompressed_bytes: int
    entries: int
    modules: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # name -> image ID


def stage_modules(root: Path, build: kernel.KernelBuild, names: list[str]) -> list[str]:
    """The modules and their dependencies with a modules.dep of just those; load order."""
    target = root / "lib/modules" / build.version
    order = []
    included = set()
    for ko in kernel.module_closure(build.modules_dir, names):
        rel = ko.relative_to(build.modules_dir).as_posix()
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ko, dst)
        os.chmod(dst, 0o644)
        order.append(rel)
        included.add(rel)
    deps = kernel.read_modules_dep(build.modules_dir)
    lines = [
        f"{path}: {' '.join(requires)}".rstrip() + "\n"
        for path, requires in sorted(deps.values())
        if path in included
    ]
    (target / "modules.dep").write_text("".join(lines))
    for extra in ("modules.builtin", "modules.order"):
        src = build.modules_dir / extra
        if src.exists():
            shutil.copyfile(src, target / extra)
    return order


def stage_network_tools(root: Path) -> list[str]:
    """The CNI plugins in /usr/lib/cni, iptables (nft) in /usr/sbin, the libraries they
    need; returns the files added (relative to root)."""
    kernel.ensure_host_packages(NETWORK_PACKAGES)
    sources = {CNI_DIR / p: root / "usr/lib/cni" / p for p in CNI_PLUGINS}
    sources[XTABLES_NFT] = root / "usr/sbin" / XTABLES_NFT.name
    for ext in XTABLES_EXTENSIONS:
        name = f"libxt_{ext}.so"
        sources[XTABLES_DIR / name] = root / pyruntime.LIBDIR / "xtables" / name
    for src, dst in sources.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.resolve(), dst)
        os.chmod(dst, 0o755 if os.access(src, os.X_OK) else 0o644)
    for name in XTABLES_NAMES:
        os.symlink(XTABLES_NFT.name, root / "usr/sbin" / name)
    libs = pyruntime.stage_more_libraries(root, list(sources))
    return sorted(str(d.relative_to(root)) for d in sources.values()) + libs


def stage_store(root: Path, aci_files: dict[str, Path]) -> dict[str, str]:
    """Imports the images into the initrd's store and renders each one's tree now, so that
    the first pod of a service starts without copying anything at boot."""
    from kurma.store import ImageStore

    epoch = float(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    store = ImageStore(root / STATE_DIR, clock=lambda: epoch)
    ids = {}
    for name, aci in aci_files.items():
        ids[name] = store.import_image(aci).record.image_id
    for image_id in ids.values():
        store.render(image_id)
    for leftover in (store.layout.tmp, store.layout.locks):
        for p in sorted(leftover.iterdir()):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return ids


def stage0_modules(module_order: list[str]) -> str:
    """/etc/kurma/stage0-modules: what /init loads to mount the squashfs, then "&", then the
    other modules in load order, which /init loads in the background (stage0.c)."""
    found = {module_name(rel): rel for rel in module_order}
    missing = [m for m in STAGE0_MODULES if m not in found]
    if missing:
        raise RuntimeError(f"the kernel's modules lack {missing}: cannot mount {SYSTEM_IMAGE}")
    rest = [rel for rel in module_order if module_name(rel) not in STAGE0_MODULES]
    return "".join(f"{line}\n" for line in [*(found[m] for m in STAGE0_MODULES), "&", *rest])


def build_stage0() -> Path:
    """kurma-stage0, built in place by its Makefile (musl-gcc when there, static)."""
    r = subprocess.run(["make", "-s", "-C", str(STAGE0_DIR)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {STAGE0_DIR / 'kurma-stage0'} failed: {r.stderr.strip()}")
    return STAGE0_DIR / "kurma-stage0"


def seed_from_store(root: Path) -> int:
    """Moves the store's rendered rootfs trees under /usr, into the squashfs (kurma/init/
    _seed.py binds them back at boot), leaving empty placeholders; returns how many."""
    store = root / STATE_DIR
    seed = root / SEED_DIR.lstrip("/")
    moved = 0
    for kind in SEEDED_KINDS:
        for entry in sorted((store / kind).iterdir()):
            rootfs = entry / ROOTFS
            if not rootfs.is_dir() or rootfs.is_symlink():
                continue
            st = rootfs.stat()
            target = seed / kind / entry.name / ROOTFS
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(rootfs, target)
            rootfs.mkdir()
            os.chown(rootfs, st.st_uid, st.st_gid)
            os.chmod(rootfs, stat.S_IMODE(st.st_mode))
            moved += 1
    return moved


def make_squashfs(source: Path, image: Path) -> None:
    """`source` as a squashfs; the same tree gives the same bytes (times zeroed, sorted)."""
    kernel.ensure_host_packages(("squashfs-tools",))
    r = subprocess.run(
        ["mksquashfs", str(source), str(image), *SQUASHFS_OPTIONS],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"mksquashfs {source} failed: {r.stderr.strip() or r.stdout.strip()}")


def compress(data: bytes, kind: str) -> bytes:
    """The archive compressed as the kernel can unpack it (xz needs CRC32 checks)."""
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=6)
    if kind == "gzip":
        return gzip.compress(data, compresslevel=9, mtime=0)
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=19, threads=-1).compress(data)
    raise ValueError(f"compression must be xz, gzip or zstd, not {kind!r}")


def build_initrd(out: Path, compression: str = "zstd", with_images: bool = True) -> InitrdResult:
    """Builds OUT/initrd.img and OUT/vmlinux; returns what went in."""
    build = kernel.ensure_kernel()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kurma-initrd.", dir=out) as tmp:
        root = Path(tmp) / "root"
        pyruntime.stage(root)
        stage_network_tools(root)
        # busybox lives in the squashfs, beside the busybox image's identical copy (stored
        # once); /bin/sh is the emergency shell once /usr is mounted.
        shutil.copyfile(BUSYBOX, root / "usr/bin/busybox")
        os.chmod(root / "usr/bin/busybox", 0o755)
        (root / "bin").mkdir(exist_ok=True)
        for name in ("busybox", "sh"):
            os.symlink("/usr/bin/busybox", root / "bin" / name)
        (root / "etc/kurma").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(INITRD_DIR / "kurma.yml", root / "etc/kurma.yml")
        module_names = parse_name_list((INITRD_DIR / "modules").read_text())
        (root / "etc/kurma/modules").write_text("".join(f"{m}\n" for m in module_names))
        order = stage_modules(root, build, [*STAGE0_MODULES, *module_names])
        (root / STAGE0_MODULE_LIST).write_text(stage0_modules(order))
        shutil.copyfile(build_stage0(), root / "init")
        os.chmod(root / "init", 0o755)
        ids = {}
        if with_images:
            acis = images.build_images(out / "images")
            ids = stage_store(root, acis)
            seed_from_store(root)
        system_image = Path(tmp) / SYSTEM_IMAGE
        make_squashfs(root / "usr", system_image)
        shutil.rmtree(root / "usr")
        (root / "usr").mkdir(mode=0o755)
        archive = cpio.Archive()
        for d in ("dev", "proc", "sys", "run", "tmp", "root", "mnt", "var"):
            archive.add_dir(d, 0o1777 if d == "tmp" else (0o700 if d == "root" else 0o755))
        archive.add_device("dev/console", "c", 5, 1, 0o600)
        archive.add_device("dev/null", "c", 1, 3, 0o666)
        archive.add_device("dev/urandom", "c", 1, 9, 0o666)
        entries = archive.add_tree(".", root)
        data = archive.to_bytes()
        # Two archives, one after the other (the kernel unpacks both): the squashfs as it is
        # (already compressed), then everything else compressed.
        image_archive = cpio.Archive()
        image_archive.add_path(SYSTEM_IMAGE, system_image, 0o400)
        plain = image_archive.to_bytes()
        packed = plain + compress(data, compression)
        entries += 1
        data = plain + data
        target = out / "initrd.img"
        write_atomic(target, packed, sync=False)
    vmlinux = kernel.publish(build, out)
    result = InitrdResult(
        initrd=str(target),
        vmlinux=str(vmlinux),
        kernel=build.version,
        compression=compression,
        compressed_bytes=len(packed),
        uncompressed_bytes=len(data),
        entries=entries,
        modules=order,
        images=ids,
    )
    write_atomic(out / "initrd.json", json.dumps(asdict(result), indent=1) + "\n", sync=False)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out")
    ap.add_argument("--compression", default="zstd", choices=("zstd", "xz", "gzip"))
    ap.add_argument("--no-images", action="store_true", help="leave the service images out")
    args = ap.parse_args(argv)
    r = build_initrd(args.out, args.compression, not args.no_images)
    print(
        f"initrd: {r.initrd}: {r.compressed_bytes / 1e6:.1f} MB {r.compression} "
        f"({r.uncompressed_bytes / 1e6:.1f} MB, {r.entries} entries), kernel {r.kernel}, "
        f"{len(r.modules)} modules, images: {', '.join(r.images) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
