"""The generated API modules match the protos: regenerate and compare, byte for byte."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "kurma" / "api" / "v1"


def _load_generator():  # build/ is not a package
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "build" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    written = _load_generator().generate(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in GENERATED.iterdir() if p.is_file()), (
        "kurma/api/v1 and the protos disagree on files: run `make proto`"
    )
    stale = [p.name for p in written if p.read_bytes() != (GENERATED / p.name).read_bytes()]
    assert not stale, f"stale generated modules {stale}: run `make proto` and commit them"


def test_every_service_is_importable() -> None:
    from kurma.api.v1 import host_pb2_grpc, images_pb2_grpc, pods_pb2_grpc

    services = {
        name
        for module in (pods_pb2_grpc, images_pb2_grpc, host_pb2_grpc)
        for name in dir(module)
        if name.endswith("Servicer") and not name.startswith("_")
    }
    assert services == {"PodsServicer", "ImagesServicer", "TrustServicer", "HostServicer"}
    assert "kurma.api.v1" in sys.modules
