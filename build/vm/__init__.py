"""Pieces of the VM build shared by the initrd build, the VM tests and bench/boot.py.

build/ is not on sys.path by default: callers add it (`sys.path.insert(0, ROOT / "build")`)
and import `vm.cpio`, `vm.qemu`, `vm.smoke` (and `kernel` for the Debian kernel).
"""
