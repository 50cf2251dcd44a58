"""The VM's foundation: Debian's kernel (build/kernel.py) boots a busybox initrd under qemu.

The kernel comes from build/.cache/kernel (downloaded and unpacked on the first run, about
15 s); the smoke initrd (build/vm/smoke.py) prints a marker with `uname -r`, insmods the
closure of the modules the real initrd needs (in modules.dep order), mounts an overlay on a
tmpfs and powers off, so qemu ends by itself with status 0.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "build"))

import kernel  # noqa: E402  (build/kernel.py)
from vm import cpio, qemu, smoke  # noqa: E402  (build/vm/)

pytestmark = pytest.mark.vm

MODULES = ("overlay", "veth", "bridge", "virtio_net", "virtio_blk", "virtio_pci", "ext4")
BOOT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def kbuild() -> kernel.KernelBuild:
    if not shutil.which(qemu.QEMU):
        pytest.skip(f"{qemu.QEMU} is not installed (build/apt-deps.sh installs it)")
    try:
        return kernel.ensure_kernel()
    except kernel.KernelError as e:
        if os.geteuid() != 0 and "run as root" in str(e):
            pytest.skip(str(e))
        raise


@pytest.fixture
def tmpdir_clean():
    d = Path(tempfile.mkdtemp(prefix="kurma-vm-smoke."))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_kernel_is_an_elf_with_a_pvh_note(kbuild: kernel.KernelBuild) -> None:
    with open(kbuild.vmlinux, "rb") as f:
        head = f.read(64)
    assert head[:4] == b"\x7fELF" and head[4] == 2, "vmlinux is not an ELF64"
    assert struct.unpack_from("<H", head, 0x12)[0] == 62, "vmlinux is not x86-64"
    assert kbuild.pvh_entry, "no XEN_ELFNOTE_PHYS32_ENTRY note"
    assert kernel.pvh_entry(kbuild.vmlinux.read_bytes()) == kbuild.pvh_entry
    assert kbuild.version.startswith("6.1.") and kbuild.version.endswith("-amd64")
    assert kbuild.modules_dir.name == kbuild.version
    assert (kbuild.modules_dir / "modules.dep").stat().st_size > 0


def test_a_second_run_is_cached(kbuild: kernel.KernelBuild) -> None:
    t0 = time.monotonic()
    again = kernel.ensure_kernel()
    assert time.monotonic() - t0 < 1.0
    assert again == kbuild


def _modinfo_depends(ko: Path) -> set[str]:
    """The `depends=` of a module's .modinfo (written by modpost, independent of depmod)."""
    data = ko.read_bytes()
    i = data.find(b"\0depends=")
    if i < 0:
        return set()
    value = data[i + 9 : data.index(b"\0", i + 9)].decode()
    return {d.replace("-", "_") for d in value.split(",") if d}


def test_module_closure_puts_dependencies_first(kbuild: kernel.KernelBuild) -> None:
    order = kernel.module_closure(kbuild.modules_dir, MODULES)
    names = [kernel.module_name(p.name) for p in order]
    assert len(names) == len(set(names)), "a module appears twice"
    for m in MODULES:
        assert m in names
    for i, ko in enumerate(order):
        assert ko.is_file()
        for dep in _modinfo_depends(ko):
            assert dep in names[:i], f"{names[i]} needs {dep} before it: {names}"
    assert names.index("virtio_ring") < names.index("virtio") < names.index("virtio_net")
    # built-in modules need nothing; unknown names are an error
    builtin = sorted(kernel.builtin_modules(kbuild.modules_dir))
    assert builtin and kernel.module_closure(kbuild.modules_dir, builtin[:1]) == []
    with pytest.raises(KeyError):
        kernel.module_closure(kbuild.modules_dir, ["no_such_module"])


def test_smoke_initrd_is_reproducible_and_well_formed(
    kbuild: kernel.KernelBuild, tmpdir_clean: Path
) -> None:
    a, b = tmpdir_clean / "a.gz", tmpdir_clean / "b.gz"
    smoke.build_smoke_initrd(kbuild, a, ["overlay"])
    smoke.build_smoke_initrd(kbuild, b, ["overlay"])
    assert a.read_bytes() == b.read_bytes()
    data = gzip.decompress(a.read_bytes())
    names = {}
    pos = 0
    while True:  # walk the newc headers
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * k : pos + 14 + 8 * k], 16) for k in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            break
        names[name] = fields
        pos = (pos + 110 + namesize + 3) // 4 * 4
        pos = (pos + filesize + 3) // 4 * 4
    assert names["dev/console"][1] == 0o20600 and names["dev/console"][9:11] == [5, 1]
    assert names["dev/null"][9:11] == [1, 3] and names["dev/urandom"][9:11] == [1, 9]
    assert names["init"][1] == 0o100755 and names["bin/busybox"][1] == 0o100755
    assert f"lib/modules/{kbuild.version}/kernel/fs/overlayfs/overlay.ko" in names
    assert cpio.Archive().to_bytes()  # an empty archive is just the trailer


def test_smoke_boot(kbuild: kernel.KernelBuild, tmpdir_clean: Path) -> None:
    initrd = tmpdir_clean / "smoke.gz"
    order = smoke.build_smoke_initrd(kbuild, initrd, MODULES)
    accel = qemu.choose_accel(kbuild.vmlinux)
    argv = qemu.qemu_argv(kbuild.vmlinux, initrd, accel=accel)
    r = qemu.run(argv, BOOT_TIMEOUT)  # kills qemu's process group at the timeout
    log = f"accel {accel}, {r.seconds:.1f} s, exit {r.returncode}:\n{r.output[-4000:]}"

    marker = r.first(smoke.MARKER)
    assert marker, f"no {smoke.MARKER} line: {log}"
    assert marker[1].split() == [smoke.MARKER, kbuild.version], log
    loaded = [ln.split(None, 2)[1:] for _, ln in r.lines if ln.startswith("KURMA-SMOKE-INSMOD")]
    assert loaded == [["ok", m] for m in order], log
    assert r.first("KURMA-SMOKE-OVERLAY ok"), log
    count = r.first("KURMA-SMOKE-MODULES")
    assert count and int(count[1].split()[1]) == len(order), log
    assert r.first("KURMA-SMOKE-DONE"), log
    assert not r.timed_out, f"qemu still running after {BOOT_TIMEOUT} s: {log}"
    assert r.returncode == 0, log
    print(f"smoke boot ({accel}): marker at {marker[0]:.2f} s, qemu exited at {r.seconds:.2f} s")
