"""OCI and Docker images: references, digests, manifests, indexes, configs (and layers).

The format only, as `kurma.aci` is for appc: no network, no store, no pods. The registry
client, the store's OCI images and rendering sit above it and import from here. Docker's
v2 schema 2 documents are read alongside OCI's, because most images in registries are still
pushed that way. Implementation lives in `_private` modules; this module re-exports the
public names (tests/unit/test_public_api.py asserts the list).
"""

# --- references and digests (kurma/oci/_reference.py, _digest.py) ------------------------
from ._digest import ALGORITHMS as ALGORITHMS
from ._digest import Digest as Digest
from ._digest import Verifier as Verifier
from ._digest import VerifyingReader as VerifyingReader
from ._digest import digest_of as digest_of
from ._digest import parse_digest as parse_digest
from ._digest import verify_bytes as verify_bytes
from ._reference import DEFAULT_DOMAIN as DEFAULT_DOMAIN
from ._reference import DEFAULT_TAG as DEFAULT_TAG
from ._reference import Reference as Reference
from ._reference import is_valid_tag as is_valid_tag
from ._reference import parse_reference as parse_reference

# --- manifests, indexes, platforms, configs (kurma/oci/_manifest.py, _platform.py, ...) ----
# isort: split
from ._config import ExposedPort as ExposedPort
from ._config import HistoryEntry as HistoryEntry
from ._config import ImageConfig as ImageConfig
from ._config import RunConfig as RunConfig
from ._config import parse_exposed_port as parse_exposed_port
from ._config import parse_image_config as parse_image_config
from ._config import parse_stop_signal as parse_stop_signal
from ._manifest import Descriptor as Descriptor
from ._manifest import Index as Index
from ._manifest import Manifest as Manifest
from ._manifest import parse_descriptor as parse_descriptor
from ._manifest import parse_manifest as parse_manifest
from ._mediatypes import ACCEPT as ACCEPT
from ._mediatypes import DOCKER_CONFIG as DOCKER_CONFIG
from ._mediatypes import DOCKER_MANIFEST as DOCKER_MANIFEST
from ._mediatypes import DOCKER_MANIFEST_LIST as DOCKER_MANIFEST_LIST
from ._mediatypes import LAYER_COMPRESSION as LAYER_COMPRESSION
from ._mediatypes import OCI_CONFIG as OCI_CONFIG
from ._mediatypes import OCI_INDEX as OCI_INDEX
from ._mediatypes import OCI_MANIFEST as OCI_MANIFEST
from ._mediatypes import is_layer as is_layer
from ._mediatypes import layer_compression as layer_compression
from ._platform import DEFAULT_PLATFORM as DEFAULT_PLATFORM
from ._platform import Platform as Platform
from ._platform import offered_platforms as offered_platforms
from ._platform import parse_platform as parse_platform
from ._platform import platform_matches as platform_matches
from ._platform import select_manifest as select_manifest

# --- layers (kurma/oci/_layers.py): whiteouts, applying a layer; names go here ------------
# isort: split
from ._layers import LAYER_MEDIA_TYPES as LAYER_MEDIA_TYPES
from ._layers import LayerResult as LayerResult
from ._layers import apply_layer as apply_layer
from ._layers import discard_tree as discard_tree
from ._layers import expand_layer as expand_layer

# --- appc manifests for OCI images (kurma/oci/_appc.py) -------------------------------------
# isort: split
from ._appc import CMD_ANNOTATION as CMD_ANNOTATION
from ._appc import DEFAULT_PATH as DEFAULT_PATH
from ._appc import ENTRYPOINT_ANNOTATION as ENTRYPOINT_ANNOTATION
from ._appc import LABELS_ANNOTATION as LABELS_ANNOTATION
from ._appc import STOP_SIGNAL_ANNOTATION as STOP_SIGNAL_ANNOTATION
from ._appc import ExecUser as ExecUser
from ._appc import appc_app as appc_app
from ._appc import appc_manifest as appc_manifest
from ._appc import appc_name as appc_name
from ._appc import appc_os_arch as appc_os_arch
from ._appc import appc_version as appc_version
from ._appc import resolve_exec as resolve_exec
from ._appc import resolve_user as resolve_user

# --- image archives (kurma/oci/_archive.py): docker-archive, OCI layout, oci-archive ----------
# isort: split
from ._archive import DOCKER_ARCHIVE as DOCKER_ARCHIVE
from ._archive import OCI_ARCHIVE as OCI_ARCHIVE
from ._archive import OCI_LAYOUT as OCI_LAYOUT
from ._archive import ArchiveImage as ArchiveImage
from ._archive import ImageArchive as ImageArchive
from ._archive import open_archive as open_archive
from ._archive import write_docker_archive as write_docker_archive
from ._archive import write_oci_layout as write_oci_layout
