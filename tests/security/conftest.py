"""The security suites (issue "Hardening"): one attack per test, its contract in the docstring.

Every test here needs root (namespaces, mounts, cgroups, a real kurmad) and is marked so.
Fixtures come from the root tests' support module, so an attack runs against the same
kurmad and runtime a user gets.
"""

from __future__ import annotations

import pytest

from tests.root.runtime_support import busybox_aci as busybox_aci
from tests.root.runtime_support import pods as pods


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/security is a root test."""
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(pytest.mark.root)
