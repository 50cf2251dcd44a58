"""build/ace/build.sh: the appc ACE validator, built offline from Debian's source, and its images.

Builds into a temporary directory (the Go build cache stays under build/.cache/ace, so only the
first run on a machine compiles) and checks the two image layouts, the static binary, and the
manifests against both the spec (actool, when installed) and the validator's own expectations.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACE = REPO / "build" / "ace"
BUILD = ACE / "build.sh"
SPEC = Path("/usr/share/gocode/src/github.com/appc/spec")
PACKAGES = ("golang-go", "golang-github-appc-spec-dev")
NAMES = ("ace-validator-main", "ace-validator-sidekick")
FAKE_ID = "sha512-" + "ab" * 64


def _installed(pkg: str) -> bool:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
    )
    return r.returncode == 0 and "install ok installed" in r.stdout


def _run_build(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD), str(out)], capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 and not all(_installed(p) for p in PACKAGES):
        pytest.skip(f"not root and {' / '.join(PACKAGES)} not installed")
    out = tmp_path_factory.mktemp("ace")
    r = _run_build(out)
    assert r.returncode == 0, f"build.sh failed:\n{r.stdout}\n{r.stderr}"
    return out


def _manifest(built: Path, name: str) -> dict:
    return json.loads((built / name / "manifest").read_text())


def _elf_info(path: Path) -> tuple[int, int, set[int]]:
    """(e_type, e_machine, program header types) of a little-endian ELF64 file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF", f"{path} is not ELF"
    assert data[4] == 2 and data[5] == 1, f"{path} is not little-endian ELF64"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    types = {struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)}
    return e_type, e_machine, types


@pytest.mark.parametrize("name", NAMES)
def test_layout_is_manifest_plus_rootfs(built: Path, name: str) -> None:
    d = built / name
    assert sorted(p.name for p in d.iterdir()) == ["manifest", "rootfs"]
    assert (d / "rootfs" / "opt" / "acvalidator").is_dir()  # the main app's workingDirectory
    # fixed mtimes, so packing the layout gives a stable image ID
    assert (d / "rootfs" / "ace-validator").stat().st_mtime == 0
    assert (d / "manifest").stat().st_mtime == 0


@pytest.mark.parametrize("name", NAMES)
def test_binary_is_static_amd64_executable(built: Path, name: str) -> None:
    binary = built / name / "rootfs" / "ace-validator"
    assert os.access(binary, os.X_OK)
    e_type, e_machine, phdrs = _elf_info(binary)
    assert e_type == 2, "not ET_EXEC (a static, non-PIE executable)"
    assert e_machine == 62, "not x86-64"
    assert 3 not in phdrs, "has PT_INTERP: dynamically linked"
    assert 2 not in phdrs, "has PT_DYNAMIC: dynamically linked"


def test_binary_runs_and_rejects_bad_usage(built: Path) -> None:
    # Never run a real mode here: they create marker files at / and /db of the caller.
    binary = built / "ace-validator-main" / "rootfs" / "ace-validator"
    r = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 64
    assert "[main|sidekick|preStart|postStop]" in r.stderr
    r = subprocess.run(
        [str(binary), "nonsense"], capture_output=True, text=True, timeout=30, check=False
    )
    assert r.returncode == 64
    assert "unrecognized mode: nonsense" in r.stderr


def test_both_images_share_one_binary(built: Path) -> None:
    a, b = (built / n / "rootfs" / "ace-validator" for n in NAMES)
    assert a.read_bytes() == b.read_bytes()


def _labels(m: dict) -> dict[str, str]:
    return {lab["name"]: lab["value"] for lab in m["labels"]}


def test_main_manifest(built: Path) -> None:
    m = _manifest(built, "ace-validator-main")
    assert m == json.loads((ACE / "ace-validator-main.manifest.json").read_text())
    assert m["acKind"] == "ImageManifest"
    assert m["acVersion"] == "0.8.11"
    assert m["name"] == "coreos.com/ace-validator-main"
    assert _labels(m) == {"version": "0.8.11", "os": "linux", "arch": "amd64"}
    app = m["app"]
    assert app["exec"] == ["/ace-validator", "main"]
    assert app["eventHandlers"] == [
        {"name": "pre-start", "exec": ["/ace-validator", "prestart"]},
        {"name": "post-stop", "exec": ["/ace-validator", "poststop"]},
    ]
    assert (app["user"], app["group"]) == ("0", "0")
    assert app["workingDirectory"] == "/opt/acvalidator"
    assert app["environment"] == [{"name": "IN_ACE_VALIDATOR", "value": "correct"}]
    assert app["mountPoints"] == [{"name": "database", "path": "/db", "readOnly": False}]
    assert app["ports"] == [{"name": "www", "protocol": "tcp", "port": 80}]
    assert app["isolators"] == [{"name": "resource/memory", "value": {"limit": "1G"}}]
    names = [a["name"] for a in m["annotations"]]
    assert names == ["created", "authors", "homepage", "documentation", "lorem"]


def test_sidekick_manifest(built: Path) -> None:
    m = _manifest(built, "ace-validator-sidekick")
    assert m == json.loads((ACE / "ace-validator-sidekick.manifest.json").read_text())
    assert m["acKind"] == "ImageManifest"
    assert m["acVersion"] == "0.8.11"
    assert m["name"] == "coreos.com/ace-validator-sidekick"
    assert _labels(m) == {"version": "0.8.11", "os": "linux", "arch": "amd64"}
    app = m["app"]
    assert app["exec"] == ["/ace-validator", "sidekick"]
    assert "eventHandlers" not in app
    assert (app["user"], app["group"]) == ("0", "0")
    assert app["mountPoints"] == [{"name": "database", "path": "/db", "readOnly": False}]


def test_manifest_matches_validator_source(built: Path) -> None:
    """The values validator.go checks at run time are the ones the main manifest sets."""
    src = (SPEC / "ace" / "validator.go").read_text()
    app = _manifest(built, "ace-validator-main")["app"]
    wd = re.search(r'workingDirectory = "([^"]+)"', src)
    assert wd and wd.group(1) == app["workingDirectory"]
    for k, v in re.findall(r'"(\w+)": "(\w+)",', src):
        assert {"name": k, "value": v} in app["environment"]
    mp = re.search(r'"(\w+)": types\.MountPoint\{\s*Path:\s*"([^"]+)",\s*ReadOnly:\s*(\w+)', src)
    assert mp, "mount point expectation not found in validator.go"
    want = {"name": mp.group(1), "path": mp.group(2), "readOnly": mp.group(3) == "true"}
    assert want in app["mountPoints"]
    an = re.search(r'\ban = "([^"]+)"', src)
    pod = json.loads((ACE / "pod.manifest.json").read_text())
    assert an and an.group(1) == pod["apps"][0]["name"]  # AC_APP_NAME of the main app


def test_pod_manifest_template() -> None:
    text = (ACE / "pod.manifest.json").read_text()
    assert "@MAIN_ID@" in text and "@SIDEKICK_ID@" in text
    pod = json.loads(text)
    assert pod["acKind"] == "PodManifest"
    assert pod["acVersion"] == "0.8.11"
    assert [a["name"] for a in pod["apps"]] == list(NAMES)
    assert [a["image"]["id"] for a in pod["apps"]] == ["@MAIN_ID@", "@SIDEKICK_ID@"]
    for app, name in zip(pod["apps"], NAMES, strict=True):
        image = json.loads((ACE / f"{name}.manifest.json").read_text())
        assert app["image"]["name"] == image["name"]
        assert app["mounts"] == [{"volume": "database", "path": "/db"}]
    assert pod["volumes"] == [{"name": "database", "kind": "empty", "readOnly": False}]
    # non-empty on purpose: the validator compares /pod/annotations with the manifest's
    # field by reflect.DeepEqual, where [] and a missing field differ
    assert pod["annotations"]


@pytest.mark.skipif(shutil.which("actool") is None, reason="actool (appc-spec) not installed")
def test_actool_accepts_layouts_and_pod_manifest(built: Path, tmp_path: Path) -> None:
    pod = (ACE / "pod.manifest.json").read_text()
    pm = tmp_path / "pod.json"
    pm.write_text(pod.replace("@MAIN_ID@", FAKE_ID).replace("@SIDEKICK_ID@", FAKE_ID))
    args = [str(built / n) for n in NAMES] + [str(pm)]
    r = subprocess.run(
        ["actool", "-debug", "validate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert out.count("valid image layout") == 2
    assert "valid PodManifest" in out


def test_rebuild_is_cached(built: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = _run_build(built)
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stderr
    r = _run_build(tmp_path / "again")
    assert r.returncode == 0, r.stderr
    assert "cached binary" in r.stderr and "compiling" not in r.stderr
    assert time.monotonic() - t0 < 30
    for n in NAMES:
        a = built / n / "rootfs" / "ace-validator"
        b = tmp_path / "again" / n / "rootfs" / "ace-validator"
        assert a.read_bytes() == b.read_bytes()
