"""The appc metadata service (ace.md "App Container Metadata Service"), `acMetadata/v1`.

Runtime layer: sockets, namespaces and the pod's documents; no gRPC, no boot config.
`MetadataService.register_pod` opens a listener inside the pod's network namespace and
returns the pod's AC_METADATA_URL (`http://127.0.0.1:8775/<token>` by default); one thread
in `serve_forever` answers every pod. Implementation lives in `_private` modules.
"""

from ._handlers import FLAVOR as FLAVOR
from ._handlers import MetadataHandlers as MetadataHandlers
from ._hmac import PodSigner as PodSigner
from ._hmac import load_or_create_key as load_or_create_key
from ._http import Limits as Limits
from ._registry import PodRecord as PodRecord
from ._registry import build_pod_record as build_pod_record
from ._registry import new_token as new_token
from ._server import DEFAULT_POD_ADDRESS as DEFAULT_POD_ADDRESS
from ._server import DEFAULT_PORT as DEFAULT_PORT
from ._server import MetadataConfig as MetadataConfig
from ._server import MetadataService as MetadataService
