"""Where images come from: OCI registries (pull) and image archives (import).

Sits between the formats (`kurma.oci`), the registry client (`kurma.registry`) and the
store (`kurma.store`): picks the manifest for the platform, hands the store a way to fetch
each blob, and maps the image config to the appc manifest the runtime runs.
"""

from ._archives import ACI as ACI
from ._archives import EXPORT_FORMATS as EXPORT_FORMATS
from ._archives import ArchiveImport as ArchiveImport
from ._archives import archive_kind as archive_kind
from ._archives import export_image as export_image
from ._archives import import_archive as import_archive
from ._mapping import manifest_for as manifest_for
from ._pull import PullResult as PullResult
from ._pull import pull_image as pull_image
