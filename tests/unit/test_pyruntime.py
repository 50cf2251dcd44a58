"""What goes into the machine's Python (build/pyruntime.py): the stdlib trim and the pins."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "build"))

import pyruntime  # noqa: E402  (build/pyruntime.py)


def test_the_stdlib_trim_drops_folders_files_and_extension_prefixes() -> None:
    dropped = pyruntime._dropped
    assert dropped("test/test_os.py") and dropped("idlelib/idle.py") and dropped("pydoc.py")
    assert dropped("lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so")
    assert dropped("lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so")
    assert dropped("sqlite3/__init__.py")  # only pyroute2's NDB, which PID 1 never loads
    assert dropped("xml/dom/minidom.py") and dropped("encodings/cp1252.py")
    assert not dropped("encodings/utf_8.py") and not dropped("encodings/__init__.py")
    assert dropped("lib-dynload/_sqlite3.cpython-311-x86_64-linux-gnu.so")
    # kept: what kurma, grpc and pyroute2's IPRoute import (unittest and ssl included)
    for kept in ("os.py", "asyncio/base_events.py", "unittest/mock.py",
                 "ssl.py", "lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
                 "testing.py", "tests.py"):  # fmt: skip
        assert not dropped(kept), kept


def test_pins_are_the_runtime_dependencies_as_installed() -> None:
    """kurma's own dependencies, transitively, at the versions the tests run with; no test
    tools, no other platform's packages."""
    pins = dict(p.split("==") for p in pyruntime.dependency_pins())
    for name in ("grpcio", "protobuf", "pyyaml", "pyroute2", "cryptography", "cffi", "psutil"):
        assert name in pins, sorted(pins)
    for name in ("pytest", "ruff", "hypothesis", "pexpect", "grpcio-tools"):
        assert name not in pins
    import grpc

    assert pins["grpcio"] == grpc.__version__
