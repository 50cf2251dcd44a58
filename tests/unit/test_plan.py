"""plan_pod: how the manifests' isolators and fields become what each app gets, and the
report of what was enforced or ignored. Pure: an image tree with /etc/passwd and /etc/group
in a temp dir is all the planner reads."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import (
    DEFAULT_CAPABILITIES,
    App,
    PodManifest,
    RuntimeApp,
    RuntimeImage,
    SeccompRemoveSet,
    SeccompRetainSet,
    parse_image_manifest,
    parse_pod_manifest,
)
from kurma.errors import ValidationError
from kurma.runtime._identity import Identity
from kurma.runtime._plan import (
    DEFAULT_PATH,
    AppInput,
    AppPlan,
    Limits,
    PodPlan,
    SeccompPlan,
    app_environment,
    plan_pod,
)
from kurma.runtime.linux import Capability, docker_default_blocked

ID = "sha512-" + "ab" * 64
ALL_CAPS = frozenset(int(c) for c in Capability)
URL = "http://127.0.0.1:8775/token"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nwheel:x:10:app\napp:x:1000:\n")
    return root


def iso(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": value}


def manifest(*apps: dict[str, Any], **extra: Any) -> PodManifest:
    """A pod from app dicts: name plus `app` fields (user, group 0 and exec /bin/true)."""
    entries = []
    for spec in apps:
        spec = dict(spec)
        entry: dict[str, Any] = {"name": spec.pop("name"), "image": {"id": ID}}
        for key in ("mounts", "readOnlyRootFS"):
            if key in spec:
                entry[key] = spec.pop(key)
        if spec.pop("app", True):  # `"app": False`: the image's app (or none) runs
            entry["app"] = {"user": "0", "group": "0", "exec": ["/bin/true"], **spec}
        entries.append(entry)
    return parse_pod_manifest(
        {"acKind": "PodManifest", "acVersion": "0.8.11", "apps": entries, **extra}
    )


def image(app: dict[str, Any] | None = None) -> Any:
    doc: dict[str, Any] = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "x.com/i"}
    if app is not None:
        doc["app"] = app
    return parse_image_manifest(doc)


def plan_of(
    tree: Path,
    pod: PodManifest,
    image_app: dict[str, Any] | None = None,
    *,
    metadata_url: str | None = URL,
    pids_max: int | None = None,
    bounding: frozenset[int] = ALL_CAPS,
) -> PodPlan:
    """The pod's plan, for a kurmad holding `bounding` (every capability by default: the
    test's host may lack some)."""
    inputs = [AppInput(app, image(image_app), str(tree)) for app in pod.apps]
    return plan_pod(
        "0f6f3c7e-5ef6-4e43-a2a0-8f2f8e6b1c11",
        "pod",
        pod,
        inputs,
        pod_dir="/run/kurma/pods/p",
        etc=None,
        metadata_url=metadata_url,
        pids_max=pids_max,
        bounding=bounding,
    )


def app_plan(tree: Path, **fields: Any) -> AppPlan:
    """The plan of a single app "web" with these `app` fields (and pod-level `pod_*`)."""
    pod_isolators = fields.pop("pod_isolators", [])
    bounding = fields.pop("bounding", ALL_CAPS)
    pod = manifest({"name": "web", **fields}, isolators=pod_isolators)
    return plan_of(tree, pod, bounding=bounding).apps[0]


def caps(*names: str) -> frozenset[int]:
    return frozenset(int(Capability[n]) for n in names)


def report_of(plan: PodPlan) -> dict[tuple[str, str], tuple[bool, str]]:
    return {(o.scope, o.name): (o.enforced, o.note) for o in plan.report}


# --- capabilities -----------------------------------------------------------------------------


def test_default_capabilities_are_the_specs_14(tree: Path) -> None:
    plan = app_plan(tree)
    assert plan.capabilities == caps(*DEFAULT_CAPABILITIES)
    assert len(plan.capabilities) == 14
    assert not plan.ambient  # only an explicit retain-set raises them for a non-root user


def test_retain_set_replaces_the_default(tree: Path) -> None:
    retain = iso("os/linux/capabilities-retain-set", {"set": ["CAP_NET_ADMIN", "CAP_CHOWN"]})
    plan = app_plan(tree, isolators=[retain])
    assert plan.capabilities == caps("CAP_NET_ADMIN", "CAP_CHOWN")
    assert plan.ambient


def test_remove_set_subtracts_from_the_default(tree: Path) -> None:
    """ace.md: a capability outside the default set (CAP_SYS_ADMIN) in it has no effect."""
    remove = iso(
        "os/linux/capabilities-remove-set", {"set": ["CAP_NET_RAW", "CAP_MKNOD", "CAP_SYS_ADMIN"]}
    )
    plan = app_plan(tree, isolators=[remove])
    assert plan.capabilities == caps(*DEFAULT_CAPABILITIES) - caps("CAP_NET_RAW", "CAP_MKNOD")
    assert not plan.ambient


RETAIN = "os/linux/capabilities-retain-set"
REMOVE = "os/linux/capabilities-remove-set"


def test_pod_level_retain_set_applies_to_every_app(tree: Path) -> None:
    """A pod-level retain-set is every app's set (what `kurmactl run --isolator` sends),
    reported as the pod's, enforced; the apps raise it as ambient (an explicit set)."""
    retain = iso(RETAIN, {"set": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]})
    plan = plan_of(tree, manifest({"name": "a"}, {"name": "b"}, isolators=[retain]))
    for app in plan.apps:
        assert app.capabilities == caps("CAP_NET_BIND_SERVICE", "CAP_CHOWN")
        assert app.ambient
    enforced, note = report_of(plan)[("pod", RETAIN)]
    assert enforced and "CAP_CHOWN" in note


def test_app_retain_set_narrows_the_pods(tree: Path) -> None:
    """Pod {NET_BIND_SERVICE, CHOWN} and app {CHOWN}: the app gets {CHOWN}."""
    pod = [iso(RETAIN, {"set": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]})]
    plan = app_plan(tree, pod_isolators=pod, isolators=[iso(RETAIN, {"set": ["CAP_CHOWN"]})])
    assert plan.capabilities == caps("CAP_CHOWN")
    narrowed = app_plan(tree, pod_isolators=pod, isolators=[iso(REMOVE, {"set": ["CAP_CHOWN"]})])
    assert narrowed.capabilities == caps("CAP_NET_BIND_SERVICE")


def test_app_retain_set_beyond_the_pods_is_refused(tree: Path) -> None:
    """An app asking for a capability outside the pod-level set: refused, not narrowed."""
    pod = [iso(RETAIN, {"set": ["CAP_CHOWN"]})]
    with pytest.raises(ValidationError) as e:
        app_plan(tree, pod_isolators=pod, isolators=[iso(RETAIN, {"set": ["CAP_SYS_ADMIN"]})])
    assert RETAIN in e.value.path and "CAP_SYS_ADMIN" in e.value.message
    removed = [iso(REMOVE, {"set": ["CAP_NET_RAW"]})]
    with pytest.raises(ValidationError, match="CAP_NET_RAW beyond the pod-level"):
        app_plan(tree, pod_isolators=removed, isolators=[iso(RETAIN, {"set": ["CAP_NET_RAW"]})])


def test_pod_level_remove_set_takes_from_every_app(tree: Path) -> None:
    remove = iso(REMOVE, {"set": ["CAP_NET_RAW", "CAP_MKNOD"]})
    plan = plan_of(tree, manifest({"name": "a"}, {"name": "b"}, isolators=[remove]))
    for app in plan.apps:
        assert app.capabilities == caps(*DEFAULT_CAPABILITIES) - caps("CAP_NET_RAW", "CAP_MKNOD")
    assert report_of(plan)[("pod", REMOVE)][0]
    # an app's own remove-set adds to it; its retain-set may name what the pod did not remove
    both = app_plan(
        tree, pod_isolators=[remove], isolators=[iso(REMOVE, {"set": ["CAP_KILL"]})]
    ).capabilities
    assert both == caps(*DEFAULT_CAPABILITIES) - caps("CAP_NET_RAW", "CAP_MKNOD", "CAP_KILL")
    admin = app_plan(
        tree, pod_isolators=[remove], isolators=[iso(RETAIN, {"set": ["CAP_SYS_ADMIN"]})]
    )
    assert admin.capabilities == caps("CAP_SYS_ADMIN")


def test_capability_kurmad_does_not_hold_is_refused(tree: Path) -> None:
    """A retain-set (pod or app) naming a capability outside kurmad's bounding set cannot
    be enforced: refused at create, naming the isolator and the capability. Defaults and
    privileged pods get what kurmad holds (nobody asked for the missing ones by name)."""
    held = ALL_CAPS - caps("CAP_SYS_RESOURCE")
    want = {"set": ["CAP_SYS_RESOURCE", "CAP_CHOWN"]}
    for fields in ({"pod_isolators": [iso(RETAIN, want)]}, {"isolators": [iso(RETAIN, want)]}):
        with pytest.raises(ValidationError) as e:
            app_plan(tree, bounding=held, **fields)
        assert RETAIN in e.value.path and "CAP_SYS_RESOURCE" in e.value.message
        assert "cannot be enforced" in e.value.message
    privileged = app_plan(tree, bounding=held, pod_isolators=[iso("os/linux/privileged", True)])
    assert privileged.capabilities == held
    # removing one kurmad lacks is fine: the app has it not
    removed = app_plan(tree, bounding=held, isolators=[iso(REMOVE, {"set": ["CAP_SYS_RESOURCE"]})])
    assert removed.capabilities == caps(*DEFAULT_CAPABILITIES)


def test_privileged_gets_every_capability(tree: Path) -> None:
    privileged = iso("os/linux/privileged", True)
    plan = app_plan(tree, pod_isolators=[privileged])
    assert plan.capabilities == frozenset(int(c) for c in Capability)
    assert plan.ambient
    remove = iso("os/linux/capabilities-remove-set", {"set": ["CAP_SYS_ADMIN"]})
    plan = app_plan(tree, pod_isolators=[privileged], isolators=[remove])
    assert plan.capabilities == frozenset(int(c) for c in Capability) - caps("CAP_SYS_ADMIN")


# --- no-new-privileges ----------------------------------------------------------------------


def test_no_new_privileges_defaults(tree: Path) -> None:
    """On by default (Kurma's choice; ace.md's default is off), off when asked or privileged."""
    nnp = "os/linux/no-new-privileges"
    privileged = iso("os/linux/privileged", True)
    assert app_plan(tree).no_new_privileges is True
    assert app_plan(tree, isolators=[iso(nnp, False)]).no_new_privileges is False
    assert app_plan(tree, pod_isolators=[iso(nnp, False)]).no_new_privileges is False
    assert app_plan(tree, pod_isolators=[privileged]).no_new_privileges is False
    on = app_plan(tree, pod_isolators=[privileged], isolators=[iso(nnp, True)])
    assert on.no_new_privileges is True
    # the app's own value wins over the pod's
    both = app_plan(tree, pod_isolators=[iso(nnp, False)], isolators=[iso(nnp, True)])
    assert both.no_new_privileges is True
    # ... but never lifts the pod's
    with pytest.raises(ValidationError, match="would lift the pod-level one"):
        app_plan(tree, pod_isolators=[iso(nnp, True)], isolators=[iso(nnp, False)])


# --- seccomp ----------------------------------------------------------------------------------


def test_default_seccomp_is_dockers_blocked_list(tree: Path) -> None:
    seccomp = app_plan(tree).seccomp
    assert seccomp is not None
    assert seccomp.mode == "remove"
    assert set(seccomp.syscalls) == docker_default_blocked()
    assert {"unshare", "mount", "reboot", "kexec_load"} <= set(seccomp.syscalls)
    assert seccomp.errno == errno.EPERM


def test_privileged_has_no_seccomp_unless_it_asks(tree: Path) -> None:
    privileged = iso("os/linux/privileged", True)
    assert app_plan(tree, pod_isolators=[privileged]).seccomp is None
    remove = iso("os/linux/seccomp-remove-set", {"set": ["reboot"], "errno": "EPERM"})
    plan = app_plan(tree, pod_isolators=[privileged], isolators=[remove])
    assert plan.seccomp == SeccompPlan("remove", ("reboot",), errno.EPERM)


def test_remove_set_blocks_exactly_its_syscalls_with_its_errno(tree: Path) -> None:
    remove = iso("os/linux/seccomp-remove-set", {"set": ["mkdir", "mkdirat"], "errno": "ENOTSUP"})
    plan = app_plan(tree, isolators=[remove])
    assert plan.seccomp == SeccompPlan("remove", ("mkdir", "mkdirat"), errno.ENOTSUP)


def test_retain_set_always_allows_the_exec_into_the_app(tree: Path) -> None:
    retain = iso("os/linux/seccomp-retain-set", {"set": ["read", "write"], "errno": "EACCES"})
    plan = app_plan(tree, isolators=[retain])
    assert plan.seccomp == SeccompPlan("retain", ("read", "write", "execve"), errno.EACCES)
    retain = iso("os/linux/seccomp-retain-set", {"set": ["execve", "read"], "errno": "EACCES"})
    assert app_plan(tree, isolators=[retain]).seccomp == SeccompPlan(
        "retain", ("execve", "read"), errno.EACCES
    )


SC_RETAIN = "os/linux/seccomp-retain-set"
SC_REMOVE = "os/linux/seccomp-remove-set"


def test_pod_level_seccomp_applies_to_every_app(tree: Path) -> None:
    """A pod-level remove-set is every app's filter (in place of the default), reported."""
    remove = iso(SC_REMOVE, {"set": ["mkdir", "mkdirat"], "errno": "ENOTSUP"})
    plan = plan_of(tree, manifest({"name": "a"}, {"name": "b"}, isolators=[remove]))
    for app in plan.apps:
        assert app.seccomp == SeccompPlan("remove", ("mkdir", "mkdirat"), errno.ENOTSUP)
    assert report_of(plan)[("pod", SC_REMOVE)][0]


def test_pod_and_app_remove_sets_block_the_union(tree: Path) -> None:
    pod = [iso(SC_REMOVE, {"set": ["mkdir"], "errno": "EPERM"})]
    plan = app_plan(tree, pod_isolators=pod, isolators=[iso(SC_REMOVE, {"set": ["rmdir"]})])
    assert plan.seccomp is not None and plan.seccomp.mode == "remove"
    assert set(plan.seccomp.syscalls) == {"mkdir", "rmdir"}


def test_app_seccomp_narrows_a_pod_retain_set(tree: Path) -> None:
    pod = [iso(SC_RETAIN, {"set": ["read", "write", "exit"], "errno": "EPERM"})]
    inner = app_plan(tree, pod_isolators=pod, isolators=[iso(SC_RETAIN, {"set": ["read"]})])
    assert inner.seccomp is not None and set(inner.seccomp.syscalls) == {"read", "execve"}
    minus = app_plan(tree, pod_isolators=pod, isolators=[iso(SC_REMOVE, {"set": ["write"]})])
    assert minus.seccomp is not None and minus.seccomp.mode == "retain"
    assert set(minus.seccomp.syscalls) == {"read", "exit", "execve"}


def test_app_seccomp_wider_than_the_pods_is_refused(tree: Path) -> None:
    """An app set that would allow what the pod-level set forbids is an error naming it."""
    pod_retain = [iso(SC_RETAIN, {"set": ["read"]})]
    with pytest.raises(ValidationError, match="mkdir, outside the pod-level") as e:
        app_plan(tree, pod_isolators=pod_retain, isolators=[iso(SC_RETAIN, {"set": ["mkdir"]})])
    assert SC_RETAIN in e.value.path
    pod_remove = [iso(SC_REMOVE, {"set": ["mkdir"]})]
    with pytest.raises(ValidationError, match="which the pod-level"):
        app_plan(tree, pod_isolators=pod_remove, isolators=[iso(SC_RETAIN, {"set": ["mkdir"]})])
    with pytest.raises(ValidationError, match="would lift the pod-level"):
        app_plan(
            tree, pod_isolators=pod_remove, isolators=[iso(SC_RETAIN, {"set": ["@appc.io/all"]})]
        )


def test_nul_bytes_are_refused_naming_the_field(tree: Path) -> None:
    """The parser refuses a NUL in any string; the planner refuses one in a manifest built
    in Python (a RunSpec's, a service's) before the app is planned."""
    with pytest.raises(ValidationError, match="NUL") as e:
        manifest({"name": "web", "exec": ["/bin/sh", "-c", "true\0"]})
    assert e.value.path.endswith("exec[2]")
    app = App(user="0", group="0", exec=("/bin/true",), working_directory="/tmp\0x")
    pod = PodManifest(apps=(RuntimeApp("web", RuntimeImage(ID), app),))
    with pytest.raises(ValidationError, match="NUL") as e:
        plan_of(tree, pod)
    assert "working_directory" in e.value.path


def test_retain_and_remove_together_are_rejected(tree: Path) -> None:
    """The parser refuses both in one list; the planner refuses a hand-built App too."""
    with pytest.raises(ValidationError, match="cannot be used together"):
        manifest(
            {
                "name": "web",
                "isolators": [
                    iso("os/linux/seccomp-retain-set", {"set": ["read"]}),
                    iso("os/linux/seccomp-remove-set", {"set": ["mkdir"]}),
                ],
            }
        )
    app = App(
        user="0",
        group="0",
        exec=("/bin/true",),
        isolators=(SeccompRetainSet(("read",)), SeccompRemoveSet(("mkdir",))),
    )
    pod = PodManifest(apps=(RuntimeApp("web", RuntimeImage(ID), app),))
    with pytest.raises(ValidationError, match="exclude each other") as info:
        plan_of(tree, pod)
    assert "'web'" in str(info.value)


def test_unknown_syscall_or_wildcard_is_rejected(tree: Path) -> None:
    remove = iso("os/linux/seccomp-remove-set", {"set": ["mkdir", "mkdri"]})
    with pytest.raises(ValidationError, match=r"'web'.*seccomp-remove-set.*'mkdri'"):
        app_plan(tree, isolators=[remove])
    # @appc.io/all belongs in a retain-set, @appc.io/empty in a remove-set
    for kind, wildcard in (("remove", "@appc.io/all"), ("retain", "@appc.io/empty")):
        bad = iso(f"os/linux/seccomp-{kind}-set", {"set": [wildcard]})
        with pytest.raises(ValidationError, match="unknown wildcard"):
            app_plan(tree, isolators=[bad])
    bad = iso("os/linux/seccomp-retain-set", {"set": ["@example.com/net"]})
    with pytest.raises(ValidationError, match="unknown wildcard"):
        app_plan(tree, isolators=[bad])


def test_spec_wildcards(tree: Path) -> None:
    """ace.md: @appc.io/all opts out of filtering, @appc.io/empty opts into the default."""
    everything = iso("os/linux/seccomp-retain-set", {"set": ["@appc.io/all", "read"]})
    assert app_plan(tree, isolators=[everything]).seccomp is None
    nothing = iso("os/linux/seccomp-remove-set", {"set": ["@appc.io/empty"], "errno": "ENOSYS"})
    seccomp = app_plan(tree, isolators=[nothing]).seccomp
    assert seccomp is not None and seccomp.mode == "remove" and seccomp.errno == errno.ENOSYS
    assert set(seccomp.syscalls) == docker_default_blocked()


def test_unknown_errno_name_is_rejected(tree: Path) -> None:
    remove = iso("os/linux/seccomp-remove-set", {"set": ["mkdir"], "errno": "ENOSUCHERRNO"})
    with pytest.raises(ValidationError, match="ENOSUCHERRNO"):
        app_plan(tree, isolators=[remove])


# --- sysctl -----------------------------------------------------------------------------------


def test_namespaced_sysctls_are_accepted(tree: Path) -> None:
    values = {
        "net.ipv4.ip_forward": "1",
        "net.core.somaxconn": "1024",
        "kernel.shmmax": "68719476736",
        "kernel.msgmax": "65536",
        "fs.mqueue.msg_max": "20",
    }
    plan = app_plan(tree, pod_isolators=[iso("os/unix/sysctl", values)])
    assert dict(plan.sysctls) == values


@pytest.mark.parametrize(
    "key", ["kernel.panic", "vm.swappiness", "fs.file-max", "kernel.hostname", "net..x"]
)
def test_host_sysctls_are_rejected(tree: Path, key: str) -> None:
    with pytest.raises(ValidationError) as info:
        app_plan(tree, pod_isolators=[iso("os/unix/sysctl", {key: "1"})])
    assert key in str(info.value) and "'web'" in str(info.value)


def test_sysctls_of_a_namespace_shared_with_the_host_are_rejected(tree: Path) -> None:
    for ns, key in (("net", "net.ipv4.ip_forward"), ("ipc", "kernel.shmmax")):
        isolators = [iso("os/linux/namespaces", {ns: "host"}), iso("os/unix/sysctl", {key: "1"})]
        with pytest.raises(ValidationError, match=key.replace(".", r"\.")):
            app_plan(tree, pod_isolators=isolators)


def test_an_apps_sysctl_overrides_the_pods(tree: Path) -> None:
    plan = app_plan(
        tree,
        pod_isolators=[
            iso("os/unix/sysctl", {"net.core.somaxconn": "1", "net.ipv4.ip_forward": "1"})
        ],
        isolators=[iso("os/unix/sysctl", {"net.core.somaxconn": "2"})],
    )
    assert dict(plan.sysctls) == {"net.core.somaxconn": "2", "net.ipv4.ip_forward": "1"}


# --- resource limits ----------------------------------------------------------------------------


def test_limits_from_isolators(tree: Path) -> None:
    pod = manifest(
        {
            "name": "web",
            "isolators": [
                iso("resource/memory", {"limit": "128Mi"}),
                iso("resource/cpu", {"request": "250m", "limit": "500m"}),
                iso("os/linux/cpu-shares", 512),
            ],
        },
        isolators=[iso("resource/memory", {"limit": "1G"}), iso("resource/cpu", {"limit": "2"})],
    )
    plan = plan_of(tree, pod, pids_max=300)
    assert plan.limits == Limits(memory_bytes=10**9, cpu_millicores=2000, pids_max=300)
    assert plan.apps[0].limits == Limits(memory_bytes=128 << 20, cpu_millicores=500, cpu_shares=512)


def test_no_limits_without_isolators(tree: Path) -> None:
    plan = plan_of(tree, manifest({"name": "web"}))
    assert plan.limits == Limits() and not plan.limits
    assert not plan.apps[0].limits


def test_a_request_alone_is_reported_not_enforced(tree: Path) -> None:
    plan = plan_of(
        tree, manifest({"name": "web", "isolators": [iso("resource/memory", {"request": "1G"})]})
    )
    assert plan.apps[0].limits == Limits()
    enforced, note = report_of(plan)[("web", "resource/memory")]
    assert not enforced and "request" in note


# --- environment ------------------------------------------------------------------------------


def test_app_environment_order_and_defaults() -> None:
    env = app_environment("web", {"FOO": "1", "BAR": "2"}, URL)
    assert env == (
        ("PATH", DEFAULT_PATH),
        ("AC_APP_NAME", "web"),
        ("AC_METADATA_URL", URL),
        ("container", "kurma"),
        ("FOO", "1"),
        ("BAR", "2"),
    )
    assert DEFAULT_PATH == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_app_environment_override_rules() -> None:
    """The manifest may set PATH; never AC_APP_NAME or AC_METADATA_URL."""
    env = dict(
        app_environment(
            "web",
            {"PATH": "/opt/bin", "AC_APP_NAME": "evil", "AC_METADATA_URL": "http://evil/"},
            URL,
        )
    )
    assert env["PATH"] == "/opt/bin"
    assert env["AC_APP_NAME"] == "web"
    assert env["AC_METADATA_URL"] == URL


def test_app_environment_without_metadata_service() -> None:
    env = dict(app_environment("web", {"AC_METADATA_URL": "http://evil/"}, None))
    assert "AC_METADATA_URL" not in env


def test_plan_carries_the_manifests_environment(tree: Path) -> None:
    plan = app_plan(tree, environment=[{"name": "FOO", "value": "bar"}])
    assert plan.env[-1] == ("FOO", "bar")
    assert dict(plan.env)["AC_APP_NAME"] == "web"


# --- identity, exec, handlers, the image's app --------------------------------------------------


def test_identity_argv_and_handlers(tree: Path) -> None:
    plan = app_plan(
        tree,
        user="app",
        group="wheel",
        supplementaryGIDs=[2000],
        exec=["/bin/sh", "-c", "serve"],
        workingDirectory="/srv",
        eventHandlers=[
            {"name": "pre-start", "exec": ["/bin/prepare"]},
            {"name": "post-stop", "exec": ["/bin/cleanup", "now"]},
        ],
    )
    assert plan.identity == Identity(1000, 10, (2000,))
    assert plan.argv == ("/bin/sh", "-c", "serve")
    assert plan.pre_start == ("/bin/prepare",)
    assert plan.post_stop == ("/bin/cleanup", "now")
    assert plan.rootfs.working_directory == "/srv"


def test_unknown_user_names_the_app_and_field(tree: Path) -> None:
    with pytest.raises(ValidationError) as info:
        app_plan(tree, user="ghost")
    assert "'web'" in str(info.value) and "user" in str(info.value)


def test_the_images_app_is_used_when_the_pod_gives_none(tree: Path) -> None:
    pod = manifest({"name": "web", "app": False})
    plan = plan_of(tree, pod, {"user": "app", "group": "app", "exec": ["/bin/serve"]})
    assert plan.apps[0].argv == ("/bin/serve",)
    assert plan.apps[0].identity == Identity(1000, 1000)


def test_no_app_section_or_no_exec_is_rejected(tree: Path) -> None:
    with pytest.raises(ValidationError, match=r"'web'.*no `app` section"):
        plan_of(tree, manifest({"name": "web", "app": False}))
    with pytest.raises(ValidationError, match=r"'web'.*exec"):
        plan_of(tree, manifest({"name": "web", "exec": []}))


def test_oom_score_adj_app_over_pod(tree: Path) -> None:
    oom = "os/linux/oom-score-adj"
    assert app_plan(tree).oom_score_adj is None
    assert app_plan(tree, pod_isolators=[iso(oom, 100)]).oom_score_adj == 100
    assert (
        app_plan(tree, pod_isolators=[iso(oom, 100)], isolators=[iso(oom, -5)]).oom_score_adj == -5
    )


# --- namespaces and the report ------------------------------------------------------------------


def test_host_namespaces_are_pod_wide(tree: Path) -> None:
    pod = manifest(
        {"name": "a", "isolators": [iso("os/linux/namespaces", {"net": "host"})]},
        {"name": "b"},
        isolators=[iso("os/linux/namespaces", {"ipc": "host"})],
    )
    plan = plan_of(tree, pod)
    assert plan.host_namespaces == {"net", "ipc"}
    assert [a.rootfs.own_netns for a in plan.apps] == [False, False]
    enforced, note = report_of(plan)[("a", "os/linux/namespaces")]
    assert enforced and "pod-wide" in note


def test_report_says_what_was_enforced_and_what_ignored(tree: Path) -> None:
    pod = manifest(
        {
            "name": "web",
            "isolators": [
                iso("os/linux/oom-score-adj", 10),
                iso("os/linux/capabilities-retain-set", {"set": ["CAP_CHOWN"]}),
                iso("os/linux/seccomp-remove-set", {"set": ["reboot"]}),
                iso("os/linux/no-new-privileges", True),
                iso("example.com/x", {"any": "thing"}),
            ],
        },
        isolators=[
            iso("resource/memory", {"request": "1G"}),
            iso("os/linux/privileged", True),
            iso("host/api-access", {"scope": "subtree"}),
            iso("os/unix/sysctl", {"net.core.somaxconn": "10"}),
        ],
    )
    plan = plan_of(tree, pod)
    report = report_of(plan)
    for key in (
        ("web", "os/linux/oom-score-adj"),
        ("web", "os/linux/capabilities-retain-set"),
        ("web", "os/linux/seccomp-remove-set"),
        ("web", "os/linux/no-new-privileges"),
        ("web", "os/unix/sysctl"),
        ("pod", "os/linux/privileged"),
    ):
        assert report[key][0] is True, key
    for key in (
        ("web", "example.com/x"),
        ("pod", "resource/memory"),
        ("pod", "host/api-access"),
    ):
        enforced, note = report[key]
        assert enforced is False and note, key
    assert report[("web", "os/linux/capabilities-retain-set")][1] == "CAP_CHOWN"
    assert all(o.to_json().keys() == {"scope", "name", "enforced", "note"} for o in plan.report)
    assert plan.api_access is not None


@pytest.mark.parametrize(
    "isolator",
    [
        iso("os/linux/selinux-context", {"user": "u", "role": "r", "type": "t", "level": "s0"}),
        iso("resource/network-bandwidth", {"default": True, "limit": "1M"}),
        iso("resource/block-iops", {"default": True, "limit": "100"}),
        iso("os/linux/capabilities-retain-sets", {"set": ["CAP_CHOWN"]}),  # a typo
    ],
)
def test_isolators_this_executor_cannot_enforce_are_refused(tree: Path, isolator: Any) -> None:
    """Known isolators Kurma does not enforce, and unknown names in the spec's or Kurma's
    namespaces (resource/, os/, host/), are refused naming them, at the pod's level and an
    app's; another party's isolator (example.com/x) is reported as ignored instead."""
    for fields in ({"pod_isolators": [isolator]}, {"isolators": [isolator]}):
        with pytest.raises(ValidationError, match="cannot be enforced") as e:
            app_plan(tree, **fields)
        assert isolator["name"] in e.value.path


def test_report_is_empty_without_isolators(tree: Path) -> None:
    assert plan_of(tree, manifest({"name": "web"})).report == ()


def test_limits_no_cgroup_can_enforce_are_refused(tree: Path) -> None:
    """A memory limit below 1 MiB or a CPU limit of 0 would fail only at start: refused
    here, naming the isolator."""
    for name, limit in (("resource/memory", "0"), ("resource/memory", "1K"), ("resource/cpu", "0")):
        with pytest.raises(ValidationError, match="cannot be enforced") as e:
            app_plan(tree, pod_isolators=[iso(name, {"limit": limit})])
        assert name in e.value.path
    assert app_plan(tree, isolators=[iso("resource/memory", {"limit": "1Mi"})]).limits.memory_bytes


def test_precheck_judges_isolators_and_strings_from_the_manifests_alone() -> None:
    """precheck_pod runs before the pod has a directory or a tree: it refuses what
    plan_pod would (here: an app set wider than the pod's, an unenforceable capability, a
    NUL byte, nothing to run) and returns each app's oom_score_adj."""
    from kurma.runtime._plan import precheck_pod

    def image_app(_: Any) -> Any:
        return None

    pod = manifest(
        {"name": "a", "isolators": [iso("os/linux/oom-score-adj", 7)]},
        {"name": "b"},
        isolators=[iso(RETAIN, {"set": ["CAP_CHOWN"]})],
    )
    assert precheck_pod(pod, image_app, bounding=ALL_CAPS) == {"a": 7, "b": None}
    wider = manifest(
        {"name": "a", "isolators": [iso(RETAIN, {"set": ["CAP_KILL"]})]},
        isolators=[iso(RETAIN, {"set": ["CAP_CHOWN"]})],
    )
    with pytest.raises(ValidationError, match="beyond the pod-level"):
        precheck_pod(wider, image_app, bounding=ALL_CAPS)
    held = ALL_CAPS - caps("CAP_SYS_RESOURCE")
    unheld = manifest({"name": "a"}, isolators=[iso(RETAIN, {"set": ["CAP_SYS_RESOURCE"]})])
    with pytest.raises(ValidationError, match="cannot be enforced"):
        precheck_pod(unheld, image_app, bounding=held)
    app = App(user="0", group="0", exec=("/bin/true", "a\0b"))
    with pytest.raises(ValidationError, match="NUL"):
        precheck_pod(PodManifest(apps=(RuntimeApp("web", RuntimeImage(ID), app),)), image_app)
    with pytest.raises(ValidationError, match="no `app` section"):
        precheck_pod(manifest({"name": "web", "app": False}), image_app)
    with pytest.raises(ValidationError, match="is empty"):
        precheck_pod(manifest({"name": "web", "exec": [""]}), image_app)


def test_oom_score_adj_below_kurmads_needs_cap_sys_resource(tree: Path) -> None:
    """Going below kurmad's own oom_score_adj takes CAP_SYS_RESOURCE (EACCES otherwise, at
    start): without it in kurmad's set such a score is refused at create, naming it."""
    from kurma.runtime._plan import own_oom_score_adj

    held = ALL_CAPS - caps("CAP_SYS_RESOURCE")
    low = own_oom_score_adj() - 1
    if low < -1000:
        pytest.skip("kurmad's own score is the lowest there is")
    oom = "os/linux/oom-score-adj"
    with pytest.raises(ValidationError, match="cannot be enforced") as e:
        app_plan(tree, bounding=held, pod_isolators=[iso(oom, low)])
    assert e.value.path == f"pod isolator {oom}"
    assert app_plan(tree, bounding=ALL_CAPS, isolators=[iso(oom, low)]).oom_score_adj == low
    assert app_plan(tree, bounding=held, isolators=[iso(oom, low + 1)]).oom_score_adj == low + 1
