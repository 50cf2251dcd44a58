"""The standard service images (images/*/image.yml) and their build (build/images.py).

Specs are data: every folder parses, a broken one is refused with the file and the field
named. The busybox, dhcp and ntp images build from Debian packages (apt-get download,
cached under build/.cache/debs) into ACIs that kurma.aci (and actool) accept, whose
manifests carry the service defaults, and two builds are byte-identical.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from kurma import __version__
from kurma.aci import ImageManifest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"


def _load_build_images() -> ModuleType:
    """build/images.py under a name of its own (tests/images.py is another module)."""
    sys.path.insert(0, str(BUILD))
    spec = importlib.util.spec_from_file_location("kurma_build_images", BUILD / "images.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


images = _load_build_images()


def _manifest(aci: Path) -> ImageManifest:
    with tarfile.open(aci) as tar:
        member = tar.extractfile("manifest")
        assert member is not None
        return ImageManifest.from_json(member.read())


def _names(aci: Path) -> set[str]:
    with tarfile.open(aci) as tar:
        return set(tar.getnames())


def _isolators(manifest: ImageManifest) -> dict[str, object]:
    assert manifest.app is not None
    return {i.name: i.value_json() for i in manifest.app.isolators}


def _env(manifest: ImageManifest) -> dict[str, str]:
    assert manifest.app is not None
    return dict(manifest.app.environment)


# --- specs -------------------------------------------------------------------------------------


def test_every_image_folder_has_a_spec_that_parses() -> None:
    """The six standard images, named kurma.io/<folder>, dependencies on known images."""
    specs = images.load_specs()
    assert set(specs) == {"busybox", "dhcp", "ntp", "console", "syslog", "python"}
    assert {s.name for s in specs.values()} == {f"kurma.io/{k}" for k in specs}
    assert specs["console"].dependencies == ("kurma.io/busybox", "kurma.io/python")
    assert images.build_order(specs, ["console"]) == ["busybox", "python", "console"]


def _bad_spec(tmp_path: Path, text: str, extra: dict[str, str] | None = None) -> str:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "image.yml").write_text(text)
    for name, content in (extra or {}).items():
        (folder / name).write_text(content)
    with pytest.raises(images.SpecError) as e:
        images.load_spec(folder)
    return str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: kurma.io/x\nbusybox: yes please\n", "busybox: must be true or false"),
        ("name: kurma.io/x\ncolour: blue\n", "unknown field(s) ['colour']"),
        ("busybox: true\n", "name: required"),
        ("name: kurma.io/x\nfiles: {/etc/x: nothere}\n", "/etc/x:"),
        ("name: kurma.io/x\nfiles: {etc/x: f}\n", "files: must be an absolute path"),
        ("name: kurma.io/x\ndirs: {/tmp: rwx}\n", "mode must be octal"),
        ("name: kurma.io/x\ndebian: {packages: [chrony]}\n", "debian: needs both"),
        ("name: Not An Identifier\n", "name: must be an AC Identifier"),
        (
            "name: kurma.io/x\napp: {exec: [/bin/sh], user: '0', group: '0',"
            " isolators: [{name: os/linux/namespaces, value: {net: hots}}]}\n",
            "app.isolators[0].value.net",
        ),
        ("name: [kurma.io/x\n", "not valid YAML"),
    ],
)
def test_a_bad_spec_is_refused_naming_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Each malformed image.yml raises SpecError with the file path and what is wrong."""
    message = _bad_spec(tmp_path, text, {"f": "x"})
    assert str(tmp_path / "bad" / "image.yml") in message
    assert expected in message


def test_an_unknown_dependency_is_refused(tmp_path: Path) -> None:
    """A dependency on an image no folder defines names the missing image."""
    for name, deps in (("a", "[kurma.io/b]"), ("b", "[kurma.io/nope]")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "image.yml").write_text(f"name: kurma.io/{name}\ndependencies: {deps}\n")
    with pytest.raises(images.SpecError, match=r"no image named kurma\.io/nope"):
        images.load_specs(tmp_path)


def test_a_dependency_cycle_is_refused(tmp_path: Path) -> None:
    for name, dep in (("a", "b"), ("b", "a")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "image.yml").write_text(
            f"name: kurma.io/{name}\ndependencies: [kurma.io/{dep}]\n"
        )
    with pytest.raises(images.SpecError, match="dependency cycle"):
        images.load_specs(tmp_path)


# --- built images ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """busybox, dhcp and ntp built once for the module (Debian packages from the cache)."""
    out = tmp_path_factory.mktemp("images")
    return images.build_images(out, ["busybox", "dhcp", "ntp"])


def test_busybox_is_a_base_layer_with_applets_and_users(built: dict[str, Path]) -> None:
    """Static busybox, /bin/sh and the service applets linked to it, passwd and group."""
    manifest = _manifest(built["busybox"])
    assert manifest.name == "kurma.io/busybox"
    assert dict(manifest.labels) == {"version": __version__, "os": "linux", "arch": "amd64"}
    names = _names(built["busybox"])
    for path in ("bin/busybox", "bin/sh", "sbin/ip", "sbin/udhcpc", "sbin/getty", "bin/login",
                 "etc/passwd", "etc/group", "etc/profile", "tmp"):  # fmt: skip
        assert f"rootfs/{path}" in names
    with tarfile.open(built["busybox"]) as tar:
        assert tar.getmember("rootfs/bin/sh").linkname == "/bin/busybox"
        assert tar.getmember("rootfs/tmp").mode == 0o1777
        passwd = tar.extractfile("rootfs/etc/passwd").read().decode()  # type: ignore[union-attr]
    assert passwd.startswith("root:x:0:0:")


def test_dhcp_declares_host_network_its_capabilities_and_the_resolv_volume(
    built: dict[str, Path],
) -> None:
    manifest = _manifest(built["dhcp"])
    isolators = _isolators(manifest)
    assert isolators["os/linux/namespaces"] == {"net": "host"}
    assert set(isolators["os/linux/capabilities-retain-set"]["set"]) == {  # type: ignore[index]
        "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"
    }  # fmt: skip
    assert manifest.app is not None
    assert [(m.name, m.path) for m in manifest.app.mount_points] == [("resolv", "/run/resolv")]
    assert _env(manifest)["DHCP_INTERFACES"] == "eth0"
    assert "rootfs/usr/share/udhcpc/default.script" in _names(built["dhcp"])


def test_dependencies_are_pinned_to_the_image_just_built(built: dict[str, Path]) -> None:
    """dhcp and ntp name busybox with its version label and the image ID of busybox.aci."""
    index = json.loads((built["busybox"].parent / "index.json").read_text())
    for key in ("dhcp", "ntp"):
        (dep,) = _manifest(built[key]).dependencies
        assert dep.image_name == "kurma.io/busybox"
        assert dep.image_id == index["busybox"]["id"]
        assert dep.labels.get("version") == __version__


def test_ntp_holds_chronyd_with_its_libraries_and_only_clock_capabilities(
    built: dict[str, Path],
) -> None:
    """chronyd, chronyc, the loader and the libraries they load; no docs, no other binaries."""
    names = _names(built["ntp"])
    for path in (
        "usr/sbin/chronyd",
        "usr/bin/chronyc",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libgnutls.so.30",
    ):
        assert f"rootfs/{path}" in names
    assert not [n for n in names if n.startswith("rootfs/usr/share/doc")]
    assert not [n for n in names if n.startswith("rootfs/etc/init.d")]
    manifest = _manifest(built["ntp"])
    isolators = _isolators(manifest)
    assert isolators["os/linux/namespaces"] == {"net": "host"}
    caps = set(isolators["os/linux/capabilities-retain-set"]["set"])  # type: ignore[index]
    assert caps == {"CAP_SYS_TIME", "CAP_SETUID", "CAP_SETGID"}
    assert _env(manifest)["NTP_SERVERS"]


def test_the_acis_pass_actool(built: dict[str, Path]) -> None:
    """The reference validator accepts every image without Kurma's own isolators."""
    if not shutil.which("actool"):
        pytest.skip("actool (Debian's appc-spec) is not installed")
    r = subprocess.run(["actool", "validate", str(built["busybox"])], capture_output=True)
    assert r.returncode == 0, r.stderr
    for key in ("dhcp", "ntp"):
        images.validate_aci(built[key])  # raises on actool's complaint


def test_two_builds_are_byte_identical(built: dict[str, Path], tmp_path: Path) -> None:
    """The same inputs give the same bytes (sorted entries, mtime 0, owners 0, gzip mtime 0)."""
    again = images.build_images(tmp_path, ["busybox", "dhcp", "ntp"])
    for key, aci in built.items():
        assert again[key].read_bytes() == aci.read_bytes(), key


def test_the_cli_builds_a_named_image_and_prints_its_path(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(BUILD / "images.py"), "--out", str(tmp_path), "busybox"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "busybox.aci")]


def test_the_cli_names_an_unknown_image(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(BUILD / "images.py"), "--out", str(tmp_path), "nosuch"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert "no image folder 'nosuch'" in r.stderr


# --- manifests of the images that need the python layer (no build) ----------------------------


def _spec_manifest(key: str) -> ImageManifest:
    spec = images.load_specs()[key]
    return ImageManifest.from_json(images.manifest_json(spec, {}))


def test_console_manifest_grants_host_api_ttys_and_login_capabilities() -> None:
    """The console: `host` API scope, ttyS0, no no_new_privs (login), login's capabilities,
    the `auth` mount point, CONSOLE_TTYS; built on busybox and python."""
    manifest = _spec_manifest("console")
    isolators = _isolators(manifest)
    assert isolators["host/api-access"] == {"scope": "host"}
    assert isolators["os/linux/devices"] == ["/dev/ttyS0"]
    assert isolators["os/linux/no-new-privileges"] is False
    caps = set(isolators["os/linux/capabilities-retain-set"]["set"])  # type: ignore[index]
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_SYS_TTY_CONFIG"} <= caps
    assert "CAP_SYS_ADMIN" not in caps
    assert manifest.app is not None
    assert [(m.name, m.path) for m in manifest.app.mount_points] == [
        ("auth", "/run/console-auth")
    ]
    assert _env(manifest)["CONSOLE_TTYS"] == "ttyS0"
    assert [d.image_name for d in manifest.dependencies] == ["kurma.io/busybox", "kurma.io/python"]


def test_syslog_manifest_reads_the_host_and_the_kernel_log() -> None:
    manifest = _spec_manifest("syslog")
    isolators = _isolators(manifest)
    assert isolators["host/api-access"] == {"scope": "host-read"}
    assert isolators["os/linux/devices"] == ["/dev/kmsg"]
    assert isolators["os/linux/namespaces"] == {"net": "host"}
    assert isolators["os/linux/capabilities-retain-set"] == {"set": ["CAP_SYSLOG"]}
    assert manifest.app is not None
    assert list(manifest.app.exec) == ["/usr/bin/python3", "-m", "kurma.logfwd"]
    assert set(_env(manifest)) == {"SYSLOG_TARGET", "SYSLOG_PROTOCOL"}


def test_debian_dependency_graph_follows_only_library_packages() -> None:
    """apt-cache's recursive output: edges of each package; alternatives listed, virtual
    names and providers dropped."""
    debs = sys.modules["debs"]
    text = (
        "chrony\n  PreDepends: init-system-helpers\n  Depends: adduser\n"
        "  Depends: libc6\n |Depends: libfoo1\n  Depends: <debconf-2.0>\n    cdebconf\n"
        "<debconf-2.0>\nlibc6\n  Depends: libgcc-s1\n"
    )
    assert debs.parse_depends_graph(text) == {
        "chrony": ["init-system-helpers", "adduser", "libc6", "libfoo1"],
        "libc6": ["libgcc-s1"],
    }
