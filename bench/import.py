"""Benchmark: importing a Debian minbase ACI with kurma vs. the system-tools floor.

The floor decompresses once, hashes and extracts with system tools in parallel
(`gzip -dc X | tee FIFO | tar -x` with `sha512sum < FIFO`), on the same filesystem, with a
warm page cache. Runs are interleaved (floor, kurma, floor, ...) and alternate which goes
first, a `sync` precedes each so one run's writeback does not land in the next, and the
medians are compared. Target: kurma at most 1.5x the floor.

    python3 bench/import.py [--reps 5] [--target DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kurma.aci import Compression, build_aci
from kurma.store import ImageStore

CACHE = Path(__file__).resolve().parent / ".cache"
ROOTFS = CACHE / "debian-minbase"
ACI = CACHE / "debian-minbase.aci"
MANIFEST = (
    b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/debian-minbase",'
    b'"labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}'
)
FLOOR = (
    'mkfifo "$3/hash.fifo"; sha512sum < "$3/hash.fifo" > "$3/hash.txt" & '
    'gzip -dc "$1" | tee "$3/hash.fifo" | tar -x -C "$2"; wait'
)


def ensure_image() -> None:
    """Make (once) the debootstrap rootfs and the gzip ACI of it under bench/.cache/."""
    CACHE.mkdir(exist_ok=True)
    if not ROOTFS.is_dir():
        tmp = CACHE / "debian-minbase.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        print("debootstrap --variant=minbase bookworm (a few minutes, once) ...", flush=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(tmp),
             "http://deb.debian.org/debian"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        tmp.rename(ROOTFS)
    if not ACI.exists():
        print("building", ACI, flush=True)
        build_aci(ROOTFS, MANIFEST, ACI, compression=Compression.GZIP)


def run_floor(target: Path) -> float:
    """One floor run into a fresh directory; returns seconds."""
    out, scratch = target / "floor", target / "floor-scratch"
    out.mkdir()
    scratch.mkdir()
    start = time.perf_counter()
    subprocess.run(["bash", "-c", FLOOR, "floor", str(ACI), str(out), str(scratch)], check=True)
    return time.perf_counter() - start


def run_kurma(target: Path, profile: bool = False) -> float:
    """One full store import (unpack, hash, validate, rename) into a fresh store."""
    store = ImageStore(target / "kurma")
    start = time.perf_counter()
    if profile:
        prof = cProfile.Profile()
        prof.runcall(store.import_image, ACI)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    else:
        store.import_image(ACI)
    return time.perf_counter() - start


def clean(target: Path) -> None:
    """Remove the previous run's output and flush it to disk before timing the next."""
    for name in ("floor", "floor-scratch", "kurma"):
        shutil.rmtree(target / name, ignore_errors=True)
    os.sync()


def image_stats() -> tuple[int, int]:
    """(entries, bytes of regular files) of the rootfs the image holds."""
    count = size = 0
    for dirpath, dirnames, filenames in os.walk(ROOTFS):
        count += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            size += st.st_size if not os.path.islink(os.path.join(dirpath, name)) else 0
    return count, size


def main() -> None:
    """Interleave floor and kurma runs; print both medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--target", type=Path, default=CACHE / "work")
    parser.add_argument("--profile", action="store_true", help="cProfile one kurma run")
    args = parser.parse_args()
    ensure_image()
    args.target.mkdir(parents=True, exist_ok=True)
    ACI.read_bytes()  # warm the page cache
    floor: list[float] = []
    kurma: list[float] = []
    try:
        for rep in range(args.reps):
            order = [("floor", run_floor), ("kurma", run_kurma)]
            for name, run in order if rep % 2 == 0 else reversed(order):
                clean(args.target)
                (floor if name == "floor" else kurma).append(run(args.target))
        if args.profile:
            clean(args.target)
            run_kurma(args.target, profile=True)
    finally:
        clean(args.target)
    entries, size = image_stats()
    f_med, k_med = statistics.median(floor), statistics.median(kurma)
    print(f"image: {entries} entries, {size / 1e6:.1f} MB of files, "
          f"{ACI.stat().st_size / 1e6:.1f} MB gzip ACI")  # fmt: skip
    print("floor runs:", " ".join(f"{t:.2f}" for t in floor))
    print("kurma runs:", " ".join(f"{t:.2f}" for t in kurma))
    print(f"floor median {f_med:.3f}s  kurma median {k_med:.3f}s  ratio {k_med / f_med:.2f}x")


if __name__ == "__main__":
    main()
