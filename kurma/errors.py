"""Kurma's error types, one hierarchy for every layer.

    KurmaError                      anything Kurma raises on purpose
    ├── ValidationError             a manifest (or other input document) breaks a rule;
    │                               carries the JSON path of the offending field
    ├── ArchiveError                an image archive is malformed or hostile (path escapes,
    │                               bombs, missing manifest); nothing was written
    └── StoreError                  the image store refused an operation
        ├── ImageNotFound           no image matches a reference
        ├── AmbiguousImage          a short ID or name matches more than one image
        ├── ImageInUse              delete refused: a pod or a rendered tree uses the image
        └── DependencyError         an image's dependencies cannot be resolved or do not match

ValidationError differs from ArchiveError in what was wrong: the document's content versus
the container around it. An archive whose manifest is invalid raises ValidationError.
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
