"""The appc metadata service as an app sees it (ace.md, App Container Metadata Service):
busybox wget from inside real pods, with only `lo` in the pod's own network namespace, and
from a pod sharing the host's network."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from kurma.runtime._runtime import RuntimeConfig
from kurma.runtime.metadata import MetadataConfig

from .runtime_support import PodEnv, make_env

pytestmark = pytest.mark.root

GET = "wget -q -O - --header 'Metadata-Flavor: AppContainer'"
V1 = "$AC_METADATA_URL/acMetadata/v1"


@pytest.fixture
def hostnet_pods(busybox_aci: Path) -> Iterator[PodEnv]:
    """A runtime whose host-side listener takes a free port: 8775 may be in use here."""
    config = RuntimeConfig(stop_grace=2.0, metadata_config=MetadataConfig(host_port=0))
    yield from make_env(busybox_aci, config)


def test_pod_uuid_from_inside_a_pod_with_only_loopback(pods: PodEnv) -> None:
    app, log = pods.sh(f"ls /sys/class/net; echo; {GET} {V1}/pod/uuid")
    assert app.exit_code == 0, (app.error, log)
    interfaces, uuid = log.split("\n\n")
    assert interfaces.split() == ["lo"]
    record = pods.runtime.list_pods()[0]
    assert uuid == record.uuid  # canonical form, no newline


def test_pod_manifest_is_the_pods(pods: PodEnv) -> None:
    record = pods.run(
        {"name": "reader", "exec": ["/bin/sh", "-c", f"{GET} {V1}/pod/manifest"]},
        annotations=[{"name": "owner", "value": "tests"}],
    )
    log = pods.log(record, "reader")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    served = json.loads(log)
    assert served == json.loads(record.manifest)
    assert served["acKind"] == "PodManifest"
    assert [a["name"] for a in served["apps"]] == ["reader"]
    assert served["annotations"] == [{"name": "owner", "value": "tests"}]


def test_pod_and_app_annotations(pods: PodEnv) -> None:
    """pod/annotations: the pod manifest's; apps/NAME/annotations: the image's merged
    with the app's from the pod manifest."""
    record = pods.run(
        {
            "name": "noted",
            "exec": [
                "/bin/sh",
                "-c",
                f"{GET} {V1}/pod/annotations; echo; {GET} {V1}/apps/$AC_APP_NAME/annotations",
            ],
            "annotations": [{"name": "role", "value": "frontend"}],
        },
        annotations=[{"name": "owner", "value": "tests"}],
    )
    log = pods.log(record, "noted")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    pod_annotations, app_annotations = (json.loads(line) for line in log.splitlines())
    assert pod_annotations == [{"name": "owner", "value": "tests"}]
    assert {"name": "role", "value": "frontend"} in app_annotations


def test_a_pod_without_annotations_reads_an_empty_list(pods: PodEnv) -> None:
    """A pod manifest with no annotations: pod/annotations is `[]` (a list an app can iterate),
    never `null`, and the served manifest says the same (Go's DeepEqual in the ACE validator
    compares the two)."""
    script = f"{GET} {V1}/pod/annotations; echo; {GET} {V1}/pod/manifest"
    record = pods.run({"name": "bare", "exec": ["/bin/sh", "-c", script]})
    log = pods.log(record, "bare")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    annotations, manifest = (json.loads(line) for line in log.splitlines())
    assert annotations == []
    assert manifest["annotations"] == []


def test_app_image_id_and_manifest(pods: PodEnv) -> None:
    app, log = pods.sh(
        f"{GET} {V1}/apps/$AC_APP_NAME/image/id; echo; {GET} {V1}/apps/$AC_APP_NAME/image/manifest"
    )
    assert app.exit_code == 0, (app.error, log)
    image_id, manifest = log.split("\n", 1)
    assert image_id == pods.image_id
    assert json.loads(manifest)["name"] == "example.com/busybox"


def test_request_without_the_flavor_header_is_refused(pods: PodEnv) -> None:
    app, log = pods.sh(f"wget -q -O - {V1}/pod/uuid 2>&1; echo status=$?")
    assert app.exit_code == 0, log
    assert "status=0" not in log and "400" in log, log
    assert pods.runtime.list_pods()[0].uuid not in log


def test_an_unknown_app_and_a_wrong_token_answer_404(pods: PodEnv) -> None:
    _app, log = pods.sh(
        f"{GET} {V1}/apps/not-an-app/image/id 2>&1; echo status=$?;"
        f" {GET} ${{AC_METADATA_URL%/*}}/wrongtoken/acMetadata/v1/pod/uuid 2>&1; echo status=$?"
    )
    assert log.count("404") == 2 and "status=0" not in log, log


def test_hmac_sign_in_one_pod_verify_in_another(pods: PodEnv) -> None:
    """ace.md Identity Endpoint: a pod signs, another pod checks the signature."""
    signer, log = pods.sh(f"{GET} --post-data 'content=hello' {V1}/pod/hmac/sign")
    assert signer.exit_code == 0, (signer.error, log)
    signature = log.strip()
    signer_uuid = pods.runtime.list_pods()[0].uuid

    def verify(content: str, uuid: str) -> str:
        form = urllib.parse.urlencode({"content": content, "uuid": uuid, "signature": signature})
        _app, out = pods.sh(f"{GET} --post-data '{form}' {V1}/pod/hmac/verify 2>&1; echo status=$?")
        return out

    assert "status=0" in verify("hello", signer_uuid)
    forged = verify("hellO", signer_uuid)
    assert "403" in forged and "status=0" not in forged, forged


def test_host_network_pod_reaches_the_service(hostnet_pods: PodEnv) -> None:
    """A pod in the host's netns is served by the daemon's own listener, with its own token."""
    pods = hostnet_pods
    record = pods.run(
        {
            "name": "hostnet",
            "exec": [
                "/bin/sh",
                "-c",
                f"echo $AC_METADATA_URL; {GET} {V1}/pod/uuid; echo; ls /sys/class/net",
            ],
        },
        isolators=[{"name": "os/linux/namespaces", "value": {"net": "host"}}],
    )
    log = pods.log(record, "hostnet")
    assert record.apps[0].exit_code == 0, (record.apps[0].error, log)
    url, uuid, *interfaces = log.split()
    assert uuid == record.uuid
    assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:8775/")
    assert sorted(interfaces) == sorted(p.name for p in Path("/sys/class/net").iterdir())


def test_no_metadata_url_when_the_service_is_off(busybox_aci: Path) -> None:
    for pods in make_env(busybox_aci, RuntimeConfig(stop_grace=2.0, metadata=False)):
        record = pods.run({"name": "plain", "exec": ["/bin/env"]})
        log = pods.log(record, "plain")
        assert record.apps[0].exit_code == 0, log
        assert "AC_METADATA_URL" not in log and "AC_APP_NAME=plain" in log
