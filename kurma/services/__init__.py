"""System services: the services file PID 1 writes (`_spec`, no runtime needed) and the
supervisor inside kurmad that runs them as host-level pods (`_supervisor`).

Layers: `_spec` and `_graph` are pure data (kurma-init imports them); `_supervisor` sits on
the runtime and is driven by kurmad (kurma.api wires it in and serves it).
"""

from ._graph import check_graph as check_graph
from ._graph import stop_order as stop_order
from ._spec import KNOWN_CONDITIONS as KNOWN_CONDITIONS
from ._spec import Backoff as Backoff
from ._spec import HealthCheck as HealthCheck
from ._spec import RestartPolicy as RestartPolicy
from ._spec import ServicesFile as ServicesFile
from ._spec import ServiceSpec as ServiceSpec
from ._spec import ServiceSpecError as ServiceSpecError
from ._spec import VolumeSpec as VolumeSpec
from ._spec import dump_services as dump_services
from ._spec import load_services_file as load_services_file
from ._spec import parse_services as parse_services
from ._spec import write_services_file as write_services_file
from ._state import ServiceNotFound as ServiceNotFound
from ._state import ServiceState as ServiceState
from ._state import ServiceStatus as ServiceStatus
