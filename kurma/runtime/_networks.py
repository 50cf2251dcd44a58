"""A pod's CNI networks: checked at create, attached at start, detached at its end.

- create (`_check_networks`): every network the pod's `os/linux/networks` isolator names
  must be a `.conflist` in `RuntimeConfig.networks_dir` (NetworkNotFound lists the known
  ones; with no networks_dir, no network is known). The plan (`_netplan`) refused a pod that
  shares the host's netns.
- start (`_attach_networks`, from `_lifecycle._launch`): the launch has returned, so P1's
  host pid is known and its netns is `/proc/PID/ns/net`. P1 waits at the network gate (the
  FIFO `POD_DIR/network-gate`, `launcher/_spawn._wait_for_networks`) after the pre-start
  barrier, before the apps' go bytes, while the apps build their roots: ADD runs in
  parallel with them. Each network in order gets `eth0`, `eth1`, ... (container ID: the
  pod's UUID; records in `<state_dir>/networks/`, an `AttachmentStore`, written before ADD
  starts). The pod's hosts and resolv.conf are rewritten in place from the results (they
  are bind-mounted into the apps: a rename would not be seen), then kurmad opens the FIFO
  read-write (neither side blocks) and writes `ok`. It holds that descriptor until the
  start is over (the apps' errpipes read), so the line stays in the FIFO until P1 has read
  it; EOF (kurmad died) fails the start in P1. If an ADD fails, the chain undid itself
  (library) and the networks attached before are detached here, while the netns still
  exists; the start fails with the PluginError (`_undo_start` kills P1 and the apps).
- end (`_detach_networks`): from the watcher's `_finalize` (podinit gone), `destroy_pod`
  (idempotent), `_undo_start`. DEL in reverse order. The pod's netns is gone or going, and a
  `/proc/PID/ns/net` path may name another process after the pid is reused, so DEL gets an
  empty CNI_NETNS (the spec allows it; plugins still release addresses and rules; the
  kernel removes the veth with the namespace). A failing DEL is logged and its record kept:
  the reconcile at the next start tries again; it never blocks a destroy.
- reconcile (`_reconcile_networks`, at the Runtime's start, after adoption): records of pods
  that are unknown, created or exited are detached; an adopted running pod's attachments are
  CHECKed (a failure is logged as a warning: the pod keeps running; Debian's portmap fails
  CHECK on dual-stack results, a known plugin bug) and a running pod whose P1 still waits at
  the gate (kurmad died during its start) is killed: nobody will open its gate.

Known limits: pre-start handlers run before the gate (they see only loopback); the network
teardown in `_finalize` runs in the watcher thread with the runtime's lock held (a DEL of a
bridge network costs tens of milliseconds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..aci import PodManifest
from ..errors import KurmaError, NetworkNotFound
from ..network import (
    Attachment,
    AttachmentStore,
    NetworkConfig,
    Plugins,
    attach,
    check,
    detach,
    get_network,
    load_networks,
)
from ._etc import hosts_content, resolv_conf_content
from ._live import LivePod, RuntimeParts
from ._netplan import GATE_NAME, ISOLATOR, PodNetwork, networks_isolator
from ._plan import PodPlan
from ._podrecord import PodState, process_start_time

log = logging.getLogger(__name__)

NETWORKS_DIR = "networks"  # in the state dir: the attachment records
_ETH = re.compile(r"eth(\d+)\Z")


def _order(att: Attachment) -> tuple[int, str]:
    m = _ETH.match(att.ifname)
    return (int(m.group(1)) if m else 1 << 30, att.ifname)


class Networks(RuntimeParts):
    """The Runtime's network part (see the module docstring)."""

    attachments: AttachmentStore
    plugins: Plugins

    def _setup_networks(self) -> None:
        self.attachments = AttachmentStore(self.state_dir / NETWORKS_DIR)
        self.plugins = Plugins(self.config.cni_paths)

    # --- queries ---------------------------------------------------------------------------

    def networks(self) -> dict[str, NetworkConfig]:
        """The networks of `RuntimeConfig.networks_dir` by name (bad files are skipped with
        a warning); {} without one."""
        if self.config.networks_dir is None:
            return {}
        return load_networks(self.config.networks_dir, strict=False)

    def pod_networks(self, ref: str) -> list[Attachment]:
        """A pod's attachments (network, ifname, the CNI Result: IPs, routes, DNS), eth0
        first; empty when it is not running or joined none. From memory: no I/O."""
        with self._lock:
            return list(self._find(ref).networks)

    # --- create ----------------------------------------------------------------------------

    def _check_networks(self, manifest: PodManifest) -> None:
        """Every network the pod asks for exists (NetworkNotFound names the missing one)."""
        iso = networks_isolator(manifest.isolators)
        if iso is None or not iso.networks:
            return
        if self.config.networks_dir is None:
            names = ", ".join(n.name for n in iso.networks)
            raise NetworkNotFound(
                f"pod isolator {ISOLATOR}: no networks are configured on this host "
                f"(no networks directory), asked for {names}"
            )
        known = self.networks()
        for spec in iso.networks:
            get_network(known, spec.name)

    # --- start -----------------------------------------------------------------------------

    def _attach_networks(self, live: LivePod, plan: PodPlan, pid: int) -> None:
        """ADD every network of the pod into P1's netns, write hosts/resolv.conf, open the
        gate (`live.gate`, closed by the caller when the start is over). On failure every
        network attached is detached again and the error raised."""
        netns = f"/proc/{pid}/ns/net"
        known = self.networks()
        done: list[Attachment] = []
        try:
            for net in plan.networks:
                done.append(self._attach_one(live, known, net, netns))
            self._write_network_etc(live, done)
            fd = os.open(live.pod_dir / GATE_NAME, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                os.write(fd, b"ok\n")
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            for att in reversed(done):
                self._detach_one(live.record.name, att)
            raise
        with self._lock:
            live.gate = fd
            live.networks = done

    def _attach_one(
        self, live: LivePod, known: dict[str, NetworkConfig], net: PodNetwork, netns: str
    ) -> Attachment:
        config = get_network(known, net.name)
        return attach(
            config,
            live.record.uuid,
            netns,
            net.ifname,
            port_mappings=net.ports,
            plugins=self.plugins,
            store=self.attachments,
        )

    def _write_network_etc(self, live: LivePod, atts: Sequence[Attachment]) -> None:
        """hosts names the pod by its first IPv4 and IPv6 address; resolv.conf is the first
        network's DNS that has one (else left as made at create). Rewritten in place."""
        results = [a.result for a in atts if a.result is not None]
        own = []
        for version in (4, 6):
            ip = next((r.first_ip(version) for r in results if r.first_ip(version)), None)
            if ip is not None:
                own.append(str(ip))
        name = live.record.name
        if own:
            _rewrite(live.pod_dir / "hosts", hosts_content(name, own=own))
        dns = next((r.dns for r in results if not r.dns.is_empty), None)
        if dns is not None:
            search = dns.search or ((dns.domain,) if dns.domain else ())
            _rewrite(
                live.pod_dir / "resolv.conf",
                resolv_conf_content(dns.nameservers, search, dns.options),
            )

    def _close_gate(self, live: LivePod) -> None:
        if live.gate is not None:
            os.close(live.gate)
            live.gate = None

    # --- end -------------------------------------------------------------------------------

    def _detach_networks(self, live: LivePod) -> None:
        """DEL every stored attachment of the pod, in reverse order (its netns is gone or
        going: empty CNI_NETNS). A failure is logged and its record kept for a retry."""
        with live.detaching:  # the watcher's DEL and a destroy's never run at once
            live.networks = []
            for att in sorted(self._stored(live.record.uuid), key=_order, reverse=True):
                self._detach_one(live.record.name, replace(att, netns=""))

    def _detach_one(self, name: str, att: Attachment) -> None:
        try:
            detach(att, plugins=self.plugins, store=self.attachments)
        except (KurmaError, OSError, ValueError) as e:
            log.warning(
                "pod %s: network %s (%s): DEL failed, kept for a later retry: %s",
                name, att.network, att.ifname, e,
            )  # fmt: skip

    def _stored(self, uuid: str) -> list[Attachment]:
        """The pod's attachment records (only its own files are read)."""
        try:
            names = os.listdir(self.attachments.directory)
        except FileNotFoundError:
            return []
        found = []
        for fname in names:
            if not fname.startswith(f"{uuid}@") or not fname.endswith(".json"):
                continue
            parts = fname[: -len(".json")].split("@")
            if len(parts) == 3:
                att = self.attachments.get(*parts)
                if att is not None:
                    found.append(att)
        return found

    # --- a new runtime ---------------------------------------------------------------------

    def _reconcile_networks(self) -> None:
        """Detach what no running pod owns; CHECK the adopted pods' attachments; end a pod
        whose P1 still waits at the gate of a start that kurmad never finished."""
        by_pod: dict[str, list[Attachment]] = {}
        for att in self.attachments:
            by_pod.setdefault(att.container_id, []).append(att)
        with self._lock:
            lives = dict(self._pods)
        for uuid, live in lives.items():
            state = live.record.state
            if state not in (PodState.RUNNING, PodState.STOPPING) or live.pidfd is None:
                continue
            plan = live.plan
            pid = live.record.podinit_pid
            gated = plan is not None and plan.network_gate and pid is not None
            if gated and pid is not None and not _is_podinit(pid, uuid):
                log.warning(
                    "pod %s: its start never passed the network gate (kurmad ended "
                    "during it): killed", live.record.name,
                )  # fmt: skip
                self._signal(live, signal.SIGKILL)
                continue
            atts = sorted(by_pod.pop(uuid, []), key=_order)
            live.networks = [a for a in atts if a.complete]
            for att in atts:
                self._check_one(live, att, pid)
        for uuid, atts in by_pod.items():
            live = lives.get(uuid)
            if live is not None and live.record.state in (PodState.RUNNING, PodState.STOPPING):
                continue  # killed above: its end detaches them
            name = live.record.name if live is not None else uuid
            why = "is gone" if live is None else f"is {live.record.state}"
            log.warning("pod %s %s: detaching its %d network(s)", name, why, len(atts))
            for att in sorted(atts, key=_order, reverse=True):
                self._detach_one(name, replace(att, netns=""))

    def _check_one(self, live: LivePod, att: Attachment, pid: int | None) -> None:
        if not att.complete:
            log.warning("pod %s: network %s: its ADD never finished", live.record.name,
                        att.network)  # fmt: skip
            return
        if pid is None or process_start_time(pid) != live.record.podinit_start:
            return
        try:
            check(replace(att, netns=f"/proc/{pid}/ns/net"), plugins=self.plugins)
        except (KurmaError, OSError, ValueError) as e:
            log.warning("pod %s: network %s (%s): CHECK failed: %s", live.record.name,
                        att.network, att.ifname, e)  # fmt: skip
        else:
            log.info("pod %s: network %s (%s) checked", live.record.name, att.network,
                     att.ifname)  # fmt: skip


def _is_podinit(pid: int, uuid: str) -> bool:
    """Whether P1 has become kurma-podinit (its title names the pod): past the gate."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().split(b"\0", 1)[0]
    except OSError:
        return True  # gone: its end is the watcher's
    return title == f"kurma-podinit {uuid}".encode()


def _rewrite(path: Path, text: str) -> None:
    """Replace a file's content in place (same inode: it is bind-mounted into the apps)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    with contextlib.closing(os.fdopen(fd, "w", encoding="utf-8")) as f:
        f.write(text)
