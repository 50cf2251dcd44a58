"""Pulling from OCI registries: the distribution spec 1.1 client (pull side only).

Stdlib only (http.client, ssl), because kurmad runs inside a slim initrd.

- `RegistrySettings` / `parse_registry_settings`: kurmad.yml's `registries:` section
  (default registry, mirrors, insecure hosts, certs.d folder).
- `DockerConfig` / `Credentials`: credentials kept in docker's `config.json` format.
- `RegistryClient`: `get_manifest` (verified, size-limited) and `get_blob` (streamed,
  verified while it streams, resumed with HTTP Range); anonymous, basic and bearer-token
  auth; mirrors tried before the registry.

Failures are kurma.errors' RegistryError branch (RegistryNotFound, RegistryAuthFailed,
DownloadInterrupted, RegistryUnreachable), and DigestMismatch for content that is wrong.
Implementation lives in `_private` modules; this module re-exports the public names.
"""

from ._client import MAX_MANIFEST_SIZE as MAX_MANIFEST_SIZE
from ._client import FetchedManifest as FetchedManifest
from ._client import RegistryClient as RegistryClient
from ._credentials import Credentials as Credentials
from ._credentials import DockerConfig as DockerConfig
from ._credentials import config_key as config_key
from ._settings import DEFAULT_CERTS_DIR as DEFAULT_CERTS_DIR
from ._settings import RegistrySettings as RegistrySettings
from ._settings import api_host as api_host
from ._settings import parse_registry_settings as parse_registry_settings
