"""Benchmark: kurmad's start, from the process's start to its first service pod running.

The path a booting machine waits on (kurma-init starts `kurmad --wait-for-config` early,
writes kurmad.yml later; the console service's getty prints the login prompt). One run:

1. start `kurmad --config W/kurmad.yml --wait-for-config` (this file in `--child` mode, which
   installs timing hooks and then calls `kurma.api.daemon.main`, as the `kurmad` script does);
2. once it polls for the config file (its imports are done), or after `--config-delay` s,
   write the services file (one busybox service with `host/api-access`, like the console,
   whose app touches a file on a host volume) and then kurmad.yml;
3. wait until the service's app has touched its file; SIGTERM kurmad (it stops the service).

Phases (ms; best and median of `--runs`):

- imports: process start -> kurmad polls for its config (interpreter, `await_config`'s imports)
- runtime: config written -> the Runtime is up (launcher forked, pods re-adopted)
- grpc: config written -> `kurma.api._server` imported (gRPC, protobuf, the servicers)
- serving: config written -> "serving" logged (the unix socket is up)
- pod created: config written -> the service's pod created (`Runtime.create_pod` returned)
- pod running: config written -> the service's app ran (its file exists; the figure that
  counts, with `imports` before it)

    python3 bench/kurmad_start.py [--runs 5] [--config-delay 0] [--save-log FILE]

With PYTHONPROFILEIMPORTTIME=1 in the environment, `--save-log` keeps kurmad's import times;
with KURMA_BENCH_PROFILE=FILE, kurmad's main thread is profiled (cProfile) from the moment it
sees its config until "kurmad ready".

Needs root, cgroups, and a static busybox (as bench/peers.py). State (the image store) is
made once in a temp dir per invocation; every run starts a new kurmad on it.
"""

from __future__ import annotations

import os
import sys
import time

CHILD_FLAG = "--child"


# --- the child: kurmad with timing hooks ----------------------------------------------------


def _child(argv: list[str]) -> int:
    """`--child STAMPS -- kurmad args`: run kurmad, appending `name monotonic` lines."""
    stamps_path = argv[0]
    kurmad_argv = argv[2:]
    config = kurmad_argv[kurmad_argv.index("--config") + 1]
    out = open(stamps_path, "a", buffering=1)  # noqa: SIM115 (kurmad ends with os._exit)
    seen: set[str] = set()

    def stamp(name: str) -> None:
        if name not in seen:
            seen.add(name)
            out.write(f"{name} {time.monotonic():.6f}\n")

    stamp("child")
    exists = os.path.exists

    profile_to = os.environ.get("KURMA_BENCH_PROFILE")
    profiler = None

    def watched_exists(path):  # type: ignore[no-untyped-def]
        nonlocal profiler
        if path != config:
            return exists(path)
        stamp("waiting")
        found = exists(path)
        if found and profile_to and profiler is None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        return found

    def end_profile() -> None:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)

    os.path.exists = watched_exists  # await_config's poll
    _after_import("kurma.api._server", lambda _m: stamp("grpc"))
    _after_import("kurma.runtime._runtime", lambda m: _hook_runtime(m, stamp))

    import logging

    factory = logging.getLogRecordFactory()

    def record(*args, **kwargs):  # type: ignore[no-untyped-def]
        rec = factory(*args, **kwargs)
        if rec.msg in ("serving", "kurmad ready"):
            stamp(rec.msg)
            if rec.msg == "kurmad ready":
                end_profile()
        return rec

    logging.setLogRecordFactory(record)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from kurma.api.daemon import main

    return main(kurmad_argv)


def _hook_runtime(module, stamp) -> None:  # type: ignore[no-untyped-def]
    runtime = module.Runtime
    init, create = runtime.__init__, runtime.create_pod

    def timed_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        init(self, *args, **kwargs)
        stamp("runtime")

    def timed_create(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        record = create(self, *args, **kwargs)
        stamp("pod created")
        return record

    runtime.__init__, runtime.create_pod = timed_init, timed_create


def _after_import(name: str, then) -> None:  # type: ignore[no-untyped-def]
    """Call `then(module)` once module `name` has been executed (a meta path finder)."""
    import importlib.abc
    import importlib.machinery

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
            if fullname != name:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None:
                return spec
            execute = spec.loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                execute(module)
                then(module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Finder())


# --- the driver ------------------------------------------------------------------------------

PHASES = ("imports", "runtime", "grpc", "serving", "pod created", "pod running")


def _driver() -> None:
    import argparse
    import json
    import secrets
    import shutil
    import signal
    import statistics
    import subprocess
    import tempfile
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo))
    from bench.peers import ensure_rootfs
    from kurma.aci import build_aci
    from kurma.client import Client
    from kurma.runtime.cgroups import CgroupSystem
    from kurma.store import ImageStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--config-delay",
        type=float,
        default=0.0,
        help="write the config this long after the start (default: once kurmad polls for it)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="print kurmad's last log")
    parser.add_argument("--save-log", type=Path, help="copy kurmad's last log (all of it) here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kstart-", dir="/tmp"))  # short: unix socket paths
    cgroup_parent = f"kurma-bench-{secrets.token_hex(4)}"
    image = "example.com/bench-busybox"
    manifest = json.dumps(
        {
            "acKind": "ImageManifest",
            "acVersion": "0.8.11",
            "name": image,
            "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
        }
    ).encode()
    results: dict[str, list[float]] = {p: [] for p in PHASES}
    import compileall  # kurmad reads .pyc as the machine's does (PYTHONDONTWRITEBYTECODE)

    compileall.compile_dir(repo / "kurma", quiet=1)
    try:
        aci = work / "busybox.aci"
        build_aci(ensure_rootfs(), manifest, aci, mtime=0, owner=(0, 0))
        ImageStore(work / "state").import_image(aci)
        (work / "out").mkdir()
        marker = work / "out" / "ran"
        services = {
            "services": {
                "console": {
                    "image": image,
                    "exec": ["/bin/sh", "-c", "touch /out/ran; exec sleep 1000"],
                    "isolators": {"host/api-access": {"scope": "host"}},
                    "volumes": {"out": {"source": str(work / "out"), "path": "/out"}},
                }
            }
        }
        settings = {
            "socket": str(work / "kurmad.sock"),
            "state_dir": str(work / "state"),
            "pods_dir": str(work / "pods"),
            "cgroup_parent": cgroup_parent,
            "services_file": str(work / "services.yml"),
            "stop_pods_on_exit": True,
            "shutdown_grace": 2,
            "stop_grace": 1,
        }
        for run in range(args.runs):
            stamps = work / f"stamps-{run}"
            config = work / "kurmad.yml"
            for path in (config, work / "services.yml", marker):
                path.unlink(missing_ok=True)
            argv = [sys.executable, __file__, CHILD_FLAG, str(stamps), "--",
                    "--config", str(config), "--wait-for-config"]  # fmt: skip
            log_path = work / f"kurmad-{run}.log"
            with open(log_path, "wb") as log:
                t0 = time.monotonic()
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd="/")
            got: dict[str, float] = {}
            deadline = t0 + 60
            while True:
                got = _read_stamps(stamps)
                if ("waiting" in got and not args.config_delay) or (
                    args.config_delay and time.monotonic() - t0 >= args.config_delay
                ):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"kurmad ended or hung before its config:\n{log_path.read_text()}")
                time.sleep(0.002)
            # services.yml first (as kurma-init does), then kurmad.yml, each by rename
            _write(work / "services.yml", json.dumps(services))
            _write(config, json.dumps(settings))  # JSON is YAML
            t_config = time.monotonic()
            while not marker.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    sys.exit(f"no service pod ran:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.002)
            t_ran = time.monotonic()
            # no service left (its pod destroyed), so every run starts from an empty state
            _write(work / "services.yml", json.dumps({"services": {}}))
            with Client.connect(settings["socket"], timeout=20) as client:
                while client.list_pods():
                    if time.monotonic() > deadline + 30:
                        sys.exit(f"the service's pod stayed:\n{log_path.read_text()[-4000:]}")
                    time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            got = _read_stamps(stamps)
            row = {
                "imports": got["waiting"] - t0,
                "runtime": got["runtime"] - t_config,
                "grpc": got["grpc"] - t_config,
                "serving": got["serving"] - t_config,
                "pod created": got["pod created"] - t_config,
                "pod running": t_ran - t_config,
            }
            for k, v in row.items():
                results[k].append(v * 1000)
            print(f"run {run}: " + "  ".join(f"{k} {v * 1000:.0f}" for k, v in row.items()),
                  flush=True)  # fmt: skip
            if args.keep_logs and run == args.runs - 1:
                print(log_path.read_text()[-3000:])
            if args.save_log:
                shutil.copyfile(log_path, args.save_log)
    finally:
        parent = CgroupSystem.detect().open(cgroup_parent)
        if parent.exists():
            parent.kill_all()
            parent.remove()
        with open("/proc/self/mountinfo") as f:
            mounts = [ln.split()[4] for ln in f if ln.split()[4].startswith(f"{work}/")]
        for point in reversed(mounts):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print("phase (ms after the config; imports: after the process start)   best  median")
    for k in PHASES:
        v = results[k]
        if v:
            print(f"  {k:12s} {min(v):8.0f} {statistics.median(v):7.0f}")


def _read_stamps(path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    try:
        with open(path) as f:
            return {n: float(t) for n, _, t in (ln.rstrip("\n").rpartition(" ") for ln in f)}
    except FileNotFoundError:
        return {}


def _write(path, text: str) -> None:  # type: ignore[no-untyped-def]
    from kurma.atomic import write_atomic  # the parent's: the child's imports are measured

    write_atomic(path, text, sync=False)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        sys.exit(_child(sys.argv[2:]))
    _driver()
