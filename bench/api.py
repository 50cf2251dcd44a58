"""Benchmark: the API as clients feel it, against a real kurmad on its unix socket.

- List and Get latency (p50/p99 of 200 calls each from one connected client) with 0, 100 and
  500 running pods. Targets: List p99 under 50 ms at 500 pods; unary calls under 2 ms p50.
- Pods created per second by 20 concurrent clients (each its own channel), Create only.
- `kurmactl ps` wall time next to `python -c 'import grpc'` (the floor of any gRPC client in
  Python), interleaved, bytecode cache on. Target: at most 1.5x.

    python3 bench/api.py [--pods 0,100,500] [--calls 200] [--clients 20]
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
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402

from kurma.aci import build_aci  # noqa: E402
from kurma.client import Client, app_spec, run_spec  # noqa: E402
from kurma.runtime.cgroups import CgroupSystem  # noqa: E402

IMAGE = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/bench-busybox",
    "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
    "app": {"exec": ["/bin/sleep", "3600"], "user": "0", "group": "0"},
}
SLEEPER = run_spec(app_spec("example.com/bench-busybox"))


class Kurmad:
    """A kurmad on scratch directories (pods under /run, as by default, or under
    `pods_parent`: peers.state_tmpfs; its state dir and socket under `work_parent`, default
    /tmp), in cgroup `cgroup_parent`, with more daemon flags in `extra`; `prefix` goes before
    its command line (`nsenter --net=PATH`: another network namespace; it execs kurmad, so
    `proc` is kurmad itself)."""

    def __init__(
        self,
        pods_parent: Path | None = None,
        *,
        work_parent: Path | None = None,
        cgroup_parent: str = "kurma-bench-api",
        extra: Sequence[str] = (),
        prefix: Sequence[str] = (),
    ) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="kurma-api-", dir=work_parent or "/tmp"))
        self.pods = Path(tempfile.mkdtemp(prefix="kurma-api-pods-", dir=pods_parent or "/run"))
        self.socket = self.work / "kurmad.sock"
        self.state = self.work / "state"
        self.cgroup_parent = cgroup_parent
        argv = [
            *prefix, sys.executable, "-m", "kurma.api.daemon", "--config", "/dev/null",
            "--socket", str(self.socket), "--state-dir", str(self.state),
            "--pods-dir", str(self.pods), "--cgroup-parent", cgroup_parent,
            "--stop-grace", "1", "--workers", "64", *extra,
        ]  # fmt: skip
        self.log = open(self.work / "kurmad.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                raise RuntimeError((self.work / "kurmad.log").read_text()[-3000:])
            time.sleep(0.05)

    def client(self) -> Client:
        return Client.connect(str(self.socket), timeout=60)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                with self.client() as c:
                    for pod in c.list_pods():
                        c.destroy(pod.uuid, grace=1)
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()
            parent = CgroupSystem.detect().open(self.cgroup_parent)
            if parent.exists():
                parent.kill_all()
                parent.remove()
            shutil.rmtree(self.work, ignore_errors=True)
            shutil.rmtree(self.pods, ignore_errors=True)


def timed(calls: int, fn: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(values: list[float], p: float) -> str:
    return f"{peers.percentile(values, p) * 1000:7.2f} ms"


def grow_to(client: Client, count: int) -> str | None:
    """Run sleeping pods until `count` exist; returns one of their UUIDs."""
    have = client.list_pods()
    for _ in range(count - len(have)):
        client.create_pod(spec=SLEEPER, start=True)
    pods = client.list_pods()
    return pods[0].uuid if pods else None


def creates_per_second(daemon: Kurmad, clients: int, per_client: int) -> float:
    """`clients` threads, each with its own channel, each creating `per_client` pods."""
    made: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def work() -> None:
        with daemon.client() as c:
            barrier.wait()
            for _ in range(per_client):
                pod = c.create_pod(spec=SLEEPER)
                with lock:
                    made.append(pod.uuid)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    with daemon.client() as c:
        for uuid in made:
            c.destroy(uuid)
    return len(made) / elapsed


def cli_vs_grpc(daemon: Kurmad, runs: int) -> tuple[list[float], list[float]]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    env.pop("PYTHONDONTWRITEBYTECODE")
    kurmactl = [sys.executable, "-m", "kurma.cli.main", "-H", f"unix://{daemon.socket}", "ps"]
    floor = [sys.executable, "-c", "import grpc"]
    for argv in (kurmactl, floor):  # warm the bytecode cache and the page cache
        subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=True)
    cli, base = [], []
    for _ in range(runs):
        for argv, out in ((kurmactl, cli), (floor, base)):
            start = time.perf_counter()
            subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=True)
            out.append(time.perf_counter() - start)
    return cli, base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", default="0,100,500")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--cli-runs", type=int, default=20)
    args = parser.parse_args()

    daemon = Kurmad()
    try:
        aci = daemon.work / "busybox.aci"
        build_aci(peers.ensure_rootfs(), json.dumps(IMAGE).encode(), aci, mtime=0, owner=(0, 0))
        with daemon.client() as client:
            client.import_image(aci)
            rate = creates_per_second(daemon, args.clients, 10)
            print(f"Create: {rate:.0f} pods/s from {args.clients} concurrent clients")
            print("List and Get on the unix socket, one connected client:")
            for count in (int(n) for n in args.pods.split(",")):
                some = grow_to(client, count)
                lists = timed(args.calls, client.list_pods)
                line = f"  {count:4d} pods: List p50 {ms(lists, 50)} p99 {ms(lists, 99)}"
                if some is not None:
                    gets = timed(args.calls, lambda u=some: client.get(u))
                    line += f" | Get p50 {ms(gets, 50)} p99 {ms(gets, 99)}"
                print(line)
            print("  targets: List p99 < 50 ms at 500 pods, unary p50 < 2 ms")
        cli, base = cli_vs_grpc(daemon, args.cli_runs)
        ratio = peers.percentile(cli, 50) / peers.percentile(base, 50)
        print(
            f"kurmactl ps p50 {ms(cli, 50)} vs python -c 'import grpc' p50 {ms(base, 50)}: "
            f"{ratio:.2f}x (target <= 1.50x)"
        )
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
