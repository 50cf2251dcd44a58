"""The security suites (issue "Hardening"): one attack per test, its contract in the docstring.

Every test here needs root (namespaces, mounts, cgroups, a real kurmad) and is marked so.
Fixtures come from the root tests' support module, so an attack runs against the same
kurmad and runtime a user gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kurma.client import Client
from tests.root.runtime_support import busybox_aci as busybox_aci
from tests.root.runtime_support import pods as pods
from tests.root.test_kurmad import Daemon, daemon_with_image, host_client


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/security is a root test."""
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(pytest.mark.root)


@pytest.fixture(scope="module")
def daemon(busybox_aci: Path) -> Iterator[tuple[Daemon, str]]:
    """One kurmad per test module, with the busybox image imported: (daemon, image ID)."""
    yield from daemon_with_image(busybox_aci)


@pytest.fixture
def kurma(daemon: tuple[Daemon, str]) -> Iterator[Client]:
    """A host client; every pod the test leaves is destroyed (subtrees with their tops)."""
    yield from host_client(daemon[0])
