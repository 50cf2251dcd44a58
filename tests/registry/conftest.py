"""Fixtures over tests/registry/support.py: a CA, and a TLS docker-registry (no auth) holding
one pushed image. Other test files (the store's pull tests) can use them by name, or import
the helpers from tests.registry.support for registries of their own.

- `registry_ca` (session): a support.CA.
- `open_registry` (session): a support.RegistryProcess with TLS and no auth, holding
  `test/app:v1` (the `app_image` layout), stopped at the end of the session.
- `app_image` (session): the support.Layout pushed as test/app:v1: two gzip layers (the
  second 512 KiB of random bytes, so a download takes several reads).
- `registry_certs` (session): a certs.d folder trusting `registry_ca` for `open_registry`.
- `client_for` (function): `client_for(**settings) -> RegistryClient` with certs_dir set
  to `registry_certs` unless given, fast retries; closed at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kurma.backoff import Backoff
from kurma.registry import RegistryClient, RegistrySettings

from .support import CA, Layout, RegistryProcess, build_layout, push, require_tools


@pytest.fixture(scope="session")
def registry_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="session")
def registry_ca(registry_tmp: Path) -> CA:
    return CA(registry_tmp / "ca")


@pytest.fixture(scope="session")
def app_image(registry_tmp: Path) -> Layout:
    big = os.urandom(512 << 10)
    return build_layout(
        registry_tmp / "app-layout",
        [{"etc/hello.txt": b"hello\n"}, {"data/random.bin": big}],
        tag="v1",
    )


@pytest.fixture(scope="session")
def open_registry(
    registry_tmp: Path, registry_ca: CA, app_image: Layout
) -> Iterator[RegistryProcess]:
    require_tools("docker-registry", "skopeo")
    with RegistryProcess.start(registry_tmp / "open", ca=registry_ca) as registry:
        push(app_image, registry, "test/app:v1")
        yield registry


@pytest.fixture(scope="session")
def registry_certs(registry_tmp: Path, registry_ca: CA, open_registry: RegistryProcess) -> Path:
    return registry_ca.certs_dir(registry_tmp / "certs.d", open_registry.host)


@pytest.fixture
def client_for(registry_certs: Path) -> Iterator[Callable[..., RegistryClient]]:
    clients: list[RegistryClient] = []

    def make(credentials=None, **settings) -> RegistryClient:
        settings.setdefault("certs_dir", str(registry_certs))
        client = RegistryClient(
            RegistrySettings(**settings),
            credentials,
            backoff=Backoff(initial=0.01, maximum=0.05),
            timeout=10,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
