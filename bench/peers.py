"""The peers of Kurma's pod start: crun, runc and the `unshare` floor, as reusable, timed pieces.

Every peer runs the same thing a Kurma pod would: a static busybox `/bin/true` (or any
command) in new pid, ipc, uts, net and mount namespaces, with /proc (runc's masks and
read-only parts), a tmpfs /dev with the usual nodes and pts/shm/mqueue, a read-only /sys,
Docker's default capability set and no_new_privs (see `oci_config` for every choice).

A run is timed from just before the spawn of the runtime's process until its exit status is
known (`wait` returns): fork/exec of the runtime by the Python driver counts, as it does for
any real client. For crun/runc the exit status is known only once `run` has also deleted the
container's state and cgroup, so that is in the figure too.

crun refuses hybrid cgroup hosts (v1 controllers plus an empty cgroup2 at
/sys/fs/cgroup/unified). Its runs go through `Cgroup2Helper`: one long-lived process started
once under `unshare --mount` with cgroup2 mounted on /sys/fs/cgroup in that namespace, which
spawns and times each `crun` command itself (the same `timed_run` as the local runner) and
reports over a pipe, so no namespace setup and no pipe traffic is inside a timed region.
runc works on such hosts as is (cgroupfs driver, v1 controllers plus the unified dir).

    python3 bench/peers.py [--runs 50] [--seccomp] [--no-pss]

The module imports only the standard library (`seccomp=True` imports kurma's syscall list).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Protocol

CACHE = Path(__file__).resolve().parent / ".cache"
ROOTFS = CACHE / "busybox-rootfs"
DEADLINE = 30.0
HELPER_FLAG = "--cgroup2-helper"

FLOOR_ARGV = ("unshare", "-pfmnui", "--mount-proc", "true")
"""The floor: the same namespaces and a new procfs, from util-linux, no rootfs, no cgroup."""

_DIRS = (("bin", 0o755), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("etc", 0o755),
         ("run", 0o755), ("root", 0o700), ("tmp", 0o1777))  # fmt: skip
APPLETS = ("true", "false", "sh", "sleep", "cat", "grep", "ls", "test", "touch", "wc", "mount")

# Docker's (and runc's) default capability set, the one a Kurma app gets by default.
DEFAULT_CAPS = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_KILL",
    "CAP_MKNOD", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID",
    "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
)  # fmt: skip
# `runc spec` (1.1) defaults, which are also what kurma's mount_proc masks.
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
_NOX = ("nosuid", "noexec", "nodev")
# destination, type, source, options: `runc spec`'s mounts but /sys/fs/cgroup
MOUNTS = (
    ("/proc", "proc", "proc", ()),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/dev/pts", "devpts", "devpts",
     ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
    ("/dev/shm", "tmpfs", "shm", (*_NOX, "mode=1777", "size=65536k")),
    ("/dev/mqueue", "mqueue", "mqueue", _NOX),
    ("/sys", "sysfs", "sysfs", (*_NOX, "ro")),
)  # fmt: skip
ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


# --- the busybox rootfs ---------------------------------------------------------------------


def busybox_binary() -> Path:
    """The host's static busybox (Debian's busybox-static)."""
    return Path(shutil.which("busybox") or "/bin/busybox")


def ensure_rootfs(dest: Path | str | None = None) -> Path:
    """Make (once) a busybox rootfs at `dest` (default bench/.cache/busybox-rootfs) and return it.

    It holds a copy of the static busybox as /bin/busybox, /bin/<applet> symlinks to it
    (busybox picks the applet from argv[0]), and the mount points the runtimes need (proc,
    sys, dev, tmp, ...): with a read-only root they cannot create them. A copy, not a hard link,
    so a container with a writable root cannot touch the host's binary. Rebuilt when the host's
    busybox changes (size or mtime); built beside `dest` and renamed into place.
    """
    dest = Path(dest) if dest is not None else ROOTFS
    source = busybox_binary()
    if _rootfs_current(dest, source):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _populate_rootfs(tmp, source)
        if dest.exists():
            shutil.rmtree(dest)
        try:
            tmp.rename(dest)
        except OSError:
            if not _rootfs_current(dest, source):  # not another process winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _rootfs_current(dest: Path, source: Path) -> bool:
    try:
        have, want = (dest / "bin/busybox").stat(), source.stat()
    except FileNotFoundError:
        return False
    links = all((dest / "bin" / a).is_symlink() for a in APPLETS)
    return links and (have.st_size, have.st_mtime_ns) == (want.st_size, want.st_mtime_ns)


def _populate_rootfs(root: Path, source: Path) -> None:
    root.chmod(0o755)
    for name, mode in _DIRS:
        (root / name).mkdir()
        (root / name).chmod(mode)
    shutil.copy2(source, root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\ntty:x:5:\n")


# --- OCI bundles ----------------------------------------------------------------------------


def oci_config(
    rootfs: Path | str,
    args: Sequence[str] = ("/bin/true",),
    *,
    readonly: bool = True,
    seccomp: bool = False,
    hostname: str = "peer",
) -> dict:
    """The config.json for crun and runc: `runc spec` (1.1) adjusted to match a Kurma pod.

    Changes from `runc spec`: no terminal; Docker's default capabilities in bounding,
    effective and permitted (none inheritable or ambient, uid 0 needs none); no rlimits; no
    /sys/fs/cgroup mount (a Kurma app gets a plain read-only sysfs); no `linux.resources` (crun
    needs none, and a Kurma pod sets no device rules). Kept: new pid, network, ipc, uts and mount
    namespaces (no cgroup or user namespace, as in a Kurma pod); the /proc, /dev, /dev/pts,
    /dev/shm, /dev/mqueue and read-only /sys mounts; runc's masked and read-only paths;
    noNewPrivileges; a read-only root (`readonly=False` for a writable one: Kurma's root is a
    writable overlay, which neither peer builds). `seccomp=True` adds the deny-list a Kurma
    app gets by default (`kurma.runtime.linux.docker_default_blocked`, EPERM); off by
    default, so the peers then skip building and loading a filter that Kurma pays for.
    """
    config: dict = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": list(ENV),
            "cwd": "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPS),
                "effective": list(DEFAULT_CAPS),
                "permitted": list(DEFAULT_CAPS),
                "inheritable": [],
                "ambient": [],
            },
            "noNewPrivileges": True,
        },
        "root": {"path": str(Path(rootfs).resolve()), "readonly": readonly},
        "hostname": hostname,
        "mounts": [
            {"destination": d, "type": t, "source": src, "options": list(o)}
            for d, t, src, o in MOUNTS
        ],
        "linux": {
            "namespaces": [{"type": t} for t in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if seccomp:
        config["linux"]["seccomp"] = kurma_seccomp_profile()
    return config


def kurma_seccomp_profile() -> dict:
    """Kurma's default app filter as an OCI seccomp profile: allow all but its deny-list."""
    try:
        from kurma.runtime.linux import docker_default_blocked
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from kurma.runtime.linux import docker_default_blocked
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": sorted(docker_default_blocked()), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ],
    }


def write_bundle(
    directory: Path | str, rootfs: Path | str, args: Sequence[str] = ("/bin/true",), **kw: bool
) -> Path:
    """Write `directory`/config.json (see `oci_config`; the root is `rootfs`, shared, by path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(oci_config(rootfs, args, **kw), indent=1))
    return directory


# --- running and timing ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One command: its exit status (negative: killed by that signal), the seconds from just
    before the spawn until `wait` returned, and its stdout+stderr (the last 16 KiB)."""

    returncode: int
    seconds: float
    output: str


def timed_run(argv: Sequence[str], scratch: IO[bytes], timeout: float = DEADLINE) -> RunResult:
    """Spawn `argv` (stdin /dev/null, stdout+stderr to the `scratch` file) and time it to wait.

    The only timed code there is: the local runner and the crun helper both use it.
    """
    scratch.seek(0)
    scratch.truncate()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=scratch, stderr=scratch)
    try:
        returncode = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    seconds = time.perf_counter() - start
    scratch.seek(0)
    output = scratch.read()[-16384:].decode(errors="replace")
    return RunResult(returncode, seconds, output)


class Runner(Protocol):
    """Where commands run: this process (`LocalRunner`) or the crun helper."""

    def run(self, argv: Sequence[str], timeout: float = DEADLINE) -> RunResult: ...

    def close(self) -> None: ...


class LocalRunner:
    """Spawns and times commands from this process."""

    def __init__(self) -> None:
        self._scratch = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())

    def run(self, argv: Sequence[str], timeout: float = DEADLINE) -> RunResult:
        return timed_run(argv, self._scratch, timeout)

    def close(self) -> None:
        self._scratch.close()


def hybrid_cgroups() -> bool:
    """True on a hybrid host: /sys/fs/cgroup is not cgroup2, but a cgroup2 is at .../unified."""
    return not os.path.exists("/sys/fs/cgroup/cgroup.controllers") and os.path.exists(
        "/sys/fs/cgroup/unified/cgroup.controllers"
    )


class Cgroup2Helper:
    """A long-lived process in a mount namespace of its own with cgroup2 on /sys/fs/cgroup.

    Started once (`unshare --mount --propagation private`, then this file with HELPER_FLAG,
    which mounts cgroup2 and says ready); each `run` sends it one JSON line and it replies with
    the `timed_run` result it measured. The namespace dies with the process: `close` ends it
    (EOF on its stdin, SIGKILL after 5 s). The mount does not propagate to the host.
    `propagation="slave"` lets the host's later mounts in (`ip netns add` names a network
    namespace by a bind mount under /run/netns, a shared mount: a bundle can join it).
    """

    def __init__(self, timeout: float = DEADLINE, propagation: str = "private") -> None:
        unshare = shutil.which("unshare") or "unshare"
        self.proc = subprocess.Popen(
            [unshare, "--mount", "--propagation", propagation, "--",
             sys.executable, "-I", str(Path(__file__).resolve()), HELPER_FLAG],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            ready = self._read(timeout)
            if "ready" not in ready:
                raise RuntimeError(f"crun helper failed to start: {ready.get('error', ready)}")
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, argv: Sequence[str], timeout: float = DEADLINE) -> RunResult:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": [str(a) for a in argv], "timeout": timeout}))
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        reply = self._read(timeout + 5)
        if "error" in reply:
            raise RuntimeError(f"crun helper: {reply['error']}")
        return RunResult(**reply)

    def _read(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"crun helper (pid {self.proc.pid}) did not answer in {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"crun helper exited with status {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()


def _helper_main() -> int:
    """The helper's side (run as `peers.py HELPER_FLAG` under unshare --mount)."""

    def send(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    mount = subprocess.run(
        ["mount", "-t", "cgroup2", "cgroup2", "/sys/fs/cgroup"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )  # fmt: skip
    if mount.returncode != 0 or not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        send({"error": f"mounting cgroup2 on /sys/fs/cgroup: {mount.stderr.strip()}"})
        return 1
    with tempfile.TemporaryFile() as scratch:
        send({"ready": os.getpid()})
        while line := sys.stdin.readline():
            request = json.loads(line)
            try:
                send(asdict(timed_run(request["argv"], scratch, request["timeout"])))
            except Exception as e:
                send({"error": f"{type(e).__name__}: {e}"})
    return 0


# --- the runtimes ---------------------------------------------------------------------------

_ids = itertools.count()


@dataclass(frozen=True)
class Container:
    """A detached container: its id and the host pid of its process."""

    id: str
    pid: int


class Runtime:
    """crun or runc with a private state root (`--root`, a new dir under /run) and a runner.

    crun on a hybrid cgroup host gets its own `Cgroup2Helper` unless a runner is passed in;
    everything else runs from this process. Every container gets a unique id
    (`kbench-<pid>-<n>`). `close` (or leaving the `with` block) force-deletes whatever is
    left in the state root, removes it and stops a helper it started.
    """

    def __init__(
        self, name: str, runner: Runner | None = None, state_parent: Path | None = None
    ) -> None:
        binary = shutil.which(name)
        if binary is None:
            raise FileNotFoundError(f"{name} is not installed (build/apt-deps.sh installs it)")
        self.name, self.binary = name, binary
        self._own_runner = runner is None
        parent = str(state_parent) if state_parent is not None else _state_parent()
        self.root = Path(tempfile.mkdtemp(prefix=f"kurma-bench-{name}-", dir=parent))
        try:
            if runner is None:
                runner = Cgroup2Helper() if name == "crun" and hybrid_cgroups() else LocalRunner()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.runner: Runner = runner

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, *args: str | Path) -> list[str]:
        return [self.binary, "--root", str(self.root), *map(str, args)]

    def new_id(self) -> str:
        return f"kbench-{os.getpid()}-{next(_ids)}"

    def run(self, bundle: Path | str, timeout: float = DEADLINE) -> RunResult:
        """One timed `run` of the bundle in the foreground under a fresh id; the runtime deletes
        the container when it exits (deleted here if it failed half-way)."""
        cid = self.new_id()
        result = self.runner.run(self.command("run", "--bundle", bundle, cid), timeout)
        if (self.root / cid).exists():
            self.delete(cid)
        return result

    def start(self, bundle: Path | str) -> Container:
        """`run --detach`: the container keeps running after the runtime exits."""
        cid = self.new_id()
        result = self.runner.run(self.command("run", "--detach", "--bundle", bundle, cid))
        if result.returncode != 0:
            if (self.root / cid).exists():
                self.delete(cid)
            raise RuntimeError(f"{self.name} run --detach failed: {result.output}")
        try:
            state = self.runner.run(self.command("state", cid))
            return Container(cid, int(json.loads(state.output)["pid"]))
        except BaseException:
            self.delete(cid)
            raise

    def delete(self, cid: str) -> None:
        """`delete --force` (kills the container first); an error if it is still there."""
        result = self.runner.run(self.command("delete", "--force", cid))
        if (self.root / cid).exists():
            raise RuntimeError(f"{self.name} delete {cid} failed: {result.output}")

    def containers(self) -> list[str]:
        """The ids with state in our root."""
        return sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []

    def close(self) -> None:
        try:
            errors = []
            for cid in self.containers():
                try:
                    self.delete(cid)
                except Exception as e:
                    errors.append(e)
            if errors:
                raise errors[0]
            shutil.rmtree(self.root, ignore_errors=True)
        finally:
            if self._own_runner:
                self.runner.close()


@contextlib.contextmanager
def state_tmpfs() -> Iterator[Path]:
    """A tmpfs for every side's state (Kurma's pods, crun's and runc's `--root`). /run is a
    tmpfs on an ordinary host and on a booted Kurma, but a directory of the ext4 root on
    these machines, where each mkdir or file creation costs 0.1-0.2 ms: a runtime that
    writes more state files would lose to the disk, not to its design."""
    point = Path(tempfile.mkdtemp(prefix="kurma-bench-run-"))
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "kurma-bench-run", str(point)],
            check=True,
            capture_output=True,
        )
        try:
            yield point
        finally:
            subprocess.run(["umount", "--lazy", str(point)], check=False)
    finally:
        point.rmdir()


def _state_parent() -> str | None:
    """/run (a tmpfs, where runc and crun keep state by default) when we may write there."""
    return "/run" if os.access("/run", os.W_OK) else None


def time_runs(run: Callable[[], RunResult], runs: int, what: str = "run") -> list[float]:
    """Seconds of `runs` calls of `run`; a RuntimeError for any nonzero exit status."""
    times = []
    for _ in range(runs):
        result = run()
        if result.returncode != 0:
            raise RuntimeError(f"{what} exited with {result.returncode}: {result.output}")
        times.append(result.seconds)
    return times


def time_crun(bundle: Path | str, runs: int) -> list[float]:
    """`runs` timed `crun run` of `bundle` (the helper is started once, outside the timing)."""
    with Runtime("crun") as crun:
        return time_runs(lambda: crun.run(bundle), runs, "crun run")


def time_runc(bundle: Path | str, runs: int) -> list[float]:
    """`runs` timed `runc run` of `bundle` from this process."""
    with Runtime("runc") as runc:
        return time_runs(lambda: runc.run(bundle), runs, "runc run")


def floor_command() -> list[str]:
    """FLOOR_ARGV with unshare's path resolved (as crun's and runc's are)."""
    return [shutil.which("unshare") or "unshare", *FLOOR_ARGV[1:]]


def time_floor(runs: int, runner: Runner | None = None) -> list[float]:
    """`runs` timed `unshare -pfmnui --mount-proc true` (from this process by default)."""
    own = runner is None
    runner = runner or LocalRunner()
    try:
        return time_runs(lambda: runner.run(floor_command()), runs, "unshare floor")
    finally:
        if own:
            runner.close()


# --- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pss:
    """PSS (KiB) summed over `pids`: total, anonymous and file-backed parts."""

    pids: tuple[int, ...]
    pss_kib: int
    anon_kib: int
    file_kib: int


def read_pss(pids: Iterable[int]) -> Pss:
    """Sum Pss, Pss_Anon and Pss_File of /proc/<pid>/smaps_rollup over `pids`."""
    pids = tuple(pids)
    sums = {"Pss:": 0, "Pss_Anon:": 0, "Pss_File:": 0}
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, *rest = line.split()
                if key in sums:
                    sums[key] += int(rest[0])
    return Pss(pids, sums["Pss:"], sums["Pss_Anon:"], sums["Pss_File:"])


def container_processes(container: Container) -> tuple[int, ...]:
    """Every process left running for a container: those in its cgroup2 directory (its own
    processes) plus any process outside it whose command line names the container id (a shim
    like conmon or containerd-shim would; crun and runc leave none)."""
    pids = {container.pid}
    cgroup = _unified_cgroup_dir(container.pid)
    if cgroup is not None:
        pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
    needle = container.id.encode()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if needle in f.read():
                        pids.add(int(entry.name))
            except OSError:
                continue
    return tuple(sorted(pids))


def _unified_cgroup_dir(pid: int) -> Path | None:
    """The host path of `pid`'s cgroup2 directory, if a cgroup2 is mounted here."""
    with open(f"/proc/{pid}/cgroup") as f:
        path = next((line[3:].strip() for line in f if line.startswith("0::")), None)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        fstype = fields[fields.index("-") + 1]
        if fstype == "cgroup2" and fields[3] == "/" and path is not None:
            directory = Path(fields[4] + path)
            if directory.is_dir():
                return directory
    return None


def container_pss(runtime: Runtime, bundle: Path | str, settle: float = 0.3) -> Pss:
    """The PSS a running container adds: start `bundle` (a long-running command, e.g.
    `/bin/sleep 3600`) detached, wait until its process has exec'd the command and `settle`
    seconds more, sum the PSS of `container_processes`, then delete the container."""
    container = runtime.start(bundle)
    try:
        root = json.loads((Path(bundle) / "config.json").read_text())["root"]["path"]
        busybox = os.stat(Path(root, "bin/busybox"))
        deadline = time.monotonic() + DEADLINE
        while _exe(container.pid) != (busybox.st_dev, busybox.st_ino):  # runc init, crun
            if time.monotonic() > deadline:
                raise TimeoutError(f"{runtime.name} container never exec'd its command")
            time.sleep(0.01)
        time.sleep(settle)
        return read_pss(container_processes(container))
    finally:
        runtime.delete(container.id)


def _exe(pid: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file `pid` runs, whatever mount namespace it is in."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino


# --- reporting ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(name: str, values: Sequence[float], baseline: Sequence[float] | None = None) -> str:
    """One line: p50 and p99 in ms, the run count, and p50 as a multiple of `baseline`'s p50."""
    p50, p99 = percentile(values, 50), percentile(values, 99)
    line = f"{name:<22} p50 {p50 * 1e3:7.2f} ms   p99 {p99 * 1e3:7.2f} ms   ({len(values)} runs)"
    if baseline:
        line += f"   p50 {p50 / percentile(baseline, 50):.2f}x the floor"
    return line


def main() -> None:
    """Interleave the floor, crun and runc runs of /bin/true; print p50/p99 and the PSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each first")
    parser.add_argument("--rootfs", type=Path, default=ROOTFS)
    parser.add_argument("--seccomp", action="store_true", help="give the peers Kurma's filter")
    parser.add_argument("--no-pss", action="store_true")
    args = parser.parse_args()
    rootfs = ensure_rootfs(args.rootfs)
    local = LocalRunner()
    with (
        tempfile.TemporaryDirectory(prefix="kurma-bench-peers-") as tmp,
        Runtime("crun") as crun,
        Runtime("runc", runner=local) as runc,
    ):
        true = write_bundle(Path(tmp, "true"), rootfs, ["/bin/true"], seccomp=args.seccomp)
        sleep = write_bundle(Path(tmp, "sleep"), rootfs, ["/bin/sleep", "3600"],
                             seccomp=args.seccomp)  # fmt: skip
        peers: dict[str, Callable[[], RunResult]] = {
            "unshare floor": lambda: local.run(floor_command()),
            "crun": lambda: crun.run(true),
            "runc": lambda: runc.run(true),
        }
        if isinstance(crun.runner, Cgroup2Helper):
            helper = crun.runner
            peers["floor via crun helper"] = lambda: helper.run(floor_command())
        times: dict[str, list[float]] = {name: [] for name in peers}
        for name, run in peers.items():
            time_runs(run, args.warmup, name)
        for rep in range(args.runs):  # interleaved, the order rotating each round
            names = list(peers)
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                times[name] += time_runs(peers[name], 1, name)
        where = "via a cgroup2 helper" if isinstance(crun.runner, Cgroup2Helper) else "local"
        seccomp = "on" if args.seccomp else "off"
        print(f"/bin/true (static busybox), {args.runs} interleaved runs each, "
              f"seccomp {seccomp}, crun {where}")  # fmt: skip
        for name, values in times.items():
            base = times["unshare floor"] if name != "unshare floor" else None
            print(summary(name, values, base))
        if not args.no_pss:
            for runtime in (crun, runc):
                pss = container_pss(runtime, sleep)
                print(f"{runtime.name} container PSS (sleep): {pss.pss_kib} KiB "
                      f"(anon {pss.anon_kib}, file {pss.file_kib}) over "
                      f"{len(pss.pids)} process(es)")  # fmt: skip
    local.close()


if __name__ == "__main__":
    if sys.argv[1:] == [HELPER_FLAG]:
        sys.exit(_helper_main())
    main()
