"""Differential test: our manifest parser against appc's reference validator, `actool`.

Every file under tests/data/manifests/ is judged by both. `good-*` files must parse and
`bad-*` files must not; where actool's verdict differs, the file is listed in DISAGREEMENTS with
the spec sentence that justifies ours (the listed files must still disagree, so the list
cannot go stale). actool comes from Debian's `appc-spec` package (build/apt-deps.sh).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kurma.aci import parse_manifest
from kurma.errors import ValidationError

CORPUS = Path(__file__).resolve().parent.parent / "data" / "manifests"
ACTOOL = shutil.which("actool")

_IMAGE_ID = "types.md: Image ID 'value' is the hex encoded string of the digest."
_ANNOTATION_NAME = (
    "pods.md: annotation objects 'must have a *name* key that has a value that is restricted "
    "to the [AC Name](types.md#ac-name-type) formatting'."
)
_TWO_PAIRS = "aci.md: 'The listed objects must have two key-value pairs: **name** and **value**.'"

DISAGREEMENTS: dict[str, str] = {
    # actool accepts; the spec text says no.
    "bad-annotation-documentation-no-host.json": (
        "aci.md: documentation is a 'URL ... must be a URL with scheme HTTP or HTTPS' "
        "('http:docs' has a scheme but no host: it locates nothing)."
    ),
    "bad-app-gid-negative.json": (
        "aci.md: 'supplementaryGIDs (list of unsigned integers, optional)'."
    ),
    "bad-dependency-id-not-hex.json": _IMAGE_ID,
    "bad-env-no-value.json": _TWO_PAIRS,
    "bad-label-no-value.json": (
        "aci.md: labels 'The listed objects must have two key-value pairs: *name* ... and *value*'."
    ),
    "bad-handler-no-exec.json": (
        "aci.md: 'An eventHandler is a simple object with two fields - an **exec** ... and a "
        "**name**'."
    ),
    "bad-image-name-double-separator.json": (
        "types.md: 'An AC Identifier Type will match the following RE2 regular expression: "
        "`^[a-z0-9]+([-._~/][a-z0-9]+)*$`' (no two separators in a row)."
    ),
    "bad-image-version-too-new.json": (
        "types.md: 'An AC Version must reference a tagged version of the App Container "
        "specification, not exceeding the version of its greatest compliance' (0.8.11)."
    ),
    "bad-iso-caps-conflict.json": (
        "ace.md: 'The retain set cannot be used in conjunction with the remove set.'"
    ),
    "bad-iso-caps-unknown.json": (
        "ace.md: '**set** list of capabilities' ('CAP_FLY' is no Linux capability)."
    ),
    "bad-iso-cpu-negative.json": (
        "ace.md: 'limit is the maximum amount of a resource' (an amount is never negative)."
    ),
    "bad-iso-cpu-request-over-limit.json": (
        "ace.md: 'request is the minimum amount of a resource guaranteed ... limit is the "
        "maximum amount' (a minimum above the maximum cannot be honoured)."
    ),
    "bad-iso-sysctl-twice.json": (
        "ace.md: 'Only a single `os/unix/sysctl` isolator can be specified per-pod.'"
    ),
    "bad-mountpoint-duplicate.json": (
        "aci.md: 'the **name** indicates a label to refer to a mount point' (a label two "
        "mount points share refers to neither)."
    ),
    "bad-mountpoint-no-path.json": (
        "aci.md: mountPoints 'contain the following key-value pairs: the **name** ... and the "
        "**path**'."
    ),
    "bad-mountpoint-relative.json": (
        "aci.md: 'the **path** stipulates where it is to be mounted inside the rootfs' (a "
        "place in the rootfs, i.e. an absolute path from its root, as for workingDirectory)."
    ),
    "bad-pod-annotation-identifier.json": _ANNOTATION_NAME,
    "bad-pod-app-ports-clash.json": (
        "pods.md: 'port names MUST be unique among apps within a pod'."
    ),
    "bad-pod-image-no-id.json": (
        "pods.md: '**id** (string of type [Image ID](types.md#image-id-type), required)'."
    ),
    "bad-pod-mount-no-path.json": "pods.md: mounts '**path** (string, required)'.",
    "bad-pod-mount-unknown-volume.json": (
        "pods.md: mount '**volume** ... this is a key into the list of `volumes`, below, "
        "unless overridden by appVolume'."
    ),
    "bad-pod-no-apps.json": "pods.md: '**apps** (list of objects, required)'.",
    "bad-pod-port-duplicate.json": (
        "pods.md: ports '**name** ... This field is a key referencing by name ports' (one "
        "name, one forwarding)."
    ),
    "bad-pod-port-host-ip.json": (
        "pods.md: '**hostIP** (string, optional) an IPv4 address ... Must be in dotted-quad "
        "notation'."
    ),
    "bad-pod-port-host-port.json": (
        "pods.md: '**hostPort** (integer, required) port number on the host' (0 is no port)."
    ),
    "bad-pod-volume-mode.json": (
        "pods.md: '**mode** ... indicates the mode permission of the empty volume' "
        '(defaults to "0755": an octal mode).'
    ),
    "bad-port-count-zero.json": "aci.md: '**count** (integer, optional ...) Must be >=1.'",
    "bad-port-duplicate.json": (
        "aci.md: port '**name** ... This field is used as a key in the Pod Manifest'."
    ),
    "bad-port-no-protocol.json": "aci.md: '**protocol** (string, required)'.",
    "bad-whitelist-duplicate.json": (
        "aci.md: 'whitelist of absolute paths ... This must be a complete and absolute set.'"
    ),
    "bad-whitelist-relative.json": (
        "aci.md: '**pathWhitelist** (list of strings, optional) whitelist of absolute paths'."
    ),
    # actool rejects; the spec text allows.
    "good-iso-kurma.json": (
        "ace.md: 'An executor MAY ignore isolators that it does not understand'; types.md: "
        "an isolator's 'value may be an arbitrary JSON value' (actool knows no Kurma types)."
    ),
    "good-iso-unknown.json": (
        "ace.md: 'An executor MAY ignore isolators that it does not understand and run the pod "
        "without them.'"
    ),
    "good-iso-memory-uppercase-k.json": (
        "ace.md: quantities may 'have metric suffices (E, P, T, G, M, K)'."
    ),
    "good-pod-empty-volume-with-source.json": (
        "pods.md: '**source** (string, required if **kind** is \"host\")' (not forbidden "
        "otherwise: ignored)."
    ),
    "good-pod-host-volume-with-mode.json": (
        "pods.md: '**mode** (string, optional, only interpreted if **kind** is \"empty\"...)'."
    ),
}

CASES = sorted(p.name for p in CORPUS.glob("*.json"))


def ours_valid(path: Path) -> bool:
    """Our verdict: does the manifest parse?"""
    try:
        parse_manifest(path.read_bytes())
    except ValidationError:
        return False
    return True


def actool_valid(path: Path) -> bool:
    """actool's verdict (exit status 0 means valid)."""
    assert ACTOOL is not None
    result = subprocess.run(
        [ACTOOL, "validate", "--type=manifest", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def test_corpus_is_large_enough() -> None:
    """The corpus covers the rules: 40+ cases, good and bad ones."""
    assert len(CASES) >= 40
    assert any(c.startswith("good-") for c in CASES)
    assert any(c.startswith("bad-") for c in CASES)
    assert all(c.startswith(("good-", "bad-")) for c in CASES)
    assert set(DISAGREEMENTS) <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_our_verdict_matches_the_file_name(name: str) -> None:
    """`good-*` manifests parse, `bad-*` manifests raise ValidationError."""
    assert ours_valid(CORPUS / name) is name.startswith("good-")


@pytest.mark.skipif(ACTOOL is None, reason="actool not installed (Debian package appc-spec)")
@pytest.mark.parametrize("name", CASES)
def test_actool_agrees_or_disagreement_is_justified(name: str) -> None:
    """actool's verdict equals ours, unless the file is a listed, justified disagreement."""
    ours, theirs = ours_valid(CORPUS / name), actool_valid(CORPUS / name)
    if name in DISAGREEMENTS:
        assert ours != theirs, f"{name} is listed as a disagreement but actool now agrees"
    else:
        assert ours == theirs, f"{name}: ours={ours} actool={theirs}, not a listed disagreement"
