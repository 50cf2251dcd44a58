"""Shared test configuration: markers and the root requirement."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `root` need root; outside CI (where we are root) they skip with a reason."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (runs in CI as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
