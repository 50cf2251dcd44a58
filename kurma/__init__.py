"""Kurma: a recursive container init system.

Layers import downward only:

    cli  ->  api (gRPC)  ->  init (boot steps, services)  ->  runtime / store / aci
                                                              (Linux and disk; no gRPC, no config)

`kurma.aci` knows the appc image format and nothing else; `kurma.store` keeps images and
rendered trees on disk using `kurma.aci`; `kurma.runtime` turns rendered trees into pods.
"""

__version__ = "0.1.0"

from ._dataclass_code import install as _install_dataclass_code

_install_dataclass_code()  # a no-op without the initrd's table (see _dataclass_code.py)
