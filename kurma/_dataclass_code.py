"""Dataclass methods compiled once, at build time, instead of at every start.

Making a dataclass compiles generated source for its `__init__`, `__repr__`, `__eq__` and
so on (`dataclasses._create_fn` execs a text): about three quarters of the cost of the
class. kurmad's start makes ~550 such compiles (~100 ms natively, over a second under qemu
without KVM, on the way to the console's login prompt); kurma-init's ~190.

The initrd's build imports every kurma module once with `record` hooked in, and writes
each generated text with the code compiled from it, by module (`TABLE`, beside this
module). `install` (called from kurma/__init__.py) opens the table, if there is one, and
gives `dataclasses` an `exec` that runs the code compiled from the very same text; any
other text compiles as before. Without a table (a source checkout) nothing changes.
"""

from __future__ import annotations

import builtins
import marshal
import os
import sys

TYPE_CHECKING = False  # typing is not imported for this: every kurma process loads this module
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

TABLE = os.path.join(os.path.dirname(__file__), "dataclass-code.bin")
_FORMAT = (3, sys.implementation.cache_tag)  # a table from another interpreter is ignored
_HEADER = 8  # bytes: the length of the index that follows

# The table: an 8-byte little-endian length, then marshal((_FORMAT, {module: (offset, size)})),
# then per module a marshalled [(text, code)], at `offset` past the index: a process
# unmarshals only what its own imports use (the whole table, as code objects, would be
# 1.6 MB in every kurma process).


def install(table: str = TABLE) -> bool:
    """Serve `dataclasses`' compiles from `table`; False (and no change) without one."""
    try:
        fd = os.open(table, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        size = int.from_bytes(os.pread(fd, _HEADER, 0), "little")
        loaded = marshal.loads(os.pread(fd, size, _HEADER))
        if not isinstance(loaded, tuple) or len(loaded) != 2 or loaded[0] != _FORMAT:
            raise ValueError("another format")
    except (OSError, EOFError, ValueError, TypeError):
        os.close(fd)
        return False
    index: dict[str, tuple[int, int]] = loaded[1]
    base = _HEADER + size
    modules: dict[str, dict[str, CodeType]] = {}
    import dataclasses

    real_exec = builtins.exec

    def codes_of(module: object) -> dict[str, CodeType]:
        codes = modules.get(module)  # type: ignore[call-overload]
        if codes is None:
            at, length = index.get(module, (0, 0))  # type: ignore[call-overload]
            codes = dict(marshal.loads(os.pread(fd, length, base + at))) if length else {}
            modules[module] = codes  # type: ignore[index]
        return codes

    def exec_precompiled(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str) and globals:
            source = codes_of(globals.get("__name__")).get(source, source)
        real_exec(source, globals, locals)

    dataclasses.exec = exec_precompiled  # type: ignore[attr-defined]  # shadows the builtin
    return True


def record(table: str, package: str = "kurma") -> int:
    """Import every module of `package` with dataclasses' compiles captured; write the
    table (sorted, so two builds write the same bytes). Returns how many texts it holds."""
    import dataclasses
    import importlib
    import pkgutil

    modules: dict[str, dict[str, CodeType]] = {}
    real_exec = builtins.exec

    def exec_recording(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str) and globals and isinstance(globals.get("__name__"), str):
            codes = modules.setdefault(globals["__name__"], {})
            source = codes.setdefault(source, compile(source, "<string>", "exec"))
        real_exec(source, globals, locals)

    dataclasses.exec = exec_recording  # type: ignore[attr-defined]
    try:
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            if module.name.rsplit(".", 1)[-1] != "__main__":  # would run a program
                importlib.import_module(module.name)
    finally:
        del dataclasses.exec  # type: ignore[attr-defined]
    blobs = {name: marshal.dumps(sorted(codes.items())) for name, codes in sorted(modules.items())}
    index: dict[str, tuple[int, int]] = {}
    offset = 0
    for name, blob in blobs.items():
        index[name] = (offset, len(blob))
        offset += len(blob)
    header = marshal.dumps((_FORMAT, index))
    from .atomic import write_atomic  # at build time only: not in every process's imports

    data = b"".join([len(header).to_bytes(_HEADER, "little"), header, *blobs.values()])
    write_atomic(table, data, sync=False)
    return sum(len(codes) for codes in modules.values())
