"""The Python runtime of a Kurma machine: Debian's python3.11, trimmed and precompiled, with
kurma and its dependencies. The initrd holds it for PID 1 and kurmad; the `python` image
layer holds the same files for the pods that run kurma code (console's kurmactl, syslog).

    python3 build/pyruntime.py DEST        # stage into DEST (must not exist)

What goes in, and why:
- Debian's interpreter and stdlib, from the packages installed on the build host (apt-get
  installs them when missing): `python3.11-minimal`, `libpython3.11-minimal`,
  `libpython3.11-stdlib`. Tests, GUI, build-time and obsolete parts are left out (STDLIB_DROP).
- Sources are compiled to legacy `.pyc` files beside where the `.py` was (sourceless, so a
  module is one file), with unchecked hashes: no mtimes inside, and nothing to re-validate
  at import on a machine whose files never change. kurma too: its tracebacks name files,
  lines and functions, without the source text (it would cost ~0.45 MB of the 30 MB budget).
- Dependencies: the versions installed in the build's virtualenv (the ones the tests ran
  with), as binary wheels, installed into /usr/lib/python3/dist-packages (Debian's python
  looks there). Shared objects are stripped.
- Shared libraries: every ELF file's closure, found by `ldd`, copied under its soname into
  /usr/lib/x86_64-linux-gnu; the loader at /lib64; `ldconfig` and its cache, because
  ctypes.util.find_library (pyseccomp) asks `ldconfig -p`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "build" / ".cache"
PYTHON = "python3.11"
HOST_PYTHON = Path("/usr/bin") / PYTHON
STDLIB = Path("/usr/lib") / PYTHON
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
HOST_TOOLS = ("binutils", "libc-bin", "libseccomp2")  # strip; ldd and ldconfig; pyseccomp's lib
DIST_PACKAGES = Path("usr/lib/python3/dist-packages")
LIBDIR = Path("usr/lib/x86_64-linux-gnu")
LOADER = Path("lib64/ld-linux-x86-64.so.2")

# stdlib parts no Kurma machine runs: tests, GUI, build and packaging tools, old codecs
STDLIB_DROP = {
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3",
    "pydoc_data", "distutils", "venv", "dbm", "curses", "msilib",
    "config-3.11-x86_64-linux-gnu", "__phello__", "xmlrpc", "wsgiref", "pydoc.py",
    "doctest.py", "pdb.py", "idle.py", "tabnanny.py", "mailbox.py", "imaplib.py",
    "nntplib.py", "smtplib.py", "poplib.py", "ftplib.py", "telnetlib.py", "cgi.py",
    "cgitb.py", "lib-dynload/_ctypes_test", "lib-dynload/_test", "lib-dynload/xxlimited",
    "lib-dynload/_xxtestfuzz", "lib-dynload/_xxsubinterpreters",
    "lib-dynload/_dbm", "lib-dynload/_curses", "lib-dynload/audioop",
    "lib-dynload/ossaudiodev", "lib-dynload/nis", "lib-dynload/_codecs_",
    "lib-dynload/readline", "lib-dynload/_tkinter", "site-packages", "dist-packages",
    "sqlite3", "lib-dynload/_sqlite3", "xml", "lib-dynload/pyexpat", "plistlib.py",
    "_pydecimal.py", "_pyio.py",
    # hashlib and hmac fall back to the interpreter's built-in hashes: kurmad's start does
    # not load all of libcrypto for a sha512 (the `ssl` module still brings it along)
    "lib-dynload/_hashlib",
}  # fmt: skip

# the runtime dependencies of kurma, by distribution name; extras that kurma never imports
# (zstandard's cffi flavour) are dropped after install
# cryptography loads only the compiled _cffi_backend, never the cffi package or pycparser
DEPENDENCY_DROP = (
    "zstandard/_cffi", "zstandard/backend_cffi", "grpc_tools", "bin/", "cffi", "pycparser",
)  # fmt: skip


class StageError(RuntimeError):
    """A step of staging failed; the message names the command or the file."""


def _log(msg: str) -> None:
    print(f"pyruntime: {msg}", file=sys.stderr, flush=True)


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise StageError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r


def ensure_host_packages() -> None:
    """Installs the Debian packages the runtime is taken from, when missing (as root)."""
    sys.path.insert(0, str(REPO / "build"))
    import kernel

    kernel.ensure_host_packages((*DEBIAN_PACKAGES, *HOST_TOOLS))


# --- the interpreter and stdlib ----------------------------------------------------------------


# The codecs kept: Unicode, ASCII/Latin-1, and what the interpreter, idna and the escapes use.
KEPT_ENCODINGS = {
    "__init__", "aliases", "ascii", "latin_1", "utf_8", "utf_8_sig", "utf_16", "utf_16_be",
    "utf_16_le", "utf_32", "utf_32_be", "utf_32_le", "idna", "punycode", "raw_unicode_escape",
    "unicode_escape", "charmap", "undefined", "base64_codec", "hex_codec", "cp437",
}  # fmt: skip


def _dropped(rel: str) -> bool:
    """`lib-dynload/_test` drops every file starting so; `test` the folder or the file;
    every codec but KEPT_ENCODINGS."""
    if rel.startswith("encodings/") and rel.count("/") == 1:
        return rel.removeprefix("encodings/").removesuffix(".py") not in KEPT_ENCODINGS
    return any(
        rel == d or rel.startswith(d + "/") or ("/" in d and rel.startswith(d)) for d in STDLIB_DROP
    )


def stage_stdlib(dest: Path) -> int:
    """Copies the interpreter and the kept stdlib files; returns how many files."""
    paths: set[str] = set()
    for pkg in DEBIAN_PACKAGES:
        paths.update(_run(["dpkg", "-L", pkg]).stdout.split("\n"))
    count = 0
    for path in sorted(paths):
        src = Path(path)
        if not path.startswith(f"{STDLIB}/") or not src.is_file() or src.is_symlink():
            continue
        rel = path[len(f"{STDLIB}/") :]
        if _dropped(rel) or "__pycache__" in rel:
            continue
        _copy(src, dest / STDLIB.relative_to("/") / rel)
        count += 1
    _copy(HOST_PYTHON, dest / "usr/bin" / PYTHON)
    os.symlink(PYTHON, dest / "usr/bin/python3")
    return count


# --- dependencies -------------------------------------------------------------------------------


def dependency_pins(project: str = "kurma") -> list[str]:
    """`name==version` of every runtime dependency of the project, transitively, as
    installed in this environment (the virtualenv the tests run in)."""
    seen: dict[str, str] = {}
    todo = [project]
    while todo:
        name = todo.pop()
        dist = importlib.metadata.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an extra, or another platform's dependency
            dep = req.name
            key = dep.lower().replace("_", "-")
            if key not in seen:
                seen[key] = importlib.metadata.distribution(dep).version
                todo.append(dep)
    return sorted(f"{k}=={v}" for k, v in seen.items())


def stage_dependencies(dest: Path, pins: list[str], cache: Path = CACHE / "wheels") -> None:
    """Installs binary wheels of `pins` (downloaded once into `cache`) into dist-packages."""
    cache.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    r = subprocess.run(
        [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--no-index",
         "--find-links", str(cache), "-d", str(cache), *pins],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:  # not all cached yet: fetch them from the index
        _run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(cache), *pins])
    target = dest / DIST_PACKAGES
    _run([*pip, "install", "-q", "--no-deps", "--no-index", "--find-links", str(cache),
          "--no-compile", "--target", str(target), *pins])  # fmt: skip
    for drop in DEPENDENCY_DROP:
        for p in sorted(target.glob(f"{drop}*")):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in sorted(target.glob("*.dist-info/RECORD")):
        p.unlink()  # lists hashes of .py files we replace by .pyc; nothing reads it here
    for p in sorted(target.glob("*.dist-info/INSTALLER")):
        p.unlink()


# --- kurma itself --------------------------------------------------------------------------------

SCRIPTS = {
    "usr/bin/kurmad": "kurma.api.daemon",
    "usr/bin/kurmactl": "kurma.cli.main",
    "usr/sbin/kurma-init": "kurma.init.main",
}


def stage_kurma(dest: Path) -> None:
    """The kurma package (sources and the pod init binary) and its entry scripts."""
    src = REPO / "kurma"
    podinit = src / "runtime/podinit/kurma-podinit"
    if not podinit.is_file():
        raise StageError(f"{podinit} is missing: run `make podinit` first")
    target = dest / DIST_PACKAGES / "kurma"
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if "__pycache__" in rel.parts or path.is_dir():
            continue
        if path.suffix == ".py" or path.suffix == ".pyi" or path == podinit:
            _copy(path, target / rel)
    for script, module in SCRIPTS.items():
        text = f"#!/usr/bin/{PYTHON} -I\nimport sys\nfrom {module} import main\nsys.exit(main())\n"
        _write(dest / script, text.encode(), 0o755)


# --- compiling ---------------------------------------------------------------------------------


def compile_tree(dest: Path) -> None:
    """.pyc files by Debian's interpreter, with unchecked hashes: sourceless legacy .pyc
    beside each .py, which is then removed (a module is one file, read once). Without the
    column tables (-X no_debug_ranges): without sources there is nothing for a traceback to
    underline, and each .pyc is a fifth smaller, to read and unmarshal at every start."""
    env = dict(os.environ, PYTHONHASHSEED="0", SOURCE_DATE_EPOCH="0")
    base = [str(HOST_PYTHON), "-I", "-X", "no_debug_ranges", "-m", "compileall", "-q", "-j", "1",
            "--invalidation-mode", "unchecked-hash", "-s", str(dest), "-p", "/"]  # fmt: skip
    roots = [dest / STDLIB.relative_to("/"), dest / DIST_PACKAGES]
    for root in roots:
        _run([*base, "-b", str(root)], env=env)
    for root in roots:
        for py in sorted(root.rglob("*.py")):
            if py.with_suffix(".pyc").exists():
                py.unlink()
        for pyi in sorted(root.rglob("*.pyi")):
            pyi.unlink()


def record_dataclass_code(dest: Path) -> None:
    """The table of kurma's dataclass methods, compiled once here (kurma/_dataclass_code.py):
    every kurma module imported by Debian's interpreter from the staged packages."""
    packages = dest / DIST_PACKAGES
    table = packages / "kurma" / "dataclass-code.bin"
    code = (
        f"import sys; sys.path.insert(0, {str(packages)!r}); "
        f"from kurma._dataclass_code import record; print(record({str(table)!r}))"
    )
    env = dict(os.environ, PYTHONHASHSEED="0")
    r = _run([str(HOST_PYTHON), "-I", "-X", "no_debug_ranges", "-c", code], env=env)
    _log(f"recorded {r.stdout.strip()} compiled dataclass methods in {table.name}")


# --- shared libraries ---------------------------------------------------------------------------


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def elf_files(dest: Path) -> list[Path]:
    return [
        p for p in sorted(dest.rglob("*"))
        if p.is_file() and not p.is_symlink() and _is_elf(p)
    ]  # fmt: skip


_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x")


def library_closure(files: list[Path]) -> dict[str, Path]:
    """soname -> host path of every shared library these ELF files need (ldd)."""
    needed: dict[str, Path] = {}
    for f in files:
        r = subprocess.run(["ldd", str(f)], capture_output=True, text=True)
        if "not a dynamic executable" in r.stdout + r.stderr or "statically linked" in r.stdout:
            continue
        for line in r.stdout.splitlines():
            if "not found" in line:
                raise StageError(f"{f}: {line.strip()}")
            m = _LDD_LINE.match(line)
            if m:
                needed[m.group(1)] = Path(m.group(2))
    return needed


def _full_closure(files: list[Path]) -> dict[str, Path]:
    libs = library_closure(files)
    while True:  # libraries need libraries
        more = {k: v for k, v in library_closure(list(libs.values())).items() if k not in libs}
        if not more:
            return libs
        libs.update(more)


def stage_libraries(dest: Path) -> list[str]:
    """Copies the closure of every ELF file in `dest`; the loader; ldconfig and its cache."""
    libs = _full_closure(elf_files(dest))
    libs.setdefault("libseccomp.so.2", Path("/lib/x86_64-linux-gnu/libseccomp.so.2"))
    libs.update({k: v for k, v in _full_closure(list(libs.values())).items() if k not in libs})
    for soname, path in sorted(libs.items()):
        _copy(path.resolve(), dest / LIBDIR / soname)
    _copy(Path("/") / LOADER, dest / LOADER, follow=True)
    _copy(Path("/sbin/ldconfig"), dest / "sbin/ldconfig")  # where ctypes.util looks
    (dest / "etc").mkdir(exist_ok=True)
    _run(["/sbin/ldconfig", "-X", "-r", str(dest)])
    return sorted(libs)


def stage_more_libraries(dest: Path, files: list[Path]) -> list[str]:
    """For ELF files added to a staged `dest` later (host paths, as `ldd` must resolve them
    on the host): the libraries of their closure that `dest` lacks; ldconfig's cache again."""
    added = []
    for soname, path in sorted(_full_closure(files).items()):
        target = dest / LIBDIR / soname
        if not target.exists() and soname != LOADER.name:
            _copy(path.resolve(), target)
            added.append(soname)
    _run(["/sbin/ldconfig", "-X", "-r", str(dest)])
    return added


def strip_shared_objects(dest: Path) -> None:
    for f in elf_files(dest):
        if ".so" in f.name and f.is_relative_to(dest / DIST_PACKAGES):
            _run(["strip", "--strip-unneeded", "--enable-deterministic-archives", str(f)])


# --- the whole ---------------------------------------------------------------------------------


def stage(dest: Path) -> None:
    """Stages the whole runtime into `dest` (created; must not exist or be empty)."""
    ensure_host_packages()
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise StageError(f"{dest} is not empty")
    n = stage_stdlib(dest)
    stage_dependencies(dest, dependency_pins())
    strip_shared_objects(dest)
    stage_kurma(dest)
    compile_tree(dest)
    record_dataclass_code(dest)
    libs = stage_libraries(dest)
    _log(f"staged {n} stdlib files, {len(libs)} libraries into {dest}")


def check(dest: Path) -> str:
    """Imports what kurma needs with the staged interpreter, chrooted into `dest` (root)."""
    code = (
        "import grpc, google.protobuf, yaml, psutil, zstandard, cryptography, pyseccomp, "
        "kurma.api.daemon, kurma.cli.main, kurma.init.main, kurma.init._network as n; "
        "n.import_without_package_init('pyroute2'); import pyroute2.iproute.linux; print('ok')"
    )
    null = dest / "dev/null"  # subprocess (ctypes.util) needs it; the initrd and pods have one
    null.parent.mkdir(exist_ok=True)
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    try:
        r = _run(["chroot", str(dest), f"/usr/bin/{PYTHON}", "-I", "-B", "-c", code])
    finally:
        null.unlink()
        with contextlib.suppress(OSError):
            null.parent.rmdir()
    return r.stdout.strip()


def _copy(src: Path, dst: Path, follow: bool = True) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst, follow_symlinks=follow)
    mode = stat.S_IMODE(os.stat(src).st_mode)
    os.chmod(dst, 0o755 if mode & 0o111 else 0o644)


def _write(dst: Path, data: bytes, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    os.chmod(dst, mode)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--check", action="store_true", help="import kurma in a chroot afterwards")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dest.parent, prefix=".pyruntime.") as tmp:
        staging = Path(tmp) / "root"
        stage(staging)
        if args.check:
            _log(f"check: {check(staging)}")
        os.rename(staging, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
