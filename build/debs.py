"""Debian packages as build inputs: resolve, download (cached), extract, and ELF closures.

    from debs import fetch_tree, elf_closure, copy_paths

Nothing is installed: `apt-get download` fetches the candidate version of each package into
build/.cache/debs/ (kept across builds; a cached .deb is never fetched again) and
`dpkg-deb -x` unpacks them into a staging tree. The same apt lists give the same versions,
hence the same bytes, which is what reproducible images need.

`library_packages(["chrony"])` follows Depends/Pre-Depends only into shared-library
packages (`lib*`): a service image wants the program and what it links against, never
adduser or debconf. `elf_closure(tree, [paths])` then keeps only the libraries the
programs really load (DT_NEEDED and the interpreter, found in the tree's library dirs).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("KURMA_DEBS_CACHE", HERE / ".cache" / "debs"))
HOST_PACKAGES = ("binutils",)  # readelf; apt-get and dpkg-deb come with every Debian
LIB_DIRS = (
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "lib",
    "usr/lib",
)


class DebError(RuntimeError):
    """A package could not be resolved, fetched or unpacked, or a library is missing."""


def _log(msg: str) -> None:
    print(f"debs: {msg}", file=sys.stderr)


def _run(argv: list[str], **kw) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise DebError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def ensure_host_packages(packages: Iterable[str] = HOST_PACKAGES) -> None:
    """Install the Debian packages the build runs (readelf) when missing, as kernel.py does."""
    sys.path.insert(0, str(HERE))
    try:
        import kernel  # build/kernel.py

        kernel.ensure_host_packages(tuple(packages))
    except kernel.KernelError as e:
        raise DebError(str(e)) from e
    finally:
        sys.path.remove(str(HERE))


# --- resolving ---------------------------------------------------------------------------------

_EDGE = re.compile(r"^ [ |](?:Pre)?Depends: (\S+)$")


def parse_depends_graph(text: str) -> dict[str, list[str]]:
    """`apt-cache depends --recurse` output as {package: [its (pre-)dependencies]}.

    Of alternatives (`|Depends:`) every one is listed; virtual names (`<x>`) are dropped.
    """
    graph: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = graph.setdefault(line.strip(), []) if not line.startswith("<") else None
            continue
        m = _EDGE.match(line)
        if m and current is not None and not m.group(1).startswith("<"):
            current.append(m.group(1))
    return graph


def library_packages(packages: Iterable[str]) -> list[str]:
    """`packages` and, transitively, every shared-library package (`lib*`) they depend on."""
    packages = list(packages)
    text = _run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages]
    )  # fmt: skip
    graph = parse_depends_graph(text)
    seen: list[str] = []
    todo = list(packages)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        todo += [d for d in graph.get(name, []) if d.startswith("lib") and d not in seen]
    return sorted(seen)


def candidates(packages: Iterable[str]) -> dict[str, str]:
    """{package: its candidate version}, in one `apt-cache policy` call."""
    packages = list(packages)
    out = _run(["apt-cache", "policy", *packages])
    found: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            name = line[:-1]
        elif name and (m := re.match(r"\s+Candidate:\s*(\S+)", line)):
            found[name.split(":")[0]] = m.group(1)
    missing = [p for p in packages if found.get(p) in (None, "(none)")]
    if missing:
        raise DebError(f"no installable candidate for Debian package(s) {missing} (apt update?)")
    return found


# --- downloading -------------------------------------------------------------------------------


def _deb_glob(name: str, version: str) -> str:
    return f"{name}_{version.replace(':', '%3a')}_*.deb"


def download(versions: dict[str, str], cache: Path | None = None) -> list[Path]:
    """The .deb of each {package: version}, from the cache or fetched into it now."""
    cache = Path(cache or DEFAULT_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = {n: v for n, v in versions.items() if not list(cache.glob(_deb_glob(n, v)))}
        if wanted:
            _log("downloading " + " ".join(f"{n}={v}" for n, v in sorted(wanted.items())))
            stage = cache / ".partial"
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir()
            try:
                _run(["apt-get", "download", *(f"{n}={v}" for n, v in sorted(wanted.items()))],
                     cwd=stage)  # fmt: skip
                for deb in stage.glob("*.deb"):
                    deb.rename(cache / deb.name)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        debs = []
        for name, version in sorted(versions.items()):
            found = sorted(cache.glob(_deb_glob(name, version)))
            if not found:
                raise DebError(f"apt-get download left no .deb for {name}={version}")
            debs.append(found[0])
        return debs


def extract(debs: Iterable[Path], dest: Path) -> Path:
    """Unpack every .deb into `dest` (later packages overwrite earlier files)."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
    return dest


def versions_memo(
    packages: list[str], cache: Path | None = None, *, libraries: bool = True
) -> dict[str, str]:
    """{package: candidate version} of `packages` (and, with `libraries`, their library
    packages), remembered while apt's lists and config stay the same: apt-cache costs about
    a second per call here, which a cached build must not pay."""
    cache = Path(cache or DEFAULT_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    try:
        import kernel  # build/kernel.py: what apt's answers depend on

        apt = hashlib.sha256(kernel._apt_fingerprint().encode()).hexdigest()
    finally:
        sys.path.remove(str(HERE))
    memo = cache / "resolved.json"
    data: dict = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(memo.read_text())
    if not isinstance(data, dict) or data.get("apt") != apt:
        data = {"apt": apt, "sets": {}}
    set_key = ("+libs " if libraries else "") + " ".join(sorted(packages))
    if set_key not in data["sets"]:
        wanted = library_packages(packages) if libraries else packages
        data["sets"][set_key] = candidates(wanted)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.replace(memo)
    return dict(data["sets"][set_key])


def fetch_tree(
    packages: list[str], dest: Path, cache: Path | None = None, *, libraries: bool = True
) -> dict[str, str]:
    """Unpack `packages` (and, with `libraries`, their library packages) into `dest`;
    returns {package: version}."""
    versions = versions_memo(packages, cache, libraries=libraries)
    extract(download(versions, cache), dest)
    return versions


# --- ELF closure -------------------------------------------------------------------------------


def elf_info(path: Path) -> tuple[list[str], str | None]:
    """(DT_NEEDED names, program interpreter) of an ELF file; ([], None) for other files."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return [], None
    out = _run(["readelf", "-dlW", str(path)])
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    interp = re.search(r"Requesting program interpreter: ([^\]]+)\]", out)
    return needed, interp.group(1) if interp else None


def resolve_in(root: Path, rel: str, depth: int = 0) -> str:
    """`rel` (a path inside `root`) with symlinks resolved as if `root` were `/`."""
    parts = [p for p in rel.strip("/").split("/") if p not in ("", ".")]
    done: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink():
            if depth > 40:
                raise DebError(f"too many symlinks resolving {rel} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            depth += 1
            continue
        done.append(part)
    return "/".join(done)


def _find_library(root: Path, name: str) -> str:
    for d in LIB_DIRS:
        if (root / d / name).exists() or (root / d / name).is_symlink():
            return f"{d}/{name}"
    raise DebError(f"library {name} is not in {root} (searched {', '.join(LIB_DIRS)})")


def elf_closure(root: Path, programs: Iterable[str]) -> list[str]:
    """Every path (relative to `root`) `programs` need to run: themselves, the symlinks on the
    way to each file, the libraries they load and the interpreter, recursively; sorted."""
    keep: set[str] = set()
    todo = [p.strip("/") for p in programs]
    scanned: set[str] = set()
    while todo:
        rel = todo.pop()
        keep |= _symlink_chain(root, rel)
        real = resolve_in(root, rel)
        if real in scanned or not (root / real).is_file():
            continue
        scanned.add(real)
        needed, interp = elf_info(root / real)
        if interp:
            todo.append(interp.strip("/"))
        todo += [_find_library(root, n) for n in needed]
    return sorted(keep)


def _symlink_chain(root: Path, rel: str) -> set[str]:
    """Every symlink on the way from `rel` to its real file, and that file's real path."""
    paths: set[str] = set()
    current = rel
    for _ in range(40):
        parts = current.split("/")
        for i in range(1, len(parts) + 1):
            head = "/".join(parts[:i])
            if (root / head).is_symlink():
                paths.add(head)
                current = _join_norm("/".join(parts[: i - 1]), os.readlink(root / head), parts[i:])
                break
        else:
            paths.add(current)
            return paths
    raise DebError(f"too many symlinks resolving {rel} in {root}")


def _join_norm(base: str, target: str, rest: list[str]) -> str:
    out: list[str] = [] if target.startswith("/") else [p for p in base.split("/") if p]
    for p in [*target.split("/"), *rest]:
        if p in ("", "."):
            continue
        if p == "..":
            if out:
                out.pop()
        else:
            out.append(p)
    return "/".join(out)


def copy_paths(src: Path, dest: Path, paths: Iterable[str]) -> None:
    """Copy `paths` (relative, files or symlinks, each as it is) from `src` into `dest`."""
    for rel in sorted(set(paths)):
        s, d = src / rel, dest / rel
        if not (s.exists() or s.is_symlink()):
            raise DebError(f"{rel} is not in the unpacked packages")
        make_parents(dest, rel)
        if s.is_symlink():
            if d.is_symlink() or d.exists():
                d.unlink()
            os.symlink(os.readlink(s), d)
        elif s.is_dir():
            shutil.copytree(s, d, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(s, d)


def make_parents(dest: Path, rel: str) -> None:
    current = dest
    for part in rel.split("/")[:-1]:
        current = current / part
        if not current.is_dir():
            current.mkdir(mode=0o755)
            os.chmod(current, 0o755)
