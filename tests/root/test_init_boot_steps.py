"""The machine's boot steps run for real, each in namespaces the test makes and drops again.

Each test runs a small Python program under `unshare` (a private mount namespace, a network
namespace, a PID namespace), which prints what it sees as JSON; when it exits its namespaces
and everything mounted in them are gone. The host's own mounts, network and modules are never
touched. Leaving a real initramfs (rootfs) can only happen in the VM; here the same sequence
runs in a chroot on a tmpfs with shared propagation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from kurma.init._mounts import SYSTEM_MOUNTS

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def run_in(namespaces: list[str], program: str, *args: str) -> Any:
    """Run `program` under `unshare <namespaces>`; its last stdout line, parsed as JSON."""
    argv = ["unshare", *namespaces, sys.executable, "-c", textwrap.dedent(program), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


PRIVATE_MOUNTS = ["--mount", "--propagation", "private"]


def test_system_mounts_are_made_once(tmp_path: Path) -> None:
    """Every system mount with its type; a second run mounts nothing; /dev has its nodes."""
    seen = run_in(
        PRIVATE_MOUNTS,
        """
        import json, os, sys
        from kurma.init._mounts import mount_system, read_mountinfo
        root = sys.argv[1]
        first = mount_system(root)
        second = mount_system(root)
        types = {e.mountpoint[len(root):]: e.fstype for e in read_mountinfo()
                 if e.mountpoint.startswith(root + "/")}
        print(json.dumps({"first": [t[len(root):] for t in first], "second": second,
                          "types": types, "null": os.path.exists(root + "/dev/null"),
                          "tmp": oct(os.stat(root + "/tmp").st_mode & 0o7777)}))
        """,
        str(tmp_path),
    )
    # the required mounts (tests/unit/test_init_mounts.py pins that table to DESIGN.md)
    for target, fstype in {m.target: m.fstype for m in SYSTEM_MOUNTS if not m.optional}.items():
        assert seen["types"].get(target) == fstype, target
        assert target in seen["first"]
    assert seen["second"] == []
    assert seen["null"] and seen["tmp"] == "0o1777"
    assert not any(os.path.ismount(tmp_path / t.lstrip("/")) for t in seen["first"])


def test_leaving_the_initramfs_makes_a_private_root_that_pivot_root_accepts(
    tmp_path: Path,
) -> None:
    """rprivate, rbind, move onto /, chroot: same files, / private; a container's rootfs can
    then be pivot_root'ed to."""
    seen = run_in(
        PRIVATE_MOUNTS,
        """
        import json, os, sys
        from kurma.runtime.linux import MS_BIND, MS_SHARED, MNT_DETACH, mount, pivot_root, umount2
        from kurma.init._mounts import leave_initramfs, mounted_type
        root = sys.argv[1]
        mount("tmpfs", root, "tmpfs", 0, "mode=0755")
        mount(None, root, None, MS_SHARED)  # as the VM kernel may start
        os.makedirs(root + "/proc"); os.makedirs(root + "/data")
        mount("proc", root + "/proc", "proc")
        open(root + "/data/hello", "w").write("same files")
        os.chroot(root); os.chdir("/")
        leave_initramfs("/newroot")
        lines = [l.split() for l in open("/proc/self/mountinfo")]
        top = [l for l in lines if l[4] == "/"][-1]
        result = {"type": mounted_type("/"), "optional": top[6:top.index("-")],
                  "hello": open("/data/hello").read(), "newroot": os.path.exists("/newroot"),
                  "proc": os.path.exists("/proc/self/stat")}
        os.makedirs("/c/old")  # what a container does: its rootfs becomes /
        mount("/data", "/c", None, MS_BIND)
        os.makedirs("/c/old", exist_ok=True)
        pivot_root("/c", "/c/old")
        os.chdir("/")
        umount2("/old", MNT_DETACH)
        result["pivoted"] = open("/hello").read()
        print(json.dumps(result))
        """,
        str(tmp_path),
    )
    assert seen["type"] == "tmpfs"
    assert not any(f.startswith("shared:") for f in seen["optional"]), seen["optional"]
    assert seen["hello"] == seen["pivoted"] == "same files"
    assert not seen["newroot"] and seen["proc"]


@pytest.mark.skipif(shutil.which("losetup") is None, reason="no losetup")
def test_the_oem_disk_is_found_by_label_and_mounted_read_only(tmp_path: Path) -> None:
    """A loop device with an ext4 labelled like the OEM disk: mounted ro, its file loaded."""
    label = f"KT-{uuid.uuid4().hex[:8]}"
    content = tmp_path / "content"
    content.mkdir()
    (content / "kurma.yml").write_text("hostname: from-oem\nconsole: {autologin: true}\n")
    image = tmp_path / "oem.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-L", label, "-d", str(content), str(image)], check=True)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        seen = run_in(
            PRIVATE_MOUNTS,
            """
            import json, sys
            from kurma.init._disks import mount_oem
            from kurma.init._mounts import read_mountinfo
            from kurma.init.config import load_boot_config
            label, target = sys.argv[1:]
            device = mount_oem(label, target, timeout=2)
            again = mount_oem(label, target, timeout=2)
            config, problems = load_boot_config(None, target + "/kurma.yml", "")
            entry = [e for e in read_mountinfo() if e.mountpoint == target][-1]
            print(json.dumps({"device": device, "again": again, "host": config.hostname,
                              "autologin": config.console.autologin, "opts": entry.options,
                              "problems": [str(p) for p in problems]}))
            """,
            label,
            str(tmp_path / "oem"),
        )
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    assert seen["device"] == loop and seen["again"] == str(tmp_path / "oem")
    assert (seen["host"], seen["autologin"], seen["problems"]) == ("from-oem", True, [])
    assert seen["opts"].split(",")[0] == "ro"
    assert not os.path.ismount(tmp_path / "oem")


def test_host_network_in_a_network_namespace_of_its_own(tmp_path: Path) -> None:
    """Static interface: MTU, up, address, routes; DHCP interface only up; lo up; resolv.conf."""
    seen = run_in(
        ["--net"],
        """
        import json, sys
        from pyroute2 import IPRoute
        from kurma.init._network import setup_network
        from kurma.init.config import Dns, Interface, Network, Route
        with IPRoute() as ipr:
            ipr.link("add", ifname="kt0", kind="veth", peer="kt1")
        net = Network(
            interfaces={
                "kt*": Interface(dhcp=True, mtu=1300),
                "kt0": Interface(addresses=("169.254.10.2/24",), mtu=1400, routes=(
                    Route(to="169.254.20.0/24", via="169.254.10.1", metric=7),
                    Route(to="default", via="169.254.10.1"))),
            },
            dns=Dns(servers=("169.254.10.53",)),
        )
        report = setup_network(net, sys.argv[1])
        again = setup_network(net, sys.argv[1])
        with IPRoute() as ipr:
            links = {l.get("ifname"): (l.get("mtu"), l.get("flags") & 1) for l in ipr.get_links()}
            index = ipr.link_lookup(ifname="kt0")[0]
            addrs = [f"{a.get('address')}/{a['prefixlen']}"
                     for a in ipr.get_addr(index=index, family=2)]
            routes = sorted((r.get("dst") or "default", r.get("dst_len"), r.get("gateway"),
                             r.get("priority")) for r in ipr.get_routes(family=2, oif=index,
                             table=254) if r.get("gateway"))
        print(json.dumps({"static": report.static, "dhcp": report.dhcp, "again": again.errors,
                          "links": links, "addrs": addrs, "routes": routes}))
        """,
        str(tmp_path / "resolv.conf"),
    )
    assert (seen["static"], seen["dhcp"], seen["again"]) == (["kt0"], ["kt1"], {})
    assert seen["links"]["lo"][1] == 1
    assert seen["links"]["kt0"] == [1400, 1] and seen["links"]["kt1"] == [1300, 1]
    assert seen["addrs"] == ["169.254.10.2/24"]
    assert seen["routes"] == [
        ["169.254.20.0", 24, "169.254.10.1", 7],
        ["default", 0, "169.254.10.1", None],
    ]
    assert "nameserver 169.254.10.53" in (tmp_path / "resolv.conf").read_text().splitlines()


def test_shutdown_kills_what_is_left_even_if_it_ignores_sigterm() -> None:
    """PID 1 of a PID namespace: SIGTERM to all, SIGKILL to the stubborn; none left."""
    seen = run_in(
        ["--pid", "--fork", "--mount-proc"],
        """
        import json, os, subprocess, sys
        from kurma.init._shutdown import kill_all, other_processes
        subprocess.Popen(["sleep", "60"])
        stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "print('ready', flush=True); time.sleep(60)")
        subprocess.Popen([sys.executable, "-c", stubborn],
                         stdout=subprocess.PIPE).stdout.readline()
        subprocess.Popen(["sh", "-c", "sleep 60 & exit 0"]).wait()  # leaves an orphan
        def reap():
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
        before = len(other_processes())
        termed, killed = kill_all(1.0, reap)
        print(json.dumps({"before": before, "termed": termed, "killed": killed,
                          "left": other_processes()}))
        """,
    )
    assert seen["before"] == seen["termed"] == 3
    assert seen["killed"] == 1, "the one that ignores SIGTERM needed SIGKILL"
    assert seen["left"] == []


def test_unmount_all_goes_deepest_first_and_detaches_busy_mounts(tmp_path: Path) -> None:
    """Nested tmpfs mounts, one with a file open for writing: all gone afterwards."""
    seen = run_in(
        PRIVATE_MOUNTS,
        """
        import json, os, sys
        from kurma.runtime.linux import mount
        from kurma.init._shutdown import unmount_all
        from kurma.init._mounts import read_mountinfo
        top = sys.argv[1]
        for path in (top, top + "/a", top + "/a/b"):
            os.makedirs(path, exist_ok=True)
            mount("tmpfs", path, "tmpfs")
        busy = open(top + "/a/b/open-file", "w")
        report = unmount_all(top)
        left = [e.mountpoint for e in read_mountinfo() if e.mountpoint.startswith(top)]
        print(json.dumps({"unmounted": report.unmounted, "detached": report.detached,
                          "failed": report.failed, "left": left}))
        """,
        str(tmp_path / "x"),
    )
    x = str(tmp_path / "x")
    assert seen["left"] == [] and seen["failed"] == {}
    assert seen["unmounted"] + seen["detached"]
    assert set(seen["unmounted"] + seen["detached"]) == {x, x + "/a", x + "/a/b"}
    assert f"{x}/a/b" in seen["detached"]


@pytest.mark.skipif(shutil.which("losetup") is None, reason="no losetup")
def test_a_blank_disk_is_formatted_mounted_and_its_roles_recorded(tmp_path: Path) -> None:
    """A blank loop device named in the config: ext4 made, labelled, mounted, role recorded."""
    image = tmp_path / "blank.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    loop = subprocess.run(
        ["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()
    name = os.path.basename(loop)
    try:
        seen = run_in(
            PRIVATE_MOUNTS,
            """
            import json, sys
            from kurma.init._disks import prepare_disks
            from kurma.init._mounts import mounted_type
            from kurma.init.config import BootConfig, Disk, DiskRole
            name, mnt = sys.argv[1:]
            disk = Disk(format=True, mount=mnt, holds=(DiskRole.IMAGES, DiskRole.PODS))
            report = prepare_disks(BootConfig(disks={f"LABEL={name}": disk}), 1)
            again = prepare_disks(BootConfig(disks={f"LABEL={name}": disk}), 1)
            open(mnt + "/written", "w").write("kept")
            print(json.dumps({"mounted": report.mounted, "errors": report.errors,
                              "roles": {r.value: p for r, p in report.roles.items()},
                              "again": again.errors, "type": mounted_type(mnt)}))
            """,
            name,
            str(tmp_path / "mnt"),
        )
        label = subprocess.run(
            ["blkid", "-o", "value", "-s", "LABEL", loop], capture_output=True, text=True
        ).stdout.strip()
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    mnt = str(tmp_path / "mnt")
    assert seen["errors"] == {} and seen["again"] == {}
    assert seen["mounted"] == {f"LABEL={name}": mnt} and seen["type"] == "ext4"
    assert seen["roles"] == {"images": mnt, "pods": mnt}
    assert label == name, "labelled, so the next boot finds it by its label"
    assert not os.path.ismount(mnt)


def test_the_store_seed_is_bound_read_only_onto_its_placeholders(tmp_path: Path) -> None:
    """kurma/init/_seed.py: each rootfs of the squashfs's seed appears in the store, read-only;
    a second run binds nothing more; a placeholder that is not empty is named, not covered."""
    seed, store = tmp_path / "seed", tmp_path / "store"
    for kind, name in (("images", "sha512-aa"), ("trees", "k1"), ("trees", "k2")):
        (seed / kind / name / "rootfs/bin").mkdir(parents=True)
        (seed / kind / name / "rootfs/bin/sh").write_text(name)
        (store / kind / name / "rootfs").mkdir(parents=True)
    (store / "trees/k2/rootfs/stale").write_text("kurmad wrote here")
    seen = run_in(
        PRIVATE_MOUNTS,
        """
        import json, os, sys
        from kurma.init._seed import bind_seed
        store, seed = sys.argv[1], sys.argv[2]
        first, second = bind_seed(store, seed), bind_seed(store, seed)
        image = os.path.join(store, "images/sha512-aa/rootfs")
        try:
            open(os.path.join(image, "new"), "w")
            writable = True
        except OSError:
            writable = False
        print(json.dumps({"bound": first.bound, "errors": first.errors, "again": second.bound,
                          "sh": open(os.path.join(image, "bin/sh")).read(),
                          "writable": writable}))
        """,
        str(store),
        str(seed),
    )
    assert seen["bound"] == ["images/sha512-aa", "trees/k1"] and seen["again"] == []
    assert len(seen["errors"]) == 1 and "trees/k2" in seen["errors"][0]
    assert seen["sh"] == "sha512-aa" and seen["writable"] is False
    assert not any((store / "images/sha512-aa/rootfs").iterdir())  # gone with the namespace
