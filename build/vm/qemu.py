"""qemu for the VM: the command line of DESIGN.md, the accelerator choice, a timed run.

The machine: `-M pc -cpu max -m 1G -smp 2 -accel tcg,thread=multi -nodefaults -serial stdio
-display none -no-reboot`, the vmlinux booted directly through its PVH note, kernel command
line `console=ttyS0 quiet panic=-1 random.trust_cpu=on`.

KVM: /dev/kvm may exist without working. On the machines this was written on (a Firecracker
guest: /dev/kvm, but no vmx/svm flag in /proc/cpuinfo) `-cpu max` and `-cpu host` abort on
MSR 0x10a, and without that MSR the guest spins in the host kernel and prints nothing.
`choose_accel` uses KVM only when $KURMA_QEMU_ACCEL says so, or it is `auto` (the default)
and a probe boot under KVM reaches the kernel's first message; the probe's answer is
remembered per host kernel and qemu binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
APPEND = "console=ttyS0 quiet panic=-1 random.trust_cpu=on"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "vm"


def qemu_argv(
    vmlinux: Path | str,
    initrd: Path | str | None = None,
    *,
    append: str = APPEND,
    accel: str = "tcg",
    memory: str = "1G",
    smp: int = 2,
    extra: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The qemu command line; `accel` is "tcg" or "kvm" (KVM drops the arch-capabilities MSR)."""
    if accel == "kvm":
        cpu, acc = "max,-arch-capabilities", "kvm"
    elif accel == "tcg":
        cpu, acc = "max", "tcg,thread=multi"
    else:
        raise ValueError(f"accel must be tcg or kvm, not {accel!r}")
    argv = [
        QEMU, "-M", "pc", "-cpu", cpu, "-m", memory, "-smp", str(smp), "-accel", acc,
        "-nodefaults", "-serial", "stdio", "-display", "none", "-no-reboot",
        "-kernel", str(vmlinux),
    ]  # fmt: skip
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    return [*argv, "-append", append, *extra]


@dataclass
class Run:
    argv: list[str]
    returncode: int | None  # None: killed at the timeout
    output: str  # serial console and qemu's stderr, interleaved
    seconds: float  # from start to exit (or to the kill)
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)
    timed_out: bool = False

    def first(self, prefix: str) -> tuple[float, str] | None:
        """The first output line starting with `prefix` and when it arrived."""
        return next(((t, ln) for t, ln in self.lines if ln.startswith(prefix)), None)

    def first_containing(self, text: str) -> tuple[float, str] | None:
        """The first output line (or unfinished last line: a prompt) holding `text`."""
        return next(((t, ln) for t, ln in self.lines if text in ln), None)


def run(
    argv: list[str], timeout: float, *, until: str | None = None, contains: str | None = None
) -> Run:
    """Runs qemu with no stdin, collecting output with arrival times until it exits.

    Kills it (its whole process group) at `timeout`, or right after a line starting with
    `until` arrives, or output holding `contains` (a prompt need not end its line), if
    given. Always reaps it.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    buf, chunks, lines = b"", [], []
    timed_out = stopped = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                timed_out = True
                break
            if not sel.select(left):
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            chunks.append(data)
            buf += data
            now = time.monotonic() - t0
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace").rstrip("\r")
                lines.append((now, line))
                stopped = stopped or (until is not None and line.startswith(until))
                stopped = stopped or (contains is not None and contains in line)
            if contains is not None and contains in buf.decode(errors="replace"):
                stopped = True
            if stopped:
                break
    finally:
        sel.close()
        if proc.poll() is None and (timed_out or stopped):
            _kill(proc)
        try:
            proc.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
            proc.wait()
        proc.stdout.close()
    if buf:
        lines.append((time.monotonic() - t0, buf.decode(errors="replace").rstrip("\r")))
    output = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return Run(
        argv,
        None if timed_out else proc.returncode,
        output,
        time.monotonic() - t0,
        lines,
        timed_out,
    )


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _cpu_has_virtualization() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # cannot tell: let the probe decide
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return "vmx" in flags or "svm" in flags


def kvm_probe(vmlinux: Path | str, timeout: float = 8.0) -> bool:
    """Does a guest run under KVM? Boots the kernel without an initrd and waits for its
    first console line (it then panics for want of a root, and -no-reboot ends qemu)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not shutil.which(QEMU):
        return False
    if not _cpu_has_virtualization():
        return False  # /dev/kvm without VT-x/AMD-V under it (a nested guest): it hangs
    argv = qemu_argv(vmlinux, accel="kvm", append="console=ttyS0 panic=-1")
    r = run(argv, timeout, until="[")
    return any(ln.startswith("[") and "Linux version" in ln for _, ln in r.lines)


def choose_accel(vmlinux: Path | str, cache: Path = CACHE) -> str:
    """`tcg` or `kvm`: $KURMA_QEMU_ACCEL (tcg, kvm or auto; default auto) decides, auto by a
    remembered probe."""
    want = os.environ.get("KURMA_QEMU_ACCEL", "auto")
    if want in ("tcg", "kvm"):
        return want
    if not os.path.exists("/dev/kvm"):
        return "tcg"
    qemu = shutil.which(QEMU) or QEMU
    with contextlib.suppress(OSError):
        st = os.stat(qemu)
        qemu = f"{qemu}:{st.st_size}:{st.st_mtime_ns}"
    key = f"{os.uname().release} {qemu}"
    memo = cache / "accel.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(memo.read_text())
        if data["key"] == key:
            return data["accel"]
    accel = "kvm" if kvm_probe(vmlinux) else "tcg"
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".accel.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "accel": accel}) + "\n")
        tmp.replace(memo)
    return accel
