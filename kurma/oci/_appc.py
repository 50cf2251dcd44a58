"""An OCI image config as an appc ImageManifest, so the runtime runs OCI images unchanged.

The store keeps an OCI image with a generated appc manifest beside its rootfs; every rule
of `docker run IMAGE` that the manifest can express is applied here, once, at import:

- name: the repository made an AC Identifier (`appc_name`); labels: `version` (the tag, or
  `sha256-<12 hex>` for a pull by digest: a `:` would split a store reference), `os`, `arch`
  in the appc spelling (`arm64` is `aarch64`, `386` is `i386`).
- exec: Entrypoint + Cmd (docker's rule). A relative program is looked up in the image's
  PATH inside the rootfs, as docker does at start; one that is not found stays as written,
  with a warning, since the launcher execs through the app's PATH too (`execvpe`) and fails
  at start with the PATH it searched. An image with neither Entrypoint nor Cmd gets an `app`
  without `exec`: a pod's own exec (`kurmactl run IMAGE -- CMD`) replaces the image's whole
  exec anyway, and the runtime refuses such an app with "no command to run" otherwise.
  The original Entrypoint and Cmd are kept as JSON annotations `kurma.io/oci-entrypoint`
  and `kurma.io/oci-cmd`, for a CLI that wants docker's "arguments replace Cmd only".
- user/group: docker's rules (runc's GetExecUser) against the image's /etc/passwd and
  /etc/group, resolved to numbers; supplementary groups from /etc/group membership when
  no group is given. Those files are read with openat2(RESOLVE_IN_ROOT): an image's
  `/etc/passwd -> /host/file` reads the image's /host/file, never the host's.
- Env, WorkingDir (default `/`), ExposedPorts (`tcp-80`), Volumes (mount points named after
  the path: `/var/lib/data` is `var-lib-data`; the runtime refuses to start an app whose
  mount point no pod mount satisfies: the pod must mount a volume there).
- Labels: every label is kept, exactly, in the JSON annotation `kurma.io/oci-labels`; those
  whose key is an AC Identifier (most are: `org.opencontainers.image.source`, `maintainer`)
  are also annotations of their own, except the names appc itself defines (`created`,
  `authors`, `homepage`, `documentation`), which come from the config and the OCI
  `org.opencontainers.image.url`/`.documentation` labels when they are valid there.
- StopSignal: annotation `kurma.io/stop-signal`, the signal's name (`SIGQUIT`,
  `SIGRTMIN+3`): names, unlike numbers, are the same on every architecture.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import posixpath
import re
import signal
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from kurma.aci import App, FrozenMap, ImageManifest, MountPoint, Port, is_ac_identifier
from kurma.aci._names import is_env_name, is_http_url, is_rfc3339
from kurma.errors import ValidationError
from kurma.runtime._mountapi import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

from ._config import ImageConfig, parse_stop_signal
from ._platform import Platform
from ._reference import Reference

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""docker's PATH for an image whose Env has none (and the one the appc runtime sets)."""

STOP_SIGNAL_ANNOTATION = "kurma.io/stop-signal"
LABELS_ANNOTATION = "kurma.io/oci-labels"
ENTRYPOINT_ANNOTATION = "kurma.io/oci-entrypoint"
CMD_ANNOTATION = "kurma.io/oci-cmd"
_APPC_ANNOTATIONS = frozenset({"created", "authors", "homepage", "documentation"})

_MAX_DB_BYTES = 4 << 20
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to setresuid: never a real id

# (os, normalized GOARCH, normalized variant) -> appc arch; variant None matches any.
_APPC_ARCH: dict[tuple[str, str], str] = {
    ("linux", "amd64"): "amd64",
    ("linux", "386"): "i386",
    ("linux", "arm64"): "aarch64",
    ("linux", "arm64be"): "aarch64_be",
    ("linux", "ppc64"): "ppc64",
    ("linux", "ppc64le"): "ppc64le",
    ("linux", "s390x"): "s390x",
    ("freebsd", "amd64"): "amd64",
    ("freebsd", "386"): "i386",
    ("freebsd", "arm"): "arm",
    ("darwin", "amd64"): "x86_64",
    ("darwin", "386"): "i386",
}
_LINUX_ARM = {"v6": "armv6l", "v7": "armv7l", "v8": "armv7l"}  # a 32-bit v8 runs v7 code

_SEPARATORS = re.compile(r"[^a-z0-9]+")


def appc_name(repository: str) -> str:
    """The AC Identifier for an OCI repository: `127.0.0.1:5000/test/my_app` is
    `127.0.0.1-5000/test/my-app`. Lowercase; every run of characters that cannot separate
    two AC Identifier parts (`:`, `_`, `__`, `[`, `.-`) becomes one `-` (a run holding `/`
    becomes `/`), and leading or trailing ones are dropped."""

    def separator(match: re.Match[str]) -> str:
        run = match.group()
        if "/" in run:
            return "/"
        return run if len(run) == 1 and run in "-.~" else "-"

    name = _SEPARATORS.sub(separator, repository.lower()).strip("-._~/")
    if not is_ac_identifier(name):
        raise ValidationError("name", f"cannot make an appc name of repository {repository!r}")
    return name


def appc_version(reference: Reference) -> str | None:
    """The `version` label for an image pulled by `reference`: its tag, else the digest's
    short form `sha256-0123456789ab` (no `:`, which a store reference `NAME:VERSION`
    splits on), else None."""
    if reference.tag is not None:
        return reference.tag
    if reference.digest is not None:
        return f"{reference.digest.algorithm}-{reference.digest.short}"
    return None


def appc_os_arch(platform: Platform) -> tuple[str, str]:
    """The appc `os` and `arch` labels of an OCI platform; ValidationError for a platform
    the appc table has no name for (so the image could not be matched to a host)."""
    normalized = platform.normalized()
    os_name, arch = normalized.os, normalized.architecture
    appc = _APPC_ARCH.get((os_name, arch))
    if os_name == "linux" and arch == "arm":
        appc = _LINUX_ARM.get(normalized.variant)
    if appc is None:
        raise ValidationError(
            "architecture",
            f"the appc spec has no os/arch for platform {platform} (see kurma.aci.VALID_OS_ARCH)",
        )
    return os_name, appc


# --- files of the rootfs ----------------------------------------------------------------------


def _open_in_root(rootfd: int, path: str, flags: int) -> int:
    """`path` opened with `rootfd` as `/`: symlinks, `..` and absolute links stay inside."""
    resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
    return openat2(rootfd, path.lstrip("/") or ".", flags, resolve)


def _stat_in_root(rootfd: int, path: str) -> os.stat_result | None:
    """The stat of `path` in the root, following symlinks inside it; None if missing."""
    try:
        fd = _open_in_root(rootfd, path, os.O_PATH)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _read_in_root(rootfd: int, path: str, field: str) -> str | None:
    """A small regular file of the rootfs as text; None if missing. Its type is checked
    through an O_PATH fd first: merely opening a device node or a FIFO has effects."""
    try:
        st = _stat_in_root(rootfd, path)
    except OSError as e:  # a symlink loop, say
        raise ValidationError(field, f"cannot open the image's {path}: {e.strerror}") from e
    if st is None:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(field, f"the image's {path} is not a regular file")
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = _open_in_root(rootfd, path, flags)
    except OSError as e:
        raise ValidationError(field, f"cannot open the image's {path}: {e.strerror}") from e
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
            raise ValidationError(field, f"the image's {path} changed while it was read")
        data = os.read(fd, _MAX_DB_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_DB_BYTES:
        raise ValidationError(field, f"the image's {path} is larger than {_MAX_DB_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


# --- user and group, docker's way -----------------------------------------------------------


@dataclass(frozen=True)
class _PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class _GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _number(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _parse_passwd(text: str) -> list[_PasswdEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[0] or fields[0].startswith(("#", "+", "-")):
            continue
        uid, gid = _number(fields[2]), _number(fields[3])
        if uid is not None and gid is not None:
            entries.append(_PasswdEntry(fields[0], uid, gid))
    return entries


def _parse_group(text: str) -> list[_GroupEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or not fields[0] or fields[0].startswith(("#", "+", "-")):
            continue
        gid = _number(fields[2])
        if gid is not None:
            members = fields[3].split(",") if len(fields) > 3 else []
            entries.append(_GroupEntry(fields[0], gid, tuple(m for m in members if m)))
    return entries


@dataclass(frozen=True)
class ExecUser:
    """Whom an image's app runs as, in numbers."""

    uid: int
    gid: int
    supplementary_gids: tuple[int, ...] = ()


def resolve_user(rootfd: int, user: str) -> ExecUser:
    """Resolve an OCI `User` (`""`, `uid`, `name`, `uid:gid`, `name:group` ...) as runc does:
    a user found in /etc/passwd (by name, or by uid) brings its primary gid; a numeric uid
    without an entry gets gid 0; an explicit group (name from /etc/group, or a number) sets
    the gid; supplementary gids are the /etc/group memberships, only without an explicit
    group. `""` is `0`. ValidationError names the user and the file it is missing from."""
    user_part, _, group_part = (user or "0").partition(":")
    field = "config.User"
    passwd_text = _read_in_root(rootfd, "/etc/passwd", field)
    passwd = _parse_passwd(passwd_text or "")
    entry = next((e for e in passwd if e.name == user_part), None)
    uid_number = _number(user_part)
    if entry is None and uid_number is not None:
        entry = next((e for e in passwd if e.uid == uid_number), None)
    if entry is None and uid_number is None:
        where = "/etc/passwd" if passwd_text is not None else "/etc/passwd (the image has none)"
        raise ValidationError(field, f"user {user_part!r} is not a number and not in {where}")
    uid = entry.uid if entry is not None else uid_number
    gid = entry.gid if entry is not None else 0
    assert uid is not None
    if not group_part and entry is None:
        return ExecUser(uid, gid)
    group_text = _read_in_root(rootfd, "/etc/group", field)
    groups = _parse_group(group_text or "")
    if group_part:
        found = next((g for g in groups if g.name == group_part or str(g.gid) == group_part), None)
        if found is not None:
            return ExecUser(uid, found.gid)
        number = _number(group_part)
        if number is None:
            where = "/etc/group" if group_text is not None else "/etc/group (the image has none)"
            raise ValidationError(field, f"group {group_part!r} is not a number and not in {where}")
        return ExecUser(uid, number)
    assert entry is not None
    member_of = (g.gid for g in groups if entry.name in g.members)
    return ExecUser(uid, gid, tuple(dict.fromkeys(member_of)))


# --- exec --------------------------------------------------------------------------------------


def resolve_exec(
    rootfd: int, argv: tuple[str, ...], path: str, working_dir: str
) -> tuple[str, ...]:
    """`argv` with its program made absolute as docker's LookPath finds it in the image: a
    name without `/` in each PATH directory (an executable regular file), a relative path
    against the working directory. A name found nowhere is kept, with a warning."""
    program = argv[0]
    if program.startswith("/"):
        return argv
    if "/" in program:
        return (posixpath.normpath(posixpath.join(working_dir, program)), *argv[1:])
    for directory in path.split(":"):
        if not directory.startswith("/"):
            continue  # a relative PATH entry depends on the cwd: docker skips it too
        candidate = posixpath.join(directory, program)
        try:
            st = _stat_in_root(rootfd, candidate)
        except OSError:  # a loop or a permission: not a program this lookup can use
            continue
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return (candidate, *argv[1:])
    log.warning(
        "%r is in no directory of PATH %s in the image; kept as written (looked up at start)",
        program,
        path,
    )
    return argv


# --- the manifest ----------------------------------------------------------------------------


def _mount_point_name(path: str, taken: set[str]) -> str:
    base = _SEPARATORS.sub("-", path.lower()).strip("-") or "root"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        low, high = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
        if number - low <= high - number:
            return f"SIGRTMIN+{number - low}" if number > low else "SIGRTMIN"
        return f"SIGRTMAX-{high - number}" if number < high else "SIGRTMAX"


def _annotations(config: ImageConfig, extra: Mapping[str, str]) -> dict[str, str]:
    run = config.config
    out: dict[str, str] = {}
    if config.created and is_rfc3339(config.created):
        out["created"] = config.created
    if config.author:
        out["authors"] = config.author
    for label, name in (
        ("org.opencontainers.image.url", "homepage"),
        ("org.opencontainers.image.documentation", "documentation"),
    ):
        value = run.labels.get(label)
        if value and is_http_url(value):
            out[name] = value
    for key, value in run.labels.items():
        if is_ac_identifier(key) and key not in _APPC_ANNOTATIONS:
            out[key] = value
    if run.labels:
        out[LABELS_ANNOTATION] = json.dumps(dict(run.labels), sort_keys=True)
    if run.entrypoint is not None:
        out[ENTRYPOINT_ANNOTATION] = json.dumps(list(run.entrypoint))
    if run.cmd is not None:
        out[CMD_ANNOTATION] = json.dumps(list(run.cmd))
    if run.stop_signal:
        out[STOP_SIGNAL_ANNOTATION] = _signal_name(parse_stop_signal(run.stop_signal))
    for key, value in extra.items():
        if not is_ac_identifier(key):
            raise ValidationError("annotations", f"{key!r} is not an AC Identifier")
        out[key] = value
    return out


def appc_app(config: ImageConfig, rootfd: int) -> App:
    """The `app` section for an image config, user and exec resolved in the rootfs."""
    run = config.config
    env = run.env_map
    for i, name in enumerate(env):
        if not is_env_name(name):
            raise ValidationError(f"config.Env[{i}]", f"{name!r} cannot name a variable in appc")
    working_dir = posixpath.normpath(posixpath.join("/", run.working_dir or "/"))
    argv = run.argv
    exec_ = resolve_exec(rootfd, argv, env.get("PATH", DEFAULT_PATH), working_dir) if argv else ()
    if not argv:
        log.info("image has neither Entrypoint nor Cmd: its app has no exec, a pod gives one")
    identity = resolve_user(rootfd, run.user)
    taken: set[str] = set()
    mount_points = tuple(
        MountPoint(_mount_point_name(p, taken), posixpath.normpath(posixpath.join("/", p)))
        for p in sorted(run.volumes)
    )
    ports = tuple(Port(f"{p.protocol}-{p.port}", p.protocol, p.port) for p in run.exposed_ports)
    return App(
        user=str(identity.uid),
        group=str(identity.gid),
        exec=exec_,
        supplementary_gids=identity.supplementary_gids,
        working_directory=working_dir,
        environment=FrozenMap(env),
        mount_points=mount_points,
        ports=ports,
    )


def appc_manifest(
    config: ImageConfig,
    *,
    name: str,
    rootfs_fd: int,
    version: str | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """The appc ImageManifest (canonical JSON bytes) for an OCI image unpacked beneath
    `rootfs_fd` (an fd of its rootfs directory, used as `/`).

    `name` is an AC Identifier (`appc_name(reference.name)`); `version` becomes the version
    label (`appc_version(reference)`); `labels` and `annotations` are added last (e.g. the
    manifest's digest as `oci.image.digest`). ValidationError names what cannot be mapped.
    """
    if not is_ac_identifier(name):
        raise ValidationError("name", f"{name!r} is not an AC Identifier (see appc_name)")
    os_name, arch = appc_os_arch(config.platform)
    all_labels: dict[str, str] = {}
    if version:
        all_labels["version"] = version
    all_labels.update(os=os_name, arch=arch)
    all_labels.update(labels or {})
    manifest = ImageManifest(
        name=name,
        labels=FrozenMap(all_labels),
        app=appc_app(config, rootfs_fd),
        annotations=FrozenMap(_annotations(config, annotations or {})),
    )
    data = manifest.to_bytes()
    ImageManifest.from_json(data)  # every rule of the parser, so the store never refuses it
    return data
