"""The smoke initrd: busybox, a marker line, a few modules loaded, power off. The boot floor.

    python3 build/vm/smoke.py [--accel tcg|kvm|auto] [--modules overlay,veth] [--keep DIR]

Builds (in a temporary directory) a gzip'd cpio newc archive holding busybox-static as
/bin/busybox, the device nodes /dev/console, /dev/null, /dev/urandom, the given modules with
their dependencies under /lib/modules/<release>/ and a list of them in load order, and /init:

    KURMA-SMOKE-OK <uname -r>
    KURMA-SMOKE-INSMOD ok|fail <path>      one per module, in load order
    KURMA-SMOKE-OVERLAY ok|fail            an overlay mount on a tmpfs, when overlay is loaded
    KURMA-SMOKE-MODULES <lines of /proc/modules>
    KURMA-SMOKE-DONE

then `poweroff -f`, so qemu exits 0 by itself. The VM tests use it to check the kernel and
qemu; bench/boot.py can use it as the floor to compare the real boot with.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `vm` and `kernel` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernel

from vm import cpio, qemu

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
MARKER = "KURMA-SMOKE-OK"
DEFAULT_MODULES = ("overlay",)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "KURMA-SMOKE-OK $(uname -r)"
while read -r m; do
    if insmod "/lib/modules/$(uname -r)/$m"; then r=ok; else r=fail; fi
    echo "KURMA-SMOKE-INSMOD $r $m"
done < /etc/smoke-modules
if grep -qw overlay /proc/filesystems; then
    mount -t tmpfs tmpfs /tmp
    mkdir -p /tmp/lower /tmp/upper /tmp/work /tmp/merged
    echo lower > /tmp/lower/f
    if mount -t overlay overlay -o lowerdir=/tmp/lower,upperdir=/tmp/upper,workdir=/tmp/work \\
            /tmp/merged && echo upper > /tmp/merged/f && [ "$(cat /tmp/upper/f)" = upper ]; then
        echo "KURMA-SMOKE-OVERLAY ok"
    else
        echo "KURMA-SMOKE-OVERLAY fail"
    fi
fi
echo "KURMA-SMOKE-MODULES $(wc -l < /proc/modules)"
echo "KURMA-SMOKE-DONE"
poweroff -f
"""


def build_smoke_initrd(
    build: kernel.KernelBuild,
    out: Path | str,
    modules: list[str] | tuple[str, ...] = DEFAULT_MODULES,
    busybox: Path = BUSYBOX,
) -> list[str]:
    """Writes the gzip'd smoke initrd to `out`; returns the module paths in load order."""
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} is missing (Debian's busybox-static)")
    a = cpio.Archive()
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root"):
        a.add_dir(d)
    a.add_device("dev/console", "c", 5, 1, 0o600)
    a.add_device("dev/null", "c", 1, 3, 0o666)
    a.add_device("dev/urandom", "c", 1, 9, 0o666)
    a.add_path("bin/busybox", busybox, 0o755)
    a.add_file("init", INIT.encode(), 0o755)
    order = []
    for ko in kernel.module_closure(build.modules_dir, modules):
        rel = ko.relative_to(build.modules_dir).as_posix()
        a.add_path(f"lib/modules/{build.version}/{rel}", ko, 0o644)
        order.append(rel)
    a.add_file("etc/smoke-modules", "".join(f"{m}\n" for m in order).encode())
    cpio.write_gzip(out, a.to_bytes())
    return order


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accel", default="auto", choices=("auto", "tcg", "kvm"))
    ap.add_argument("--modules", default=",".join(DEFAULT_MODULES))
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--keep", type=Path, help="write the initrd here instead of a temp dir")
    args = ap.parse_args(argv)
    build = kernel.ensure_kernel()
    accel = qemu.choose_accel(build.vmlinux) if args.accel == "auto" else args.accel
    with tempfile.TemporaryDirectory(prefix="kurma-smoke.") as tmp:
        initrd = (args.keep or Path(tmp)) / "smoke-initrd.gz"
        initrd.parent.mkdir(parents=True, exist_ok=True)
        build_smoke_initrd(build, initrd, [m for m in args.modules.split(",") if m])
        r = qemu.run(qemu.qemu_argv(build.vmlinux, initrd, accel=accel), args.timeout)
    sys.stdout.write(r.output if r.output.endswith("\n") else r.output + "\n")
    marker = r.first(MARKER)
    print(
        f"smoke: kernel {build.version}, accel {accel}, initrd {initrd.stat().st_size} bytes"
        if args.keep
        else f"smoke: kernel {build.version}, accel {accel}",
        file=sys.stderr,
    )
    print(
        f"smoke: marker at {marker[0]:.2f} s, exit {r.returncode} at {r.seconds:.2f} s"
        if marker
        else f"smoke: no marker; exit {r.returncode} at {r.seconds:.2f} s",
        file=sys.stderr,
    )
    return 0 if marker and r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
