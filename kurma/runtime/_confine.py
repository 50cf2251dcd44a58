"""Least privilege for pods that pods create (DESIGN.md, the recursion model).

A pod calling the API on its own socket never gives a pod it creates more than it holds
itself. Both pods are compared as plans (every isolator already judged), so "holds" means
what the launcher would really do:

- privileged only if the creator is privileged;
- host namespaces only those the creator shares with the host;
- host devices only those the creator has (a privileged creator has them all);
- `host/api-access` at most `subtree` (host-read and host come only from a host admin);
- capabilities only within the union of the creator's apps' sets;
- no-new-privileges stays on when every app of the creator has it;
- oom-score-adj no lower than the lowest of the creator's apps (an app without the
  isolator has kurmad's own score, so under a creator with a higher score the new pod's
  apps must ask for one);
- seccomp: every app of the new pod must be at least as filtered as some app of the
  creator: no filter only under an unfiltered creator; under a remove-set (blocked list) it
  must block all of those too (a remove-set that is a superset, or a retain-set allowing
  none of them); under a retain-set (allow list) only a retain-set within it. The errno or
  kill action of a filter is not compared.

Quotas (`check_quota_within`): a quota given to a new `subtree` pod may not exceed, field
by field, what its creator's subtree has left (the API layer knows the use and says what is
left); a field the new pod leaves out is not compared: every creation is still counted
against each quota up its chain of ancestors.

Host volumes are paths in the creator's view (`translate_volumes`), pod volumes and app
volumes (`appVolume`) alike: the source must lie in one of the creator's own volumes (host or
empty). A volume the creator has read-only must be asked for read-only; a non-recursive one
stays non-recursive. The path is never turned into a host path string that is mounted later:
the new pod's record keeps, per source, the root of the creator's volume as an admin (or
kurma) chose it and the relative steps below it, one per level of pods (a grandchild's
source is its parent's steps plus one more), and the mount resolves them beneath that root
through file descriptors (`_volumes`: openat2 RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS, also
RESOLVE_NO_XDEV below a non-recursive volume) and binds from the last fd. So a creator that
swaps a directory of its volume for a symlink between create and start gets a failed start,
never a mount outside its volume. The same resolution runs once at create, so a source that
leads outside already is refused then (NotPermitted). The manifest shows the joined path.

What the steps do not pin: a step is resolved beneath the volume of the level above as it is
at mount time, so an ancestor that rearranges its own volume changes what its descendants get
(always within that ancestor's volume, which is its to give).
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterable
from dataclasses import replace

from ..aci import ApiScope, PodManifest, SubtreeQuota, Volume, VolumeKind
from ..errors import NotPermitted
from ._plan import API_VOLUME, PodPlan, SeccompPlan, own_oom_score_adj
from ._volumes import Steps, VolumeBind, open_source
from .linux import Capability


def creator_binds(parent: PodPlan) -> list[VolumeBind]:
    """Every volume bind of the creator's apps (the API directory excluded), deepest first."""
    binds = {
        (b.target, b.source, b.beneath): b
        for app in parent.apps
        for b in app.rootfs.volumes
        if b.volume != API_VOLUME
    }
    return sorted(binds.values(), key=lambda b: len(b.target), reverse=True)


def translate_volumes(
    manifest: PodManifest, parent: PodPlan
) -> tuple[PodManifest, dict[str, tuple[str, Steps]]]:
    """The manifest with each host source (pod and app volumes) replaced by the host path it
    names, and where each such path really is: host path -> (root, steps), for the record
    and `_volumes.place_beneath` (see the module). NotPermitted when a source is not inside
    one of the creator's volumes or leads out of it."""
    binds = creator_binds(parent)
    beneath: dict[str, tuple[str, Steps]] = {}

    def translate(volume: Volume) -> Volume:
        if volume.kind is not VolumeKind.HOST:
            return volume
        volume, root, steps = _translate(volume, binds, parent.name)
        assert volume.source is not None
        if beneath.setdefault(volume.source, (root, steps)) != (root, steps):
            raise NotPermitted(
                f"volume {volume.name!r}: host source {volume.source} is reached through two "
                f"different volumes of pod {parent.name}; name it through one of them"
            )
        return volume

    volumes = tuple(translate(v) for v in manifest.volumes)
    apps = tuple(
        replace(
            app,
            mounts=tuple(
                m if m.app_volume is None else replace(m, app_volume=translate(m.app_volume))
                for m in app.mounts
            ),
        )
        for app in manifest.apps
    )
    return replace(manifest, volumes=volumes, apps=apps), beneath


def _translate(volume: Volume, binds: list[VolumeBind], creator: str) -> tuple[Volume, str, Steps]:
    assert volume.source is not None
    source = posixpath.normpath(volume.source)
    what = f"volume {volume.name!r}: host source {volume.source!r}"
    for bind in binds:
        target = bind.target.rstrip("/")
        if source != (target or "/") and not source.startswith(target + "/"):
            continue
        rel = source[len(target) :].strip("/")
        steps = (*bind.beneath, (rel, bind.recursive)) if rel else bind.beneath
        found = replace(bind, beneath=steps)
        try:
            os.close(open_source(found))
        except FileNotFoundError:
            pass  # not there (yet): the start says so if it still is not
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.ELOOP):
                raise NotPermitted(
                    f"{what} leads outside pod {creator}'s volume {bind.volume!r}"
                ) from None
            raise NotPermitted(  # e.g. EACCES from a /proc/<pid>/root on the way
                f"{what} cannot be opened in pod {creator}'s volume {bind.volume!r}: {e.strerror}"
            ) from None
        if bind.read_only and volume.read_only is not True:
            raise NotPermitted(
                f"{what} is in pod {creator}'s read-only volume {bind.volume!r}: "
                f"the volume must be readOnly"
            )
        recursive = volume.recursive if bind.recursive else False
        return replace(volume, source=found.shown, recursive=recursive), bind.source, steps
    raise NotPermitted(
        f"{what} is not inside one of pod {creator}'s volumes "
        f"(a pod's host volumes are paths inside its creator's own volumes)"
    )


def check_within(child: PodPlan, parent: PodPlan) -> None:
    """NotPermitted naming the first thing `child` asks for that `parent` does not hold."""
    who = f"pod {parent.name}"
    parent_privileged = any(a.rootfs.privileged for a in parent.apps)
    if any(a.rootfs.privileged for a in child.apps) and not parent_privileged:
        raise NotPermitted(f"os/linux/privileged: {who}, which creates it, is not privileged")
    extra_ns = child.host_namespaces - parent.host_namespaces
    if extra_ns:
        raise NotPermitted(
            f"os/linux/namespaces: {who} does not share the host's "
            f"{', '.join(sorted(extra_ns))} namespace"
        )
    if not parent_privileged:
        held = {d for a in parent.apps for d in a.rootfs.devices}
        extra_dev = {d for a in child.apps for d in a.rootfs.devices} - held
        if extra_dev:
            raise NotPermitted(f"os/linux/devices: {who} has no {', '.join(sorted(extra_dev))}")
    if child.api_access is not None and child.api_access.scope is not ApiScope.SUBTREE:
        raise NotPermitted(
            f"host/api-access scope {child.api_access.scope.value}: only a host-level admin "
            f"grants it; a pod may give the pods it creates `subtree` at most"
        )
    caps = frozenset().union(*(a.capabilities for a in parent.apps))
    nnp = all(a.no_new_privileges for a in parent.apps)
    check_oom_within({a.name: a.oom_score_adj for a in child.apps}, parent)
    for app in child.apps:
        extra_caps = app.capabilities - caps
        if extra_caps:
            raise NotPermitted(
                f"app {app.name!r}: capabilities {_cap_names(extra_caps)} are beyond {who}'s"
            )
        if nnp and not app.no_new_privileges:
            raise NotPermitted(
                f"app {app.name!r}: os/linux/no-new-privileges must stay on ({who} has it on)"
            )
        if not any(_within(app.seccomp, p.seccomp) for p in parent.apps):
            raise NotPermitted(
                f"app {app.name!r}: its seccomp filter is looser than any of {who}'s apps' "
                f"(give it {who}'s filter or a stricter one)"
            )


def check_oom_within(scores: dict[str, int | None], parent: PodPlan) -> None:
    """NotPermitted for an app of a new pod whose oom_score_adj (None: kurmad's own, which
    it inherits) is below the lowest of `parent`'s apps (called at create before anything
    exists, and again by check_within on the plan)."""
    lowest = min(_oom(a.oom_score_adj) for a in parent.apps)
    for name, score in scores.items():
        if _oom(score) < lowest:
            asked = f"unset (kurmad's own, {_oom(None)})" if score is None else str(score)
            raise NotPermitted(
                f"app {name!r}: os/linux/oom-score-adj {asked} is below pod {parent.name}'s "
                f"({lowest}); give it {lowest} or more"
            )


def _oom(score: int | None) -> int:
    """An app's oom_score_adj: its isolator's, else what it inherits (kurmad's own)."""
    return own_oom_score_adj() if score is None else score


def _within(child: SeccompPlan | None, parent: SeccompPlan | None) -> bool:
    if parent is None:
        return True
    if child is None:
        return False
    if parent.mode == "remove":
        blocked = set(parent.syscalls)
        if child.mode == "remove":
            return blocked <= set(child.syscalls)
        return not blocked & set(child.syscalls)
    if child.mode == "retain":
        return set(child.syscalls) <= set(parent.syscalls) | {"execve"}
    return False


def _cap_names(caps: Iterable[int]) -> str:
    return ", ".join(sorted(Capability(c).name for c in caps))


def check_quota_within(child: SubtreeQuota, room: SubtreeQuota, creator: str) -> None:
    """NotPermitted naming the first field of `child` larger than `room`, what the
    creator's subtree has left (None in `room`: unlimited; None in `child`: not asked)."""
    for key, attr in SubtreeQuota.KEYS.items():
        asked, left = getattr(child, attr), getattr(room, attr)
        if asked is not None and left is not None and asked > left:
            raise NotPermitted(
                f"host/api-access quota {key}: {asked} is more than pod {creator}'s subtree "
                f"has left ({left}); ask for {left} at most"
            )
