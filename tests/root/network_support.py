"""A network lab for the CNI tests: a "host" network namespace of the test's own, with pods.

Isolation: the plugins run under `ip netns exec HOST` (`Plugins(exec_prefix=...)`), so the
bridge, the host ends of the veths, the sysctls the bridge plugin sets (ip_forward) and the
iptables rules of portmap all live in HOST, never on the machine's own network. Each pod is
a named namespace (`ip netns add`); subnets are in 169.254.0.0/16 and fdfe::/16, the IPAM
dataDir is in the lab's directory. `Lab.close()` (the fixture's teardown, also when a test
fails) kills the servers, deletes every pod namespace and then HOST (which takes the
bridge, the veths and the rules with it) and removes the directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kurma.network import NetworkConfig, Plugins, parse_network_config

SERVER = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    with c:
        c.recv(100)
        c.sendall(("pong " + sys.argv[3]).encode())
"""

CLIENT = r"""
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as c:
            c.sendall(b"ping")
            print(c.recv(100).decode())
            break
    except OSError as e:
        if time.monotonic() > deadline:
            print("error", e)
            sys.exit(1)
        time.sleep(0.1)
"""


def run(*cmd: str, check: bool = True) -> str:
    """Run a command; its stdout."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} failed ({done.returncode}): {done.stderr}")
    return done.stdout


class Lab:
    """A host namespace, pods in it, a directory for conflists and IPAM data."""

    def __init__(self, directory: Path) -> None:
        self.tag = secrets.token_hex(3)
        self.host = f"kurma-test-{self.tag}"
        self.dir = directory / f"lab-{self.tag}"
        self.ipam = self.dir / "ipam"
        self.pods: list[str] = []
        self.servers: list[subprocess.Popen[str]] = []
        self.dir.mkdir()
        run("ip", "netns", "add", self.host)
        run("ip", "-n", self.host, "link", "set", "lo", "up")
        self.plugins = Plugins(exec_prefix=("ip", "netns", "exec", self.host))

    def pod(self) -> str:
        """A new pod namespace (lo up, as a pod's init would do); its path."""
        name = f"{self.host}-p{len(self.pods)}"
        run("ip", "netns", "add", name)
        self.pods.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return f"/run/netns/{name}"

    def drop_pod(self, path: str) -> None:
        """Delete a pod namespace now (the 50-cycle test)."""
        name = os.path.basename(path)
        run("ip", "netns", "del", name)
        self.pods.remove(name)

    def network(self, doc: dict[str, Any], fname: str | None = None) -> NetworkConfig:
        """Write `doc` as a conflist in the lab's directory and load it."""
        data = json.dumps(doc, indent=1).encode()
        path = self.dir / (fname or f"{doc['name']}.conflist")
        path.write_bytes(data)
        return parse_network_config(data, str(path))

    def bridge_doc(
        self,
        name: str = "kt-bridge",
        *,
        v4: str = "169.254.42.0/24",
        v6: str | None = "fdfe:42::/64",
        portmap: bool = True,
        range_end: str | None = None,
    ) -> dict[str, Any]:
        """bridge + host-local (+ portmap) in the lab's subnets."""
        r4: dict[str, Any] = {"subnet": v4}
        if range_end:
            r4 |= {"rangeStart": range_end, "rangeEnd": range_end}
        ranges = [[r4]] + ([[{"subnet": v6}]] if v6 else [])
        plugins: list[dict[str, Any]] = [
            {
                "type": "bridge",
                "bridge": "kt-br0",
                "isGateway": True,
                # ipMasq stays off: the bridge plugin (1.1.1) never removes the masquerade
                # rules of link-local (169.254/16) addresses on DEL (IsGlobalUnicast filter)
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(self.ipam), "ranges": ranges},
            }
        ]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        return {"cniVersion": "1.0.0", "name": name, "plugins": plugins}

    def serve(self, pod: str, address: str, port: int, token: str) -> None:
        """A TCP server in `pod` answering `pong TOKEN` (killed by close())."""
        cmd = ["ip", "netns", "exec", os.path.basename(pod), sys.executable, "-c", SERVER]
        proc = subprocess.Popen(
            [*cmd, address, str(port), token], stdout=subprocess.PIPE, text=True
        )
        self.servers.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    def connect(self, netns: str, address: str, port: int, wait: float = 10) -> str:
        """Connect from `netns` (a pod path or the host's name); what the server said."""
        name = os.path.basename(netns)
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                name,
                sys.executable,
                "-c",
                CLIENT,
                address,
                str(port),
                str(wait),
            ],
            capture_output=True,
            text=True,
            timeout=wait + 30,
            check=False,
        )
        return done.stdout.strip()

    def host_links(self) -> list[str]:
        """The names of the links in the host namespace."""
        out = run("ip", "-n", self.host, "-o", "link", "show")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def veths(self) -> list[str]:
        """The veths in the host namespace."""
        out = run("ip", "-n", self.host, "-o", "link", "show", "type", "veth")
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def rules_mentioning(self, *words: str) -> list[str]:
        """iptables and ip6tables lines of the host namespace that mention any of `words`."""
        lines = []
        for tool in ("iptables-save", "ip6tables-save"):
            out = run("ip", "netns", "exec", self.host, tool)
            lines += [x for x in out.splitlines() if any(w in x for w in words)]
        return lines

    def allocations(self) -> list[str]:
        """host-local's allocation files (one per IP in use), all networks."""
        if not self.ipam.exists():
            return []
        skip = ("lock",)
        return sorted(
            str(p.relative_to(self.ipam))
            for p in self.ipam.rglob("*")
            if p.is_file() and p.name not in skip and not p.name.startswith("last_reserved_ip")
        )

    def close(self) -> None:
        """Remove everything the lab made (best effort, every step tried)."""
        for proc in self.servers:
            proc.kill()
            proc.wait()
        for name in self.pods:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.host], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
