"""The authorization table (kurma.api._policy): its rows, the operator ceiling on plans, the
host volume prefixes, and kurmad.yml's operator_host_volumes. Pure logic, no root: plans
are stand-ins with the attributes `beyond` reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kurma.aci import ApiAccessIsolator, ApiScope, parse_pod_manifest
from kurma.api._authz import METHOD_ROLES
from kurma.api._caller import HOST_VIEW, CallerView, pod_view
from kurma.api._config import ConfigError, DaemonConfig, apply
from kurma.api._pki import Role
from kurma.api._podsockets import allowed
from kurma.api._policy import (
    OPERATOR_POLICY,
    TABLE,
    Action,
    Kind,
    Policy,
    authorize,
    beyond,
    kind_of,
    may_call,
)
from kurma.runtime._confine import NotPermitted
from kurma.runtime._plan import API_VOLUME, SeccompPlan, default_seccomp
from kurma.runtime._volumes import VolumeBind
from kurma.runtime.linux import Capability

DEFAULT_CAPS = frozenset(int(Capability[c]) for c in OPERATOR_POLICY.capabilities)


def app(**kw: Any) -> SimpleNamespace:
    rootfs = SimpleNamespace(
        privileged=kw.pop("privileged", False),
        devices=kw.pop("devices", ()),
        volumes=kw.pop("volumes", ()),
    )
    fields = {
        "name": "a",
        "capabilities": DEFAULT_CAPS,
        "seccomp": default_seccomp(),
        "oom_score_adj": None,
        "rootfs": rootfs,
    }
    return SimpleNamespace(**{**fields, **kw})


def plan(*apps: SimpleNamespace, host_ns: frozenset[str] = frozenset(), api: str | None = None):
    access = None if api is None else ApiAccessIsolator(ApiScope(api))
    return SimpleNamespace(
        name="p", apps=apps or (app(),), host_namespaces=host_ns, api_access=access
    )


def bind(source: str, volume: str = "v") -> VolumeBind:
    from kurma.aci import VolumeKind

    return VolumeBind(volume, VolumeKind.HOST, source, "/mnt")


# --- the rows -----------------------------------------------------------------------------------


def test_every_kind_has_a_row() -> None:
    assert set(TABLE) == set(Kind)


@pytest.mark.parametrize(
    ("view", "kind"),
    [
        (HOST_VIEW, Kind.SYSTEM),
        (CallerView(name="ann", role="admin"), Kind.ADMIN),
        (CallerView(name="ann", role="operator"), Kind.OPERATOR),
        (CallerView(name="ann", role="reader"), Kind.READER),
        (CallerView(name="ann", role="wizard"), Kind.READER),
        (pod_view("u", "subtree"), Kind.POD_SUBTREE),
        (pod_view("u", "host-read"), Kind.POD_HOST_READ),
        (pod_view("u", "host"), Kind.POD_HOST),
    ],
)
def test_kind_of(view: CallerView, kind: Kind) -> None:
    assert kind_of(view) is kind


def test_pod_sockets_methods_come_from_the_table() -> None:
    """host-read: the reader's methods; subtree: the operator's but RestartService; host:
    every method; nobody: a method outside METHOD_ROLES."""
    for method, needed in METHOD_ROLES.items():
        assert allowed("host-read", method) == (needed is Role.READER)
        subtree = needed is not Role.ADMIN and method != "/kurma.v1.Host/RestartService"
        assert allowed("subtree", method) == subtree, method
        assert allowed("host", method)
    assert not any(may_call(kind, "/kurma.v1.Pods/Nope") for kind in Kind)


def test_certificates_methods_are_their_roles() -> None:
    for method, needed in METHOD_ROLES.items():
        assert may_call(Kind.READER, method) == (needed is Role.READER)
        assert may_call(Kind.OPERATOR, method) == (needed is not Role.ADMIN)
        assert may_call(Kind.ADMIN, method)


# --- the operator ceiling ------------------------------------------------------------------------


def test_a_plain_pod_is_within_the_operator_policy() -> None:
    assert beyond(plan(), OPERATOR_POLICY) is None
    assert beyond(plan(api="subtree"), OPERATOR_POLICY) is None
    assert beyond(plan(app(oom_score_adj=500)), OPERATOR_POLICY) is None
    strict = SeccompPlan("retain", ("read", "write", "exit_group", "execve"))
    assert beyond(plan(app(seccomp=strict)), OPERATOR_POLICY) is None


@pytest.mark.parametrize(
    ("pod", "says"),
    [
        (plan(app(privileged=True)), "os/linux/privileged"),
        (plan(host_ns=frozenset({"pid"})), "pid namespace"),
        (plan(app(devices=("/dev/kmsg",))), "/dev/kmsg"),
        (plan(api="host-read"), "scope host-read"),
        (plan(app(capabilities=DEFAULT_CAPS | {21})), "CAP_SYS_ADMIN"),
        (plan(app(seccomp=None)), "seccomp off"),
        (plan(app(seccomp=SeccompPlan("remove", ("kill",)))), "seccomp looser"),
        (plan(app(seccomp=SeccompPlan("retain", ("mount", "execve")))), "seccomp looser"),
        (plan(app(oom_score_adj=-1)), "oom-score-adj -1"),
        (plan(app(volumes=(bind("/"),))), "volume 'v': host source /"),
    ],
)
def test_beyond_names_what_reaches_the_host(pod: SimpleNamespace, says: str) -> None:
    problem = beyond(pod, OPERATOR_POLICY)  # type: ignore[arg-type]
    assert problem is not None and says in problem


def test_a_source_that_no_longer_resolves_to_itself_is_beyond(tmp_path: Path) -> None:
    """Resolved at create, a host source must still be its own real path when the pod
    starts or is exec'd into: a directory on the way swapped for a symlink is refused."""
    from dataclasses import replace

    (tmp_path / "ok" / "real").mkdir(parents=True)
    os.symlink("real", tmp_path / "ok" / "link")
    ceiling = replace(OPERATOR_POLICY, host_volumes=(str(tmp_path / "ok"),))
    assert beyond(plan(app(volumes=(bind(f"{tmp_path}/ok/real"),))), ceiling) is None
    problem = beyond(plan(app(volumes=(bind(f"{tmp_path}/ok/link/x"),))), ceiling)
    assert problem is not None and "leads to" in problem


def test_the_api_directory_is_no_host_volume_of_the_operators() -> None:
    pod = plan(app(volumes=(bind("/run/kurma/pods/x/api", API_VOLUME),)), api="subtree")
    assert beyond(pod, OPERATOR_POLICY) is None  # type: ignore[arg-type]


def test_authorize_by_kind_and_action() -> None:
    privileged = plan(app(privileged=True))
    for kind in (Kind.SYSTEM, Kind.ADMIN, Kind.POD_HOST):
        authorize(kind, Action.CREATE, privileged)  # type: ignore[arg-type]
        authorize(kind, Action.EXEC, privileged)  # type: ignore[arg-type]
    with pytest.raises(NotPermitted, match="may create"):
        authorize(Kind.OPERATOR, Action.CREATE, privileged)  # type: ignore[arg-type]
    with pytest.raises(NotPermitted, match="exec into a pod only when it is within"):
        authorize(Kind.OPERATOR, Action.EXEC, privileged)  # type: ignore[arg-type]
    with pytest.raises(NotPermitted, match="start a pod only when it is within"):
        authorize(Kind.OPERATOR, Action.START, privileged)  # type: ignore[arg-type]
    authorize(Kind.OPERATOR, Action.START, plan())  # type: ignore[arg-type]
    with pytest.raises(NotPermitted, match="reader certificate may not create pods"):
        authorize(Kind.READER, Action.CREATE, plan())  # type: ignore[arg-type]
    with pytest.raises(NotPermitted, match="only a host-level admin"):
        authorize(Kind.POD_HOST, Action.CREATE, plan(api="host"))  # type: ignore[arg-type]


# --- host volumes: prefixes, resolved ------------------------------------------------------------


def pod_with_volume(source: str) -> Any:
    doc = {
        "acKind": "PodManifest",
        "acVersion": "0.8.11",
        "apps": [],
        "volumes": [{"name": "v", "kind": "host", "source": source}],
    }

    return parse_pod_manifest(json.dumps(doc).encode())


def test_admit_resolves_host_volumes_inside_the_prefixes(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    (ok / "sub").mkdir(parents=True)
    (tmp_path / "okay").mkdir()
    os.symlink("/etc", ok / "escape")
    os.symlink("sub", ok / "inner")
    policy = Policy([str(ok)])
    operator = CallerView(name="o", role="operator")
    admitted = policy.admit(operator, pod_with_volume(f"{ok}/inner/./"))
    assert admitted.volumes[0].source == str(ok / "sub")
    assert policy.admit(operator, pod_with_volume(str(ok))).volumes[0].source == str(ok)
    for source in ("/", f"{ok}/..", f"{tmp_path}/okay", f"{ok}/escape", f"{ok}/escape/x"):
        with pytest.raises(NotPermitted, match="operator_host_volumes"):
            policy.admit(operator, pod_with_volume(source))
    with pytest.raises(NotPermitted, match="no host paths are open to operators"):
        Policy().admit(operator, pod_with_volume(str(ok)))
    # an admin's sources are left as they are (and mounted as named)
    assert Policy().admit(HOST_VIEW, pod_with_volume("/etc/../")).volumes[0].source == "/etc/../"


# --- kurmad.yml --------------------------------------------------------------------------------


def test_operator_host_volumes_setting() -> None:
    def parse(value: Any) -> tuple[str, ...]:
        return apply(DaemonConfig(), {"operator_host_volumes": value}, "f").operator_host_volumes

    assert DaemonConfig().operator_host_volumes == ()
    assert parse(["/srv/a/", "/srv/b"]) == ("/srv/a", "/srv/b")
    assert parse("/srv/a,/srv/b") == ("/srv/a", "/srv/b")
    assert parse(None) == ()
    for bad in (["srv"], ["/srv/../etc"], 5):
        with pytest.raises(ConfigError, match="operator_host_volumes"):
            parse(bad)


def test_only_the_host_imports_the_system_services_image_names() -> None:
    from kurma.aci import parse_image_manifest

    def image(name: str) -> Any:
        doc = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name}
        return parse_image_manifest(json.dumps(doc).encode())

    policy = Policy(service_images=lambda: ["example.com/ntp:1.2", "sha512-" + "0" * 128])
    operator = CallerView(name="o", role="operator")
    for name in ("example.com/ntp", "kurma.io/anything"):
        with pytest.raises(NotPermitted, match=f"image name {name}"):
            policy.check_import(operator, image(name))
        with pytest.raises(NotPermitted):
            policy.check_import(pod_view("u", "subtree"), image(name))
        policy.check_import(HOST_VIEW, image(name))
        policy.check_import(CallerView(name="a", role="admin"), image(name))
    policy.check_import(operator, image("example.com/ntp-tools"))
