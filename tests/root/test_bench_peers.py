"""bench/peers.py: the pod-start peers (crun, runc, the unshare floor) really run, and clean up.

Each runtime test gets a `Runtime` (a private state root under /run; for crun on a hybrid
cgroup host also the cgroup2 helper process) and a busybox rootfs in a temp dir. The fixture
closes the runtime whatever happens and then checks that nothing is left: no state root, no
container cgroup in any hierarchy, no helper process (hence no mount namespace of ours).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import peers

from ..waiting import wait_for

pytestmark = pytest.mark.root

# Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
DEFAULT_CAP_MASK = 0xA80425FB
ID_PREFIX = f"kbench-{os.getpid()}-"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return peers.ensure_rootfs(tmp_path_factory.mktemp("peers") / "rootfs")


def container_cgroups() -> list[str]:
    """Cgroup directories named like this process's containers, in every hierarchy, at its
    root or below our own cgroup there (where runc puts them when we are not at the root)."""
    with open("/proc/self/cgroup") as f:
        own = [line.rstrip("\n").split(":", 2)[1:] for line in f]
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype, options = fields[fields.index("-") + 1], set(fields[-1].split(","))
            if fstype == "cgroup2":
                bases = [path for controllers, path in own if controllers == ""]
            elif fstype == "cgroup":
                bases = [path for ctrls, path in own if ctrls and set(ctrls.split(",")) <= options]
            else:
                continue
            for base in {"/", *bases}:
                found += glob.glob(os.path.join(fields[4] + base, ID_PREFIX + "*"))
    return found


def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` no longer exists (the host's init reaps a reparented container);
    AssertionError after `timeout`."""
    return wait_for(lambda: not os.path.exists(f"/proc/{pid}"), f"pid {pid} to end", timeout)


def open_runtime(name: str) -> peers.Runtime:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (build/apt-deps.sh installs it)")
    return peers.Runtime(name)


@pytest.fixture(params=["crun", "runc"])
def runtime(request: pytest.FixtureRequest) -> Iterator[peers.Runtime]:
    """crun or runc; closed and checked for leftovers afterwards, pass or fail."""
    rt = open_runtime(request.param)
    helper = rt.runner if isinstance(rt.runner, peers.Cgroup2Helper) else None
    try:
        yield rt
    finally:
        rt.close()
        assert not rt.root.exists(), f"state root {rt.root} left behind"
        assert not container_cgroups(), "container cgroups left behind"
        if helper is not None:
            assert helper.proc.poll() is not None, "crun helper still running"


def bundle(tmp_path: Path, rootfs: Path, *args: str, **kw: bool) -> Path:
    return peers.write_bundle(tmp_path / "bundle", rootfs, args or ("/bin/true",), **kw)


def test_rootfs_is_static_busybox_with_applet_links(rootfs: Path) -> None:
    assert (rootfs / "bin/true").readlink() == Path("busybox")
    assert subprocess.run([rootfs / "bin/true"]).returncode == 0
    assert subprocess.run([rootfs / "bin/false"]).returncode == 1
    ldd = subprocess.run(["ldd", rootfs / "bin/busybox"], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    for name in ("proc", "sys", "dev", "tmp"):
        assert (rootfs / name).is_dir()
    inode = (rootfs / "bin/busybox").stat().st_ino
    assert peers.ensure_rootfs(rootfs) == rootfs
    assert (rootfs / "bin/busybox").stat().st_ino == inode, "rebuilt although current"


def test_config_is_a_kurma_pod(rootfs: Path) -> None:
    config = peers.oci_config(rootfs, ["/bin/true"])
    linux = config["linux"]
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "network", "ipc", "uts", "mount"}
    assert "resources" not in linux and "seccomp" not in linux
    assert config["process"]["noNewPrivileges"] is True
    assert set(config["process"]["capabilities"]["bounding"]) == set(peers.DEFAULT_CAPS)
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert [m["destination"] for m in config["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
    ]  # fmt: skip
    seccomp = peers.oci_config(rootfs, seccomp=True)["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "unshare" in seccomp["syscalls"][0]["names"]


def test_true_exits_zero(runtime: peers.Runtime, rootfs: Path, tmp_path: Path) -> None:
    result = runtime.run(bundle(tmp_path, rootfs))
    assert result.returncode == 0, result.output
    assert 0 < result.seconds < peers.DEADLINE
    assert runtime.containers() == [], "run left its container's state"


def test_exit_status_is_the_apps(runtime: peers.Runtime, rootfs: Path, tmp_path: Path) -> None:
    result = runtime.run(bundle(tmp_path, rootfs, "/bin/sh", "-c", "exit 7"))
    assert result.returncode == 7, result.output
    assert runtime.containers() == []


POD_MOUNTS = {"/proc": "proc", "/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
              "/dev/mqueue": "mqueue", "/sys": "sysfs"}  # fmt: skip
SHOW = """
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status
echo "pid $$ host $(cat /proc/sys/kernel/hostname)"
cat /proc/mounts
echo "kcore $(cat /proc/kcore | wc -c)"
ls /dev
touch /x 2>/dev/null || echo "root read-only"
"""


@pytest.mark.parametrize("seccomp", [False, True], ids=["no-seccomp", "seccomp"])
def test_container_sees_a_kurma_pod(
    runtime: peers.Runtime, rootfs: Path, tmp_path: Path, seccomp: bool
) -> None:
    result = runtime.run(bundle(tmp_path, rootfs, "/bin/sh", "-c", SHOW, seccomp=seccomp))
    assert result.returncode == 0, result.output
    lines = result.output.splitlines()
    status = dict(line.split(":\t") for line in lines if ":\t" in line)
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == DEFAULT_CAP_MASK
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == ("2" if seccomp else "0")
    assert "pid 1 host peer" in lines
    mounts = {fields[1]: fields for fields in (line.split() for line in lines) if len(fields) == 6}
    assert {point: mounts[point][2] for point in POD_MOUNTS} == POD_MOUNTS
    assert mounts["/sys"][3].startswith("ro,")
    assert "kcore 0" in lines
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx"} <= set(lines)
    assert mounts["/proc/sys"][3].startswith("ro,")
    assert mounts["/"][3].startswith("ro,") and "root read-only" in lines


def test_pss_of_a_running_container(runtime: peers.Runtime, rootfs: Path, tmp_path: Path) -> None:
    pss = peers.container_pss(runtime, bundle(tmp_path, rootfs, "/bin/sleep", "3600"), 0.05)
    assert len(pss.pids) == 1, "crun and runc leave no process but the container's"
    assert 0 < pss.anon_kib < pss.pss_kib < 8192
    assert gone(pss.pids[0])
    assert runtime.containers() == []


def test_close_deletes_running_containers(rootfs: Path, tmp_path: Path) -> None:
    for name in ("crun", "runc"):
        with open_runtime(name) as rt:
            container = rt.start(bundle(tmp_path / name, rootfs, "/bin/sleep", "3600"))
            assert rt.containers() == [container.id]
        assert not rt.root.exists()
        assert gone(container.pid), f"{name} container {container.pid} still running"
    assert not container_cgroups()


def test_timing_functions(rootfs: Path, tmp_path: Path) -> None:
    for name in ("crun", "runc"):
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed (build/apt-deps.sh installs it)")
    true = bundle(tmp_path, rootfs)
    for times in (peers.time_crun(true, 2), peers.time_runc(true, 2), peers.time_floor(2)):
        assert len(times) == 2 and all(0 < t < peers.DEADLINE for t in times)
    assert not container_cgroups()
    with pytest.raises(RuntimeError, match="exited with 7"):
        peers.time_runc(bundle(tmp_path / "seven", rootfs, "/bin/sh", "-c", "exit 7"), 1)


def test_floor_runs_here_and_in_the_helper() -> None:
    local = peers.LocalRunner()
    try:
        assert local.run(peers.floor_command()).returncode == 0
        assert local.run(["unshare", "-pfmnui", "--mount-proc", "false"]).returncode == 1
    finally:
        local.close()
    hybrid = not os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    helper = peers.Cgroup2Helper()
    try:
        assert peers.time_floor(2, runner=helper)
        assert os.readlink(f"/proc/{helper.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert helper.run(["test", "-e", "/sys/fs/cgroup/cgroup.controllers"]).returncode == 0
        # its cgroup2 mount stays in its namespace
        assert os.path.exists("/sys/fs/cgroup/cgroup.controllers") != hybrid
    finally:
        helper.close()
    assert helper.proc.poll() is not None
