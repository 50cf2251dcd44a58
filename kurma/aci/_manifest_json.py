"""JSON plumbing for the manifest parsers: decoding, typed field access with paths, output.

The appc reference implementation decodes with Go's encoding/json, so manifests in the wild
rely on its habits: object keys match field names case-insensitively (the last matching key
wins) and unknown keys are ignored. `Node` reproduces that, and every accessor knows the JSON
path of what it reads, so each `ValidationError` names the offending field. A JSON `null`
counts as absent, as it does for Go's optional fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ValidationError

JSON = Any
"""A decoded JSON value: dict, list, str, int, float, bool or None."""


class FrozenMap(Mapping[str, str]):
    """A read-only, hashable str -> str mapping that keeps insertion order (labels, env ...)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | tuple[tuple[str, str], ...] = ()) -> None:
        pairs = tuple(items.items()) if isinstance(items, Mapping) else tuple(items)
        self._items: dict[str, str] = dict(pairs)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        # Mapping semantics: order is kept for output but does not make two maps differ
        # (canonical JSON sorts object keys, so a user-label object's order is not data).
        if isinstance(other, FrozenMap):
            return self._items == other._items
        return isinstance(other, Mapping) and self._items == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def type_name(value: JSON) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def join(path: str, key: str | int) -> str:
    """The JSON path of `key` (a member name or a list index) under `path`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def decode_document(data: bytes | str | Mapping[str, JSON]) -> Mapping[str, JSON]:
    """Decode a manifest from bytes, str or an already-decoded mapping; it must be an object."""
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValidationError("", f"manifest is not valid UTF-8: {e.reason}") from e
    if isinstance(data, str):
        try:
            data = json.loads(data, parse_constant=_reject_constant)
        except RecursionError as e:
            raise ValidationError("", "manifest JSON is nested too deeply") from e
        except ValueError as e:  # JSONDecodeError, NaN, over-long integers
            raise ValidationError("", f"manifest is not valid JSON: {e}") from e
    if not isinstance(data, Mapping):
        raise ValidationError("", f"manifest must be a JSON object, got {type_name(data)}")
    return data


def canonical_bytes(value: JSON) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII only (so lone surrogates survive)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Node:
    """A JSON object being parsed, with its path; accessors read members case-insensitively."""

    def __init__(self, value: Mapping[str, JSON], path: str) -> None:
        self.path = path
        self._members: dict[str, tuple[str, JSON]] = {}
        for key, item in value.items():
            if isinstance(key, str):  # later keys win, as in Go's decoder
                self._members[key.lower()] = (key, item)

    @classmethod
    def of(cls, value: JSON, path: str) -> Node:
        """Wrap `value`, which must be a JSON object."""
        if not isinstance(value, Mapping):
            raise ValidationError(path, f"must be an object, got {type_name(value)}")
        return cls(value, path)

    def at(self, key: str) -> str:
        """The path of member `key`."""
        return join(self.path, key)

    def raw(self, key: str, required: bool = False) -> JSON:
        """Member `key` as decoded, None when absent or null (an error if `required`)."""
        found = self._members.get(key.lower())
        value = None if found is None else found[1]
        if value is None and required:
            raise ValidationError(self.at(key), "is required")
        return value

    def text(self, key: str, required: bool = False) -> str | None:
        """Member `key`, which must be a string."""
        value = self.raw(key, required)
        if value is not None and not isinstance(value, str):
            raise ValidationError(self.at(key), f"must be a string, got {type_name(value)}")
        return None if value is None else check_no_nul(value, self.at(key))

    def flag(self, key: str) -> bool | None:
        """Member `key`, which must be a boolean."""
        value = self.raw(key)
        if value is not None and not isinstance(value, bool):
            raise ValidationError(self.at(key), f"must be a boolean, got {type_name(value)}")
        return value

    def integer(
        self, key: str, lo: int, hi: int | None = None, required: bool = False
    ) -> int | None:
        """Member `key`, which must be an integer (not 1.0, not true) in [lo, hi]."""
        return check_int(self.raw(key, required), self.at(key), lo, hi)

    def array(self, key: str, required: bool = False) -> list[tuple[str, JSON]]:
        """Member `key`, which must be an array: its (path, item) pairs; [] when absent."""
        value = self.raw(key, required)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise ValidationError(self.at(key), f"must be an array, got {type_name(value)}")
        return [(join(self.at(key), i), item) for i, item in enumerate(value)]

    def obj(self, key: str, required: bool = False) -> Node | None:
        """Member `key`, which must be an object."""
        value = self.raw(key, required)
        return None if value is None else Node.of(value, self.at(key))

    def strings(self, key: str) -> tuple[str, ...]:
        """Member `key`, an array of strings; () when absent."""
        return tuple(check_str(item, path) for path, item in self.array(key))

    def string_map(self, key: str) -> dict[str, str]:
        """Member `key`, an object whose values are all strings; {} when absent.

        Its keys are data, not field names, so they keep their case.
        """
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValidationError(self.at(key), f"must be an object, got {type_name(value)}")
        return {
            check_no_nul(k, join(self.at(key), k)): check_str(v, join(self.at(key), k))
            for k, v in value.items()
        }

    def items(self) -> list[tuple[str, JSON]]:
        """The members as (key as written, value), in document order, one per folded key."""
        return list(self._members.values())


def check_str(value: JSON, path: str) -> str:
    """`value`, which must be a string (null included: an array item is never optional)."""
    if not isinstance(value, str):
        raise ValidationError(path, f"must be a string, got {type_name(value)}")
    return check_no_nul(value, path)


def check_no_nul(value: str, path: str) -> str:
    """`value`, which must not contain a NUL byte: every string of a manifest may reach a
    syscall (argv, environment, paths, sysctls, names), where NUL would cut it short or
    fail only when the pod starts."""
    if "\0" in value:
        raise ValidationError(path, "contains a NUL byte")
    return value


def check_int(value: JSON, path: str, lo: int, hi: int | None = None) -> int | None:
    """`value`, which must be None or an integer in [lo, hi]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, f"must be an integer, got {type_name(value)}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValidationError(path, f"must be {bound}, got {value}")
    return value


def check_unique(path: str, what: str, name: str, seen: set[str]) -> None:
    """Record `name` in `seen`, raising if it was there already."""
    if name in seen:
        raise ValidationError(path, f"duplicate {what} {name!r}")
    seen.add(name)
