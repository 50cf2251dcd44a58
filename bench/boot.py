"""Boot time of the real initrd against a busybox-only floor, same kernel, same qemu flags.

    python3 bench/boot.py [--runs 5] [--no-build] [--no-repro]

- kurma: from qemu's start to the console's `login:` prompt (the initrd of build/initrd.py,
  a development OEM disk from build/vm/machine.py).
- floor: build/vm/smoke.py's initrd (busybox, the same modules loaded, an overlay mounted),
  from qemu's start to its marker line.
Runs are interleaved (floor, kurma, floor, ...); medians and the ratio are printed (target
<= 3x), with the per-step breakdown of one boot's log, the compressed initrd size (target
< 30 MB), PID 1's, kurmad's and the launcher's PSS after boot (Host.Info over mTLS), and
whether two builds from the same inputs are byte-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build"))
sys.path.insert(0, str(ROOT))

import kernel  # noqa: E402
from vm import machine, qemu, smoke  # noqa: E402

import initrd as initrd_build  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def boot_to_login(m: machine.Machine, accel: str, timeout: float) -> float:
    r = qemu.run(m.argv(accel), timeout, contains="login:")
    seen = r.first_containing("login:")
    if seen is None:
        raise RuntimeError(f"no login prompt within {timeout:g} s:\n{r.output[-3000:]}")
    return seen[0]


def boot_floor(vmlinux: Path, initrd: Path, accel: str, timeout: float) -> float:
    r = qemu.run(qemu.qemu_argv(vmlinux, initrd, accel=accel), timeout, until=smoke.MARKER)
    seen = r.first(smoke.MARKER)
    if seen is None:
        raise RuntimeError(f"floor: no marker within {timeout:g} s:\n{r.output[-2000:]}")
    return seen[0]


def after_boot(m: machine.Machine, accel: str, timeout: float) -> tuple[dict[str, int], list]:
    """Boots once more, waits for the services, and asks Host.Info for the PSS figures and
    Host.BootLog for the steps (the boot goes on after the login prompt: the network and
    the services come after the console)."""
    from kurma.client import Client

    proc = subprocess.Popen(
        m.argv(accel), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        cert, key, ca = m.client_credentials()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with contextlib.closing(
                    Client.connect(
                        m.api_target, timeout=5, cert=str(cert), key=str(key), ca=str(ca)
                    )
                ) as c:
                    states = {s.name: s.state for s in c.services()}
                    if states and all(s == "RUNNING" for s in states.values()):
                        time.sleep(5)  # let the boot's transients settle
                        info = c.info()
                        return {
                            "kurma-init": info.init_pss_bytes,
                            "kurmad": info.kurmad_pss_bytes,
                            "launcher": info.launcher_pss_bytes,
                        }, list(c.boot_log().steps)
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(2)
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "out")
    ap.add_argument("--no-build", action="store_true", help="use OUT/initrd.img as it is")
    ap.add_argument("--no-repro", action="store_true", help="skip the second build")
    ap.add_argument("--timeout", type=float, default=400)
    args = ap.parse_args(argv)

    if not args.no_build:
        initrd_build.build_initrd(args.out)
    initrd, vmlinux = args.out / "initrd.img", args.out / "vmlinux"
    size = initrd.stat().st_size
    repro = None
    if not args.no_repro:
        with tempfile.TemporaryDirectory(prefix="kurma-bench-boot.") as tmp:
            second = initrd_build.build_initrd(Path(tmp))
            repro = sha256(Path(second.initrd)) == sha256(initrd)

    build = kernel.ensure_kernel()
    accel = qemu.choose_accel(vmlinux)
    with tempfile.TemporaryDirectory(prefix="kurma-bench-boot.") as tmp:
        floor_initrd = Path(tmp) / "floor.img"
        smoke.build_smoke_initrd(build, floor_initrd, list(smoke.DEFAULT_MODULES))
        m = machine.prepare(Path(tmp) / "machine", vmlinux, initrd, password="bench")
        floors, kurmas = [], []
        for i in range(args.runs):
            floors.append(boot_floor(vmlinux, floor_initrd, accel, args.timeout))
            seconds = boot_to_login(m, accel, args.timeout)
            kurmas.append(seconds)
            print(f"run {i + 1}: floor {floors[-1]:.2f} s, kurma {kurmas[-1]:.2f} s", flush=True)
        memory, steps = after_boot(m, accel, args.timeout)

    floor, kurma = statistics.median(floors), statistics.median(kurmas)
    print(f"\nboot to login ({accel}, {args.runs} runs, median):")
    print(f"  kurma  {kurma:6.2f} s")
    print(f"  floor  {floor:6.2f} s   (busybox initrd: marker line)")
    print(f"  ratio  {kurma / floor:6.2f}x  (target <= 3x)")
    print("\nsteps of one more boot (PID 1's boot log, Host.BootLog; seconds since PID 1 began):")
    for step in steps:
        ms = step.duration * 1e3
        print(f"  {step.name:22s} {step.outcome:8s} at {step.started:6.2f} s {ms:9.1f} ms")
    print(f"\ninitrd: {size / 1e6:.1f} MB compressed (target < 30 MB)")
    if repro is not None:
        print(f"initrd reproducible (two builds byte-identical): {'yes' if repro else 'NO'}")
    print("memory after boot (PSS): " + ", ".join(
        f"{k} {v / 2**20:.1f} MiB" for k, v in memory.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
