"""What the launcher needs to start a pod, decided in the daemon from the manifests.

Every isolator is judged here, once, before anything forks: the plan says what each app
gets (argv, environment, identity, capabilities, seccomp, sysctls, limits, its rootfs spec)
and the pod's record lists which isolators were enforced and which ignored, and why. Bad
values are ValidationErrors naming the app and the isolator; nothing has started yet.
"""

from __future__ import annotations

import errno as errnos
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..aci import (
    DEFAULT_CAPABILITIES,
    ApiAccessIsolator,
    App,
    CapabilitiesRemoveSet,
    CapabilitiesRetainSet,
    CPUIsolator,
    CPUSharesIsolator,
    DevicesIsolator,
    ImageManifest,
    Isolator,
    MemoryIsolator,
    NamespacesIsolator,
    NetworksIsolator,
    NoNewPrivilegesIsolator,
    OOMScoreAdjIsolator,
    PodManifest,
    PrivilegedIsolator,
    RuntimeApp,
    SeccompRemoveSet,
    SeccompRetainSet,
    SysctlIsolator,
    UnknownIsolator,
    VolumeKind,
)
from ..errors import ValidationError
from ._etc import EtcFiles
from ._identity import Identity, resolve_identity
from ._netplan import ISOLATOR as NETWORKS_ISOLATOR
from ._netplan import PodNetwork, app_sections, networks_isolator, plan_networks
from ._rootfs import RootfsSpec, rootfs_spec
from ._volumes import Beneath, VolumeBind, place_beneath
from .linux import Capability

API_MOUNT = "/run/kurma"  # where a pod with host/api-access finds its API directory
API_SOCKET_NAME = "api.sock"
API_VOLUME = "@kurma-api"  # the bind's label (not an AC name, so never a pod volume's)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHAREABLE_NAMESPACES = ("net", "ipc", "uts", "pid")

# Sysctls that belong to a namespace the pod owns (runc's list): net.* needs its own netns,
# the IPC ones its own IPC namespace. Everything else would change the host.
_IPC_SYSCTLS = (
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
)


@dataclass(frozen=True)
class Limits:
    """cgroup limits; None means unlimited (or the kernel's default weight)."""

    memory_bytes: int | None = None
    cpu_millicores: int | None = None
    cpu_shares: int | None = None
    pids_max: int | None = None

    def __bool__(self) -> bool:
        return any(
            v is not None
            for v in (self.memory_bytes, self.cpu_millicores, self.cpu_shares, self.pids_max)
        )


@dataclass(frozen=True)
class SeccompPlan:
    """A seccomp filter: `retain` allows only `syscalls`, `remove` blocks them."""

    mode: str  # "retain" | "remove"
    syscalls: tuple[str, ...]
    errno: int | None = errnos.EPERM  # None: a blocked syscall kills the process (SIGSYS)


@dataclass(frozen=True)
class IsolatorOutcome:
    """One line of a pod's isolator report."""

    scope: str  # "pod" or the app's name
    name: str
    enforced: bool
    note: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "name": self.name,
            "enforced": self.enforced,
            "note": self.note,
        }


@dataclass(frozen=True)
class AppPlan:
    """Everything the forked app process does before exec, resolved in advance."""

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    identity: Identity
    capabilities: frozenset[int]
    ambient: bool  # raise the capabilities for a non-root user (an explicit retain-set)
    no_new_privileges: bool
    seccomp: SeccompPlan | None
    oom_score_adj: int | None
    sysctls: tuple[tuple[str, str], ...]
    rootfs: RootfsSpec
    pre_start: tuple[str, ...] | None = None
    post_stop: tuple[str, ...] | None = None
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class PodPlan:
    """A pod ready to launch: namespaces it shares with the host, limits, apps in order."""

    uuid: str
    name: str
    pod_dir: str
    host_namespaces: frozenset[str]
    limits: Limits
    apps: tuple[AppPlan, ...]
    report: tuple[IsolatorOutcome, ...]
    api_access: ApiAccessIsolator | None = None
    # The CNI networks the pod joins (`_netplan`), eth0 first. With any, P1 waits at the
    # network gate (`_netplan.GATE_NAME`) until kurmad has attached them.
    networks: tuple[PodNetwork, ...] = ()

    @property
    def network_gate(self) -> bool:
        return bool(self.networks)


@dataclass(frozen=True)
class AppInput:
    """One app of the pod with what the store gave for it: its image manifest and tree."""

    app: RuntimeApp
    image: ImageManifest
    tree: str
    image_id: str = ""


def plan_pod(
    uuid: str,
    name: str,
    pod: PodManifest,
    apps: Sequence[AppInput],
    *,
    pod_dir: str,
    etc: EtcFiles | None,
    metadata_url: str | None,
    pids_max: int | None = None,
    api_dir: str | None = None,
    beneath: Beneath | None = None,
    bounding: frozenset[int] | None = None,
) -> PodPlan:
    """Judge every isolator and resolve every app; raises ValidationError naming the culprit.

    Pod-level capabilities and seccomp isolators bound every app (see `_PodSecurity`);
    `bounding`: the capabilities this process can hand on (default: its own bounding and
    permitted sets); one a retain-set names explicitly beyond them is an error here.

    `api_dir`: the pod's API directory (kurmad serves `api.sock` in it). A pod with
    host/api-access gets it bound read-only at /run/kurma in every app, and KURMA_HOST set;
    without `api_dir` (a runtime without kurmad) the isolator is reported as ignored.
    `beneath`: a pod that a pod created: where its host sources really are (`_confine`).
    """
    report: list[IsolatorOutcome] = []
    host_ns = _host_namespaces(pod, apps, report)
    networks = plan_networks(pod, [(i.app, i.app.app or i.image.app) for i in apps], host_ns)
    if networks_isolator(pod.isolators) is not None:
        note = ", ".join(f"{n.name} ({n.ifname})" for n in networks) or "loopback only"
        report.append(IsolatorOutcome("pod", NETWORKS_ISOLATOR, True, note))
    pod_caps = _pod_grants(pod.isolators, "pod", report)
    security = _pod_security(
        pod.isolators, report, held_capabilities() if bounding is None else bounding
    )
    pod_limits = _limits(pod.isolators, "pod", report, pids_max)
    api = next((i for i in pod.isolators if isinstance(i, ApiAccessIsolator)), None)
    if api is None:
        api_dir = None
    planned = tuple(
        _plan_app(
            pod,
            item,
            pod_dir,
            etc,
            metadata_url,
            host_ns,
            pod_caps,
            report,
            api_dir,
            beneath,
            security,
        )
        for item in apps
    )
    if api is not None and api_dir is not None:
        note = f"scope {api.scope.value}: socket at {API_MOUNT}/{API_SOCKET_NAME}, KURMA_HOST set"
        report = [
            IsolatorOutcome("pod", o.name, True, note)
            if (o.scope, o.name) == ("pod", api.name)
            else o
            for o in report
        ]
    return PodPlan(uuid, name, pod_dir, host_ns, pod_limits, planned, tuple(report), api, networks)


def precheck_pod(
    pod: PodManifest,
    image_app: Callable[[RuntimeApp], App | None],
    *,
    bounding: frozenset[int] | None = None,
) -> dict[str, int | None]:
    """Judge what can be judged from the manifests alone, before anything exists (no pod
    directory, no held image, no cgroup): NUL bytes, an app with nothing to run, and every
    isolator (capabilities and seccomp within the pod's, sysctls, limits), as `plan_pod`
    will. `image_app(app)`: the `app` section of the app's image (ImageNotFound if none).
    Returns each app's oom_score_adj (None: inherited), for `_confine.check_oom_within`."""
    check_strings(pod, "pod manifest")
    report: list[IsolatorOutcome] = []
    bounding = held_capabilities() if bounding is None else bounding
    inputs = []
    for runtime_app in pod.apps:
        app = runtime_app.app or image_app(runtime_app)
        if app is None:
            raise ValidationError(
                f"app {runtime_app.name!r}",
                "neither the pod nor the image says how to run it (no `app` section)",
            )
        if not app.exec:
            raise ValidationError(f"app {runtime_app.name!r} exec", "no command to run")
        check_app_strings(runtime_app.name, app)
        inputs.append((runtime_app.name, app))
    host_ns = frozenset(
        ns
        for iso in (*pod.isolators, *(i for _, app in inputs for i in app.isolators))
        if isinstance(iso, NamespacesIsolator)
        for ns in iso.host
    )
    plan_networks(pod, app_sections(pod, lambda a: dict(inputs)[a.name]), host_ns)
    pod_grants = _pod_grants(pod.isolators, "pod", report)
    security = _pod_security(pod.isolators, report, bounding)
    _limits(pod.isolators, "pod", report, None)
    scores: dict[str, int | None] = {}
    for name, app in inputs:
        privileged = _pod_grants(app.isolators, name, report).over(pod_grants).privileged
        _capabilities(app.isolators, name, report, privileged, security)
        _no_new_privileges(app.isolators, pod.isolators, name, report, privileged)
        _seccomp(app.isolators, name, report, privileged, security)
        _sysctls((*pod.isolators, *app.isolators), name, report, host_ns)
        _limits(app.isolators, name, report, None)
        oom = _oom_score(app.isolators, pod.isolators, name, bounding)
        scores[name] = None if oom is None else oom.score
    return scores


def _effective_app(item: AppInput) -> App:
    app = item.app.app or item.image.app
    if app is None:
        raise ValidationError(
            f"app {item.app.name!r}",
            "neither the pod nor the image says how to run it (no `app` section)",
        )
    return app


def _plan_app(
    pod: PodManifest,
    item: AppInput,
    pod_dir: str,
    etc: EtcFiles | None,
    metadata_url: str | None,
    host_ns: frozenset[str],
    pod_grants: _Grants,
    report: list[IsolatorOutcome],
    api_dir: str | None = None,
    beneath: Beneath | None = None,
    security: _PodSecurity | None = None,
) -> AppPlan:
    name = item.app.name
    app = _effective_app(item)
    if not app.exec:
        raise ValidationError(f"app {name!r} exec", "no command to run")
    check_app_strings(name, app)
    security = security or _PodSecurity(bounding=frozenset(int(c) for c in Capability))
    isolators = app.isolators
    grants = _pod_grants(isolators, name, report).over(pod_grants)
    privileged = grants.privileged
    caps = _capabilities(isolators, name, report, privileged, security)
    nnp = _no_new_privileges(isolators, pod.isolators, name, report, privileged)
    seccomp = _seccomp(isolators, name, report, privileged, security)
    sysctls = _sysctls((*pod.isolators, *isolators), name, report, host_ns)
    oom = _oom_score(isolators, pod.isolators, name, security.bounding)
    if oom is not None:
        report.append(IsolatorOutcome(name, oom.name, True, f"oom_score_adj {oom.score}"))
    identity = resolve_identity(item.tree, name, app)
    retain_given = (
        _last(isolators, CapabilitiesRetainSet) is not None or security.caps_retain is not None
    )
    handlers = {h.name: h.exec for h in app.event_handlers}
    run_dir = os.path.join(pod_dir, "apps", name)
    spec = rootfs_spec(
        pod,
        item.app,
        item.image.app,
        tree=item.tree,
        run_dir=run_dir,
        volumes_dir=os.path.join(pod_dir, "volumes"),
        etc=etc,
    )
    # The namespaces are the pod's: one app's {"net": "host"} puts every app there, so each
    # gets the host's /sys (rootfs_spec sees only the pod's and this app's isolators).
    spec = replace(
        spec, own_netns="net" not in host_ns, volumes=place_beneath(spec.volumes, beneath)
    )
    env = app_environment(name, app.environment, metadata_url)
    if api_dir is not None:
        bind = VolumeBind(API_VOLUME, VolumeKind.HOST, api_dir, API_MOUNT, True, False)
        spec = replace(spec, volumes=(*spec.volumes, bind))
        host = f"unix://{API_MOUNT}/{API_SOCKET_NAME}"
        env = (*((k, v) for k, v in env if k != "KURMA_HOST"), ("KURMA_HOST", host))
    return AppPlan(
        name=name,
        argv=tuple(app.exec),
        env=env,
        identity=identity,
        capabilities=caps,
        ambient=retain_given or privileged,
        no_new_privileges=nnp,
        seccomp=seccomp,
        oom_score_adj=None if oom is None else oom.score,
        sysctls=sysctls,
        rootfs=spec,
        pre_start=handlers.get("pre-start"),
        post_stop=handlers.get("post-stop"),
        limits=_limits(isolators, name, report, None),
    )


def check_strings(value: object, path: str) -> None:
    """ValidationError naming the first string with a NUL byte anywhere in `value` (a
    manifest or a part of it, walked through its dataclass fields, tuples and maps).

    The parser refuses NUL already; this holds for manifests built in Python too (a
    service's, a RunSpec's), and for images stored before the parser did. Every such
    string may reach a syscall (argv, environment, paths, sysctls, names, annotations
    that become files), so it is refused at create, before anything exists."""
    if isinstance(value, str):
        if "\0" in value:
            raise ValidationError(path, "contains a NUL byte")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_strings(key, f"{path}.{key!r}")
            check_strings(item, f"{path}.{key}")
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            check_strings(item, f"{path}[{i}]")
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            check_strings(getattr(value, name), f"{path}.{name}")


def check_app_strings(name: str, app: App) -> None:
    """`check_strings` for one app's effective `app` section (the image's or the pod's),
    and a program to run (an empty exec[0] would fail only at start, as ENOENT)."""
    check_strings(app, f"app {name!r}")
    if app.exec and not app.exec[0]:
        raise ValidationError(f"app {name!r} exec[0]", "is empty: give the program to run")


def app_environment(
    app_name: str, manifest_env: Mapping[str, str], metadata_url: str | None
) -> tuple[tuple[str, str], ...]:
    """PATH, AC_APP_NAME, AC_METADATA_URL, container=kurma, then the manifest's.

    The manifest may set PATH (appc: the default applies only when the app does not), but
    never the AC_ variables the executor owns.
    """
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "AC_APP_NAME": app_name}
    if metadata_url is not None:
        env["AC_METADATA_URL"] = metadata_url
    env["container"] = "kurma"
    for key, value in manifest_env.items():
        if key not in ("AC_APP_NAME", "AC_METADATA_URL"):
            env[key] = value
    return tuple(env.items())


# --- pod-wide grants: privileged, devices, host namespaces ------------------------------------


@dataclass(frozen=True)
class _Grants:
    privileged: bool = False

    def over(self, pod: _Grants) -> _Grants:
        return _Grants(self.privileged or pod.privileged)


def _pod_grants(
    isolators: Iterable[Isolator], scope: str, report: list[IsolatorOutcome]
) -> _Grants:
    privileged = False
    for iso in isolators:
        if isinstance(iso, PrivilegedIsolator):
            privileged = iso.privileged
            report.append(
                IsolatorOutcome(
                    scope,
                    iso.name,
                    True,
                    "all capabilities, all devices, writable /sys, no seccomp"
                    if iso.privileged
                    else "not privileged",
                )
            )
        elif isinstance(iso, DevicesIsolator):
            report.append(IsolatorOutcome(scope, iso.name, True, " ".join(iso.devices)))
        elif isinstance(iso, ApiAccessIsolator):
            report.append(
                IsolatorOutcome(
                    scope, iso.name, False, "the API socket comes with kurmad (not running here)"
                )
            )
        elif not _is_judged_elsewhere(iso):
            _unsupported(iso, scope, report)
    return _Grants(privileged)


# Namespaces of isolator names the spec and Kurma own: an unknown name there is a typo or a
# newer spec's isolator, and running without it would be running without what was asked.
_OWN_NAMESPACES = ("resource/", "os/", "host/")


def _unsupported(iso: Isolator, scope: str, report: list[IsolatorOutcome]) -> None:
    """An isolator this executor does not enforce: an error when it is one it knows (a
    block-IO or network bandwidth limit, an SELinux context) or one in the spec's or Kurma's
    namespaces; another party's isolator is ignored and reported (ace.md allows that)."""
    where = f"{'pod' if scope == 'pod' else f'app {scope!r}'} isolator {iso.name}"
    if not isinstance(iso, UnknownIsolator):
        raise ValidationError(where, "cannot be enforced: this executor does not support it")
    if iso.name.startswith(_OWN_NAMESPACES):
        raise ValidationError(
            where, "cannot be enforced: not an isolator this executor knows (a typo?)"
        )
    report.append(IsolatorOutcome(scope, iso.name, False, "not supported by this executor"))


_JUDGED_ELSEWHERE = (
    CapabilitiesRetainSet,
    CapabilitiesRemoveSet,
    NoNewPrivilegesIsolator,
    SeccompRetainSet,
    SeccompRemoveSet,
    SysctlIsolator,
    OOMScoreAdjIsolator,
    CPUIsolator,
    MemoryIsolator,
    CPUSharesIsolator,
    NamespacesIsolator,
    NetworksIsolator,
)


def _is_judged_elsewhere(iso: Isolator) -> bool:
    return isinstance(iso, _JUDGED_ELSEWHERE)


def host_namespaces(pod: PodManifest, apps: Sequence[AppInput]) -> frozenset[str]:
    """The namespaces the pod shares with the host (known before planning: the metadata
    URL depends on whether it has a network of its own)."""
    return _host_namespaces(pod, apps, [])


def _host_namespaces(
    pod: PodManifest, apps: Sequence[AppInput], report: list[IsolatorOutcome]
) -> frozenset[str]:
    """Namespaces shared with the host. They are the pod's, so an app's request is pod-wide."""
    host: set[str] = set()
    sources: list[tuple[str, tuple[Isolator, ...]]] = [("pod", pod.isolators)]
    for item in apps:
        app = item.app.app or item.image.app
        sources.append((item.app.name, app.isolators if app else ()))
    for scope, isolators in sources:
        for iso in isolators:
            if isinstance(iso, NamespacesIsolator):
                host.update(iso.host)
                note = ("host " + ", ".join(iso.host)) if iso.host else "all the pod's own"
                if scope != "pod" and iso.host:
                    note += " (pod-wide: namespaces are shared by the pod's apps)"
                report.append(IsolatorOutcome(scope, iso.name, True, note))
    return frozenset(host)


# --- capabilities, no-new-privileges, seccomp ------------------------------------------------


def _last(isolators: Iterable[Isolator], kind: type) -> object | None:
    found = None
    for iso in isolators:
        if isinstance(iso, kind):
            found = iso
    return found


def _cap(name: str, where: str) -> Capability:
    try:
        return Capability.from_name(name)
    except (KeyError, ValueError):
        raise ValidationError(where, f"unknown capability {name!r}") from None


@dataclass(frozen=True)
class _PodSecurity:
    """The pod-level capabilities and seccomp isolators, judged once for every app.

    Capabilities: a pod-level retain-set is what every app gets, and an app's own
    retain-set must lie within it; a pod-level remove-set is taken from every app's default
    (the spec's 14, or all for a privileged app) and no app's retain-set may name one of
    those. An app's remove-set narrows further. Asking beyond the pod's set is a
    ValidationError naming both isolators (refused, not narrowed in silence).

    Seccomp: a pod-level set is every app's filter; an app's own set narrows it: two
    remove-sets block the union, a retain-set under a retain-set must lie within it, a
    remove-set under a retain-set takes those calls out of it, and a retain-set under a
    remove-set may allow none of the calls the pod blocks. An app's set that would allow
    what the pod's blocks (or `@appc.io/all` under a pod filter) is refused.
    """

    bounding: frozenset[int]
    caps_retain: frozenset[int] | None = None
    caps_remove: frozenset[int] = frozenset()
    caps_source: str = ""  # the pod-level capabilities isolator's name, "" without one
    seccomp: SeccompPlan | None = None
    seccomp_source: str = ""  # the pod-level seccomp isolator's name, "" without one


@functools.cache
def held_capabilities() -> frozenset[int]:
    """The capabilities this process can hand on: its bounding set within its permitted
    set (CAP_SYS_RESOURCE is not in these test hosts' bounding set)."""
    from .linux import read_status_capabilities

    try:
        status = read_status_capabilities()
    except OSError:
        return frozenset(int(c) for c in Capability)
    return frozenset(int(c) for c in status["CapBnd"] & status["CapPrm"])


def _pod_security(
    isolators: Sequence[Isolator], report: list[IsolatorOutcome], bounding: frozenset[int]
) -> _PodSecurity:
    security = _PodSecurity(bounding=bounding)
    retain = _last(isolators, CapabilitiesRetainSet)
    remove = _last(isolators, CapabilitiesRemoveSet)
    if isinstance(retain, CapabilitiesRetainSet):
        where = f"pod isolator {retain.name}"
        asked = frozenset(int(_cap(c, where)) for c in retain.capabilities)
        _check_bounding(asked, bounding, where)
        note = " ".join(retain.capabilities) + " (every app; an app's own set within it)"
        report.append(IsolatorOutcome("pod", retain.name, True, note))
        security = replace(security, caps_retain=asked, caps_source=retain.name)
    if isinstance(remove, CapabilitiesRemoveSet):
        where = f"pod isolator {remove.name}"
        removed = frozenset(int(_cap(c, where)) for c in remove.capabilities)
        note = " ".join(remove.capabilities) + " (removed from every app)"
        report.append(IsolatorOutcome("pod", remove.name, True, note))
        security = replace(security, caps_remove=removed, caps_source=remove.name)
    chosen = _seccomp_set(isolators, "pod", report)
    if chosen is not None:
        iso, plan = chosen
        security = replace(security, seccomp=plan, seccomp_source=iso.name)
    return security


def _check_bounding(asked: frozenset[int], bounding: frozenset[int], where: str) -> None:
    missing = asked - bounding
    if missing:
        raise ValidationError(
            where,
            f"cannot be enforced: {_names(missing)} not in the capabilities kurmad holds "
            f"(its bounding set); no process it starts can have them",
        )


def _names(caps: Iterable[int]) -> str:
    return ", ".join(sorted(Capability(c).name for c in caps))


def _capabilities(
    isolators: Sequence[Isolator],
    app: str,
    report: list[IsolatorOutcome],
    privileged: bool,
    security: _PodSecurity,
) -> frozenset[int]:
    """The default bounding set (DESIGN.md), replaced by a retain-set, minus a remove-set,
    within the pod-level ones (`_PodSecurity`) and what kurmad holds."""
    retain = _last(isolators, CapabilitiesRetainSet)
    remove = _last(isolators, CapabilitiesRemoveSet)
    if security.caps_retain is not None:
        caps = security.caps_retain
        bound = security.caps_retain
    else:
        if privileged:
            caps = frozenset(int(c) for c in Capability)
        else:
            caps = frozenset(int(_cap(c, "default")) for c in DEFAULT_CAPABILITIES)
        caps = caps - security.caps_remove
        bound = frozenset(int(c) for c in Capability) - security.caps_remove
    if isinstance(retain, CapabilitiesRetainSet):
        where = f"app {app!r} isolator {retain.name}"
        asked = frozenset(int(_cap(c, where)) for c in retain.capabilities)
        beyond = asked - bound
        if beyond:
            raise ValidationError(
                where,
                f"{_names(beyond)} beyond the pod-level {security.caps_source} "
                f"(an app's set narrows the pod's, it cannot widen it)",
            )
        _check_bounding(asked, security.bounding, where)
        caps = asked
        report.append(IsolatorOutcome(app, retain.name, True, " ".join(retain.capabilities)))
    if isinstance(remove, CapabilitiesRemoveSet):
        where = f"app {app!r} isolator {remove.name}"
        caps = caps - {int(_cap(c, where)) for c in remove.capabilities}
        report.append(IsolatorOutcome(app, remove.name, True, " ".join(remove.capabilities)))
    return caps & security.bounding


def _no_new_privileges(
    isolators: Sequence[Isolator],
    pod_isolators: Sequence[Isolator],
    app: str,
    report: list[IsolatorOutcome],
    privileged: bool,
) -> bool:
    """On unless the app (or pod) asks otherwise; a privileged pod has it off by default.
    An app may turn it on where the pod has it off, not off where the pod turns it on."""
    own = _last(isolators, NoNewPrivilegesIsolator)
    pod = _last(pod_isolators, NoNewPrivilegesIsolator)
    lifted = isinstance(own, NoNewPrivilegesIsolator) and not own.enabled
    if lifted and isinstance(pod, NoNewPrivilegesIsolator) and pod.enabled:
        raise ValidationError(
            f"app {app!r} isolator {NoNewPrivilegesIsolator.name}",
            "off would lift the pod-level one, which is on (an app's isolators narrow "
            "the pod's, they cannot widen them)",
        )
    iso = own or pod
    if isinstance(iso, NoNewPrivilegesIsolator):
        report.append(IsolatorOutcome(app, iso.name, True, "on" if iso.enabled else "off"))
        return iso.enabled
    return not privileged


def _seccomp_set(
    isolators: Sequence[Isolator], scope: str, report: list[IsolatorOutcome]
) -> tuple[Isolator, SeccompPlan | None] | None:
    """The retain- or remove-set of one isolator list as a plan (None: `@appc.io/all`, no
    filter), with its isolator; None when the list has neither."""
    retain = _last(isolators, SeccompRetainSet)
    remove = _last(isolators, SeccompRemoveSet)
    who = "pod" if scope == "pod" else f"app {scope!r}"
    if retain is not None and remove is not None:
        raise ValidationError(
            f"{who} isolators", "seccomp-retain-set and seccomp-remove-set exclude each other"
        )
    chosen = retain or remove
    if not isinstance(chosen, SeccompRetainSet | SeccompRemoveSet):
        return None
    where = f"{who} isolator {chosen.name}"
    err = _errno(chosen.errno, where + " errno")
    mode = "retain" if isinstance(chosen, SeccompRetainSet) else "remove"
    _check_syscalls(chosen.syscalls, mode, where)
    every = " (every app)" if scope == "pod" else ""
    if mode == "retain" and ALL_SYSCALLS in chosen.syscalls:
        report.append(IsolatorOutcome(scope, chosen.name, True, f"{ALL_SYSCALLS}: no filter"))
        return chosen, None
    if mode == "remove" and NO_SYSCALLS in chosen.syscalls:
        note = f"{NO_SYSCALLS}: the default blocked list{every}"
        report.append(IsolatorOutcome(scope, chosen.name, True, note))
        return chosen, SeccompPlan("remove", default_seccomp().syscalls, err)
    syscalls = tuple(chosen.syscalls)
    if mode == "retain":  # the exec into the app itself must pass the filter
        syscalls = tuple(dict.fromkeys((*syscalls, "execve")))
    note = f"{len(chosen.syscalls)} syscalls{every}"
    report.append(IsolatorOutcome(scope, chosen.name, True, note))
    return chosen, SeccompPlan(mode, syscalls, err)


def _seccomp(
    isolators: Sequence[Isolator],
    app: str,
    report: list[IsolatorOutcome],
    privileged: bool,
    security: _PodSecurity | None = None,
) -> SeccompPlan | None:
    """The app's retain- or remove-set within the pod's (`_PodSecurity`), else the pod's,
    else Docker's default blocked list (none if privileged)."""
    own = _seccomp_set(isolators, app, report)
    pod_source = security.seccomp_source if security is not None else ""
    if not pod_source:
        if own is not None:
            return own[1]
        return None if privileged else default_seccomp()
    assert security is not None
    pod = security.seccomp
    if own is None:
        return pod
    iso, mine = own
    return _narrow(pod, mine, f"app {app!r} isolator {iso.name}", pod_source)


def _narrow(
    pod: SeccompPlan | None, app: SeccompPlan | None, where: str, pod_source: str
) -> SeccompPlan | None:
    """The app's filter within the pod's; ValidationError where it would allow more."""
    if pod is None:
        return app
    if app is None:
        raise ValidationError(
            where, f"{ALL_SYSCALLS} (no filter) would lift the pod-level {pod_source}"
        )
    if pod.mode == "remove" and app.mode == "remove":
        return SeccompPlan("remove", tuple(sorted({*pod.syscalls, *app.syscalls})), app.errno)
    if pod.mode == "retain" and app.mode == "remove":
        removed = set(app.syscalls) - {"execve"}
        kept = tuple(s for s in pod.syscalls if s not in removed)
        return SeccompPlan("retain", kept, app.errno)
    if pod.mode == "retain":  # and the app's a retain-set
        beyond = set(app.syscalls) - set(pod.syscalls)
        if beyond:
            raise ValidationError(
                where,
                f"allows {', '.join(sorted(beyond))}, outside the pod-level {pod_source} "
                f"(an app's set narrows the pod's, it cannot widen it)",
            )
        return app
    blocked = set(app.syscalls) & set(pod.syscalls)  # pod remove-set, app retain-set
    if blocked:
        raise ValidationError(
            where,
            f"allows {', '.join(sorted(blocked))}, which the pod-level {pod_source} blocks "
            f"(an app's set narrows the pod's, it cannot widen it)",
        )
    return app


@functools.cache
def default_seccomp() -> SeccompPlan:
    """Docker's default: allow everything but what it blocks (the launcher prebuilds it)."""
    from .linux import docker_default_blocked

    return SeccompPlan("remove", tuple(sorted(docker_default_blocked())))


# ace.md's wildcards: every syscall (a retain-set with it filters nothing) and none (a
# remove-set with it blocks only the executor's default list).
ALL_SYSCALLS = "@appc.io/all"
NO_SYSCALLS = "@appc.io/empty"


def _check_syscalls(names: Iterable[str], mode: str, where: str) -> None:
    """Every name a syscall libseccomp knows, every wildcard the spec's for this kind of set.

    Checked here so a typo is the manifest's error at create, not a failed start.
    """
    from .linux import resolve_syscall

    wildcard = ALL_SYSCALLS if mode == "retain" else NO_SYSCALLS
    for name in names:
        if name.startswith("@"):
            if name != wildcard:
                raise ValidationError(
                    where, f"unknown wildcard {name!r} (a {mode}-set knows only {wildcard})"
                )
            continue
        try:
            resolve_syscall(name)
        except ValueError:
            raise ValidationError(where, f"unknown syscall {name!r}") from None
        except OSError:  # no libseccomp here: the launcher says so when the app starts
            return


def _errno(name: str | None, where: str) -> int | None:
    """The errno a blocked call fails with; None (no `errno` given): ace.md says the app is
    then killed with SIGSYS."""
    if not name:
        return None
    value = getattr(errnos, name, None)
    if not isinstance(value, int):
        raise ValidationError(where, f"unknown errno {name!r}")
    return value


# --- sysctl, oom, resources -------------------------------------------------------------------


def _oom_score(
    isolators: Sequence[Isolator],
    pod_isolators: Sequence[Isolator],
    app: str,
    bounding: frozenset[int],
) -> OOMScoreAdjIsolator | None:
    """The app's oom-score-adj isolator, else the pod's. A score below kurmad's own needs
    CAP_SYS_RESOURCE to write (the kernel says EACCES otherwise): without it, refused."""
    oom = _last(isolators, OOMScoreAdjIsolator) or _last(pod_isolators, OOMScoreAdjIsolator)
    if not isinstance(oom, OOMScoreAdjIsolator):
        return None
    own = own_oom_score_adj()
    if oom.score < own and int(Capability.CAP_SYS_RESOURCE) not in bounding:
        where = "pod" if oom in pod_isolators and oom not in isolators else f"app {app!r}"
        raise ValidationError(
            f"{where} isolator {oom.name}",
            f"cannot be enforced: {oom.score} is below kurmad's own oom_score_adj ({own}), "
            f"which only a holder of CAP_SYS_RESOURCE may go below (kurmad does not hold it)",
        )
    return oom


def own_oom_score_adj() -> int:
    """This process's oom_score_adj (what a pod's processes inherit)."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _sysctls(
    isolators: Sequence[Isolator],
    app: str,
    report: list[IsolatorOutcome],
    host_ns: frozenset[str],
) -> tuple[tuple[str, str], ...]:
    """Namespaced sysctls only; one that would change the host is an error, not a no-op."""
    result: dict[str, str] = {}
    for iso in isolators:
        if not isinstance(iso, SysctlIsolator):
            continue
        for key, value in iso.parameters.items():
            where = f"app {app!r} isolator os/unix/sysctl {key}"
            own_net = key.startswith("net.") and "net" not in host_ns
            own_ipc = (key in _IPC_SYSCTLS or key.startswith("fs.mqueue.")) and "ipc" not in host_ns
            if not (own_net or own_ipc):
                raise ValidationError(
                    where,
                    "not a sysctl of a namespace the pod owns (only "
                    "net.* with its own network, and the IPC ones)",
                )
            if "/" in key or ".." in key or any(c.isspace() for c in key):
                raise ValidationError(where, "not a sysctl name")
            result[key] = value
        report.append(IsolatorOutcome(app, iso.name, True, " ".join(iso.parameters)))
    return tuple(result.items())


MIN_MEMORY_BYTES = 1 << 20  # a pod's own init and shell need more than this


def _limits(
    isolators: Iterable[Isolator],
    scope: str,
    report: list[IsolatorOutcome],
    pids_max: int | None,
) -> Limits:
    """cgroup limits; a limit no cgroup can enforce (a memory limit below 1 MiB, a CPU
    limit of 0) is a ValidationError here, not a failed start."""
    memory = cpu = shares = None
    who = "pod" if scope == "pod" else f"app {scope!r}"
    for iso in isolators:
        if isinstance(iso, MemoryIsolator):
            memory = iso.limit.value if iso.limit is not None else None
            if memory is not None and memory < MIN_MEMORY_BYTES:
                raise ValidationError(
                    f"{who} isolator {iso.name} limit",
                    f"cannot be enforced: {iso.limit.text} is below {MIN_MEMORY_BYTES} bytes, "
                    f"less than a pod's own init needs",
                )
            report.append(
                IsolatorOutcome(
                    scope,
                    iso.name,
                    memory is not None,
                    f"limit {iso.limit.text}"
                    if memory is not None
                    else "a request alone is not enforced",
                )
            )
        elif isinstance(iso, CPUIsolator):
            cpu = iso.limit.milli_value if iso.limit is not None else None
            if cpu is not None and cpu < 1:
                raise ValidationError(
                    f"{who} isolator {iso.name} limit",
                    f"cannot be enforced: {iso.limit.text} CPUs (give 1m at least)",
                )
            report.append(
                IsolatorOutcome(
                    scope,
                    iso.name,
                    cpu is not None,
                    f"limit {iso.limit.text}"
                    if cpu is not None
                    else "a request alone is not enforced",
                )
            )
        elif isinstance(iso, CPUSharesIsolator):
            shares = iso.shares
            report.append(IsolatorOutcome(scope, iso.name, True, f"{iso.shares} shares"))
    return Limits(memory, cpu, shares, pids_max)
