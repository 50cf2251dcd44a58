"""Benchmark: a pod start on a bridge network, Kurma vs crun with the same CNI plugins.

Everything network-side lives in a network namespace the bench makes (the test lab,
tests/root/network_support.py: a "host" netns, subnets in 169.254/16 and fdfe::/16, no
masquerade), never on the machine's own network. One conflist, `kt-bridge`: bridge +
host-local (IPv4 and IPv6) + portmap, as users get by default; and `kt-quick`, the same
without portmap (its iptables calls are most of the cost), on a second bridge.

- kurma: kurmad runs in the lab's netns (`nsenter --net`), with `--networks-dir` holding
  both conflists. One timed start is `Create(start=True)` + `Wait` of a busybox `/bin/true`
  pod from a connected client (`pod_start.api_start`), with `spec.networks = [NAME]`, or
  `["none"]` (loopback only) for the figure without a network. Wait returns the pod's end,
  which comes after kurmad's DEL of its networks.
- crun: per run, a named netns (`ip netns add`, untimed) that the bundle joins by path;
  then, timed: `kurma.network.attach` (the same plugins, by hand, from this process's main
  thread switched into the lab's netns, as kurmad's plugins run from there) + `crun run`
  of `/bin/true` + `detach`. Printed both with the DEL (what Kurma's Wait covers) and
  without it (to crun's exit). Without a network: `crun run` in a netns of its own.

Runs are interleaved, with `--settle` seconds of untimed quiet after each; every side's
state is on one tmpfs (`peers.state_tmpfs`); seccomp on both sides. Target: kurma's p50
with the bridge network <= crun's (1.0x). Also printed: the network alone on each side
(p50 with minus p50 without), and kurmad's own ADD and DEL times (from its log).

    python3 bench/net.py [--runs 50] [--settle 0.15] [--no-quick]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402
from api import Kurmad  # noqa: E402
from pod_start import IMAGE, api_start, interleave  # noqa: E402

from kurma.aci import build_aci  # noqa: E402
from kurma.client import Client, app_spec, run_spec  # noqa: E402
from kurma.network import NetworkConfig, attach, detach, load_network_file  # noqa: E402
from tests.root.network_support import Lab  # noqa: E402

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsSwitch:
    """Moves the calling thread into a network namespace and back (setns(2); Python 3.11 has
    no os.setns). Children spawned meanwhile start there, as kurmad's plugins start in
    kurmad's netns. Both descriptors are opened once, so a switch is two syscalls."""

    def __init__(self, path: str) -> None:
        self.own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    @staticmethod
    def _setns(fd: int) -> None:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        self._setns(self.target)
        try:
            yield
        finally:
            self._setns(self.own)

    def close(self) -> None:
        os.close(self.own)
        os.close(self.target)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class CrunSide:
    """crun runs of /bin/true joining a fresh named netns each time; the CNI by hand."""

    def __init__(self, crun: peers.Runtime, lab: Lab, rootfs: Path, scratch: Path) -> None:
        self.crun, self.lab = crun, lab
        self.netns = f"{lab.host}-c"
        self.switch = NetnsSwitch(f"/run/netns/{lab.host}")
        config = peers.oci_config(rootfs, ["/bin/true"], seccomp=True)
        for ns in config["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = f"/run/netns/{self.netns}"
        self.joined = scratch / "crun-joined"
        self.joined.mkdir()
        (self.joined / "config.json").write_text(json.dumps(config, indent=1))
        self.alone = peers.write_bundle(scratch / "crun-alone", rootfs, seccomp=True)
        self.parts: dict[str, dict[str, list[float]]] = {}
        self.count = 0

    def run_alone(self) -> float:
        result = self.crun.run(self.alone)
        if result.returncode != 0:
            raise RuntimeError(f"crun failed: {result.output!r}")
        return result.seconds

    def run_network(self, network: NetworkConfig) -> float:
        """attach + crun run + detach (seconds); the parts go to `self.parts[name]`."""
        self.count += 1
        cid = f"kbench-net-{os.getpid()}-{self.count}"
        path = f"/run/netns/{self.netns}"
        ip("netns", "add", self.netns)
        try:
            ip("-n", self.netns, "link", "set", "lo", "up")
            t0 = time.perf_counter()
            with self.switch.inside():
                att = attach(network, cid, path, "eth0")
            t1 = time.perf_counter()
            try:
                result = self.crun.run(self.joined)
            finally:
                t2 = time.perf_counter()
                with self.switch.inside():
                    detach(att)
                t3 = time.perf_counter()
        finally:
            ip("netns", "del", self.netns)
        if result.returncode != 0:
            raise RuntimeError(f"crun failed: {result.output!r}")
        parts = self.parts.setdefault(network.name, {"add": [], "run": [], "del": []})
        parts["add"].append(t1 - t0)
        parts["run"].append(result.seconds)  # crun's own, timed in the helper
        parts["del"].append(t3 - t2)
        return (t1 - t0) + result.seconds + (t3 - t2)

    def close(self) -> None:
        self.switch.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)


def kurma_side(client: Client, network: str) -> Callable[[], float]:
    spec = run_spec(app_spec(IMAGE["name"], exec=["/bin/true"]))
    spec.networks.append(network)
    return lambda: api_start(client, spec)


def kurmad_log_times(log: Path) -> dict[str, list[float]]:
    """kurmad's own ADD and DEL times per network (kurma.network's info lines)."""
    found: dict[str, list[float]] = {}
    pattern = re.compile(r"\b(attached|detached) \S+ (?:to|from) network (\S+) .*?in ([\d.]+) s")
    for line in log.read_text(errors="replace").splitlines():
        m = pattern.search(line)
        if m:
            found.setdefault(f"{m.group(1)} {m.group(2)}", []).append(float(m.group(3)))
    return found


def ms(values: list[float], p: float) -> float:
    return peers.percentile(values, p) * 1000


def report(times: dict[str, list[float]], crun: CrunSide, log: Path, nets: list[str]) -> None:
    for name, values in times.items():
        print(f"  {name:22s} p50 {ms(values, 50):7.2f} ms  p99 {ms(values, 99):7.2f} ms")
    for net in nets:
        parts = crun.parts[net]
        k, c = times[f"kurma {net}"], times[f"crun+cni {net}"]
        upto_exit = [a + r for a, r in zip(parts["add"], parts["run"], strict=True)]
        print(f"{net}:")
        print(
            f"  crun+cni parts p50: ADD {ms(parts['add'], 50):.2f} ms, crun run "
            f"{ms(parts['run'], 50):.2f} ms, DEL {ms(parts['del'], 50):.2f} ms; "
            f"ADD + run (to crun's exit) p50 {ms(upto_exit, 50):.2f} ms"
        )
        target = " (target <= 1.00x)" if net == "kt-bridge" else ""
        print(
            f"  kurma/crun+cni: p50 {ms(k, 50) / ms(c, 50):.2f}x{target}, "
            f"p99 {ms(k, 99) / ms(c, 99):.2f}x; "
            f"vs ADD + run without the DEL: p50 {ms(k, 50) / ms(upto_exit, 50):.2f}x"
        )
        k_net = ms(k, 50) - ms(times["kurma none"], 50)
        c_net = ms(c, 50) - ms(times["crun alone"], 50)
        print(
            f"  the network alone (p50 with - p50 without): kurma {k_net:+.2f} ms, "
            f"crun+cni {c_net:+.2f} ms"
        )
    own = kurmad_log_times(log)
    if own:
        line = ", ".join(f"{key} p50 {ms(v, 50):.2f} ms" for key, v in sorted(own.items()))
        print(f"  kurmad's own (its log, every run incl. warm-up): {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settle", type=float, default=0.15, help="untimed quiet after a run")
    parser.add_argument("--no-quick", action="store_true", help="skip kt-quick (no portmap)")
    args = parser.parse_args()

    started = time.monotonic()
    rootfs = peers.ensure_rootfs()
    scratch = Path(tempfile.mkdtemp(prefix="kurma-bench-net-"))
    lab = Lab(scratch)  # first: `ip netns add` makes /run/netns a shared mount
    try:
        with peers.state_tmpfs() as run:
            measure(args, lab, rootfs, run, scratch)
    finally:
        lab.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"({time.monotonic() - started:.0f} s in all)")
    return 0


def measure(args: argparse.Namespace, lab: Lab, rootfs: Path, run: Path, scratch: Path) -> None:
    netd = lab.dir / "net.d"
    netd.mkdir()
    (netd / "10-bridge.conflist").write_text(json.dumps(lab.bridge_doc("kt-bridge"), indent=1))
    quick = lab.bridge_doc("kt-quick", v4="169.254.43.0/24", v6="fdfe:43::/64", portmap=False)
    quick["plugins"][0]["bridge"] = "kt-br1"
    (netd / "20-quick.conflist").write_text(json.dumps(quick, indent=1))
    nets = ["kt-bridge"] + ([] if args.no_quick else ["kt-quick"])
    files = {"kt-bridge": "10-bridge.conflist", "kt-quick": "20-quick.conflist"}
    configs = {n: load_network_file(netd / f) for n, f in files.items()}

    # crun's helper sees the per-run netns mounts made after it started (slave propagation)
    helper = peers.Cgroup2Helper(propagation="slave") if peers.hybrid_cgroups() else None
    daemon = None
    crun_side = None
    try:
        with peers.Runtime("crun", runner=helper, state_parent=run) as crun:
            daemon = Kurmad(
                pods_parent=run,
                cgroup_parent="kurma-bench-net",
                prefix=("nsenter", f"--net=/run/netns/{lab.host}"),
                extra=("--networks-dir", str(netd), "--default-network", "kt-bridge"),
            )
            aci = daemon.work / "bench-busybox.aci"
            build_aci(rootfs, json.dumps(IMAGE).encode(), aci, mtime=0, owner=(0, 0))
            crun_side = CrunSide(crun, lab, rootfs, scratch)
            with daemon.client() as client:
                client.import_image(aci)
                sides: dict[str, Callable[[], float]] = {
                    "kurma none": kurma_side(client, "none"),
                    "crun alone": crun_side.run_alone,
                }
                for net in nets:
                    sides[f"kurma {net}"] = kurma_side(client, net)
                    sides[f"crun+cni {net}"] = lambda c=configs[net]: crun_side.run_network(c)
                interleave(args.warmup, sides)
                crun_side.parts.clear()
                times = interleave(args.runs, sides, args.settle)
            print(
                f"pod start, /bin/true, {args.runs} interleaved runs ({args.settle:g} s untimed "
                "quiet after each; seccomp on both sides; kurma: Create(start) + Wait through "
                "the API; crun+cni: ADD + crun run + DEL)"
            )
            report(times, crun_side, daemon.work / "kurmad.log", nets)
    finally:
        if crun_side is not None:
            crun_side.close()
        if daemon is not None:
            daemon.close()
        if helper is not None:
            helper.close()


if __name__ == "__main__":
    sys.exit(main())
