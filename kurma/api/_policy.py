"""Who may do what: one table of the kinds of caller, one function that decides.

Every call comes from one kind of caller (`kind_of(view)`), and `TABLE` says what that kind
may do; `authorize` checks a planned pod (every isolator already judged, see the runtime's
`_plan`) against that row, for Create, Start and Exec alike, whether the caller holds a
certificate or calls on a pod's own socket. The method interceptors ask the same table
(`may_call`): `_authz.RoleInterceptor` for certificates, `_podsockets.ScopeInterceptor`
for pods' sockets.

    caller             methods             grants host   its pods must stay    starts and
                       (METHOD_ROLES)      api-access    within                execs into
    system socket      admin               yes           -                     any pod
    admin cert         admin               yes           -                     any pod
    operator cert      operator            no            the operator policy   pods within it
    reader cert        reader              no            (creates nothing)     (none)
    pod, subtree       operator but        no            its creator (*)       its descendants
                       RestartService
    pod, host-read     reader              no            (creates nothing)     (none)
    pod, host          admin               no            -                     any pod

(*) The least-privilege comparison of `runtime._confine.check_within`: a pod never gives a
child more than it holds itself (the runtime applies it, with `confine_to`). A `host` pod
is the console: the person logged in on the machine's own terminal, who may do what root
on the system socket may, except grant host api-access to new pods.

The operator policy is a fixed ceiling (`Ceiling`), so an operator certificate is not host
root: no `os/linux/privileged`, no host namespace, no host device, no capability beyond the
default bounding set (DESIGN.md), a seccomp filter at least as strict as the default one (no
"seccomp off", no retain-set allowing what the default blocks), `os/linux/oom-score-adj`
>= 0, `host/api-access` at most `subtree`, and `host` volumes only inside the prefixes the
admin lists in kurmad.yml (`operator_host_volumes`, default none). Sysctls need no rule of
their own: without host namespaces the plan admits only those of the pod's own namespaces.

Exec and Start are checked too: an operator may exec into, and start, only a pod that is
itself within the operator policy. Otherwise any pod an admin or the boot made (the
console, with `host` api-access and a host device; a privileged service; a pod with `/`
mounted) would be a door to the host. Stop, Destroy and Logs of such pods stay open to an
operator (they end or show what an admin defined; RestartService is the operator's too).

Images: an operator (and a pod) imports images, but never under a name the system's
services run or a `kurma.io/` name (`Policy.check_import`): a service finds its image by
name, highest version first, so a newer version under that name would become the service
(the console, with `host` api-access) at its next restart, which an operator may ask for.
Names are shared, not scoped, so a name (an app's image, a dependency) resolves among the
images the caller's own tree or certificate imported and those the host imported, never
another tenant's newer version (`_quota.Quotas.names_visible`); a service's, among the
images no pod and no operator imported. Pod names of the system services are the host's
to give too (`name_check`).

Host volume sources are resolved once, at create (`admit`): symlinks followed, `..`
collapsed, and the result must lie inside an allowed prefix (`/srv/ok` allows `/srv/ok` and
below, never `/srv/okay`); what is recorded and later mounted is the resolved path. An
operator's Start checks again that the path still resolves to itself (a directory on the way
swapped for a symlink by another of its pods is refused), and the launcher refuses a source
that is a symlink itself (`_volumes.open_source`). What remains is the moment between that
check and the mount: closing it needs the launcher to open the source without following
any symlink (openat2 RESOLVE_NO_SYMLINKS), which is the volumes code's business.
"""

from __future__ import annotations

import enum
import os
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..aci import (
    DEFAULT_CAPABILITIES,
    ApiAccessIsolator,
    ApiScope,
    ImageManifest,
    PodManifest,
    Volume,
    VolumeKind,
)
from ..runtime import NotPermitted
from ._pki import Role

if TYPE_CHECKING:
    from ..runtime import PodPlan
    from ._caller import CallerView

__all__ = [
    "OPERATOR_POLICY",
    "TABLE",
    "Action",
    "Ceiling",
    "Kind",
    "Policy",
    "Rights",
    "authorize",
    "kind_of",
    "may_call",
]


class Kind(enum.StrEnum):
    """The kinds of caller the table distinguishes."""

    SYSTEM = "system socket"
    ADMIN = "admin certificate"
    OPERATOR = "operator certificate"
    READER = "reader certificate"
    POD_SUBTREE = "pod socket (subtree)"
    POD_HOST_READ = "pod socket (host-read)"
    POD_HOST = "pod socket (host)"


class Action(enum.StrEnum):
    """What a caller does with a planned pod; the value is the method it comes with."""

    CREATE = "/kurma.v1.Pods/Create"
    START = "/kurma.v1.Pods/Start"
    EXEC = "/kurma.v1.Pods/Exec"

    @property
    def verb(self) -> str:
        return {"Create": "create", "Start": "start", "Exec": "exec into"}[self.rsplit("/")[-1]]


_SCOPE_RANK = {ApiScope.SUBTREE: 0, ApiScope.HOST_READ: 1, ApiScope.HOST: 2}


@dataclass(frozen=True)
class Ceiling:
    """A fixed limit on what a pod may hold (the operator policy)."""

    privileged: bool = False
    host_namespaces: frozenset[str] = frozenset()
    devices: bool = False
    capabilities: frozenset[str] = frozenset(DEFAULT_CAPABILITIES)
    seccomp_off: bool = False  # False: at least as filtered as the default filter
    min_oom_score_adj: int = 0
    api_scope: ApiScope = ApiScope.SUBTREE
    host_volumes: tuple[str, ...] = ()  # allowed prefixes of host volume sources


@dataclass(frozen=True)
class Rights:
    """One row of the table: what one kind of caller may do."""

    methods: Role  # the least role (METHOD_ROLES) of the methods it may call
    denied: frozenset[str] = frozenset()  # methods refused despite that role
    grants_host_api: bool = False  # may create pods with host/api-access host-read or host
    ceiling: Ceiling | None = None  # what its pods (and pods it starts, execs into) stay within
    within_creator: bool = False  # its pods are held to what its own pod holds
    system_images: bool = False  # may import under the names the system's services run


OPERATOR_POLICY = Ceiling()

TABLE: dict[Kind, Rights] = {
    Kind.SYSTEM: Rights(Role.ADMIN, grants_host_api=True, system_images=True),
    Kind.ADMIN: Rights(Role.ADMIN, grants_host_api=True, system_images=True),
    Kind.OPERATOR: Rights(Role.OPERATOR, ceiling=OPERATOR_POLICY),
    Kind.READER: Rights(Role.READER),
    Kind.POD_SUBTREE: Rights(
        Role.OPERATOR, denied=frozenset({"/kurma.v1.Host/RestartService"}), within_creator=True
    ),
    Kind.POD_HOST_READ: Rights(Role.READER),
    Kind.POD_HOST: Rights(Role.ADMIN, system_images=True),
}
# Image names only the host imports: the system images' (images/), besides the names of the
# images the running system services use (`Policy(service_images=...)`).
SYSTEM_IMAGE_PREFIXES = ("kurma.io/",)

_POD_KINDS = {
    ApiScope.SUBTREE.value: Kind.POD_SUBTREE,
    ApiScope.HOST_READ.value: Kind.POD_HOST_READ,
    ApiScope.HOST.value: Kind.POD_HOST,
}
_CERT_KINDS = {Role.ADMIN: Kind.ADMIN, Role.OPERATOR: Kind.OPERATOR, Role.READER: Kind.READER}


def kind_of(view: CallerView) -> Kind:
    """The kind of caller a view belongs to (an unknown role or scope: the least)."""
    from ._caller import HOST_VIEW

    if view.pod is not None:
        return _POD_KINDS.get(view.scope, Kind.POD_HOST_READ)
    if view == HOST_VIEW:
        return Kind.SYSTEM
    try:
        return _CERT_KINDS[Role(view.role)]
    except ValueError:
        return Kind.READER


def pod_kind(scope: str) -> Kind:
    """The kind of a call on a pod's socket with api-access `scope`."""
    return _POD_KINDS.get(scope, Kind.POD_HOST_READ)


def cert_kind(role: Role) -> Kind:
    return _CERT_KINDS[role]


def may_call(kind: Kind, method: str, table: dict[str, Role] | None = None) -> bool:
    """Whether a caller of `kind` may call `method` at all (a method nobody knows: no)."""
    from ._authz import METHOD_ROLES

    needed = (METHOD_ROLES if table is None else table).get(method)
    rights = TABLE[kind]
    return needed is not None and rights.methods.allows(needed) and method not in rights.denied


# --------------------------------------------------------------------------- the decision


def authorize(kind: Kind, action: Action, plan: PodPlan, ceiling: Ceiling | None = None) -> None:
    """NotPermitted naming the first thing `plan` holds that a caller of `kind` may not give
    (CREATE) or reach (START, EXEC); `ceiling` stands for the row's own (kurmad.yml's
    prefixes). The one decision for every caller: certificates and pods' sockets alike."""
    rights = TABLE[kind]
    if not may_call(kind, action.value):
        raise NotPermitted(f"a caller with a {kind} may not {action.verb} pods")
    api = plan.api_access
    if (
        action is Action.CREATE
        and api is not None
        and api.scope is not ApiScope.SUBTREE
        and not rights.grants_host_api
    ):
        raise NotPermitted(
            f"host/api-access scope {api.scope.value}: only a host-level admin (the system "
            f"socket or an admin certificate) grants it"
        )
    if rights.ceiling is None:
        return
    problem = beyond(plan, ceiling or rights.ceiling)
    if problem is None:
        return
    if action is Action.CREATE:
        raise NotPermitted(f"{problem}: beyond what an {kind} may create (the operator policy)")
    raise NotPermitted(
        f"pod {plan.name}: {problem}: an {kind} may {action.verb} a pod only when it is "
        f"within the operator policy"
    )


def beyond(plan: PodPlan, ceiling: Ceiling) -> str | None:
    """The first thing `plan` holds beyond `ceiling`, in words; None when it stays within."""
    from ..runtime import API_VOLUME, default_seccomp
    from ..runtime import seccomp_within as _within
    from ..runtime.linux import Capability

    if not ceiling.privileged and any(a.rootfs.privileged for a in plan.apps):
        return "os/linux/privileged"
    extra_ns = plan.host_namespaces - ceiling.host_namespaces
    if extra_ns:
        return f"os/linux/namespaces: the host's {', '.join(sorted(extra_ns))} namespace"
    devices = sorted({d for a in plan.apps for d in a.rootfs.devices})
    if devices and not ceiling.devices:
        return f"os/linux/devices {', '.join(devices)}"
    api = plan.api_access
    if api is not None and _SCOPE_RANK[api.scope] > _SCOPE_RANK[ceiling.api_scope]:
        return f"host/api-access scope {api.scope.value} (at most {ceiling.api_scope.value})"
    allowed_caps = {int(Capability[c]) for c in ceiling.capabilities}
    for app in plan.apps:
        extra = app.capabilities - allowed_caps
        if extra:
            names = ", ".join(sorted(Capability(c).name for c in extra))
            return f"app {app.name!r}: capabilities {names} (beyond the default set)"
        if not ceiling.seccomp_off and not _within(app.seccomp, default_seccomp()):
            what = "off" if app.seccomp is None else "looser than the default filter"
            return f"app {app.name!r}: seccomp {what}"
        if app.oom_score_adj is not None and app.oom_score_adj < ceiling.min_oom_score_adj:
            return (
                f"app {app.name!r}: os/linux/oom-score-adj {app.oom_score_adj} "
                f"(at least {ceiling.min_oom_score_adj})"
            )
        for bind in app.rootfs.volumes:
            if bind.kind is not VolumeKind.HOST or bind.volume == API_VOLUME:
                continue
            named = bind.shown  # the root and the path below it, as one path
            real = os.path.realpath(named)
            if inside(real, ceiling.host_volumes) is None:
                return f"volume {bind.volume!r}: host source {named} {_where(ceiling)}"
            if real != posixpath.normpath(named):
                # resolved at create: a directory on the way became a symlink since
                return f"volume {bind.volume!r}: host source {named} leads to {real} now"
    return None


def inside(path: str, prefixes: Iterable[str]) -> str | None:
    """The prefix (itself resolved) that the resolved `path` lies in, or None."""
    for prefix in prefixes:
        base = os.path.realpath(prefix)
        if path == base or path.startswith(base.rstrip("/") + "/"):
            return prefix
    return None


def _where(ceiling: Ceiling) -> str:
    if not ceiling.host_volumes:
        return "(no host paths are open to operators: see operator_host_volumes in kurmad.yml)"
    return f"is not inside {', '.join(ceiling.host_volumes)} (operator_host_volumes)"


# --------------------------------------------------------------------------- the servicers' side


class Policy:
    """The table with kurmad.yml's settings, as the Pods and Images servicers apply it.

    `service_images()`: the image references the system services run (the supervisor's
    specs), whose names only the host may import: a service finds its image by name, highest
    version first, so an operator's `kurma.io/console` version 99 would otherwise become the
    console at its next restart, with its `host` api-access.
    """

    def __init__(
        self,
        operator_host_volumes: Sequence[str] = (),
        service_images: Callable[[], Iterable[str]] = tuple,
        service_names: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.operator = replace(OPERATOR_POLICY, host_volumes=tuple(operator_host_volumes))
        self.service_images = service_images
        self.service_names = service_names

    def _ceiling(self, kind: Kind) -> Ceiling | None:
        return self.operator if TABLE[kind].ceiling is OPERATOR_POLICY else TABLE[kind].ceiling

    def confine_to(self, view: CallerView) -> str | None:
        """The pod whose privileges bound the caller's new pods (the runtime's confine_to)."""
        return view.subtree_of if TABLE[kind_of(view)].within_creator else None

    def admit(self, view: CallerView, manifest: PodManifest) -> PodManifest:
        """Before planning: refuse what the manifest alone shows (host api-access), and
        resolve host volume sources for a caller with a ceiling (see the module)."""
        kind = kind_of(view)
        rights = TABLE[kind]
        api = next((i for i in manifest.isolators if isinstance(i, ApiAccessIsolator)), None)
        if api is not None and api.scope is not ApiScope.SUBTREE and not rights.grants_host_api:
            raise NotPermitted(
                f"host/api-access scope {api.scope.value}: only a host-level admin (the "
                f"system socket or an admin certificate) grants it"
            )
        ceiling = self._ceiling(kind)
        if ceiling is None or not any(v.kind is VolumeKind.HOST for v in manifest.volumes):
            return manifest
        volumes = tuple(
            _resolve(v, ceiling) if v.kind is VolumeKind.HOST else v for v in manifest.volumes
        )
        return replace(manifest, volumes=volumes)

    def beneath(
        self, view: CallerView, manifest: PodManifest
    ) -> dict[str, tuple[str, tuple[tuple[str, bool], ...]]] | None:
        """For a caller held to host directories (an operator), each host source of an
        admitted manifest as (the allowed directory, the path below it): the runtime's
        `create_pod(beneath=)`. The mount then resolves that path beneath the directory
        through descriptors, so a directory on the way swapped for a symlink (by another pod
        with the directory mounted) between the Start's check and the mount leads nowhere
        outside. None for callers without such a ceiling."""
        ceiling = self._ceiling(kind_of(view))
        volumes = [
            *manifest.volumes,
            *(m.app_volume for a in manifest.apps for m in a.mounts if m.app_volume is not None),
        ]
        hosts = [v for v in volumes if v.kind is VolumeKind.HOST and v.source is not None]
        if ceiling is None or not hosts:
            return None
        placed: dict[str, tuple[str, tuple[tuple[str, bool], ...]]] = {}
        for volume in hosts:
            assert volume.source is not None
            prefix = inside(volume.source, ceiling.host_volumes)
            if prefix is None:  # admit() refused it already; never mount by path
                raise NotPermitted(f"volume {volume.name!r}: host source {_where(ceiling)}")
            root = os.path.realpath(prefix)
            rel = posixpath.relpath(volume.source, root)
            placed[volume.source] = (root, () if rel == "." else ((rel, True),))
        return placed

    def check_create(self, view: CallerView) -> Callable[[PodPlan], None]:
        """`check` for Runtime.create_pod: the planned pod within the caller's row."""
        kind = kind_of(view)
        ceiling = self._ceiling(kind)
        return lambda plan: authorize(kind, Action.CREATE, plan, ceiling)

    def name_check(self, view: CallerView) -> Callable[[str], None] | None:
        """For a caller below the host (an operator, a pod): NotPermitted for the name of a
        system service. The supervisor refuses to start a service while another pod holds
        its name, and people find the service by it (`kurmactl exec console`): a tenant's
        pod under that name, made while the service restarts, would block it and stand in
        for it. None: the caller may take any free name."""
        kind = kind_of(view)
        if TABLE[kind].system_images:
            return None
        services = set(self.service_names())  # now: the check runs under the names' lock

        def check(name: str) -> None:
            if name in services:
                raise NotPermitted(
                    f"pod name {name}: a system service runs under that name, and only the "
                    f"host names pods after its services (an {kind} may not)"
                )

        return check

    def check_import(self, view: CallerView, manifest: ImageManifest) -> None:
        """NotPermitted when the caller may not add an image under `manifest`'s name."""
        kind = kind_of(view)
        if TABLE[kind].system_images:
            return
        name = manifest.name
        taken = {_image_name(ref) for ref in self.service_images()}
        if name.startswith(SYSTEM_IMAGE_PREFIXES) or name in taken:
            raise NotPermitted(
                f"image name {name}: the system's services run images of that name, and only "
                f"the host imports them (an {kind} may not)"
            )

    def check(self, view: CallerView, action: Action, plan: PodPlan) -> None:
        """Whether the caller may start or exec into the planned pod (NotPermitted)."""
        kind = kind_of(view)
        authorize(kind, action, plan, self._ceiling(kind))


def _image_name(ref: str) -> str | None:
    """The image name a service's reference resolves by (None: an image ID, or no name):
    `name`, `name:version` and `name,label=value,...` all name `name`."""
    from ..store import parse_image_ref

    try:
        return parse_image_ref(ref).name
    except ValueError:
        return None


def _resolve(volume: Volume, ceiling: Ceiling) -> Volume:
    source = volume.source or ""
    what = f"volume {volume.name!r}: host source {source}"
    if not source.startswith("/"):
        raise NotPermitted(f"{what}: must be an absolute path")
    resolved = os.path.realpath(posixpath.normpath(source))
    if inside(resolved, ceiling.host_volumes) is None:
        shown = "" if resolved == source else f" (resolves to {resolved})"
        raise NotPermitted(f"{what}{shown} {_where(ceiling)}")
    return replace(volume, source=resolved)
