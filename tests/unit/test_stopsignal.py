"""Which signal stops which app: the image's annotation, the pod's app annotation first."""

from __future__ import annotations

import json
import os
import signal

from kurma.aci import PodManifest
from kurma.runtime._stopsignal import signal_main_process, stop_signals

ID = "sha512-" + "ab" * 64


def image(annotations: dict[str, str]) -> bytes:
    return json.dumps({
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/x",
        "annotations": [{"name": k, "value": v} for k, v in annotations.items()],
    }).encode()  # fmt: skip


def pod(*apps: tuple[str, dict[str, str]]) -> PodManifest:
    return PodManifest.from_json({
        "acKind": "PodManifest", "acVersion": "0.8.11",
        "apps": [{"name": name, "image": {"id": ID},
                  "annotations": [{"name": k, "value": v} for k, v in notes.items()]}
                 for name, notes in apps],
    })  # fmt: skip


def test_image_and_pod_annotations() -> None:
    key = "kurma.io/stop-signal"
    manifest = pod(("web", {}), ("db", {"stop-signal": "SIGINT"}), ("plain", {}), ("odd", {}))
    images = {
        "web": image({key: "SIGQUIT"}),
        "db": image({key: "SIGQUIT"}),  # the pod's annotation wins
        "plain": image({}),
        "odd": image({key: "SIGNOTHING"}),  # logged, and SIGTERM it is
    }
    assert stop_signals(manifest, images) == {"web": signal.SIGQUIT, "db": signal.SIGINT}
    assert stop_signals(pod(("web", {"stop-signal": "TERM"})), {}) == {}


def test_a_pid_not_in_the_pod_gets_nothing() -> None:
    """Our own pid is 1 in no namespace of ours here: nothing is signalled."""
    assert signal_main_process(999_999_999, [os.getpid()], signal.SIGUSR1) is False
