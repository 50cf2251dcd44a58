"""Image references as docker parses them: `[REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]`.

People type what they type to `docker pull`, so Kurma follows docker's rules exactly (the
distribution/reference grammar and its `ParseNormalizedNamed`), including the surprising
ones:

- The first path component is a registry only if it contains `.` or `:`, is `localhost`,
  or has an upper-case letter (`Foo/bar` names registry `Foo`); otherwise the reference
  is on the default registry, `docker.io`. `index.docker.io` is an old name for it.
- On docker.io a one-component name is an official image: `ubuntu` is `library/ubuntu`.
- Path components are lowercase `[a-z0-9]` runs joined by `.`, `_`, `__` or dashes; a
  registry is a DNS-ish name, IPv4, or bracketed IPv6, with an optional port.
- A tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (Go's `\\w` is ASCII); a digest follows the
  tag (`name:tag@sha256:...`), and then it, not the tag, says what to pull.
- The path (not the registry) is at most 255 characters, what registries enforce.
- A bare 64-hex string is refused as a name: docker reads it as an image ID.

The familiar form (`ubuntu`, `user/app`) drops `docker.io/` and `library/`, as docker shows
names (but keeps `docker.io/` where the rest would read as another registry); the full form
(`docker.io/library/ubuntu`) is what the store keys on, so both spellings of one image are
one image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from kurma.errors import InvalidDigest, InvalidReference

from ._digest import Digest, parse_digest

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
LOCALHOST = "localhost"

# The grammar, piece by piece (distribution/reference regexp.go), for Python's `re`:
# ASCII classes instead of `\w`, and fullmatch instead of `$` (which allows a final "\n").
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN_AND_PORT = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    r"(?P<name>(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME + r")"
    r"(?::(?P<tag>" + _TAG + r"))?"
    r"(?:@(?P<digest>" + _DIGEST + r"))?"
)
_NAME_RE = re.compile(r"(?:(?P<domain>" + _DOMAIN_AND_PORT + r")/)?(?P<path>" + _REMOTE_NAME + r")")
_TAG_RE = re.compile(_TAG)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: registry, repository path, and tag and/or digest.

    `tag` and `digest` are None when not given; `target` says what to ask the registry for.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """The full repository name, `docker.io/library/ubuntu`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository name as docker shows it: `ubuntu`, `user/app`, `quay.io/x/y`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        rest = self.path.removeprefix(OFFICIAL_PREFIX)
        # Only a single component below library/ is shortened (docker's rule: the official
        # namespace has no nested repositories, so `library/a/b` stays as written).
        if rest != self.path and "/" not in rest:
            return rest
        # Unlike docker, keep the registry when the short form would read as another one:
        # docker shows docker.io/foo.bar/baz as `foo.bar/baz`, which names registry foo.bar.
        if _split_docker_domain(self.path)[0] != DEFAULT_DOMAIN:
            return self.name
        return self.path

    @property
    def familiar(self) -> str:
        """The short string form: `ubuntu:22.04`, `user/app@sha256:...`."""
        return self.familiar_name + self._suffix()

    @property
    def target(self) -> str:
        """What the registry's manifest endpoint is asked for: the digest if there is one,
        else the tag, else `latest`."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag if self.tag is not None else DEFAULT_TAG

    def with_default_tag(self) -> Reference:
        """This reference with tag `latest` if it has neither tag nor digest (docker's
        TagNameOnly), so `ubuntu` and `ubuntu:latest` name the same stored image."""
        if self.tag is None and self.digest is None:
            return replace(self, tag=DEFAULT_TAG)
        return self

    def _suffix(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return tag + digest

    def __str__(self) -> str:
        return self.name + self._suffix()


def _split_docker_domain(text: str) -> tuple[str, str]:
    """Split typed text into (registry, rest) by docker's heuristics (module docstring)."""
    first, sep, rest = text.partition("/")
    if not sep:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + text
    if first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif first == LOCALHOST or "." in first or ":" in first or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, text
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str) -> Reference:
    """Parse a reference as `docker pull` would; InvalidReference names what is wrong."""
    if not isinstance(text, str):
        raise InvalidReference(repr(text), "a reference must be a string")
    if text == "":
        raise InvalidReference(text, "repository name must have at least one component")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference(
            text, "cannot specify 64-byte hexadecimal strings (that is an image ID, not a name)"
        )
    domain, remainder = _split_docker_domain(text)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise InvalidReference(text, f"repository name ({remote}) must be lowercase")
    return _parse_full(text, f"{domain}/{remainder}")


def _parse_full(text: str, full: str) -> Reference:
    """Match `full` (registry already added) against the grammar; errors quote `text`."""
    match = _REFERENCE_RE.fullmatch(full)
    if match is None:
        lowered = full.lower()
        if lowered != full and _REFERENCE_RE.fullmatch(lowered):
            raise InvalidReference(text, "repository name must be lowercase")
        raise InvalidReference(text, _explain(full))
    name = _NAME_RE.fullmatch(match["name"])
    assert name is not None and name["domain"] is not None  # the registry was prefixed
    if len(name["path"]) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(
            text, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    digest = None
    if match["digest"] is not None:
        try:
            digest = parse_digest(match["digest"])
        except InvalidDigest as e:
            raise InvalidReference(text, e.reason) from e
    return Reference(name["domain"], name["path"], match["tag"], digest)


def _explain(full: str) -> str:
    """Why `full` (with its registry) does not match: the first part that is wrong."""
    rest, at, digest = full.partition("@")
    if at and not re.fullmatch(_DIGEST, digest):
        return f"invalid digest format {digest!r}"
    domain, _, path = rest.partition("/")
    # A ':' after the last '/' starts the tag; one before it belongs to the registry port.
    path, colon, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    if colon and not _TAG_RE.fullmatch(tag):
        return f"invalid tag format {tag!r} (letters, digits, '_', '.', '-'; at most 128)"
    if not re.fullmatch(_DOMAIN_AND_PORT, domain):
        return f"invalid registry {domain!r}"
    for component in path.split("/"):
        if not re.fullmatch(_PATH_COMPONENT, component):
            return (
                f"invalid repository path component {component!r} (lowercase letters and "
                "digits, joined by '.', '_', '__' or '-')"
            )
    return "does not match [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]"


def is_valid_tag(tag: str) -> bool:
    """Whether `tag` is a valid tag (to check a tag given apart from a reference)."""
    return isinstance(tag, str) and _TAG_RE.fullmatch(tag) is not None
