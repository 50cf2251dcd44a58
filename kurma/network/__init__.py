"""CNI 1.0 networks: configurations, plugins, attachments and their records.

The runtime's side of the Container Network Interface: `load_networks` reads `.conflist`
(and single-plugin `.conf`) files; `attach` runs ADD through a network's plugin chain for
a container's network namespace and returns an `Attachment` (its `Result`: interfaces,
IPs, routes, DNS); `detach` runs DEL, `check` CHECK. `AttachmentStore` keeps every
attachment on disk so that DEL runs after a crash and after the configuration changed.
No pods here: the runtime creates the namespaces and calls this package (see
kurma/network/_chain.py for the protocol's rules). Implementation lives in `_private`
modules; this module re-exports the public names (tests/unit/test_public_api.py).
"""

from ..errors import DetachFailed as DetachFailed
from ..errors import InvalidNetworkConfig as InvalidNetworkConfig
from ..errors import NetworkError as NetworkError
from ..errors import NetworkNotFound as NetworkNotFound
from ..errors import PluginError as PluginError
from ..errors import PluginNotFound as PluginNotFound
from ._attachment import Attachment as Attachment
from ._attachment import PortMapping as PortMapping
from ._attachment import check_container_id as check_container_id
from ._attachment import check_ifname as check_ifname
from ._attachment import format_cni_args as format_cni_args
from ._chain import attach as attach
from ._chain import check as check
from ._chain import detach as detach
from ._chain import plugin_stdin as plugin_stdin
from ._config import SUPPORTED_VERSIONS as SUPPORTED_VERSIONS
from ._config import NetworkConfig as NetworkConfig
from ._config import PluginConfig as PluginConfig
from ._config import get_network as get_network
from ._config import is_valid_name as is_valid_name
from ._config import load_network_file as load_network_file
from ._config import load_networks as load_networks
from ._config import parse_network_config as parse_network_config
from ._plugins import DEFAULT_PATHS as DEFAULT_PATHS
from ._plugins import Plugins as Plugins
from ._result import DNS as DNS
from ._result import Interface as Interface
from ._result import IPConfig as IPConfig
from ._result import Result as Result
from ._result import Route as Route
from ._result import hosts_entries as hosts_entries
from ._result import render_resolv_conf as render_resolv_conf
from ._store import AttachmentStore as AttachmentStore
