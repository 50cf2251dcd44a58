"""kurma.runtime's public face: the names the layers above rely on, and nothing private used.

A change to RUNTIME_NAMES is a change of the runtime's API (see kurma/runtime/__init__.py).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import kurma.runtime

REPO = Path(__file__).resolve().parents[2]

RUNTIME_NAMES = {
    "API_DIR",
    "API_VOLUME",
    "API_SOCKET_NAME",
    "AppRecord",
    "AppState",
    "ExecProcess",
    "NotPermitted",
    "PodEvent",
    "PodEventKind",
    "PodPlan",
    "PodNotFound",
    "PodRecord",
    "PodState",
    "PodStateError",
    "Runtime",
    "RuntimeConfig",
    "check_quota_within",
    "default_seccomp",
    "seccomp_within",
}


def test_runtime_exports_exactly_its_api() -> None:
    assert set(kurma.runtime.__all__) == RUNTIME_NAMES


@pytest.mark.parametrize("name", sorted(RUNTIME_NAMES))
def test_each_public_name_resolves(name: str) -> None:
    assert getattr(kurma.runtime, name) is not None
    assert name in dir(kurma.runtime)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        kurma.runtime.NoSuchThing  # noqa: B018


def test_runtime_errors_join_the_tree() -> None:
    """The runtime's refusals are KurmaErrors of kurma.errors, not classes of their own."""
    from kurma import errors

    assert kurma.runtime.PodNotFound is errors.PodNotFound
    assert kurma.runtime.PodStateError is errors.PodStateError
    assert issubclass(errors.PodNotFound, errors.PodError)
    assert issubclass(errors.PodStateError, errors.PodError)
    assert issubclass(errors.PodError, errors.KurmaError)
    assert issubclass(kurma.runtime.NotPermitted, errors.KurmaError)
    assert "PodError" in (errors.__doc__ or "")


def _private_runtime_imports(path: Path) -> list[str]:
    """`kurma.runtime._x` modules (any depth) that a file imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            module = node.module
            if node.level:  # relative to kurma/<package>/
                module = "kurma." + module if node.level == 2 else module
            parts = module.split(".")
            if parts[:2] == ["kurma", "runtime"] and any(p.startswith("_") for p in parts[2:]):
                found.append(f"{path.name}:{node.lineno} {module}")
            names = [a.name for a in node.names]
            if parts == ["kurma", "runtime"] and any(n.startswith("_") for n in names):
                found.append(f"{path.name}:{node.lineno} {module}.{names}")
    return found


def test_api_imports_no_private_runtime_module() -> None:
    """kurma.api uses kurma.runtime's public names and public sub-packages only."""
    offenders = [
        hit
        for path in sorted((REPO / "kurma" / "api").glob("*.py"))
        for hit in _private_runtime_imports(path)
    ]
    assert offenders == []


def test_importing_the_runtime_package_stays_light() -> None:
    """PID 1 imports kurma.runtime.linux: the package must not pull in the whole runtime."""
    code = (
        "import sys, kurma.runtime.linux; "
        "sys.exit(any(m in sys.modules for m in "
        "('kurma.runtime._runtime', 'kurma.store', 'kurma.runtime.metadata')))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


def test_private_modules_still_answer_for_old_imports() -> None:
    """Code written against kurma.runtime._runtime (tests, benchmarks) keeps working."""
    old = importlib.import_module("kurma.runtime._runtime")
    for name in ("Runtime", "RuntimeConfig", "PodEvent", "PodNotFound", "PodStateError", "API_DIR"):
        assert getattr(old, name) is getattr(kurma.runtime, name)
