"""build/initrd.py's pieces that shape the boot: /init's module list, the store's seed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "build"))

import initrd  # noqa: E402  (build/initrd.py)


def test_init_loads_loop_and_squashfs_then_the_rest_in_the_background() -> None:
    order = [
        "kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko", "kernel/drivers/block/loop.ko",
        "kernel/fs/squashfs/squashfs.ko", "kernel/fs/overlayfs/overlay.ko",
    ]  # fmt: skip
    lines = initrd.stage0_modules(order).splitlines()
    assert lines == [
        "kernel/drivers/block/loop.ko", "kernel/fs/squashfs/squashfs.ko", "&",
        "kernel/lib/crc16.ko", "kernel/fs/ext4/ext4.ko", "kernel/fs/overlayfs/overlay.ko",
    ]  # fmt: skip


def test_a_kernel_without_squashfs_is_an_error_naming_it() -> None:
    try:
        initrd.stage0_modules(["kernel/drivers/block/loop.ko"])
    except RuntimeError as e:
        assert "squashfs" in str(e)
    else:
        raise AssertionError("no error")


def test_the_store_seed_leaves_empty_placeholders_with_the_modes(tmp_path: Path) -> None:
    """Each rendered rootfs moves under /usr (into the squashfs); the store keeps an empty
    directory of the same mode, which kurma/init/_seed.py binds at boot."""
    store = tmp_path / initrd.STATE_DIR
    for kind, name in (("images", "sha512-aa"), ("trees", "k1")):
        rootfs = store / kind / name / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "bin/sh").write_text("x")
        os.chmod(rootfs, 0o750)
        (store / kind / name / "info.json").write_text("{}")
    assert initrd.seed_from_store(tmp_path) == 2
    seed = tmp_path / initrd.SEED_DIR.lstrip("/")
    assert (seed / "images/sha512-aa/rootfs/bin/sh").read_text() == "x"
    assert (seed / "trees/k1/rootfs/bin/sh").exists()
    placeholder = store / "images/sha512-aa/rootfs"
    assert placeholder.is_dir() and not any(placeholder.iterdir())
    assert (placeholder.stat().st_mode & 0o777) == 0o750
    assert (store / "images/sha512-aa/info.json").exists()  # the records stay writable
