"""YAML documents, read JSON-first.

kurma-init writes kurmad's settings and the services file as JSON, which is YAML too, so an
operator's YAML and the boot's files read the same. JSON parses with the stdlib in
microseconds; PyYAML's import alone costs ~20 ms natively, a third of a second in a booting
machine under qemu without KVM, on the way to the login prompt. So YAML is imported only
for a document that is not JSON.
"""

from __future__ import annotations

import json
from typing import Any


class DocumentError(ValueError):
    """Neither JSON nor YAML; the message says where."""


def load_document(text: str) -> Any:
    """The value of a YAML (or JSON) document; DocumentError when it is neither."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style, or broken: YAML decides
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml
    except yaml.YAMLError as e:
        raise DocumentError(str(e)) from None


def dump_json_document(data: Any) -> bytes:
    """`data` as a JSON document (valid YAML), keys sorted, one key per line."""
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
