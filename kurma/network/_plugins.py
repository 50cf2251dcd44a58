"""Finding and running CNI plugin binaries: the execution protocol of the spec.

A plugin gets its parameters in the environment (`CNI_COMMAND`, `CNI_CONTAINERID`,
`CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`) and its configuration on stdin; it prints
a result (ADD), nothing (DEL, CHECK) or, when it fails, an error object
`{"code", "msg", "details"}` on stdout with a non-zero exit status.

The plugin runs in the caller's network namespace, which is the "host" side of what it makes
(the bridge, the host end of a veth, iptables rules). `exec_prefix` runs it under another
command instead: `("ip", "netns", "exec", NAME)` makes another namespace the host side (the
tests do so, to keep off the real host's network), `("nsenter", "--net=PATH")` likewise.

Plugins are started without a preexec function (safe from a threaded process) in a session
of their own, so a timeout kills them with every helper they started (iptables).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import PluginError, PluginNotFound
from ._config import is_plain_type

log = logging.getLogger(__name__)

DEFAULT_PATHS = ("/usr/lib/cni", "/opt/cni/bin")
DEFAULT_TIMEOUT = 60.0
CNI_VARIABLES = (
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
)
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION")


class Plugins:
    """The plugin binaries in `paths` (searched in order) and how to run them."""

    def __init__(
        self,
        paths: Sequence[str] = DEFAULT_PATHS,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        exec_prefix: Sequence[str] = (),
    ) -> None:
        self.paths = tuple(os.fspath(p) for p in paths)
        self.timeout = timeout
        self.exec_prefix = tuple(exec_prefix)

    def __repr__(self) -> str:
        return f"Plugins(paths={self.paths!r}, exec_prefix={self.exec_prefix!r})"

    def find(self, ptype: str) -> str:
        """The path of the executable for plugin type `ptype`; raises PluginNotFound."""
        if not is_plain_type(ptype):
            raise PluginNotFound(ptype, self.paths, "a plugin type must be a plain file name")
        for directory in self.paths:
            path = os.path.join(directory, ptype)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        raise PluginNotFound(ptype, self.paths)

    def environment(
        self, command: str, container_id: str, netns: str, ifname: str, args: str
    ) -> dict[str, str]:
        """The process environment of a plugin call: ours, with the CNI variables set."""
        env = {k: v for k, v in os.environ.items() if k not in CNI_VARIABLES}
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=container_id,
            CNI_NETNS=netns,
            CNI_IFNAME=ifname,
            CNI_ARGS=args,
            CNI_PATH=os.pathsep.join(self.paths),
        )
        env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return env

    def run(
        self,
        ptype: str,
        command: str,
        stdin: bytes,
        *,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        args: str = "",
    ) -> Mapping[str, Any] | None:
        """Run one plugin command; its JSON output (None if it printed nothing).

        Raises PluginNotFound, or PluginError with the plugin's code, msg and details.
        """
        if command not in COMMANDS:
            raise ValueError(f"unknown CNI command {command!r}")
        path = self.find(ptype)
        env = self.environment(command, container_id, netns, ifname, args)
        started = time.monotonic()
        # The plugin's exit status comes back through a pipe, from a shell that runs it: in
        # kurmad, a child subreaper whose main thread reaps what it did not register, the
        # status `subprocess` waits for may be gone (ECHILD, which it takes for exit 0).
        status_r, status_w = os.pipe()
        script = f'"$0" "$@"; echo "$?" >/proc/self/fd/{status_w}'  # dash: fds < 10 only
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", script, *self.exec_prefix, path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",
                close_fds=True,
                pass_fds=(status_w,),
                start_new_session=True,
            )
        except OSError as e:
            os.close(status_r)
            raise PluginError(ptype, None, f"cannot execute {path}: {e.strerror}") from None
        finally:
            os.close(status_w)
        with proc, os.fdopen(status_r, "rb") as status_pipe:
            try:
                out, err = proc.communicate(stdin, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                raise PluginError(
                    ptype, None, f"{command} timed out after {self.timeout:g} s"
                ) from None
            reported = status_pipe.read().strip()
        elapsed = time.monotonic() - started
        # The shell's word, else subprocess's (a shell killed before it said: a signal).
        returncode = int(reported) if reported.isdigit() else (proc.returncode or -9)
        log.debug(
            "cni %s %s container=%s ifname=%s: exit %d in %.3f s",
            ptype,
            command,
            container_id,
            ifname,
            returncode,
            elapsed,
        )
        if returncode != 0:
            raise _plugin_error(ptype, command, returncode, out, err)
        if not out.strip():
            return None
        try:
            doc = json.loads(out)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PluginError(ptype, None, f"{command} printed no JSON: {_tail(out)}") from None
        if not isinstance(doc, dict):
            raise PluginError(ptype, None, f"{command} printed JSON that is not an object")
        return doc

    def version(self, ptype: str) -> Mapping[str, Any]:
        """The plugin's answer to VERSION: `cniVersion` and `supportedVersions`."""
        doc = self.run(ptype, "VERSION", b'{"cniVersion":"1.0.0"}')
        return doc or {}


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(data: bytes, limit: int = 500) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text[-limit:]


def _plugin_error(ptype: str, command: str, status: int, out: bytes, err: bytes) -> PluginError:
    """The PluginError for a failed call: the spec's error object if the plugin printed one."""
    try:
        doc = json.loads(out)
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and ("msg" in doc or "code" in doc):
        code = doc.get("code")
        msg = doc.get("msg")
        details = doc.get("details")
        return PluginError(
            ptype,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            str(msg) if msg else f"{command} failed",
            str(details) if details else "",
        )
    how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
    said = _tail(err) or _tail(out)
    return PluginError(ptype, None, f"{command} failed ({how})" + (f": {said}" if said else ""))
