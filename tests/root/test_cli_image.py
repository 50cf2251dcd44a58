"""`kurmactl image ...` driven as a person would: the real program in a subprocess."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import manifest_json, write_tree

pytestmark = pytest.mark.root


def kurmactl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kurma.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def image_source(tmp_path: Path) -> tuple[Path, Path]:
    rootfs = write_tree(tmp_path / "rootfs", {"bin/hello": "#!/bin/sh\necho hi\n", "etc": None})
    (rootfs / "bin/hello").chmod(0o755)
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(manifest_json("example.com/hello", version="0.1"))
    return rootfs, manifest


def test_build_is_reproducible(tmp_path: Path, image_source: tuple[Path, Path]) -> None:
    """Two builds of the same inputs give the same bytes and print the same image ID."""
    rootfs, manifest = image_source
    outs = []
    for n in (1, 2):
        out = tmp_path / f"hello{n}.aci"
        res = kurmactl(
            "image", "build", rootfs, "--manifest", manifest, "-o", out, "--reproducible"
        )
        assert res.returncode == 0, res.stderr
        outs.append((out.read_bytes(), res.stdout.strip()))
        (rootfs / "bin/hello").touch()  # a new mtime must not change a reproducible build
    assert outs[0] == outs[1]
    expected = "sha512-" + hashlib.sha512(gzip.decompress(outs[0][0])).hexdigest()
    assert outs[0][1] == expected


def test_build_refuses_invalid_manifest(tmp_path: Path, image_source: tuple[Path, Path]) -> None:
    rootfs, manifest = image_source
    doc = json.loads(manifest.read_text())
    doc["labels"].append({"name": "os", "value": "linux"})
    manifest.write_text(json.dumps(doc))
    res = kurmactl("image", "build", rootfs, "--manifest", manifest, "-o", tmp_path / "x.aci")
    assert res.returncode == 1
    assert "labels" in res.stderr
    assert not (tmp_path / "x.aci").exists()


def test_validate_reports_each_kind(tmp_path: Path, image_source: tuple[Path, Path]) -> None:
    rootfs, manifest = image_source
    aci = tmp_path / "hello.aci"
    assert kurmactl("image", "build", rootfs, "--manifest", manifest, "-o", aci).returncode == 0
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": []}))
    res = kurmactl("image", "validate", aci, manifest, pod)
    assert res.returncode == 0, res.stderr
    assert "valid ACI sha512-" in res.stdout
    assert "valid ImageManifest" in res.stdout
    assert "valid PodManifest" in res.stdout


def test_validate_fails_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "UP"}))
    junk = tmp_path / "junk.aci"
    junk.write_bytes(b"not an archive at all" * 10)
    res = kurmactl("image", "validate", bad, junk)
    assert res.returncode == 1
    assert f"{bad}: invalid: name" in res.stderr
    assert f"{junk}: invalid" in res.stderr


def test_offline_store_lifecycle(tmp_path: Path, image_source: tuple[Path, Path]) -> None:
    """import, ls (and its alias list), inspect and rm on a state directory, no daemon."""
    rootfs, manifest = image_source
    aci = tmp_path / "hello.aci"
    image_id = kurmactl("image", "build", rootfs, "--manifest", manifest, "-o", aci).stdout.strip()
    state = tmp_path / "state"
    res = kurmactl("image", "import", "--state-dir", state, aci)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [image_id, "example.com/hello"]
    listing = kurmactl("image", "ls", "--state-dir", state)
    assert "example.com/hello" in listing.stdout and "0.1" in listing.stdout
    assert kurmactl("image", "list", "--state-dir", state, "-q").stdout.split() == [image_id]
    shown = json.loads(kurmactl("image", "inspect", "--state-dir", state, image_id[:40]).stdout)
    assert shown["id"] == image_id
    assert shown["manifest"]["name"] == "example.com/hello"
    with aci.open("rb") as stdin:
        again = subprocess.run(
            [
                sys.executable,
                "-m",
                "kurma.cli.main",
                "image",
                "import",
                "--state-dir",
                str(state),
                "-",
            ],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stdout
    assert kurmactl("image", "rm", "--state-dir", state, "example.com/hello").returncode == 0
    assert kurmactl("image", "ls", "--state-dir", state, "-q").stdout.strip() == ""


def test_unknown_image_and_bad_flags(tmp_path: Path) -> None:
    res = kurmactl("image", "inspect", "--state-dir", tmp_path / "s", "example.com/none")
    assert res.returncode == 1
    assert "no image example.com/none" in res.stderr
    # Without --state-dir the command talks to kurmad: none answers on this socket.
    res = kurmactl("image", "import", "-H", f"unix://{tmp_path}/none.sock", tmp_path / "x.aci")
    assert res.returncode == 1 and "cannot reach kurmad" in res.stderr
    assert kurmactl("image", "frobnicate").returncode == 2
