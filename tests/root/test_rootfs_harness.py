"""Helpers for the rootfs tests, their own contract, and the setup-time measurement.

`run_app` forks a child that unshares the pod namespaces (mount, ipc, uts, and pid/net when
asked), prepares the app's root with `prepare_app_rootfs` and execs a busybox script in it,
reporting the script's output, its exit status and any setup error through pipes. The mount
namespace dies with the child; `work` checks that nothing is left mounted on the host and
removes everything the test created, pass or fail.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from kurma.runtime import linux
from kurma.runtime._rootfs import RootfsSpec, prepare_app_rootfs
from tests.root.test_linux_forked import run_forked

pytestmark = pytest.mark.root

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
SETUP_FAILED = 111
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}


@dataclass(frozen=True)
class AppRun:
    """What one app run reported: exit status, combined stdout/stderr, setup error text."""

    status: int
    output: str
    error: str

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()


def mounts_under(path: Path | str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `path` in a mountinfo file."""
    prefix = str(path).rstrip("/")
    with open(mountinfo) as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


@pytest.fixture
def work() -> Iterator[Path]:
    """A scratch directory; afterwards nothing may be mounted under it, and it is removed."""
    path = Path(tempfile.mkdtemp(prefix="kurma-rootfs-"))
    try:
        yield path
        assert mounts_under(path) == [], "mounts leaked onto the host"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_tree(root: Path, *, standard_dirs: bool = True) -> Path:
    """A rendered image tree: busybox with its applets in /bin, /etc/passwd and /etc/group.

    `standard_dirs` adds /proc, /sys, /dev and image-owned /etc/hosts and /etc/resolv.conf,
    as most real images have them.
    """
    (root / "bin").mkdir(parents=True)
    try:
        os.link(BUSYBOX, root / "bin" / "busybox")
    except OSError:
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\ntty:x:5:\napp:x:1000:\n")
    if standard_dirs:
        for name in ("proc", "sys", "dev"):
            (root / name).mkdir()
        (root / "etc" / "hosts").write_text("image-hosts\n")
        (root / "etc" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    return root


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path of a tree with (mode, size, mtime_ns), not following symlinks."""
    snap = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        snap[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return snap


def spec_for(work: Path, tree: Path, **fields: object) -> RootfsSpec:
    """A spec with a fresh run dir under `work`."""
    run_dir = tempfile.mkdtemp(prefix="run-", dir=work)
    os.rmdir(run_dir)  # prepare_app_rootfs creates it: it must be fresh
    return replace(RootfsSpec(app_name="test-app", tree=str(tree), run_dir=run_dir), **fields)


def run_app(
    spec: RootfsSpec,
    script: str = "true",
    *,
    pidns: bool = True,
    netns: bool = True,
    timeout: float = 20.0,
) -> AppRun:
    """Prepare the app's root in a forked child of fresh namespaces and run `script` there."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = SETUP_FAILED
        try:
            os.close(out_r)
            os.close(err_r)
            status = _namespaced_child(spec, script, pidns, netns, out_w, err_w)
        except BaseException:
            os.write(err_w, traceback.format_exc().encode())
        os._exit(status)
    os.close(out_w)
    os.close(err_w)
    try:
        output, error = _read_all(out_r, err_r, timeout)
    finally:
        os.close(out_r)
        os.close(err_r)
        if error == "timeout":
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
    return AppRun(os.waitstatus_to_exitcode(wait_status), output, error)


def _namespaced_child(
    spec: RootfsSpec, script: str, pidns: bool, netns: bool, out_w: int, err_w: int
) -> int:  # pragma: no cover - child
    """Unshare the pod's namespaces; in a new pid namespace the app runs as its pid 1."""
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
    flags |= (linux.CLONE_NEWPID if pidns else 0) | (linux.CLONE_NEWNET if netns else 0)
    linux.unshare(flags)
    if pidns:
        child = os.fork()
        if child:
            _, wait_status = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(wait_status) & 0xFF
        linux.set_pdeathsig(signal.SIGKILL)
    started = time.perf_counter()
    try:
        prepare_app_rootfs(spec)
    except BaseException as e:
        os.write(err_w, f"{type(e).__name__}: {e}".encode())
        os._exit(SETUP_FAILED)
    os.write(out_w, f"setup_ms={(time.perf_counter() - started) * 1000:.3f}\n".encode())
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.execve("/bin/sh", ["sh", "-c", script], _ENV)


def _read_all(out_r: int, err_r: int, timeout: float) -> tuple[str, str]:
    """Both pipes until EOF; ("", "timeout") when the deadline passes first."""
    chunks: dict[int, bytes] = {out_r: b"", err_r: b""}
    open_fds = [out_r, err_r]
    deadline = time.monotonic() + timeout
    while open_fds:
        left = deadline - time.monotonic()
        ready = select.select(open_fds, [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            return chunks[out_r].decode(errors="replace"), "timeout"
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd] += data
            else:
                open_fds.remove(fd)
    output = chunks[out_r].decode(errors="replace")
    output = "\n".join(line for line in output.splitlines() if not line.startswith("setup_ms="))
    return output, chunks[err_r].decode(errors="replace")


def timed_runs(work: Path, tree: Path, count: int) -> list[float]:
    """prepare_app_rootfs times (ms) of `count` app runs of /bin/true, each a fresh child."""
    times = []
    for _ in range(count):
        spec = spec_for(work, tree)
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(out_r)
            try:
                _namespaced_child(spec, "true", True, True, out_w, out_w)
            finally:
                os._exit(SETUP_FAILED)
        os.close(out_w)
        with os.fdopen(out_r) as f:
            text = f.read()
        os.waitpid(pid, 0)
        assert text.startswith("setup_ms="), text
        times.append(float(text.split("=", 1)[1]))
    return times


# --- the harness's own contract ------------------------------------------------------------


def test_run_app_runs_the_script_in_the_new_root(work: Path) -> None:
    """The script's output and status come back; the app's / is the overlay of the tree."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree), "grep -c ' / overlay ' /proc/mounts; exit 3")
    assert (run.status, run.lines, run.error) == (3, ["1"], "")


def test_run_app_reports_setup_errors(work: Path) -> None:
    """A failing prepare_app_rootfs reports its error and the app never runs."""
    tree = make_tree(work / "tree")
    run = run_app(spec_for(work, tree, working_directory="/nowhere"), "echo ran")
    assert run.status == SETUP_FAILED
    assert "ran" not in run.output
    assert "/nowhere" in run.error


def test_unprivate_mounts_would_leak_into_a_shared_parent(work: Path) -> None:
    """Control for the propagation test: without MS_PRIVATE a shared parent sees the mount."""
    shared = work / "shared"
    shared.mkdir()

    def outer() -> list[str]:
        linux.unshare(linux.CLONE_NEWNS)
        linux.make_rprivate("/")
        linux.mount("tmpfs", shared, "tmpfs", 0, "size=1m")
        linux.mount(None, shared, None, linux.MS_SHARED)
        (shared / "x").mkdir()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount("tmpfs", shared / "x", "tmpfs", 0, "size=1m")
            os._exit(0)
        os.waitpid(pid, 0)
        return mounts_under(shared)

    assert run_forked(outer) == [str(shared), str(shared / "x")]


def test_setup_time_median_of_20_runs(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Measure prepare_app_rootfs: run dir on the test's disk, and on a tmpfs (recommended)."""
    tree = make_tree(work / "tree")
    on_disk = timed_runs(work, tree, 20)
    fast = work / "tmpfs"
    fast.mkdir()

    def on_tmpfs() -> list[float]:
        linux.unshare(linux.CLONE_NEWNS)
        linux.make_rprivate("/")
        linux.mount("tmpfs", fast, "tmpfs", 0, "size=64m")
        return timed_runs(fast, tree, 20)

    in_memory = run_forked(on_tmpfs)
    with capsys.disabled():
        print(
            f"\nprepare_app_rootfs median of 20: {statistics.median(on_disk):.2f} ms "
            f"(run dir on disk), {statistics.median(in_memory):.2f} ms (run dir on tmpfs)"
        )
    assert statistics.median(in_memory) < 15
