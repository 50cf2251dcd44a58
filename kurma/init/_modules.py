"""Kernel modules from /lib/modules/$(uname -r): dependencies from modules.dep, finit_module(2).

Two passes, because the OEM disk holds part of the boot config and finding it needs drivers
(virtio_blk, ext4, vfat): the `boot_config` step first loads the initrd's always-needed list,
`/etc/kurma/modules` (one name per line, `#` comments), then the `kernel_modules` step loads
the config's `modules`. A module already loaded (EEXIST) counts as loaded; a module that is
missing or fails is reported in the result and the rest still load.

Plain `.ko` files go through finit_module(2); compressed ones (`.ko.xz`, `.ko.zst`, `.ko.gz`)
are decompressed here and go through init_module(2), so the kernel needs no decompressor.
The parser is pure (`parse_modules_dep`, `load_order`) and tested with a fake modules.dep.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

BASE_LIST = "/etc/kurma/modules"
SYS_MODULE = "/sys/module"
_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
# (finit_module, init_module) per machine
_SYSCALLS = {"x86_64": (313, 175), "aarch64": (273, 105)}

_libc = ctypes.CDLL(None, use_errno=True)


def modules_dir() -> str:
    """/lib/modules of the running kernel."""
    return os.path.join("/lib/modules", platform.release())


def module_name(path_or_name: str) -> str:
    """`kernel/fs/ext4/ext4.ko.xz` -> `ext4`; `virtio-blk` -> `virtio_blk` (the kernel's name)."""
    base = os.path.basename(path_or_name.strip())
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep text as {name: (relative path, [relative paths of its dependencies])}."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep and path.strip():
            deps[module_name(path)] = (path.strip(), rest.split())
    return deps


def parse_name_list(text: str) -> list[str]:
    """One module name a line; blank lines and `#` comments skipped."""
    names = []
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            names.append(module_name(word))
    return names


def load_order(
    deps: Mapping[str, tuple[str, list[str]]],
    names: Iterable[str],
    builtin: AbstractSet[str] = frozenset(),
) -> tuple[list[str], list[str]]:
    """(relative paths to load, dependencies first, each once; names that are nowhere).

    A built-in module needs no loading and is neither in the list nor missing.
    """
    by_path = {path: name for name, (path, _) in deps.items()}
    order: list[str] = []
    done: set[str] = set()
    missing: list[str] = []

    def visit(name: str, visiting: frozenset[str]) -> None:
        if name in done or name in visiting:  # a cycle in modules.dep: load in listed order
            return
        path, requires = deps[name]
        for dep in requires:
            dep_name = by_path.get(dep, module_name(dep))
            if dep_name in deps:
                visit(dep_name, visiting | {name})
        done.add(name)
        order.append(path)

    for raw in names:
        name = module_name(raw)
        if name in deps:
            visit(name, frozenset())
        elif name not in builtin and name not in missing:
            missing.append(name)
    return order, missing


@dataclass
class ModuleReport:
    """What one pass loaded, found already there, and could not load (name -> reason)."""

    loaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.loaded)} loaded, {len(self.already)} already there"
        if self.failed:
            text += "; failed: " + ", ".join(f"{n} ({why})" for n, why in self.failed.items())
        return text


def load_waves(deps: Mapping[str, tuple[str, list[str]]], order: list[str]) -> list[list[str]]:
    """`order` (dependencies first) cut into waves: each module's dependencies are all in
    earlier waves, so the modules of one wave can be loaded at the same time."""
    requires = {path: reqs for path, reqs in deps.values()}
    level: dict[str, int] = {}
    for rel in order:
        level[rel] = 1 + max((level[d] for d in requires.get(rel, ()) if d in level), default=-1)
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for rel in order:
        waves[level[rel]].append(rel)
    return waves


def load_modules(
    names: Iterable[str], directory: str | None = None, sys_module: str = SYS_MODULE
) -> ModuleReport:
    """Load `names` and their dependencies from `directory` (default: the running kernel's).

    A module the kernel already runs is not loaded again: a finit_module that ends in
    EEXIST still reads and lays out the whole file first (Linux 6.1), 20 ms a module under
    TCG, and /init's loader has usually loaded the base modules by now. One still loading
    is inserted: the kernel makes that insert wait until it is ready."""
    directory = directory or modules_dir()
    report = ModuleReport()
    names = list(names)
    if not names:
        return report
    try:
        with open(os.path.join(directory, "modules.dep"), encoding="utf-8") as f:
            deps = parse_modules_dep(f.read())
    except OSError as e:
        report.failed.update({module_name(n): f"no modules.dep: {e.strerror}" for n in names})
        return report
    builtin = _builtin(directory)
    order, missing = load_order(deps, names, builtin)
    for name in missing:
        report.failed[name] = f"not in {directory}"

    def insert(rel: str) -> tuple[str, bool | OSError]:
        if is_live(module_name(rel), sys_module):
            return rel, False
        try:
            return rel, insert_module(os.path.join(directory, rel))
        except OSError as e:
            return rel, e

    # A wave at a time, its modules in parallel: finit_module releases the GIL, and the
    # kernel links and initialises modules concurrently (seconds saved under TCG).
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        for wave in load_waves(deps, order):
            for rel, result in pool.map(insert, wave):
                name = module_name(rel)
                if isinstance(result, OSError):
                    report.failed[name] = result.strerror or str(result)
                    log.warning("module %s: %s", name, result)
                elif result:
                    report.loaded.append(name)
                else:
                    report.already.append(name)
    return report


def is_live(name: str, sys_module: str = SYS_MODULE) -> bool:
    """Whether the kernel runs module `name` (its /sys/module/NAME/initstate is `live`)."""
    try:
        with open(os.path.join(sys_module, name, "initstate"), encoding="ascii") as f:
            return f.read().strip() == "live"
    except OSError:
        return False


def _builtin(directory: str) -> set[str]:
    try:
        with open(os.path.join(directory, "modules.builtin"), encoding="utf-8") as f:
            return {module_name(x) for x in f.read().split()}
    except OSError:
        return set()


def insert_module(path: str) -> bool:
    """Load one module file; False when it was loaded already (EEXIST). Raises OSError."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise OSError(errno.ENOSYS, f"no module syscalls known for {platform.machine()}", path)
    if path.endswith(".ko"):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            result = _libc.syscall(ctypes.c_long(numbers[0]), fd, b"", 0)
        finally:
            os.close(fd)
    else:
        image = _decompress(path)
        buf = ctypes.create_string_buffer(image, len(image))
        result = _libc.syscall(ctypes.c_long(numbers[1]), buf, ctypes.c_ulong(len(image)), b"")
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        return False
    raise OSError(err, f"loading module failed: {os.strerror(err)}", path)


def _decompress(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        import lzma

        return lzma.decompress(data)
    if path.endswith(".gz"):
        import gzip

        return gzip.decompress(data)
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise OSError(errno.ENOEXEC, "not a module file", path)
