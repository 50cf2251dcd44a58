"""Which registry client a caller pulls with: kurmad's settings for everyone, and whose
credentials.

Credentials given in the call are used for the reference's registry only (never sent to a
mirror, which may belong to someone else). kurmad's own `config.json` serves the host and
admins only: a tenant's pod or an operator must not pull private images with the host's
account, so they bring their own (`kurmactl login` keeps them on the client's side, as
docker does, and `kurmactl pull` passes them in the call).
"""

from __future__ import annotations

from ..oci import Reference
from ..registry import Credentials, DockerConfig, RegistryClient, RegistrySettings
from ._caller import CallerView
from ._policy import TABLE, kind_of


class Registries:
    """kurmad's registry settings and credentials; one client per pull."""

    def __init__(self, settings: RegistrySettings | None, auth_file: str | None) -> None:
        self.settings = settings or RegistrySettings()
        self.own = DockerConfig(auth_file) if auth_file else None

    def qualify(self, text: str) -> Reference:
        """A typed reference on the configured default registry."""
        return self.settings.qualify(text)

    def client(
        self, view: CallerView, ref: Reference, username: str, password: str
    ) -> RegistryClient:
        """The client for one pull of `ref` by `view` (close it when done)."""
        if username or password:
            given = Credentials(username, password)

            def credentials(registry: str) -> Credentials | None:
                return given if registry == ref.domain else None

            return RegistryClient(self.settings, credentials)
        if self.own is not None and TABLE[kind_of(view)].system_images:
            return RegistryClient(self.settings, self.own.get)
        return RegistryClient(self.settings, None)
