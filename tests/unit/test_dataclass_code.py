"""The initrd's table of precompiled dataclass methods (kurma/_dataclass_code.py): with it,
making a dataclass compiles nothing and the class behaves exactly as without it; a table
that is missing, damaged or from another interpreter changes nothing; two builds write the
same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PACKAGE = {
    "__init__.py": "",
    "shapes.py": """
        from dataclasses import dataclass, field

        @dataclass(frozen=True)
        class Point:
            x: int
            y: int = 0
            tags: tuple[str, ...] = field(default_factory=tuple)

        @dataclass
        class Box:
            corner: Point
            label: str = "box"
    """,
}

USE = """
import dataclasses, sys
sys.path[:0] = [{repo!r}, {root!r}]
compiles = []
def hook(event, args):
    if event == "compile" and args[1] == "<string>":  # generated text, not a module's file
        compiles.append(1)
sys.addaudithook(hook)
from kurma._dataclass_code import install
installed = install({table!r})
from demo.shapes import Box, Point
p = Point(1, tags=("a",))
assert p == Point(1, 0, ("a",)) and hash(p) == hash(Point(1, 0, ("a",)))
assert repr(Box(p)) == "Box(corner=Point(x=1, y=0, tags=('a',)), label='box')"
try:
    p.x = 2
except dataclasses.FrozenInstanceError:
    pass
else:
    raise AssertionError("a frozen dataclass took an assignment")
print(installed, len(compiles))
"""


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for name, text in PACKAGE.items():
        path = root / "demo" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _python(code: str, seed: str = "0") -> str:
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _record(root: Path, table: Path, seed: str = "0") -> int:
    code = (
        f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(root)!r}]; "
        f"from kurma._dataclass_code import record; print(record({str(table)!r}, 'demo'))"
    )
    return int(_python(code, seed))


def _use(root: Path, table: Path) -> tuple[str, int]:
    installed, compiles = _python(
        USE.format(repo=str(REPO), root=str(root), table=str(table))
    ).split()
    return installed, int(compiles)


def test_with_the_table_a_dataclass_compiles_nothing_and_behaves_the_same(
    demo: Path, tmp_path: Path
) -> None:
    table = tmp_path / "table.bin"
    assert _record(demo, table) >= 6  # Point and Box: __init__, __repr__, __eq__ ...
    without = _use(demo, tmp_path / "missing.bin")
    assert without[0] == "False" and without[1] > 0  # the baseline compiles
    assert _use(demo, table) == ("True", 0)


def test_a_damaged_or_foreign_table_changes_nothing(demo: Path, tmp_path: Path) -> None:
    table = tmp_path / "table.bin"
    _record(demo, table)
    data = table.read_bytes()
    foreign = bytearray(data)
    foreign[8:40] = b"\x00" * 32  # the index's format tuple unreadable
    for broken in (b"", data[:20], bytes(foreign)):
        table.write_bytes(broken)
        installed, compiles = _use(demo, table)
        assert installed == "False" and compiles > 0


def test_two_recordings_write_the_same_bytes(demo: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    _record(demo, first, seed="1")
    _record(demo, second, seed="2")
    assert first.read_bytes() == second.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed
