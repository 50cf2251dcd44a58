"""`make boot`: the initrd under qemu with a development OEM disk, console on this terminal.

    python3 build/vm/boot.py [--out out] [--autologin] [--timeout S]

Needs OUT/vmlinux and OUT/initrd.img (`make initrd`). Makes OUT/dev/: a fresh PKI, an OEM
disk with a random console password (printed, and kept in OUT/dev/console-password), the API
forwarded to 127.0.0.1 with mutual TLS. On a terminal, qemu runs in the foreground (ctrl-a x
quits; `poweroff` at the prompt ends it). Without a terminal (CI, scripts) it boots until
the login prompt, reports how long that took, and stops the VM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vm import machine, qemu

REPO = Path(__file__).resolve().parents[2]
LOGIN_PROMPT = "login:"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out")
    ap.add_argument("--autologin", action="store_true", help="no password (development)")
    ap.add_argument("--timeout", type=float, default=300, help="without a terminal: boot limit")
    args = ap.parse_args(argv)
    vmlinux, initrd = args.out / "vmlinux", args.out / "initrd.img"
    for f in (vmlinux, initrd):
        if not f.is_file():
            print(f"boot: {f} is missing: run `make initrd` first", file=sys.stderr)
            return 1
    m = machine.prepare(args.out / "dev", vmlinux, initrd, autologin=args.autologin)
    if m.password:
        pw = args.out / "dev/console-password"
        pw.write_text(m.password + "\n")
        os.chmod(pw, 0o600)
    cert, key, ca = m.client_credentials()
    print(
        f"boot: console login: root / {m.password or '(autologin)'}\n"
        f"boot: API from this host: kurmactl --host {m.api_target} "
        f"--cert {cert} --key {key} --ca {ca} ps",
        flush=True,
    )
    accel = qemu.choose_accel(vmlinux)
    argv_ = m.argv(accel)
    if sys.stdin.isatty():
        argv_[argv_.index("-serial") + 1] = "mon:stdio"  # ctrl-a x quits, ctrl-c reaches the VM
        os.execvp(argv_[0], argv_)
    t0 = time.monotonic()
    r = qemu.run(argv_, args.timeout, until=None, contains=LOGIN_PROMPT)
    sys.stdout.write(r.output if r.output.endswith("\n") else r.output + "\n")
    seen = r.first_containing(LOGIN_PROMPT)
    if seen is None:
        print(f"boot: no login prompt within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"boot: login prompt after {seen[0]:.1f} s (accel {accel}); VM stopped "
          f"({time.monotonic() - t0:.1f} s)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
