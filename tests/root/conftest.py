"""Fixtures shared by the root tests (defined in runtime_support)."""

from .runtime_support import busybox_aci as busybox_aci
from .runtime_support import pods as pods
