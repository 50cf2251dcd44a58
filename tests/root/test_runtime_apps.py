"""What an app of a pod runs as and with: identity, environment, exec, working directory,
the Linux and Unix isolators (oom score, sysctls, seccomp), the pod's isolator report,
and a privileged pod. Every test runs real pods and checks from inside them."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from kurma.aci import build_aci
from kurma.errors import ValidationError
from kurma.runtime.linux import Capability, caps_from_mask

from .runtime_support import PodEnv, busybox_rootfs, image_manifest

pytestmark = pytest.mark.root


def iso(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": value}


def env_of(log: str) -> dict[str, str]:
    """`env` output as a dict (values hold no newlines here)."""
    return dict(line.split("=", 1) for line in log.splitlines() if "=" in line)


def host_sysctl(key: str) -> str:
    return Path("/proc/sys", *key.split(".")).read_text().strip()


def status_caps(text: str, key: str) -> frozenset[Capability]:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return caps_from_mask(int(line.split()[1], 16))
    raise AssertionError(f"{key} not in:\n{text}")


def import_with_owners(pods: PodEnv, name: str, owned: dict[str, tuple[int, int]]) -> str:
    """A busybox image keeping the owners on disk (pods.import_image makes all root's),
    with one file per `owned` path, chowned as given."""
    work = Path(tempfile.mkdtemp(dir=pods.work))
    rootfs = busybox_rootfs(work / "rootfs")
    for path, (uid, gid) in owned.items():
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("owned\n")
        os.chown(target, uid, gid)
    aci = work / "image.aci"
    build_aci(rootfs, image_manifest(name), aci, mtime=0)
    return pods.runtime.store.import_image(aci).record.image_id


# --- identity -----------------------------------------------------------------------------------


def test_user_and_group_by_name(pods: PodEnv) -> None:
    """Names resolve through the image's /etc/passwd and /etc/group."""
    app, log = pods.sh("id -u; id -g; id -un", user="app", group="wheel")
    assert app.exit_code == 0, log
    assert log.splitlines() == ["1000", "10", "app"]


def test_user_and_group_by_number(pods: PodEnv) -> None:
    """Numbers need no entry in the image: 4242:4343 exist in neither file."""
    app, log = pods.sh("id -u; id -g", user="4242", group="4343")
    assert app.exit_code == 0, log
    assert log.splitlines() == ["4242", "4343"]


def test_user_and_group_from_the_owner_of_a_path(pods: PodEnv) -> None:
    """`/path` means the owner of that file in the image (uid for user, gid for group)."""
    image = import_with_owners(pods, "example.com/owned", {"/srv/owned": (1234, 4321)})
    record = pods.run(
        {
            "name": "owner",
            "image": image,
            "exec": ["/bin/sh", "-c", "id -u; id -g"],
            "user": "/srv/owned",
            "group": "/srv/owned",
        }
    )
    log = pods.log(record, "owner")
    assert record.apps[0].exit_code == 0, log
    assert log.splitlines() == ["1234", "4321"]


def test_supplementary_gids_are_exactly_the_listed_ones(pods: PodEnv) -> None:
    """supplementaryGIDs are the app's groups; membership in /etc/group adds nothing
    (appc lists the groups explicitly: `app` is in wheel there, yet gets no wheel)."""
    app, log = pods.sh("id -G", user="app", group="app", supplementaryGIDs=[10, 2000])
    assert app.exit_code == 0, log
    assert set(log.split()) == {"1000", "10", "2000"}
    app, log = pods.sh("id -G; cat /proc/self/status | grep ^Groups:", user="app", group="app")
    assert app.exit_code == 0, log
    lines = log.splitlines()
    assert lines[0].split() == ["1000"]
    assert lines[1].split() == ["Groups:"]  # no supplementary group at all


def test_non_root_user_keeps_a_retain_sets_capabilities(pods: PodEnv) -> None:
    """An explicit retain-set is meant for the app whoever it runs as: raised as ambient."""
    retain = iso("os/linux/capabilities-retain-set", {"set": ["CAP_NET_BIND_SERVICE"]})
    app, log = pods.sh(
        "id -u; grep -E '^Cap(Eff|Amb)' /proc/self/status", user="app", isolators=[retain]
    )
    assert app.exit_code == 0, (app.error, log)
    assert log.splitlines()[0] == "1000"
    assert status_caps(log, "CapEff") == {Capability.CAP_NET_BIND_SERVICE}
    assert status_caps(log, "CapAmb") == {Capability.CAP_NET_BIND_SERVICE}


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("user", {"user": "ghost"}),
        ("group", {"group": "ghosts"}),
        ("user", {"user": "/no/such/file"}),
    ],
)
def test_unknown_user_or_group_is_rejected_at_create(
    pods: PodEnv, field: str, fields: dict[str, str]
) -> None:
    """Nothing starts: create_pod raises naming the app and the field, and keeps no pod."""
    manifest = pods.manifest({"name": "lost", "exec": ["/bin/true"], **fields})
    with pytest.raises(ValidationError) as info:
        pods.runtime.create_pod(manifest)
    message = str(info.value)
    assert "'lost'" in message and field in message, message
    assert next(iter(fields.values())) in message, message
    assert pods.runtime.list_pods() == []
    assert list((pods.state_dir / "pods").iterdir()) == []


# --- environment, exec, working directory ---------------------------------------------------------


def test_environment_is_exactly_the_executors_and_the_manifests(pods: PodEnv) -> None:
    """ace.md: PATH, AC_APP_NAME, AC_METADATA_URL, container; then the app's own."""
    record = pods.run(
        {
            "name": "envy",
            "exec": ["/bin/env"],  # no shell in between: it would add PWD, SHLVL ...
            "environment": [{"name": "FOO", "value": "bar baz"}, {"name": "EMPTY", "value": ""}],
        }
    )
    log = pods.log(record, "envy")
    assert record.apps[0].exit_code == 0, log
    env = env_of(log)
    assert set(env) == {"PATH", "AC_APP_NAME", "AC_METADATA_URL", "container", "FOO", "EMPTY"}
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["AC_APP_NAME"] == "envy"
    assert env["AC_METADATA_URL"].startswith("http://127.0.0.1:8775/")
    assert len(env["AC_METADATA_URL"].rsplit("/", 1)[1]) >= 22  # a token of >= 128 bits
    assert env["container"] == "kurma"
    assert (env["FOO"], env["EMPTY"]) == ("bar baz", "")


def test_manifest_path_replaces_the_default_but_ac_variables_stay_the_executors(
    pods: PodEnv,
) -> None:
    environment = [
        {"name": "PATH", "value": "/opt/tools:/bin"},
        {"name": "AC_APP_NAME", "value": "impostor"},
        {"name": "AC_METADATA_URL", "value": "http://evil.example/"},
    ]
    record = pods.run({"name": "pathy", "exec": ["/bin/env"], "environment": environment})
    env = env_of(pods.log(record, "pathy"))
    assert env["PATH"] == "/opt/tools:/bin"
    assert env["AC_APP_NAME"] == "pathy"
    assert env["AC_METADATA_URL"].startswith("http://127.0.0.1:8775/")


def test_exec_without_a_slash_is_found_through_path(pods: PodEnv) -> None:
    """`sh` is searched in the app's PATH (the default one holds /bin)."""
    record = pods.run({"name": "bare", "exec": ["sh", "-c", "echo found $0"]})
    log = pods.log(record, "bare")
    assert record.apps[0].exit_code == 0, log
    assert log.strip() == "found sh"


def test_exec_uses_the_manifests_path(pods: PodEnv) -> None:
    """A manifest PATH without /bin: `sh` is not found, and the pod says so (exit 127)."""
    record = pods.run(
        {
            "name": "nopath",
            "exec": ["sh", "-c", "true"],
            "environment": [{"name": "PATH", "value": "/usr/local/bin"}],
        }
    )
    app = record.apps[0]
    assert app.exit_code == 127
    assert app.error is not None and "'sh'" in app.error and "/usr/local/bin" in app.error


def test_working_directory_is_honoured(pods: PodEnv) -> None:
    app, log = pods.sh("pwd", workingDirectory="/home/app")
    assert app.exit_code == 0, log
    assert log.strip() == "/home/app"
    app, log = pods.sh("pwd")
    assert log.strip() == "/"


def test_missing_working_directory_fails_the_start(pods: PodEnv) -> None:
    app, _log = pods.sh("pwd", workingDirectory="/no/such/dir")
    assert app.exit_code == 125
    assert app.error is not None and "/no/such/dir" in app.error


# --- Linux and Unix isolators ------------------------------------------------------------------


def test_oom_score_adj_is_visible_in_the_app(pods: PodEnv) -> None:
    app, log = pods.sh(
        "cat /proc/self/oom_score_adj", isolators=[iso("os/linux/oom-score-adj", 667)]
    )
    assert app.exit_code == 0, log
    assert log.strip() == "667"


def test_sysctls_are_set_inside_the_pod_only(pods: PodEnv) -> None:
    """Pod-scoped os/unix/sysctl: the pod's own netns gets them, the host keeps its values."""
    keys = ("net.ipv4.ip_forward", "net.core.somaxconn", "net.ipv4.tcp_keepalive_time")
    before = {k: host_sysctl(k) for k in keys}
    wanted = {"net.ipv4.ip_forward": "1", "net.core.somaxconn": "1234"}
    wanted["net.ipv4.tcp_keepalive_time"] = "321"
    record = pods.run(
        {
            "name": "tuned",
            "exec": [
                "/bin/sh",
                "-c",
                "cat " + " ".join("/proc/sys/" + k.replace(".", "/") for k in keys),
            ],
        },
        isolators=[iso("os/unix/sysctl", wanted)],
    )
    log = pods.log(record, "tuned")
    assert record.apps[0].exit_code == 0, log
    assert log.split() == [wanted[k] for k in keys]
    assert {k: host_sysctl(k) for k in keys} == before
    assert before != wanted  # the test would prove nothing otherwise


def test_a_sysctl_of_the_host_is_rejected_at_create(pods: PodEnv) -> None:
    before = host_sysctl("kernel.panic")
    manifest = pods.manifest(
        {"name": "panicky", "exec": ["/bin/true"]},
        isolators=[iso("os/unix/sysctl", {"kernel.panic": "42"})],
    )
    with pytest.raises(ValidationError) as info:
        pods.runtime.create_pod(manifest)
    assert "kernel.panic" in str(info.value)
    assert pods.runtime.list_pods() == []
    assert host_sysctl("kernel.panic") == before


def test_a_net_sysctl_is_rejected_for_a_pod_in_the_hosts_network(pods: PodEnv) -> None:
    """net.* belongs to the host when the pod shares the host's netns."""
    manifest = pods.manifest(
        {"name": "hostnet", "exec": ["/bin/true"]},
        isolators=[
            iso("os/linux/namespaces", {"net": "host"}),
            iso("os/unix/sysctl", {"net.ipv4.ip_forward": "1"}),
        ],
    )
    with pytest.raises(ValidationError, match=r"net\.ipv4\.ip_forward"):
        pods.runtime.create_pod(manifest)


def test_seccomp_remove_set_blocks_those_syscalls_with_the_errno(pods: PodEnv) -> None:
    remove = iso("os/linux/seccomp-remove-set", {"set": ["mkdir", "mkdirat"], "errno": "EPERM"})
    app, log = pods.sh(
        "mkdir /tmp/d 2>&1; echo status=$?; touch /tmp/f && echo touched;"
        " grep Seccomp: /proc/self/status",
        isolators=[remove],
    )
    assert app.exit_code == 0, log
    assert os.strerror(errno.EPERM) in log and "status=1" in log, log
    assert "touched" in log  # everything else works
    assert "Seccomp:\t2" in log


def test_seccomp_remove_set_without_errno_kills_with_sigsys(pods: PodEnv) -> None:
    """ace.md: "If missing or empty, by default blocked syscalls MUST result in app
    termination via SIGSYS signal"."""
    remove = iso("os/linux/seccomp-remove-set", {"set": ["mkdir", "mkdirat"]})
    record = pods.run({"name": "sys", "exec": ["/bin/mkdir", "/tmp/d"], "isolators": [remove]})
    assert record.apps[0].exit_code == 128 + 31  # SIGSYS


# What static busybox `mkdir` calls from exec to exit (strace), without mkdir and mkdirat.
_MKDIR_NEEDS = [
    "arch_prctl", "brk", "exit", "exit_group", "getrandom", "getuid", "mprotect", "prctl",
    "prlimit64", "readlink", "rseq", "set_robust_list", "set_tid_address", "write", "writev",
]  # fmt: skip


def test_seccomp_retain_set_allows_only_its_syscalls_others_fail_with_the_errno(
    pods: PodEnv,
) -> None:
    retain = iso("os/linux/seccomp-retain-set", {"set": _MKDIR_NEEDS, "errno": "EROFS"})
    record = pods.run({"name": "retained", "exec": ["/bin/mkdir", "/tmp/d"], "isolators": [retain]})
    log = pods.log(record, "retained")
    assert record.apps[0].exit_code == 1, log
    assert os.strerror(errno.EROFS) in log, log
    # with mkdir retained as well, the same program succeeds
    retain = iso("os/linux/seccomp-retain-set", {"set": [*_MKDIR_NEEDS, "mkdir", "mkdirat"]})
    record = pods.run({"name": "retained", "exec": ["/bin/mkdir", "/tmp/d"], "isolators": [retain]})
    assert record.apps[0].exit_code == 0, pods.log(record, "retained")


def test_an_unknown_syscall_is_rejected_at_create(pods: PodEnv) -> None:
    """A typo in a seccomp set is the manifest's error, found before anything starts."""
    remove = iso("os/linux/seccomp-remove-set", {"set": ["mkdir", "mkdri"], "errno": "EPERM"})
    manifest = pods.manifest({"name": "typo", "exec": ["/bin/true"], "isolators": [remove]})
    with pytest.raises(ValidationError) as info:
        pods.runtime.create_pod(manifest)
    message = str(info.value)
    assert "'typo'" in message and "mkdri" in message and "seccomp-remove-set" in message
    assert pods.runtime.list_pods() == []


def test_seccomp_wildcards_of_the_spec(pods: PodEnv) -> None:
    """ace.md: a retain-set with @appc.io/all opts out of filtering; a remove-set with
    @appc.io/empty blocks only the executor's default list."""
    everything = iso("os/linux/seccomp-retain-set", {"set": ["@appc.io/all", "read"]})
    app, log = pods.sh("grep Seccomp: /proc/self/status", isolators=[everything])
    assert app.exit_code == 0, (app.error, log)
    assert "Seccomp:\t0" in log
    default = iso("os/linux/seccomp-remove-set", {"set": ["@appc.io/empty", "mkdir"]})
    app, log = pods.sh(
        "mkdir /tmp/d && echo MADE; unshare -u true && echo UNSHARED || echo BLOCKED",
        isolators=[default],
    )
    assert app.exit_code == 0, (app.error, log)
    assert "MADE" in log and "BLOCKED" in log, log  # mkdir masked, Docker's list applies


def test_one_apps_host_network_is_the_whole_pods(pods: PodEnv) -> None:
    """Namespaces belong to the pod: an app asking for the host's network puts its sibling
    there too, and both see the same /sys (the host's, with its submounts)."""
    script = "ls /sys/class/net; ls /sys/fs/cgroup | wc -l"
    record = pods.run(
        {
            "name": "asks",
            "exec": ["/bin/sh", "-c", script],
            "isolators": [iso("os/linux/namespaces", {"net": "host"})],
        },
        {"name": "sibling", "exec": ["/bin/sh", "-c", script]},
    )
    logs = [pods.log(record, a) for a in ("asks", "sibling")]
    assert [a.exit_code for a in record.apps] == [0, 0], logs
    host = sorted(p.name for p in Path("/sys/class/net").iterdir())
    for log in logs:
        *interfaces, cgroup_entries = log.split()
        assert sorted(interfaces) == host
        assert int(cgroup_entries) == len(os.listdir("/sys/fs/cgroup"))


def test_isolator_report_lists_enforced_and_ignored(pods: PodEnv) -> None:
    """ace.md: the executor MUST say which isolators were ignored, enforced or modified."""
    app_isolators = [
        iso("os/linux/oom-score-adj", 100),
        iso("os/linux/capabilities-remove-set", {"set": ["CAP_NET_RAW"]}),
        iso("example.com/x", {"anything": 1}),
    ]
    pod_isolators = [
        iso("resource/cpu", {"request": "100m"}),  # a request alone: nothing to enforce
        iso("example.com/y", True),
        iso("os/unix/sysctl", {"net.core.somaxconn": "512"}),
    ]
    manifest = pods.manifest(
        {"name": "rep", "exec": ["/bin/true"], "isolators": app_isolators}, isolators=pod_isolators
    )
    created = pods.runtime.create_pod(manifest)
    on_disk = json.loads((pods.state_dir / "pods" / created.uuid / "pod.json").read_text())
    for report in (
        created.isolators,
        pods.runtime.get(created.uuid).isolators,
        on_disk["isolators"],
    ):
        by_key = {(r["scope"], r["name"]): r for r in report}
        for key in (
            ("rep", "os/linux/oom-score-adj"),
            ("rep", "os/linux/capabilities-remove-set"),
            ("rep", "os/unix/sysctl"),
        ):
            assert by_key[key]["enforced"] is True, by_key
        for key in (
            ("rep", "example.com/x"),
            ("pod", "example.com/y"),
            ("pod", "resource/cpu"),
        ):
            assert by_key[key]["enforced"] is False, by_key
            assert by_key[key]["note"], by_key[key]  # and says why
    pods.runtime.destroy_pod(created.uuid)


def test_privileged_pod_gets_every_capability_the_host_has_and_a_writable_sys(
    pods: PodEnv,
) -> None:
    host_bounding = status_caps(Path("/proc/self/status").read_text(), "CapBnd")
    record = pods.run(
        {
            "name": "priv",
            "exec": [
                "/bin/sh",
                "-c",
                "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status;"
                " grep ' /sys ' /proc/mounts",
            ],
        },
        isolators=[iso("os/linux/privileged", True)],
    )
    log = pods.log(record, "priv")
    assert record.apps[0].exit_code == 0, log
    assert status_caps(log, "CapEff") == host_bounding
    assert status_caps(log, "CapBnd") == host_bounding
    assert "NoNewPrivs:\t0" in log and "Seccomp:\t0" in log
    sys_options = next(line for line in log.splitlines() if " /sys " in line).split()[3]
    assert sys_options.split(",")[0] == "rw", log
