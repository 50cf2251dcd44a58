"""Kurma's error types, one hierarchy for every layer.

    KurmaError                      anything Kurma raises on purpose
    ├── ValidationError             a manifest (or other input document) breaks a rule;
    │                               carries the JSON path of the offending field
    ├── ArchiveError                an image archive is malformed or hostile (path escapes,
    │                               bombs, missing manifest); nothing was written
    ├── StoreError                  the image store refused an operation
    │   ├── ImageNotFound           no image matches a reference
    │   ├── AmbiguousImage          a short ID or name matches more than one image
    │   ├── ImageInUse              delete refused: a pod or a rendered tree uses the image
    │   └── DependencyError         an image's dependencies cannot be resolved or do not match
    ├── OciError                    an OCI or Docker image, or a reference to one, is unusable
    │   ├── InvalidReference        an image reference breaks docker's grammar (also a ValueError)
    │   ├── InvalidDigest           a digest is malformed or uses an unsupported algorithm
    │   ├── UnsupportedManifest     a well-formed document of a kind Kurma does not run
    │   │                           (Docker schema 1, unknown media types, artifacts)
    │   ├── PlatformNotFound        an index offers no manifest for the wanted platform;
    │   │                           lists the platforms it does offer
    │   ├── DigestMismatch          content does not hash to its digest, or is longer than its
    │   │                           descriptor's size
    │   └── IncompleteBlob          content ended before its descriptor's size: retry or resume
    ├── RegistryError               a registry did not give what was asked (kurma.registry)
    │   ├── RegistryNotFound        no such repository, tag, manifest or blob; NOT_FOUND
    │   ├── RegistryAuthFailed      the registry refused the auth tried (401/403), which the
    │   │                           message names; PERMISSION_DENIED
    │   ├── DownloadInterrupted     a download kept breaking off, retries and resumes spent;
    │   │                           UNAVAILABLE
    │   └── RegistryUnreachable     no connection, a TLS failure (the certificate problem is
    │                               named) or a 5xx answer; UNAVAILABLE
    ├── NetworkError                a CNI network could not be used (kurma.network)
    │   ├── NetworkNotFound         no network has that name
    │   ├── InvalidNetworkConfig    a network configuration breaks the CNI spec; names the
    │   │                           file and the key (also a ValueError)
    │   ├── PluginError             a CNI plugin failed: its name, the spec's error code, msg
    │   │   │                       and details (the JSON the plugin printed)
    │   │   └── PluginNotFound      no executable plugin of that type in the plugin paths
    │   └── DetachFailed            DEL failed in one or more plugins (all were run); the
    │                               attachment's record stays so that DEL can be retried
    ├── PodError                    the pod runtime refused an operation on a pod
    │   ├── PodNotFound             no pod has that UUID, UUID prefix or name
    │   └── PodStateError           the pod exists, but its state forbids the operation
    └── NotPermitted                the caller may not have what it asks for: more than its
                                    creator holds (least privilege, kurma.runtime._confine) or
                                    beyond its role (kurma.api._policy); PERMISSION_DENIED

ValidationError differs from ArchiveError in what was wrong: the document's content versus
the container around it. An archive whose manifest is invalid raises ValidationError.
An OCI manifest or image config whose content breaks a rule raises ValidationError, like an
appc manifest; UnsupportedManifest means the document is valid but of a kind Kurma refuses.
DigestMismatch differs from IncompleteBlob in what the caller should do: discard the bytes
(the source is wrong or hostile) versus fetch the rest (the transfer was cut short).
PluginError differs from InvalidNetworkConfig in who found the fault: the plugin, at run time
(an exhausted address range, a bridge that cannot be made), versus Kurma, reading the file.
PodNotFound differs from PodStateError in what the caller should do: look the pod up again
(`kurmactl ps -a`) versus wait for, or bring about, the state the operation needs (start a
created pod, stop a running one). Neither means the pod is broken.

Not in this tree, on purpose: failures of the system itself are OSError, with errno and the
path (`OSError(errno, "mount failed", target)`); the launcher's are `LauncherError`, an
OSError (kurma.runtime.launcher). An app that cannot start is no exception: its record says
why (`AppRecord.error`, exit codes 125-127).
"""

from __future__ import annotations


class KurmaError(Exception):
    """Base of every error Kurma raises deliberately."""


class ValidationError(KurmaError, ValueError):
    """A document violates a rule. `path` is a JSON path such as `app.exec[0]`."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class ArchiveError(KurmaError):
    """An archive is malformed or hostile. `member` names the offending entry, if any."""

    def __init__(self, message: str, member: str | None = None) -> None:
        self.member = member
        super().__init__(f"{message}: {member!r}" if member is not None else message)


class StoreError(KurmaError):
    """The image store refused an operation."""


class ImageNotFound(StoreError, LookupError):
    """No image matches the reference given."""


class AmbiguousImage(StoreError, LookupError):
    """A short image ID or a name matches several images and no rule picks one."""


class ImageInUse(StoreError):
    """Deleting an image was refused because something still uses it."""


class DependencyError(StoreError):
    """An image's dependencies cannot be resolved from the store, or a pinned ID differs."""


class OciError(KurmaError):
    """An OCI or Docker image, or a reference to one, cannot be used as it is."""


class InvalidReference(OciError, ValueError):
    """An image reference does not follow docker's grammar. `reference` is the text given,
    `reason` what is wrong with it (docker's wording, so messages match `docker pull`)."""

    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid reference format: {reason}: {reference!r}")


class InvalidDigest(OciError, ValueError):
    """A digest is not `algorithm:encoded`, has the wrong length or case for its algorithm,
    or names an algorithm Kurma cannot verify."""

    def __init__(self, digest: str, reason: str) -> None:
        self.digest = digest
        self.reason = reason
        super().__init__(f"invalid digest {digest!r}: {reason}")


class UnsupportedManifest(OciError):
    """A manifest is of a kind Kurma refuses: Docker schema 1, or an unknown media type."""


class PlatformNotFound(OciError, LookupError):
    """An image index has no manifest for the platform asked for. `offered` lists the
    platforms it has (as `os/arch[/variant]`), so the person can pick one."""

    def __init__(self, wanted: str, offered: tuple[str, ...]) -> None:
        self.wanted = wanted
        self.offered = offered
        listed = ", ".join(offered) if offered else "none"
        super().__init__(f"no image for platform {wanted}; the index offers: {listed}")


class DigestMismatch(OciError):
    """Content did not hash to the digest that names it (or ran past its declared size).
    The bytes must be discarded: the source is broken or hostile."""

    def __init__(self, expected: str, actual: str, what: str = "content") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what} does not match its digest: expected {expected}, got {actual}")


class IncompleteBlob(OciError):
    """Content ended before its declared size: the transfer was cut short. The bytes read so
    far are good to resume from (HTTP Range)."""

    def __init__(self, digest: str, expected_size: int, actual_size: int) -> None:
        self.digest = digest
        self.expected_size = expected_size
        self.actual_size = actual_size
        super().__init__(
            f"{digest} ended after {actual_size} of {expected_size} bytes (interrupted download?)"
        )


class RegistryError(KurmaError):
    """A registry (or mirror) did not give what was asked: the answer was unusable (a
    manifest too large, a protocol error). The subclasses say what the caller can do."""


class RegistryNotFound(RegistryError, LookupError):
    """The registry has no such repository, tag, manifest or blob (NAME_UNKNOWN,
    MANIFEST_UNKNOWN, BLOB_UNKNOWN, or a plain 404)."""


class RegistryAuthFailed(RegistryError):
    """The registry refused the request (401/403, UNAUTHORIZED, DENIED). The message names
    the registry and the auth that was tried: anonymous, basic as USER, or a bearer token
    from REALM with scope S."""

    def __init__(self, registry: str, tried: str, detail: str = "") -> None:
        self.registry = registry
        self.tried = tried
        more = f": {detail}" if detail else ""
        super().__init__(f"registry {registry} refused access ({tried}){more}")


class DownloadInterrupted(RegistryError):
    """A blob download broke off and kept breaking off: the retries (with HTTP Range
    resumes) are spent. Nothing of it was reported as good; pulling again may work."""


class RegistryUnreachable(RegistryError):
    """No usable connection to a registry: refused, timed out, TLS failed (the message names
    the host and the certificate problem), or the registry answered 5xx/429."""


class NetworkError(KurmaError):
    """A CNI network could not be found, read, attached or detached."""


class NetworkNotFound(NetworkError, LookupError):
    """No network has the name asked for."""


class InvalidNetworkConfig(NetworkError, ValueError):
    """A network configuration breaks the CNI spec (or Kurma's use of it). `source` names the
    file (or another origin), `key` the offending field as a JSON path such as
    `plugins[1].type` (empty when the whole document is at fault)."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class PluginError(NetworkError):
    """A CNI plugin failed. `plugin` is its type (the binary's name), `code` the spec's error
    code (None when the plugin gave none: killed, timed out, unparsable output), `msg` and
    `details` what it printed. `cleanup_errors` lists what failed while undoing an ADD."""

    def __init__(self, plugin: str, code: int | None, msg: str, details: str = "") -> None:
        self.plugin = plugin
        self.code = code
        self.msg = msg
        self.details = details
        self.cleanup_errors: tuple[PluginError, ...] = ()
        text = f"CNI plugin {plugin!r} failed"
        if code is not None:
            text += f" (code {code})"
        text += f": {msg}"
        if details:
            text += f" ({details})"
        super().__init__(text)


class PluginNotFound(PluginError, LookupError):
    """No executable plugin of that type is in the plugin paths (or the type is not a plain
    file name)."""

    def __init__(self, plugin: str, paths: tuple[str, ...], reason: str = "") -> None:
        self.paths = paths
        super().__init__(plugin, None, reason or f"not found in {', '.join(paths) or 'no paths'}")


class DetachFailed(NetworkError):
    """DEL failed in one or more plugins of a chain; every plugin was run. `errors` holds each
    plugin's PluginError, in the order they ran."""

    def __init__(self, network: str, container_id: str, errors: tuple[PluginError, ...]) -> None:
        self.network = network
        self.container_id = container_id
        self.errors = errors
        listed = "; ".join(str(e) for e in errors)
        super().__init__(f"detaching {container_id} from network {network!r} failed: {listed}")


class PodError(KurmaError):
    """The pod runtime refused an operation on a pod (the pod itself is not harmed)."""


class PodNotFound(PodError, LookupError):
    """No pod has that UUID, unique UUID prefix or name (for this caller)."""


class PodStateError(PodError):
    """The pod is not in a state that allows the operation (start a running pod, create a
    child of an exited one, go past the depth limit)."""


class NotPermitted(KurmaError):
    """A caller asked for more than it may have: a pod more than the pod creating it holds,
    a certificate more than its role allows (PERMISSION_DENIED)."""
