"""Benchmark: starting a pod running /bin/true, Kurma vs crun, runc and the unshare floor.

Kurma is measured through the runtime's Python interface from a warm runtime (launcher
running with a warm pod shell, image rendered): from the request (`create_pod`) until the
app's exit status is known (`wait_app`). The pod is destroyed outside the timed region,
though `crun run` and `runc run` must delete their container before they return (see
peers.py: their figure includes that). Runs are interleaved kurma, crun, runc, floor, with
the same static busybox tree and the same seccomp deny-list on every side. Every side keeps
its state (Kurma's pods, crun's and runc's `--root`) on one tmpfs the bench mounts
(`peers.state_tmpfs`): /run is a tmpfs on a real host and on a booted Kurma, but ext4 on
these machines. Targets: kurma's p50 at or below crun's, its p99 within 2x crun's p99.

Memory: what each running pod adds, as PSS of everything Kurma runs for it (kurma-podinit;
the app itself is the user's and is the same under every runtime), with 200 `sleep` pods
running at once; and the runtime process's own growth per pod. The peers' figure is the
container process alone (they leave no shim).

    python3 bench/pod_start.py [--runs 50] [--pods 200] [--state-dir DIR]

Also over kurmad's unix socket from a connected client (kurma-api: Create with start, then
Wait), in the same interleaved run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
from api import Kurmad

from kurma.aci import build_aci, parse_pod_manifest
from kurma.client import Client, app_spec, pods_pb2, run_spec
from kurma.runtime._runtime import Runtime, RuntimeConfig

IMAGE = {
    "acKind": "ImageManifest",
    "acVersion": "0.8.11",
    "name": "example.com/bench-busybox",
    "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
    "app": {"exec": ["/bin/true"], "user": "0", "group": "0"},
}


def pod_manifest(image_id: str, argv: list[str]) -> object:
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [
            {
                "name": "bench",
                "image": {"id": image_id},
                "app": {"exec": argv, "user": "0", "group": "0"},
            }
        ],
    }
    return parse_pod_manifest(json.dumps(doc).encode())


class KurmaSide:
    """A warm runtime on a scratch state dir with the peers' busybox tree as its image."""

    def __init__(self, state_dir: Path, rootfs: Path, pods_dir: Path) -> None:
        config = RuntimeConfig(cgroup_parent="kurma-bench", stop_grace=1.0, pods_dir=str(pods_dir))
        self.runtime = Runtime(state_dir, config=config)
        aci = state_dir.parent / "bench-busybox.aci"
        build_aci(rootfs, json.dumps(IMAGE).encode(), aci, mtime=0, owner=(0, 0))
        self.image_id = self.runtime.store.import_image(aci).record.image_id
        self.true = pod_manifest(self.image_id, ["/bin/true"])
        self.sleep = pod_manifest(self.image_id, ["/bin/sleep", "3600"])

    def run_true(self) -> float:
        """One timed start: request to exit status known; then the pod is destroyed."""
        rt = self.runtime
        start = time.perf_counter()
        record = rt.create_pod(self.true)  # type: ignore[arg-type]
        rt.start_pod(record.uuid)
        app = rt.wait_app(record.uuid, "bench", peers.DEADLINE)
        elapsed = time.perf_counter() - start
        if app.exit_code != 0:
            raise RuntimeError(f"kurma pod exited {app.exit_code}: {app.error}")
        rt.wait(record.uuid, peers.DEADLINE)
        rt.destroy_pod(record.uuid)
        return elapsed

    def close(self) -> None:
        for record in self.runtime.list_pods():
            self.runtime.destroy_pod(record.uuid, grace=1.0)
        self.runtime.close()
        parent = self.runtime.cgroups.open("kurma-bench")
        parent.remove()


class ApiSide:
    """The same pod through kurmad's API: a connected client, Create(start) then Wait."""

    def __init__(self, daemon: Kurmad, rootfs: Path) -> None:
        aci = daemon.work / "bench-busybox.aci"
        build_aci(rootfs, json.dumps(IMAGE).encode(), aci, mtime=0, owner=(0, 0))
        self.client = daemon.client()
        self.client.import_image(aci)
        self.spec = run_spec(app_spec(IMAGE["name"], exec=["/bin/true"]))

    def run_true(self) -> float:
        return api_start(self.client, self.spec)


def api_start(client: Client, spec: pods_pb2.RunSpec) -> float:
    """One timed pod start through the API: Create(start=True) until Wait returns the pod's
    end (its app must exit 0); then the pod is destroyed, untimed."""
    start = time.perf_counter()
    pod = client.create_pod(spec=spec, start=True)
    done = client.wait(pod.uuid, timeout=peers.DEADLINE)
    elapsed = time.perf_counter() - start
    if done.apps[0].exit_code != 0:
        raise RuntimeError(f"kurma-api pod exited {done.apps[0].exit_code}")
    client.destroy(pod.uuid)
    return elapsed


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


def many_pods(kurma: KurmaSide, count: int) -> dict[str, float]:
    """Start `count` sleeping pods at once; per-pod PSS of podinit, runtime growth, timing."""
    rt = kurma.runtime
    own_before = pss_kib(os.getpid())
    start = time.perf_counter()
    uuids = []
    for _ in range(count):
        record = rt.create_pod(kurma.sleep)  # type: ignore[arg-type]
        rt.start_pod(record.uuid)
        uuids.append(record.uuid)
    started = time.perf_counter() - start
    time.sleep(0.5)
    records = [rt.get(u) for u in uuids]
    running = sum(1 for r in records if r.state == "running" and r.apps[0].state == "running")
    podinit = [pss_kib(r.podinit_pid) for r in records if r.podinit_pid]  # type: ignore[arg-type]
    own_after = pss_kib(os.getpid())
    start = time.perf_counter()
    for u in uuids:
        rt.destroy_pod(u, grace=1.0)
    stopped = time.perf_counter() - start
    return {
        "running": running,
        "start_s": started,
        "stop_s": stopped,
        "podinit_pss_kib": sum(podinit) / max(1, len(podinit)),
        "runtime_growth_kib": (own_after - own_before) / count,
    }


def interleave(
    runs: int, sides: dict[str, Callable[[], float]], settle: float = 0.0
) -> dict[str, list[float]]:
    """Each side once per round, in order; `settle` seconds of quiet (untimed) after each
    run, so one side's background work (kurma's launcher refills its warm pod shells 50 ms
    after a start) does not land in the next side's timing."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, run in sides.items():
            times[name].append(run())
            if settle:
                time.sleep(settle)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.15,
        help="untimed quiet after each run (seconds; 0: back to back, where kurma's refill "
        "of its warm shells stalls the next peer's forks: crun measured 33 ms, not 17)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where kurma keeps its state (default: a temp dir in /tmp)",
    )
    args = parser.parse_args()

    rootfs = peers.ensure_rootfs()
    with peers.state_tmpfs() as run:
        return measure(args, rootfs, run)


def measure(args: argparse.Namespace, rootfs: Path, run: Path) -> int:
    """The interleaved runs and the many-pods figure; every side's state is on `run`."""
    work = Path(tempfile.mkdtemp(prefix="kurma-bench-", dir=args.state_dir))
    scratch = Path(tempfile.mkdtemp(prefix="bundles-"))
    # kurmad keeps pods in /run/kurma/pods, crun and runc their state in /run: a tmpfs.
    pods = run / "kurma-pods"
    pods.mkdir()
    kurma = KurmaSide(work / "state", rootfs, pods)
    daemon = Kurmad(pods_parent=run)
    local = peers.LocalRunner()
    try:
        api = ApiSide(daemon, rootfs)
        true_bundle = peers.write_bundle(scratch / "true", rootfs, ["/bin/true"], seccomp=True)
        sleep_bundle = peers.write_bundle(
            scratch / "sleep", rootfs, ["/bin/sleep", "3600"], seccomp=True
        )
        with (
            peers.Runtime("crun", state_parent=run) as crun,
            peers.Runtime("runc", state_parent=run) as runc,
        ):

            def check(result: peers.RunResult) -> float:
                if result.returncode != 0:
                    raise RuntimeError(f"peer failed: {result.output!r}")
                return result.seconds

            sides: dict[str, Callable[[], float]] = {
                "kurma": kurma.run_true,
                "kurma-api": api.run_true,
                "crun": lambda: check(crun.run(true_bundle)),
                "runc": lambda: check(runc.run(true_bundle)),
                "floor": lambda: check(local.run(peers.floor_command())),
            }
            interleave(3, sides)  # warm: page cache, rendered tree, zygote
            times = interleave(args.runs, sides, args.settle)
            print(
                f"pod start, /bin/true, {args.runs} interleaved runs (seccomp on every side, "
                f"{args.settle:g} s untimed quiet after each run)"
            )
            c50 = peers.percentile(times["crun"], 50)
            for name in ("kurma", "kurma-api", "crun", "runc", "floor"):
                p50, p99 = (peers.percentile(times[name], p) * 1000 for p in (50, 99))
                print(
                    f"  {name:10s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                    f"p50 {p50 / 1000 / c50:.2f}x crun"
                )
            print(
                "  (kurma: the runtime's Python interface; kurma-api: Create(start) + Wait "
                "over kurmad's unix socket from a connected client)"
            )
            k50, c50 = (peers.percentile(times[n], 50) for n in ("kurma", "crun"))
            k99, c99 = (peers.percentile(times[n], 99) for n in ("kurma", "crun"))
            print(
                f"  kurma/crun: p50 {k50 / c50:.2f}x (target <= 1.00x), "
                f"p99 {k99 / c99:.2f}x (target <= 2.00x)"
            )

            crun_pss = peers.container_pss(crun, sleep_bundle)
            runc_pss = peers.container_pss(runc, sleep_bundle)
        many = many_pods(kurma, args.pods)
        print(
            f"{args.pods} sleeping pods at once: {many['running']} running, started in "
            f"{many['start_s']:.2f} s, destroyed in {many['stop_s']:.2f} s"
        )
        print(
            f"  memory per pod: kurma-podinit {many['podinit_pss_kib']:.0f} KiB PSS "
            f"(target <= 1024), runtime process +{many['runtime_growth_kib']:.1f} KiB/pod"
        )
        print(
            f"  peers, the container process alone (busybox sleep): crun "
            f"{crun_pss.pss_kib} KiB, runc {runc_pss.pss_kib} KiB PSS"
        )
    finally:
        local.close()
        daemon.close()
        kurma.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pods, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
