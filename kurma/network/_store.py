"""Attachments kept on disk, one JSON file each, so DEL can run after a crash.

A file is `CONTAINERID@NETWORK@IFNAME.json` (neither a container ID nor a network name
may hold `@`), written atomically with its directory synced: a record exists before ADD
starts (without a result) and holds the result once ADD finished. A reconcile lists them
and detaches what no pod owns any more.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator

from ..atomic import TEMP_PREFIX, write_atomic
from ._attachment import Attachment, check_container_id, check_ifname

log = logging.getLogger(__name__)

SUFFIX = ".json"


class AttachmentStore:
    """The attachment records in `directory` (made on first write, mode 0700)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)

    def __repr__(self) -> str:
        return f"AttachmentStore({self.directory!r})"

    def path(self, container_id: str, network: str, ifname: str) -> str:
        """The file of one attachment."""
        check_container_id(container_id)
        check_ifname(ifname)
        if "@" in network or "/" in network or not network:
            raise ValueError(f"invalid network name {network!r}")
        return os.path.join(self.directory, f"{container_id}@{network}@{ifname}{SUFFIX}")

    def save(self, attachment: Attachment) -> None:
        """Write (or replace) the record of `attachment`."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        data = json.dumps(attachment.to_json(), indent=1, sort_keys=True) + "\n"
        write_atomic(self.path(*attachment.key), data, 0o600, sync_dir=True)

    def remove(self, attachment: Attachment) -> None:
        """Forget `attachment` (after its DEL succeeded); no error if it is gone already."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(*attachment.key))

    def get(self, container_id: str, network: str, ifname: str) -> Attachment | None:
        """One attachment, or None."""
        return self._read(self.path(container_id, network, ifname))

    def __iter__(self) -> Iterator[Attachment]:
        """Every readable record; an unreadable one is logged and skipped."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith((".", TEMP_PREFIX)) or not name.endswith(SUFFIX):
                continue
            att = self._read(os.path.join(self.directory, name))
            if att is not None:
                yield att

    def list(self, container_id: str | None = None) -> list[Attachment]:
        """Every attachment (of one container, if given)."""
        return [a for a in self if container_id is None or a.container_id == container_id]

    def _read(self, path: str) -> Attachment | None:
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
            return Attachment.from_json(doc)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("unreadable attachment record %s: %s", path, e)
            return None
