"""The appc image format (v0.8.11): manifests, image IDs, archives.

Knows nothing of stores, pods or the API. Implementation lives in `_private` modules; this
module re-exports the public names (a test asserts the list).
"""

# --- manifests (kurma/aci/_names.py, _manifest*.py, _isolators.py) ---------------------------
from ._isolators import ApiAccessIsolator as ApiAccessIsolator
from ._isolators import ApiScope as ApiScope
from ._isolators import DevicesIsolator as DevicesIsolator
from ._isolators import Isolator as Isolator
from ._isolators import NamespacesIsolator as NamespacesIsolator
from ._isolators import NetworkAttachmentSpec as NetworkAttachmentSpec
from ._isolators import NetworkPort as NetworkPort
from ._isolators import NetworksIsolator as NetworksIsolator
from ._isolators import PrivilegedIsolator as PrivilegedIsolator
from ._isolators import SubtreeQuota as SubtreeQuota
from ._isolators import UnknownIsolator as UnknownIsolator
from ._isolators import isolator_types as isolator_types
from ._isolators import parse_isolator as parse_isolator
from ._manifest import parse_manifest as parse_manifest
from ._manifest_image import Dependency as Dependency
from ._manifest_image import ImageManifest as ImageManifest
from ._manifest_image import parse_image_manifest as parse_image_manifest
from ._manifest_isolator_types import CAPABILITIES as CAPABILITIES
from ._manifest_isolator_types import DEFAULT_CAPABILITIES as DEFAULT_CAPABILITIES
from ._manifest_isolator_types import BlockBandwidthIsolator as BlockBandwidthIsolator
from ._manifest_isolator_types import BlockIOPSIsolator as BlockIOPSIsolator
from ._manifest_isolator_types import CapabilitiesRemoveSet as CapabilitiesRemoveSet
from ._manifest_isolator_types import CapabilitiesRetainSet as CapabilitiesRetainSet
from ._manifest_isolator_types import CPUIsolator as CPUIsolator
from ._manifest_isolator_types import CPUSharesIsolator as CPUSharesIsolator
from ._manifest_isolator_types import MemoryIsolator as MemoryIsolator
from ._manifest_isolator_types import NetworkBandwidthIsolator as NetworkBandwidthIsolator
from ._manifest_isolator_types import NoNewPrivilegesIsolator as NoNewPrivilegesIsolator
from ._manifest_isolator_types import OOMScoreAdjIsolator as OOMScoreAdjIsolator
from ._manifest_isolator_types import SeccompRemoveSet as SeccompRemoveSet
from ._manifest_isolator_types import SeccompRetainSet as SeccompRetainSet
from ._manifest_isolator_types import SELinuxContextIsolator as SELinuxContextIsolator
from ._manifest_isolator_types import SysctlIsolator as SysctlIsolator
from ._manifest_json import FrozenMap as FrozenMap
from ._manifest_pod import ExposedPort as ExposedPort
from ._manifest_pod import Mount as Mount
from ._manifest_pod import PodManifest as PodManifest
from ._manifest_pod import RuntimeApp as RuntimeApp
from ._manifest_pod import RuntimeImage as RuntimeImage
from ._manifest_pod import Volume as Volume
from ._manifest_pod import VolumeKind as VolumeKind
from ._manifest_pod import parse_pod_manifest as parse_pod_manifest
from ._manifest_quantity import Quantity as Quantity
from ._manifest_types import App as App
from ._manifest_types import EventHandler as EventHandler
from ._manifest_types import MountPoint as MountPoint
from ._manifest_types import Port as Port
from ._names import VALID_OS_ARCH as VALID_OS_ARCH
from ._names import is_ac_identifier as is_ac_identifier
from ._names import is_ac_name as is_ac_name

# --- image IDs and archives (kurma/aci/_ids.py, _compression.py, _unpack.py, _build.py) --------
# isort: split
from ._build import build_aci as build_aci
from ._compression import Compression as Compression
from ._compression import detect_compression as detect_compression
from ._compression import open_decompressed as open_decompressed
from ._ids import IMAGE_ID_PREFIX as IMAGE_ID_PREFIX
from ._ids import image_id_matches as image_id_matches
from ._ids import is_image_id as is_image_id
from ._ids import parse_image_id_ref as parse_image_id_ref
from ._ids import short_image_id as short_image_id
from ._unpack import UnpackLimits as UnpackLimits
from ._unpack import UnpackResult as UnpackResult
from ._unpack import image_id_of as image_id_of
from ._unpack import unpack_aci as unpack_aci
