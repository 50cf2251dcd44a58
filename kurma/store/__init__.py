"""The image store: content-addressed images, rendered trees, and who uses them.

appc images (`_images`) and OCI images (`_oci`: blobs by digest, layer trees by ChainID)
side by side, one record and one ID form for both. Sits on `kurma.aci` and `kurma.oci`
(formats) and the filesystem; knows nothing of registries, pods or the API. Every
write goes to a temporary name and is renamed into place; flock serialises processes.
"""

from ._images import ImageStore as ImageStore
from ._images import ImportResult as ImportResult
from ._images import StoreFull as StoreFull
from ._oci import LayerProgress as LayerProgress
from ._oci import OciImport as OciImport
from ._records import ImageRecord as ImageRecord
from ._records import ImageRef as ImageRef
from ._records import OciFacts as OciFacts
from ._records import parse_image_ref as parse_image_ref
from ._refs import Reference as Reference
from ._render import RenderedTree as RenderedTree
from ._select import version_key as version_key
