"""Import limits that count uncompressed bytes while the archive streams: a caller's byte
limit on the hashing pass (the imageBytes quota) and the store's free-space reserve."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from kurma.aci._stream import SizeLimitExceeded, hash_stream
from kurma.store import ImageStore, StoreFull
from kurma.store._images import SpaceWatch
from tests.bombs import MiB, zero_bomb_aci


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 GiB of zeros in about 4 MB of gzip."""
    return zero_bomb_aci(tmp_path_factory.mktemp("bomb") / "bomb.aci", 4 << 30)


def test_small_bomb_is_a_valid_image(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "state")
    result = store.import_image(zero_bomb_aci(tmp_path / "b.aci", 2 * MiB))
    assert result.created and (result.record.path / "rootfs/zero").stat().st_size == 2 * MiB


def test_hashing_stops_as_soon_as_the_limit_is_passed(bomb: Path) -> None:
    started = time.monotonic()
    with open(bomb, "rb") as f, pytest.raises(SizeLimitExceeded) as e:
        hash_stream(f, 8 * MiB)
    assert e.value.limit == 8 * MiB
    assert time.monotonic() - started < 5  # 4 GiB would take far longer


class FakeDisk:
    """statvfs of a 1 GiB filesystem whose free space drops with what the import wrote."""

    def __init__(self, staging_root: Path, free: int) -> None:
        self.root = staging_root
        self.free = free
        self.real = os.statvfs

    def written(self) -> int:
        return sum(
            os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(self.root) for f in files
        )

    def __call__(self, path: str) -> object:
        return SimpleNamespace(
            f_blocks=(1 << 30) // 4096, f_frsize=4096, f_bavail=(self.free - self.written()) // 4096
        )


def test_an_import_stops_short_of_the_reserve_and_removes_its_staging(
    tmp_path: Path, bomb: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """min_free 10% of a 1 GiB disk with 200 MiB free: the 4 GiB bomb stops after about
    100 MiB decompressed, says so (StoreFull), and leaves nothing in tmp/ or images/."""
    store = ImageStore(tmp_path / "state", min_free=0.10)
    disk = FakeDisk(store.layout.tmp, 200 * MiB)
    monkeypatch.setattr("kurma.store._images.os.statvfs", disk)
    with pytest.raises(StoreFull, match=r"less than 10% of the state filesystem free") as e:
        store.import_image(bomb)
    assert "unpacked so far" in str(e.value)
    monkeypatch.undo()
    assert os.listdir(store.layout.tmp) == []
    assert store.list() == []


def test_no_reserve_without_min_free(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "state")
    assert store.space_watch() is None
    store.check_space(1 << 60)  # nothing to check


def test_space_watch_counts_pending_bytes(tmp_path: Path) -> None:
    watch = SpaceWatch(tmp_path, 0.10)
    watch(0)
    with pytest.raises(StoreFull):
        watch(watch.free_at_start)  # everything free taken: under any reserve
