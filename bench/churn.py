"""Benchmark: pod churn through a real kurmad, and what it leaves behind.

1000 cycles (default) of Create(start=True) + Destroy of a one-app busybox pod through the
API on kurmad's unix socket, one client. Before the cycles (after a warm-up) and after
them it prints, for kurmad and its launcher: open descriptors, mounts in kurmad's mount
namespace below its state and pods dirs, cgroups below kurmad's cgroup parent (every
hierarchy), and RSS. Targets: no growth of the first three, RSS < +2 MB. Then the
cycle's p50/p99.

    python3 bench/churn.py [--cycles 1000] [--warmup 20]

Pods live on a tmpfs (peers.state_tmpfs), as on a booted Kurma (/run/kurma/pods).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402
from api import IMAGE, SLEEPER  # noqa: E402  the API bench's busybox image and pod

from kurma.aci import build_aci  # noqa: E402
from kurma.client import Client  # noqa: E402
from kurma.runtime.cgroups import CgroupSystem  # noqa: E402

CGROUP_PARENT = "kurma-bench-churn"


@dataclass(frozen=True)
class Figures:
    fds: int
    launcher_fds: int
    mounts: int
    cgroups: int
    rss_kib: int
    launcher_rss_kib: int

    def line(self) -> str:
        return (
            f"fds {self.fds} (launcher {self.launcher_fds}), mounts {self.mounts}, "
            f"cgroups {self.cgroups}, RSS {self.rss_kib / 1024:.1f} MiB "
            f"(launcher {self.launcher_rss_kib / 1024:.1f} MiB)"
        )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cgroups() -> int:
    parent = CgroupSystem.detect().open(CGROUP_PARENT)
    return sum(1 for _ in parent.walk()) - len(parent.directories())


def _mounts(pid: int, below: tuple[str, ...]) -> int:
    """Mounts in the process's mount namespace at or below one of `below` (kurmad's own:
    the host's namespace is shared with whatever else runs on the machine)."""
    count = 0
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        point = line.split()[4]
        count += any(point == b or point.startswith(b.rstrip("/") + "/") for b in below)
    return count


def figures(kurmad: int, launcher: int, below: tuple[str, ...]) -> Figures:
    return Figures(
        fds=len(os.listdir(f"/proc/{kurmad}/fd")),
        launcher_fds=len(os.listdir(f"/proc/{launcher}/fd")),
        mounts=_mounts(kurmad, below),
        cgroups=_cgroups(),
        rss_kib=_rss_kib(kurmad),
        launcher_rss_kib=_rss_kib(launcher),
    )


def settled(kurmad: int, launcher: int, below: tuple[str, ...], timeout: float = 10.0) -> Figures:
    """The figures once the launcher has replenished its warm shells (two equal reads)."""
    last = figures(kurmad, launcher, below)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = figures(kurmad, launcher, below)
        if (now.fds, now.mounts, now.cgroups) == (last.fds, last.mounts, last.cgroups):
            return now
        last = now
    return last


def cycle(client: Client) -> float:
    start = time.perf_counter()
    pod = client.create_pod(spec=SLEEPER, start=True)
    client.destroy(pod.uuid, grace=1)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kurma-churn-", dir="/tmp"))
    socket_path = work / "kurmad.sock"
    proc = None
    with peers.state_tmpfs() as run:
        try:
            argv = [
                sys.executable, "-m", "kurma.api.daemon", "--config", "/dev/null",
                "--socket", str(socket_path), "--state-dir", str(work / "state"),
                "--pods-dir", str(run / "pods"), "--cgroup-parent", CGROUP_PARENT,
                "--stop-grace", "1",
            ]  # fmt: skip
            log = open(work / "kurmad.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            deadline = time.monotonic() + 30
            while not socket_path.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((work / "kurmad.log").read_text()[-3000:])
                time.sleep(0.05)
            launcher = int((work / "state" / "launcher.pid").read_text().split()[0])
            below = (str(run), str(work))
            aci = work / "busybox.aci"
            build_aci(peers.ensure_rootfs(), json.dumps(IMAGE).encode(), aci, mtime=0, owner=(0, 0))
            with Client.connect(str(socket_path), timeout=60) as client:
                client.import_image(aci)
                for _ in range(args.warmup):
                    cycle(client)
                before = settled(proc.pid, launcher, below)
                times = [cycle(client) for _ in range(args.cycles)]
                after = settled(proc.pid, launcher, below)
            print(f"{args.cycles} create+start+destroy cycles through kurmad's unix socket")
            print(f"  before: {before.line()}")
            print(f"  after:  {after.line()}")
            growth = {
                "fds": after.fds - before.fds,
                "launcher fds": after.launcher_fds - before.launcher_fds,
                "mounts": after.mounts - before.mounts,
                "cgroups": after.cgroups - before.cgroups,
            }
            rss = (after.rss_kib - before.rss_kib) / 1024
            print(
                "  growth: "
                + ", ".join(f"{k} {v:+d}" for k, v in growth.items())
                + f", RSS {rss:+.2f} MiB (launcher "
                + f"{(after.launcher_rss_kib - before.launcher_rss_kib) / 1024:+.2f} MiB)"
            )
            print("  targets: no growth of fds, mounts and cgroups; RSS < +2 MiB")
            print(
                f"  cycle p50 {peers.percentile(times, 50) * 1000:.1f} ms, "
                f"p99 {peers.percentile(times, 99) * 1000:.1f} ms"
            )
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            parent = CgroupSystem.detect().open(CGROUP_PARENT)
            if parent.exists():
                parent.kill_all()
                parent.remove()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
