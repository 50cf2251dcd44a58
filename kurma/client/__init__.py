"""A typed Python client of the Kurma API (what `kurmactl` is built on).

    with Client.connect("unix:///run/kurma/kurmad.sock") as kurma:
        kurma.import_image("busybox.aci")
        pod = kurma.create_pod(spec=run_spec(app_spec("example.com/busybox",
                                                      exec=["/bin/echo", "hi"])), start=True)
        print(kurma.wait(pod.uuid).apps[0].exit_code)

Top layer: imports grpc and the generated modules (kurma.api.v1) only, never the daemon.
"""

from ..api.v1 import host_pb2 as host_pb2
from ..api.v1 import images_pb2 as images_pb2
from ..api.v1 import pods_pb2 as pods_pb2
from ._client import Client as Client
from ._client import ExecSession as ExecSession
from ._client import Imported as Imported
from ._client import Stream as Stream
from ._client import app_spec as app_spec
from ._client import default_target as default_target
from ._client import run_spec as run_spec
from ._client import volume as volume
from ._errors import AlreadyExists as AlreadyExists
from ._errors import Cancelled as Cancelled
from ._errors import ClientError as ClientError
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import FailedPrecondition as FailedPrecondition
from ._errors import Internal as Internal
from ._errors import InvalidArgument as InvalidArgument
from ._errors import NotFound as NotFound
from ._errors import PermissionDenied as PermissionDenied
from ._errors import ResourceExhausted as ResourceExhausted
from ._errors import Unauthenticated as Unauthenticated
from ._errors import Unavailable as Unavailable
from ._errors import Unimplemented as Unimplemented
