"""Stop signals: an app whose image names one (an OCI image's StopSignal, which the store
keeps as the image annotation `kurma.io/stop-signal`; or the pod manifest's app annotation
`stop-signal`, which wins) is stopped with that signal instead of SIGTERM, as docker stops a
container.

As in docker, the signal goes to the app's main process only; the grace period and the
SIGKILL of everything left are the same as for SIGTERM. kurmad knows an app's pid inside
the pod; the host pid is found among the pod's cgroup's processes by the last entry of
their `NSpid` line, and signalled through a pidfd opened and checked again before the
signal, so a pid reused meanwhile is never hit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterable, Mapping

from kurma.aci import ImageManifest, PodManifest, parse_image_manifest

log = logging.getLogger(__name__)

STOP_SIGNAL_ANNOTATION = "kurma.io/stop-signal"  # an image's (an AC Identifier)
POD_STOP_SIGNAL_ANNOTATION = "stop-signal"  # a pod manifest's app annotation (an AC Name)


def parse_signal(text: str) -> int:
    """`SIGQUIT`, `QUIT`, `3` or `SIGRTMIN+3` as a number (ValueError otherwise)."""
    from kurma.oci import parse_stop_signal

    return parse_stop_signal(text)


def stop_signals(pod: PodManifest, images: Mapping[str, bytes]) -> dict[str, int]:
    """App name -> its stop signal, for the apps whose signal is not SIGTERM. An annotation
    that names no signal is logged and ignored (the app gets SIGTERM)."""
    found: dict[str, int] = {}
    for app in pod.apps:
        text = app.annotations.get(POD_STOP_SIGNAL_ANNOTATION)
        if text is None and app.name in images:
            image: ImageManifest = parse_image_manifest(images[app.name])
            text = image.annotations.get(STOP_SIGNAL_ANNOTATION)
        if text is None:
            continue
        try:
            number = parse_signal(text)
        except ValueError:
            log.warning("app %s: stop signal %r is no signal; SIGTERM it is", app.name, text)
            continue
        if number != signal.SIGTERM:
            found[app.name] = number
    return found


def _pod_pid(host_pid: int) -> int | None:
    """The pid of `host_pid` in its innermost pid namespace (the last of `NSpid`)."""
    try:
        with open(f"/proc/{host_pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def signal_main_process(pod_pid: int, processes: Iterable[int], sig: int) -> bool:
    """Send `sig` to the process whose pid in the pod is `pod_pid`, one of `processes`
    (host pids: the pod's cgroup). False when it is not (or no longer) there."""
    for host_pid in processes:
        if _pod_pid(host_pid) != pod_pid:
            continue
        try:
            pidfd = os.pidfd_open(host_pid)
        except ProcessLookupError:
            return False
        try:
            if _pod_pid(host_pid) != pod_pid:  # reused between the look and the open
                return False
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
                return True
            return False
        finally:
            os.close(pidfd)
    return False
