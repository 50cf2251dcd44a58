"""The boot config of kurma-init: defaults <- /etc/kurma.yml (initrd) <- OEM file <- kernel
command line `kurma.KEY=VALUE`, as typed, frozen dataclasses.

Pure data: no mounts, no device lookups. It imports only `kurma.errors` and the service
model it shares with kurmad (`kurma.services`' `ServiceSpec`, `kurma.backoff`), and lazily
`kurma.aci` and `kurma.store` to check a service's image and isolators, and `kurma.network`
to check a network's conflist; it never imports
`kurma.api` (the API sits above the init, DESIGN.md). Implementation lives in `_private`
modules:

    _problem   ConfigProblem: source, path, message
    _values    scalar parsers shared by YAML and the command line
    _schema    specs: clean a layer, merge, build the dataclasses, describe the keys
    _model     the dataclasses, field by field (a service's keys described from outside)
    _cmdline   /proc/cmdline -> nested map
    _load      layers, the secrets rule, rules between keys, load_boot_config
"""

from ._cmdline import parse_cmdline as parse_cmdline
from ._cmdline import split_cmdline as split_cmdline
from ._load import INITRD_FILE as INITRD_FILE
from ._load import Layer as Layer
from ._load import build_boot_config as build_boot_config
from ._load import cmdline_layer as cmdline_layer
from ._load import key_table as key_table
from ._load import load_boot_config as load_boot_config
from ._load import read_layer as read_layer
from ._load import to_plain as to_plain
from ._model import Api as Api
from ._model import Backoff as Backoff
from ._model import BootConfig as BootConfig
from ._model import Console as Console
from ._model import Disk as Disk
from ._model import DiskRole as DiskRole
from ._model import Dns as Dns
from ._model import FsType as FsType
from ._model import HealthCheck as HealthCheck
from ._model import Interface as Interface
from ._model import Listener as Listener
from ._model import LogForwarding as LogForwarding
from ._model import Network as Network
from ._model import Ntp as Ntp
from ._model import Protocol as Protocol
from ._model import RestartPolicy as RestartPolicy
from ._model import Route as Route
from ._model import Service as Service
from ._model import TrustedKey as TrustedKey
from ._model import network_document as network_document
from ._problem import CMDLINE as CMDLINE
from ._problem import ConfigProblem as ConfigProblem
from ._problem import ProblemKind as ProblemKind
from ._schema import KeyDoc as KeyDoc
