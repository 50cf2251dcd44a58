"""kurma/documents.py: JSON read without PyYAML, anything else as YAML, errors named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kurma.documents import DocumentError, dump_json_document, load_document


def test_a_json_document_reads_the_same_as_yaml_would() -> None:
    data = {"services": {"console": {"exec": ["/bin/sh", "-c", "x: y"]}}, "ready": [], "n": 1}
    text = dump_json_document(data).decode()
    assert load_document(text) == data
    import yaml

    assert yaml.safe_load(text) == data  # what an operator's YAML tools see


def test_yaml_and_yaml_flow_style_fall_back_to_pyyaml() -> None:
    assert load_document("a: 1\nb: [x, y]\n") == {"a": 1, "b": ["x", "y"]}
    assert load_document("{a: 1}") == {"a": 1}  # starts like JSON, is YAML
    assert load_document("") is None


def test_neither_json_nor_yaml_is_an_error_saying_where() -> None:
    with pytest.raises(DocumentError, match="line 1"):
        load_document("a: [1, 2\n")


def test_json_needs_no_pyyaml() -> None:
    """The point of it: a booting kurmad reads kurma-init's files without importing yaml."""
    code = (
        "import sys; from kurma.documents import load_document; "
        "assert load_document('{\"a\": [1]}') == {'a': [1]}; print('yaml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
