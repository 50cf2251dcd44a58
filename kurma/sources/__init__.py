"""Where images come from: OCI registries (pull) and image archives (import).

Sits between the formats (`kurma.oci`), the registry client (`kurma.registry`) and the
store (`kurma.store`): picks the manifest for the platform, hands the store a way to fetch
each blob, and maps the image config to the appc manifest the runtime runs.
"""

from ._mapping import manifest_for as manifest_for
from ._pull import PullResult as PullResult
from ._pull import pull_image as pull_image
