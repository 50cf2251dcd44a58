"""The appc manifest an OCI image runs with (TEMPORARY minimal mapping; see kurma.oci)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kurma.oci import ImageConfig
from kurma.store import OciImport


def manifest_for(config: ImageConfig, source: OciImport, rootfs: Path) -> bytes:
    """The generated appc image manifest of an OCI image."""
    first = source.references[0] if source.references else "oci/image:latest"
    repo, tag = first.split("@")[0], "latest"
    if ":" in repo.rsplit("/", 1)[-1]:
        repo, tag = repo.rsplit(":", 1)
    name = re.sub(r"[^a-z0-9./~-]", "-", repo.lower())
    run = config.config
    exec_ = list(run.entrypoint or ()) + list(run.cmd or ())
    app = {
        "exec": exec_,
        "user": "0",
        "group": "0",
        "workingDirectory": run.working_dir or "/",
        "environment": [{"name": k, "value": v} for k, _, v in (e.partition("=") for e in run.env)],
    }
    doc = {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [
            {"name": "version", "value": tag},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": config.platform.architecture},
        ],
        "app": app,
    }
    return json.dumps(doc).encode()
