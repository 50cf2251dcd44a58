"""Kernel module load order from modules.dep (no module is ever loaded on the host)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from kurma.init._modules import (
    ModuleReport,
    load_modules,
    load_order,
    module_name,
    parse_modules_dep,
    parse_name_list,
)

DEP = """\
V/virtio.ko:
V/virtio_ring.ko:
V/virtio_pci.ko: V/virtio_ring.ko V/virtio.ko
B/virtio_blk.ko: V/virtio_ring.ko V/virtio.ko
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko:
"""


def test_names_follow_the_kernel() -> None:
    """Paths and suffixes go; '-' is '_' to the kernel."""
    assert module_name("kernel/fs/ext4/ext4.ko.xz") == "ext4"
    assert module_name("virtio-blk") == "virtio_blk"
    assert parse_name_list("# base\nvirtio-blk\n\next4  # the OEM disk\n") == ["virtio_blk", "ext4"]


def test_dependencies_load_first_each_once() -> None:
    """modules.dep lists every dependency; each comes before its user and only once."""
    deps = parse_modules_dep(DEP)
    order, missing = load_order(deps, ["virtio_pci", "virtio-blk", "ext4", "virtio_pci"])
    names = [module_name(p) for p in order]
    assert missing == []
    assert len(names) == len(set(names))
    assert names.index("virtio_ring") < names.index("virtio_pci")
    assert names.index("virtio") < names.index("virtio_blk")
    for dep in ("jbd2", "mbcache", "crc16"):
        assert names.index(dep) < names.index("ext4")
    assert order[-1] == "kernel/fs/ext4/ext4.ko.xz"


def test_builtin_modules_are_neither_loaded_nor_missing() -> None:
    deps = parse_modules_dep(DEP)
    order, missing = load_order(deps, ["overlay", "no_such", "crc16"], builtin={"overlay"})
    assert [module_name(p) for p in order] == ["crc16"]
    assert missing == ["no_such"]


def test_a_missing_module_is_reported_not_raised(tmp_path: Path) -> None:
    """Nothing is loaded when nothing is found: the report names the module and why."""
    (tmp_path / "modules.dep").write_text(DEP)
    report = load_modules(["no-such-module"], str(tmp_path))
    assert report.failed == {"no_such_module": f"not in {tmp_path}"}
    assert "no_such_module (not in" in report.summary()


def test_no_modules_dep_is_reported(tmp_path: Path) -> None:
    report = load_modules(["ext4"], str(tmp_path))
    assert list(report.failed) == ["ext4"] and "no modules.dep" in report.failed["ext4"]
    assert load_modules([], str(tmp_path)) == ModuleReport()


def _vm_modules() -> Path | None:
    root = Path(__file__).resolve().parents[2] / "build/.cache/kernel"
    found = sorted(root.glob("*/lib/modules/*/modules.dep"))
    return found[-1].parent if found else None


@pytest.mark.skipif(_vm_modules() is None, reason="the VM kernel is not built (build/kernel.py)")
def test_the_vm_kernels_storage_modules_come_in_order() -> None:
    """Debian's real modules.dep: plain .ko files, virtio_ring before virtio_blk."""
    directory = _vm_modules()
    assert directory is not None
    deps = parse_modules_dep((directory / "modules.dep").read_text())
    builtin = {module_name(x) for x in (directory / "modules.builtin").read_text().split()}
    order, missing = load_order(deps, ["virtio_blk", "ext4", "vfat"], builtin)
    names = [module_name(p) for p in order]
    assert missing == []
    assert all(p.endswith(".ko") for p in order)
    if "virtio_ring" in names:
        assert names.index("virtio_ring") < names.index("virtio_blk")
    assert names.index("jbd2") < names.index("ext4")
    assert platform.machine()  # loading itself is only ever done in the VM


def test_waves_put_every_module_after_its_dependencies() -> None:
    """Modules of one wave may load together: their dependencies are all in earlier waves."""
    from kurma.init._modules import load_waves

    text = (
        "kernel/a.ko:\n"
        "kernel/b.ko: kernel/a.ko\n"
        "kernel/c.ko:\n"
        "kernel/d.ko: kernel/b.ko kernel/a.ko\n"
        "kernel/e.ko: kernel/c.ko\n"
    )
    deps = parse_modules_dep(text)
    order, missing = load_order(deps, ["d", "e"])
    assert missing == []
    waves = load_waves(deps, order)
    assert waves == [
        ["kernel/a.ko", "kernel/c.ko"],
        ["kernel/b.ko", "kernel/e.ko"],
        ["kernel/d.ko"],
    ]
    assert load_waves(deps, []) == []


def test_a_module_the_kernel_runs_is_not_loaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/init's loader usually loaded the base modules already: those `live` in /sys/module
    count as there without a finit_module (which reads the whole file before its EEXIST);
    one still `coming` is inserted, so the insert waits until it is ready."""
    from kurma.init import _modules

    (tmp_path / "modules.dep").write_text(DEP)
    sys_module = tmp_path / "sys-module"
    for name, state in (("virtio", "live"), ("virtio_ring", "live"), ("virtio_blk", "coming")):
        (sys_module / name).mkdir(parents=True)
        (sys_module / name / "initstate").write_text(state + "\n")
    inserted: list[str] = []

    def fake_insert(path: str) -> bool:
        inserted.append(module_name(path))
        return False  # EEXIST: the loader finished it meanwhile

    monkeypatch.setattr(_modules, "insert_module", fake_insert)
    report = load_modules(["virtio-blk"], str(tmp_path), sys_module=str(sys_module))
    assert inserted == ["virtio_blk"]
    assert sorted(report.already) == ["virtio", "virtio_blk", "virtio_ring"]
    assert report.loaded == [] and report.failed == {}
