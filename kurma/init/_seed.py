"""The initrd's image store, seeded from the system squashfs.

The kernel copies every byte of an initramfs into RAM before PID 1 runs; under qemu without
KVM that costs about 45 ms per MB. So the initrd carries the bulk of the machine (/usr: the
Python runtime, kurma, and the rendered trees of the service images) as one compressed
squashfs that is mounted, not unpacked (build/initrd.py). The store's small files (records,
manifests) stay in the initramfs, writable as kurmad expects; each pre-rendered `rootfs`
there is an empty directory until this module binds the squashfs's copy onto it, read-only,
as the store's rendered trees are meant to be (pods write to their own overlay upper).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..runtime.linux import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, mount

log = logging.getLogger("kurma.init")

SEED_DIR = "/usr/lib/kurma/store-seed"  # in the squashfs: <kind>/<name>/rootfs
STORE_DIR = "/var/lib/kurma"  # the initrd's store (kurma.store layout)
SEEDED_KINDS = ("images", "trees")
ROOTFS = "rootfs"


@dataclass
class SeedReport:
    bound: list[str] = field(default_factory=list)  # "<kind>/<name>"
    errors: list[str] = field(default_factory=list)


def seeded_rootfs(seed: str = SEED_DIR) -> list[tuple[str, str]]:
    """(kind, name) of every rootfs the seed holds, sorted."""
    found = []
    for kind in SEEDED_KINDS:
        try:
            names = sorted(os.listdir(os.path.join(seed, kind)))
        except FileNotFoundError:
            continue
        found += [(kind, n) for n in names if os.path.isdir(os.path.join(seed, kind, n, ROOTFS))]
    return found


def bind_seed(store: str = STORE_DIR, seed: str = SEED_DIR) -> SeedReport:
    """Binds each seeded rootfs onto the store's empty placeholder, read-only. A placeholder
    that is missing, already a mount point or not empty is left alone (a store that kurmad
    has already changed, or a second run), and named in the report when it is an error."""
    report = SeedReport()
    for kind, name in seeded_rootfs(seed):
        source = os.path.join(seed, kind, name, ROOTFS)
        target = os.path.join(store, kind, name, ROOTFS)
        if not os.path.isdir(target):
            report.errors.append(f"{kind}/{name}: the store has no {target}")
            continue
        if os.path.ismount(target):
            continue
        if os.listdir(target):
            report.errors.append(f"{kind}/{name}: {target} is not empty")
            continue
        try:
            mount(source, target, None, MS_BIND | MS_REC)
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        except OSError as e:
            report.errors.append(f"{kind}/{name}: {e}")
            continue
        report.bound.append(f"{kind}/{name}")
    return report
