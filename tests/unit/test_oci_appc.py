"""An OCI image config mapped to an appc ImageManifest, against small rootfs trees."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import ImageManifest, parse_image_manifest
from kurma.errors import ValidationError
from kurma.oci import (
    ImageConfig,
    Platform,
    appc_manifest,
    appc_name,
    appc_os_arch,
    appc_version,
    parse_image_config,
    parse_reference,
    resolve_user,
)

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1001:app:/home/app:/bin/sh
# a comment:x:5:5
broken line
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
wheel:x:10:root,app
staff:x:50:app
appgroup:x:1001:
video:x:44:root
"""


def _exe(path: Path, text: str = "#!/bin/sh\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A small Debian-like tree: /bin -> usr/bin, /etc/passwd and /etc/group, and beside
    the root an `outside` directory that an escaping symlink points at."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    _exe(root / "usr/bin/sh")
    _exe(root / "usr/local/bin/entry.sh")
    (root / "usr/bin/notexec").write_text("data")
    (root / "bin").symlink_to("usr/bin")
    outside = tmp_path / "outside"
    _exe(outside / "evil")
    # Absolute and relative links that leave the root if followed from the host.
    (root / "usr/local/bin/evil").symlink_to(outside / "evil")
    (root / "usr/local/bin/evil2").symlink_to("../../../../outside/evil")
    return root


@pytest.fixture
def rootfd(rootfs: Path) -> Iterator[int]:
    fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def _config(run: dict[str, Any] | None = None, **top: Any) -> ImageConfig:
    doc: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": run or {},
        **top,
    }
    return parse_image_config(json.dumps(doc))


def _manifest(rootfd: int, run: dict[str, Any] | None = None, **kw: Any) -> ImageManifest:
    top = kw.pop("top", {})
    data = appc_manifest(_config(run, **top), name="example.com/app", rootfs_fd=rootfd, **kw)
    return parse_image_manifest(data)


# --- names, versions, platforms ---------------------------------------------------------


@pytest.mark.parametrize(
    ("repository", "name"),
    [
        ("127.0.0.1:5000/test/my_app", "127.0.0.1-5000/test/my-app"),
        ("docker.io/library/ubuntu", "docker.io/library/ubuntu"),
        ("Foo/Bar__baz", "foo/bar-baz"),
        ("quay.io/a/b---c", "quay.io/a/b-c"),
        ("[::1]:5000/x", "1-5000/x"),
        ("localhost/a._b", "localhost/a-b"),
        ("example.com/a~b", "example.com/a~b"),
    ],
)
def test_appc_name(repository: str, name: str) -> None:
    assert appc_name(repository) == name


@pytest.mark.parametrize("bad", ["", "___", "/", "::"])
def test_appc_name_refuses_what_leaves_nothing(bad: str) -> None:
    with pytest.raises(ValidationError, match="cannot make an appc name"):
        appc_name(bad)


def test_appc_version_is_the_tag_or_the_short_digest() -> None:
    digest = "sha256:" + "ab" * 32
    assert appc_version(parse_reference("ubuntu:22.04")) == "22.04"
    assert appc_version(parse_reference(f"ubuntu@{digest}")) == "sha256-" + "ab" * 6
    assert appc_version(parse_reference(f"ubuntu:1@{digest}")) == "1"
    assert appc_version(parse_reference("ubuntu")) is None


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        (Platform("linux", "amd64"), ("linux", "amd64")),
        (Platform("linux", "arm64", "v8"), ("linux", "aarch64")),
        (Platform("linux", "386"), ("linux", "i386")),
        (Platform("linux", "arm", "v7"), ("linux", "armv7l")),
        (Platform("linux", "arm", "v6"), ("linux", "armv6l")),
        (Platform("linux", "ppc64le"), ("linux", "ppc64le")),
        (Platform("linux", "s390x"), ("linux", "s390x")),
        (Platform("darwin", "amd64"), ("darwin", "x86_64")),
    ],
)
def test_os_arch_use_the_appc_names(platform: Platform, expected: tuple[str, str]) -> None:
    assert appc_os_arch(platform) == expected


@pytest.mark.parametrize("platform", [Platform("linux", "riscv64"), Platform("linux", "arm", "v5")])
def test_os_arch_unknown_to_appc_is_refused(platform: Platform) -> None:
    with pytest.raises(ValidationError, match=f"no os/arch for platform {platform}"):
        appc_os_arch(platform)


def test_labels_name_and_extra_annotations(rootfd: int) -> None:
    top = {"architecture": "arm64", "variant": "v8"}
    m = _manifest(
        rootfd,
        {"Cmd": ["sh"]},
        top=top,
        version="1.2",
        labels={"channel": "stable"},
        annotations={"oci.image.digest": "sha256:" + "0" * 64},
    )
    assert m.name == "example.com/app"
    assert dict(m.labels) == {
        "version": "1.2",
        "os": "linux",
        "arch": "aarch64",
        "channel": "stable",
    }
    assert m.annotations["oci.image.digest"] == "sha256:" + "0" * 64


def test_bad_name_and_annotation_names_are_refused(rootfd: int) -> None:
    with pytest.raises(ValidationError, match="is not an AC Identifier"):
        appc_manifest(_config({"Cmd": ["sh"]}), name="Bad_Name", rootfs_fd=rootfd)
    with pytest.raises(ValidationError, match="'Not Valid' is not an AC Identifier"):
        _manifest(rootfd, {"Cmd": ["sh"]}, annotations={"Not Valid": "x"})


# --- exec ------------------------------------------------------------------------------------


def test_exec_is_entrypoint_then_cmd_resolved_through_the_bin_symlink(rootfd: int) -> None:
    m = _manifest(rootfd, {"Entrypoint": ["sh", "-c"], "Cmd": ["echo hi"]})
    assert m.app is not None
    assert m.app.exec == ("/usr/bin/sh", "-c", "echo hi")  # /usr/local/* has no sh
    assert json.loads(m.annotations["kurma.io/oci-entrypoint"]) == ["sh", "-c"]
    assert json.loads(m.annotations["kurma.io/oci-cmd"]) == ["echo hi"]


def test_exec_follows_the_image_path_order(rootfd: int) -> None:
    env = ["PATH=/bin:/usr/bin"]
    m = _manifest(rootfd, {"Cmd": ["sh"], "Env": env})
    assert m.app is not None and m.app.exec == ("/bin/sh",)  # /bin -> usr/bin, inside the root
    m = _manifest(rootfd, {"Entrypoint": ["entry.sh"]})
    assert m.app is not None and m.app.exec == ("/usr/local/bin/entry.sh",)


def test_exec_absolute_and_relative_paths(rootfd: int) -> None:
    m = _manifest(rootfd, {"Cmd": ["/opt/missing", "x"]})
    assert m.app is not None and m.app.exec == ("/opt/missing", "x")  # absolute: as given
    m = _manifest(rootfd, {"Cmd": ["./run.sh"], "WorkingDir": "/srv/app"})
    assert m.app is not None and m.app.exec == ("/srv/app/run.sh",)


def test_exec_never_follows_a_symlink_out_of_the_root(
    rootfd: int, caplog: pytest.LogCaptureFixture
) -> None:
    """`evil` and `evil2` point at an executable outside the root: resolved inside the root
    they lead nowhere, so the lookup does not find them."""
    for name in ("evil", "evil2"):
        with caplog.at_level(logging.WARNING, logger="kurma.oci._appc"):
            m = _manifest(rootfd, {"Cmd": [name]})
        assert m.app is not None and m.app.exec == (name,)
        assert f"{name!r} is in no directory of PATH" in caplog.text


def test_exec_not_found_or_not_executable_is_kept_as_written(
    rootfd: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kurma.oci._appc"):
        m = _manifest(rootfd, {"Cmd": ["notexec"], "Env": ["PATH=/usr/bin:relative"]})
    assert m.app is not None and m.app.exec == ("notexec",)
    assert "'notexec' is in no directory of PATH /usr/bin:relative" in caplog.text


def test_no_entrypoint_nor_cmd_gives_an_app_without_exec(rootfd: int) -> None:
    """The app is kept (user, env, ports) so a pod's exec override can run the image."""
    m = _manifest(rootfd, {"Env": ["A=1"], "Entrypoint": None, "Cmd": []})
    assert m.app is not None
    assert m.app.exec == ()
    assert m.app.environment["A"] == "1"
    assert "kurma.io/oci-entrypoint" not in m.annotations
    assert json.loads(m.annotations["kurma.io/oci-cmd"]) == []


# --- environment, working directory, ports, volumes ------------------------------------------


def test_environment_working_directory_ports_volumes(rootfd: int) -> None:
    m = _manifest(
        rootfd,
        {
            "Cmd": ["sh"],
            "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "EMPTY", "A=x=y"],
            "WorkingDir": "/srv/app/",
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8443": {}},
            "Volumes": {"/var/lib/data": {}, "/data": {}, "/var/lib_data": {}},
        },
    )
    app = m.app
    assert app is not None
    assert dict(app.environment) == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "EMPTY": "",
        "A": "x=y",
    }
    assert app.working_directory == "/srv/app"
    assert [(p.name, p.protocol, p.port, p.count) for p in app.ports] == [
        ("udp-53", "udp", 53, 1),
        ("tcp-80", "tcp", 80, 1),
        ("tcp-8443", "tcp", 8443, 1),
    ]
    assert [(mp.name, mp.path, mp.read_only) for mp in app.mount_points] == [
        ("data", "/data", False),
        ("var-lib-data", "/var/lib/data", False),
        ("var-lib-data-2", "/var/lib_data", False),
    ]


def test_defaults(rootfd: int) -> None:
    m = _manifest(rootfd, {"Cmd": ["sh"]})
    assert m.app is not None
    assert m.app.working_directory == "/"
    assert m.app.user == "0" and m.app.group == "0"
    assert m.app.supplementary_gids == (10, 44)  # root's memberships, as docker adds them
    assert not m.app.ports and not m.app.mount_points


def test_env_name_appc_cannot_hold_is_refused(rootfd: int) -> None:
    with pytest.raises(ValidationError, match=r"config.Env\[1\]: '1BAD' cannot name a variable"):
        _manifest(rootfd, {"Cmd": ["sh"], "Env": ["OK=1", "1BAD=2"]})


# --- user and group --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "uid", "gid", "groups"),
    [
        ("", 0, 0, (10, 44)),
        ("root", 0, 0, (10, 44)),
        ("app", 1000, 1001, (10, 50)),
        ("1000", 1000, 1001, (10, 50)),  # a uid in passwd is that user
        ("app:staff", 1000, 50, ()),  # an explicit group: no supplementary groups
        ("app:0", 1000, 0, ()),
        ("1000:4242", 1000, 4242, ()),  # a numeric group need not exist
        ("4242", 4242, 0, ()),  # a numeric uid not in passwd: gid 0
        ("4242:wheel", 4242, 10, ()),
        ("daemon:", 1, 1, ()),
    ],
)
def test_user_resolution(rootfd: int, user: str, uid: int, gid: int, groups: tuple[int]) -> None:
    identity = resolve_user(rootfd, user)
    assert (identity.uid, identity.gid, identity.supplementary_gids) == (uid, gid, groups)
    m = _manifest(rootfd, {"Cmd": ["sh"], "User": user})
    assert m.app is not None
    assert (m.app.user, m.app.group) == (str(uid), str(gid))
    assert m.app.supplementary_gids == groups


def test_unknown_user_and_group_are_refused(rootfd: int) -> None:
    with pytest.raises(
        ValidationError, match="user 'ghost' is not a number and not in /etc/passwd"
    ):
        _manifest(rootfd, {"Cmd": ["sh"], "User": "ghost"})
    with pytest.raises(
        ValidationError, match="group 'ghosts' is not a number and not in /etc/group"
    ):
        _manifest(rootfd, {"Cmd": ["sh"], "User": "app:ghosts"})


def test_image_without_passwd(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        assert resolve_user(fd, "").uid == 0
        assert resolve_user(fd, "123:456").gid == 456
        with pytest.raises(ValidationError, match=r"/etc/passwd \(the image has none\)"):
            resolve_user(fd, "app")
        with pytest.raises(ValidationError, match=r"/etc/group \(the image has none\)"):
            resolve_user(fd, "1:staff")
    finally:
        os.close(fd)


def test_passwd_symlinked_out_of_the_root_reads_inside(tmp_path: Path) -> None:
    """Links are resolved with the rootfs as `/`: a relative link climbing out stops at the
    root, an absolute one names a path inside it; neither reads the host's file beside it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "host-passwd").write_text("intruder:x:7:7::/:/bin/sh\n")
    (root / "host-passwd").write_text("inside:x:8:9::/:/bin/sh\n")
    (root / "etc/passwd").symlink_to("../../host-passwd")  # from the host: tmp_path's file
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        assert resolve_user(fd, "inside").gid == 9
        with pytest.raises(ValidationError, match="user 'intruder'"):
            resolve_user(fd, "intruder")
        (root / "etc/passwd").unlink()
        (root / "etc/passwd").symlink_to(tmp_path / "host-passwd")  # absolute host path
        with pytest.raises(ValidationError, match=r"user 'intruder' .*\(the image has none\)"):
            resolve_user(fd, "intruder")
    finally:
        os.close(fd)


def test_passwd_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/passwd").mkdir(parents=True)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(ValidationError, match="/etc/passwd is not a regular file"):
            resolve_user(fd, "app")
    finally:
        os.close(fd)


def test_oversized_passwd_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    with open(root / "etc/passwd", "wb") as f:
        f.truncate((4 << 20) + 1)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(ValidationError, match="larger than"):
            resolve_user(fd, "app")
    finally:
        os.close(fd)


# --- labels, annotations, stop signal ----------------------------------------------------------


def test_labels_become_annotations(rootfd: int) -> None:
    labels = {
        "org.opencontainers.image.source": "https://example.com/src",
        "org.opencontainers.image.url": "https://example.com/",
        "org.opencontainers.image.documentation": "not a url",
        "maintainer": "Jo <jo@example.com>",
        "com.Example.Flag": "1",
        "created": "yesterday",
        "homepage": "also not a url",
    }
    m = _manifest(
        rootfd,
        {"Cmd": ["sh"], "Labels": labels},
        top={"created": "2024-05-01T12:00:00.123456789Z", "author": "Jo"},
    )
    ann = m.annotations
    assert ann["org.opencontainers.image.source"] == "https://example.com/src"
    assert ann["maintainer"] == "Jo <jo@example.com>"
    assert "com.Example.Flag" not in ann  # not an AC Identifier: only in the JSON
    assert ann["created"] == "2024-05-01T12:00:00.123456789Z"  # the config's, not the label
    assert ann["authors"] == "Jo"
    assert ann["homepage"] == "https://example.com/"
    assert "documentation" not in ann
    assert json.loads(ann["kurma.io/oci-labels"]) == labels


def test_invalid_created_is_left_out(rootfd: int) -> None:
    m = _manifest(rootfd, {"Cmd": ["sh"]}, top={"created": "2024-13-01T00:00:00Z"})
    assert "created" not in m.annotations
    assert "kurma.io/oci-labels" not in m.annotations


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("SIGQUIT", "SIGQUIT"),
        ("quit", "SIGQUIT"),
        ("15", "SIGTERM"),
        ("SIGRTMIN+3", "SIGRTMIN+3"),
        ("RTMAX-1", "SIGRTMAX-1"),
        ("SIGRTMIN", "SIGRTMIN"),
    ],
)
def test_stop_signal_is_a_normalised_name(rootfd: int, text: str, name: str) -> None:
    m = _manifest(rootfd, {"Cmd": ["sh"], "StopSignal": text})
    assert m.annotations["kurma.io/stop-signal"] == name


def test_result_is_canonical_and_parses(rootfd: int) -> None:
    data = appc_manifest(
        _config({"Cmd": ["sh"], "Labels": {"a": "b"}}),
        name="x",
        rootfs_fd=rootfd,
        version="v1",
    )
    m = parse_image_manifest(data)
    assert m.to_bytes() == data
    assert json.loads(data)["acKind"] == "ImageManifest"
