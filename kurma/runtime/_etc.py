"""The /etc/hosts and /etc/resolv.conf a pod's apps see: content generation and the pod's copies.

The content is pure (tests compare strings). The launcher writes each file once per pod into
the pod's directory (`write_pod_etc`) and every app of the pod bind-mounts them read-only over
its image's own files, so nothing is ever written into a rendered tree and a restart of one
app costs no writes.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..atomic import write_atomic

HOSTS_NAME = "hosts"
RESOLV_CONF_NAME = "resolv.conf"

_MAX_NAMESERVERS = 3  # resolv.conf(5): MAXNS; the resolver ignores the rest
_MAX_SEARCH = 6


@dataclass(frozen=True)
class EtcFiles:
    """Host paths of a pod's generated files, bound over /etc/hosts and /etc/resolv.conf."""

    hosts: str
    resolv_conf: str


def hosts_content(
    pod_name: str, extra: Iterable[tuple[str, str]] = (), *, own: Sequence[str] = ()
) -> str:
    """/etc/hosts: loopback names, the pod's own name on 127.0.1.1/::1 (on its `own`
    addresses instead, when it has some: a pod on a CNI network), then (ip, name) extras."""
    names = " ".join(dict.fromkeys(n for n in (pod_name, pod_name.split(".")[0]) if n))
    lines = [
        "127.0.0.1\tlocalhost localhost.localdomain",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    if names and own:
        lines += [f"{ipaddress.ip_address(a)}\t{names}" for a in own]
    elif names:
        lines += [f"127.0.1.1\t{names}", f"::1\t{names}"]
    for address, name in extra:
        lines.append(f"{ipaddress.ip_address(address)}\t{_check_name(name)}")
    return "\n".join(lines) + "\n"


def resolv_conf_content(
    nameservers: Sequence[str], search: Sequence[str] = (), options: Sequence[str] = ()
) -> str:
    """resolv.conf(5) text; addresses are validated so a bad config cannot inject lines."""
    lines = [f"nameserver {ipaddress.ip_address(ns)}" for ns in nameservers[:_MAX_NAMESERVERS]]
    if search:
        lines.append("search " + " ".join(_check_name(d) for d in search[:_MAX_SEARCH]))
    if options:
        lines.append("options " + " ".join(_check_name(o) for o in options))
    return "\n".join(lines) + "\n" if lines else ""


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """The (nameservers, search domains, options) of a resolv.conf, comments and junk skipped."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        key, values = words[0], words[1:]
        if key == "nameserver":
            try:
                nameservers.append(str(ipaddress.ip_address(values[0].split("%", 1)[0])))
            except ValueError:
                continue
        elif key in ("search", "domain"):
            search = values  # the last of search/domain wins, as in glibc
        elif key == "options":
            options.extend(values)
    return nameservers, search, options


def host_resolv_conf(path: str = "/etc/resolv.conf") -> str:
    """See `_host_resolv_conf`; re-read only when the file changes (every pod asks)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ""
    return _host_resolv_conf(path, st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=4)
def _host_resolv_conf(path: str, _mtime: int, _size: int, _ino: int) -> str:
    """The host's resolv.conf, with loopback nameservers dropped (they are the pod's own lo).

    A host running a local resolver (127.0.0.53) leaves a pod with its own network namespace
    nothing that answers; such a pod gets no nameserver line rather than a dead one.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            nameservers, search, options = parse_resolv_conf(f.read())
    except FileNotFoundError:
        return ""
    usable = [ns for ns in nameservers if not ipaddress.ip_address(ns).is_loopback]
    return resolv_conf_content(usable, search, options)


def write_pod_etc(
    pod_dir: str, pod_name: str, nameservers: Sequence[str] | None = None
) -> EtcFiles:
    """Write the pod's hosts and resolv.conf into `pod_dir` (atomically); once per pod.

    `nameservers` None means "the host's resolv.conf"; an empty list means none.
    """
    resolv = host_resolv_conf() if nameservers is None else resolv_conf_content(nameservers)
    hosts = os.path.join(pod_dir, HOSTS_NAME)
    resolv_conf = os.path.join(pod_dir, RESOLV_CONF_NAME)
    write_atomic(hosts, hosts_content(pod_name), sync=False)
    write_atomic(resolv_conf, resolv, sync=False)
    return EtcFiles(hosts, resolv_conf)


def _check_name(value: str) -> str:
    """A host name, domain or option: one word of printable ASCII (no line or field breaks)."""
    if (
        not value
        or not value.isascii()
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        raise ValueError(f"not a valid name for /etc: {value!r}")
    return value
