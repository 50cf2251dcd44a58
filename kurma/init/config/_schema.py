"""The boot config's shape as data: specs that clean one layer, then build the merged result.

Two passes, so that a bad value falls back to the layer below for that key only:

1. `clean` checks one layer's raw YAML against the spec. Every fault is reported (with the
   layer's name and the key's path) and the faulty value is left out of the cleaned layer;
   secrets are left out of layers that may not hold them. What remains is plain data whose
   values are already normalised (`LABEL:data` -> `LABEL=data`, `eth0` MTU as an int).
2. The cleaned layers are merged (maps deeply, lists replaced) over the defaults, and `build`
   turns the result into the frozen dataclasses. Only rules that span layers can fail here
   (a service whose image no layer gave); `build` reports them against the layer that last
   touched the entry and leaves the entry out.

A spec knows its own documentation too (`describe`), so the key table is generated, not kept.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._problem import ConfigProblem, Path, ProblemKind, format_path
from ._values import UnknownName

DROP: Any = type("Drop", (), {"__repr__": lambda self: "DROP"})()
"""What `clean` returns for a value it left out."""

SECRET_REFUSED = (
    "a secret: accepted only from the OEM file or the kernel command line, never from the "
    "initrd, which is the same for every machine; ignored"
)


class Incomplete(Exception):
    """`build` found an entry that breaks a rule spanning layers (a required key is missing)."""

    kind = ProblemKind.INCOMPLETE

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass
class Context:
    """Where reports go, and what the layer being cleaned may hold."""

    source: str
    secrets_allowed: bool = True
    problems: list[ConfigProblem] = dataclasses.field(default_factory=list)
    source_of: Callable[[Path], str] | None = None  # while building: who set this path

    def report(self, path: Path, message: str, kind: ProblemKind = ProblemKind.BAD_VALUE) -> None:
        source = self.source_of(path) if self.source_of else self.source
        self.problems.append(ConfigProblem(source, format_path(path), message, kind))


@dataclass(frozen=True)
class KeyDoc:
    """One row of the key table."""

    path: str
    what: str
    default: Any
    doc: str
    secret: bool


class Spec:
    """How one key's value is checked, built, turned back into plain data, and documented."""

    what: str = "a value"

    def clean(self, raw: Any, path: Path, ctx: Context) -> Any:
        raise NotImplementedError

    def build(self, data: Any, path: Path, ctx: Context) -> Any:
        return data

    def plain(self, value: Any) -> Any:
        return value

    def describe(self, path: str) -> Iterator[KeyDoc]:
        return iter(())


class Scalar(Spec):
    """A leaf value checked by a parser from `_values`."""

    def __init__(self, parse: Callable[[Any], Any], what: str | None = None) -> None:
        self.parse = parse
        first = (parse.__doc__ or "A value").split("\n")[0].split(";")[0].rstrip(".")
        keep_case = first.split(" ")[0].isupper() and len(first.split(" ")[0]) > 1  # IP:PORT
        self.what = what or (first if keep_case else first[:1].lower() + first[1:])

    def clean(self, raw: Any, path: Path, ctx: Context) -> Any:
        try:
            return self.parse(raw)
        except ValueError as e:
            ctx.report(path, f"{e}; ignored")
            return DROP

    def plain(self, value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        return list(value) if isinstance(value, tuple) else value


class ListOf(Spec):
    """A list, replaced whole by a higher layer. A bad item is left out; if every item is
    bad, the whole list is, and the lower layer's list stands. One value means a list of one,
    and with `split` a string is split at commas (`kurma.modules=virtio_net,ext4`)."""

    def __init__(self, item: Spec, *, split: bool = False) -> None:
        self.item = item
        self.split = split
        self.what = f"a list of: {item.what}"

    def clean(self, raw: Any, path: Path, ctx: Context) -> Any:
        if raw is None:
            return []
        if isinstance(raw, str) and self.split:
            raw = [word.strip() for word in raw.split(",") if word.strip()]
        elif not isinstance(raw, list):
            raw = [raw]
        items = [self.item.clean(v, (*path, i), ctx) for i, v in enumerate(raw)]
        kept = [v for v in items if v is not DROP]
        return DROP if raw and not kept else kept

    def build(self, data: Any, path: Path, ctx: Context) -> Any:
        return tuple(self.item.build(v, (*path, i), ctx) for i, v in enumerate(data))

    def plain(self, value: Any) -> Any:
        return [self.item.plain(v) for v in value]

    def describe(self, path: str) -> Iterator[KeyDoc]:
        return self.item.describe(f"{path}[]")


class MapOf(Spec):
    """Named entries, merged entry by entry across layers. `key` checks and normalises the
    names; `secret_key` marks names whose values are secrets; `check_entry` checks a value
    against its name (an isolator's value against its type); `name_field` is the field of a
    built entry that gets its name."""

    def __init__(
        self,
        key: Callable[[Any], str],
        value: Spec,
        *,
        noun: str,
        secret_key: Callable[[str], bool] | None = None,
        check_entry: Callable[[str, Any], None] | None = None,
        name_field: str | None = None,
    ) -> None:
        self.key = key
        self.name_field = name_field
        self.value = value
        self.noun = noun
        self.secret_key = secret_key
        self.check_entry = check_entry
        self.what = f"a mapping of {noun} to: {value.what}"

    def clean(self, raw: Any, path: Path, ctx: Context) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            ctx.report(path, f"must be a mapping of {self.noun} to settings, got {raw!r}; ignored")
            return DROP
        out: dict[str, Any] = {}
        for name, raw_value in raw.items():
            try:
                key = self.key(name)
            except UnknownName as e:
                ctx.report((*path, str(name)), f"{e}; ignored", ProblemKind.UNKNOWN_KEY)
                continue
            except ValueError as e:
                ctx.report((*path, str(name)), f"bad {self.noun}: {e}; ignored")
                continue
            if self.secret_key and self.secret_key(key) and not ctx.secrets_allowed:
                ctx.report((*path, key), SECRET_REFUSED, ProblemKind.SECRET_REFUSED)
                continue
            value = self.value.clean(raw_value, (*path, key), ctx)
            if value is not DROP and self.check_entry:
                try:
                    self.check_entry(key, value)
                except ValueError as e:
                    ctx.report((*path, key), f"{e}; ignored")
                    value = DROP
            if value is not DROP:
                out[key] = merge(out[key], value) if key in out else value
        return out

    def build(self, data: Any, path: Path, ctx: Context) -> Any:
        built: dict[str, Any] = {}
        for key, value in data.items():
            try:
                built[key] = self.value.build(value, (*path, key), ctx)
                if self.name_field:  # the entry knows its own name (a service, its pod's)
                    built[key] = dataclasses.replace(built[key], **{self.name_field: key})
            except Incomplete as e:
                ctx.report(e.path, f"{e.message}; {self.noun} {key!r} left out", e.kind)
        return built

    def plain(self, value: Any) -> Any:
        return {k: self.value.plain(v) for k, v in value.items()}

    def describe(self, path: str) -> Iterator[KeyDoc]:
        return self.value.describe(f"{path}.<{self.noun}>")


class Optional(Spec):
    """A record that may be absent (null); null in a higher layer removes it."""

    def __init__(self, inner: Spec) -> None:
        self.inner = inner
        self.what = f"{inner.what}, or null"

    def clean(self, raw: Any, path: Path, ctx: Context) -> Any:
        return None if raw is None else self.inner.clean(raw, path, ctx)

    def build(self, data: Any, path: Path, ctx: Context) -> Any:
        return None if data is None else self.inner.build(data, path, ctx)

    def plain(self, value: Any) -> Any:
        return None if value is None else self.inner.plain(value)

    def describe(self, path: str) -> Iterator[KeyDoc]:
        return self.inner.describe(path)


Check = Callable[[Any], "tuple[str, str] | None"]
"""A rule between a record's fields: None, or (the field to blame, what is wrong)."""


class Record(Spec):
    """A frozen dataclass whose fields carry their spec and doc (see `setting`).

    A dataclass defined elsewhere, without the boot config in mind (a service's
    `ServiceSpec`), is described from outside instead: `settings` maps the fields that are
    keys to `about(...)`; its other fields keep their defaults (or are filled in by `MapOf`).

    `whole` records (items of a list) come complete from one layer, so their required keys
    and `check` are enforced while cleaning; other records merge across layers and are
    checked when built.
    """

    def __init__(
        self,
        cls: type,
        *,
        whole: bool = False,
        check: Check | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.cls = cls
        self.whole = whole
        self.check = check
        fields = {f.name: f for f in dataclasses.fields(cls)}
        # With `settings`, their order is the key table's (and every one names a field).
        self.fields = fields if settings is None else {name: fields[name] for name in settings}
        self.meta = {
            name: f.metadata if settings is None else settings[name]
            for name, f in self.fields.items()
        }
        self.what = f"a mapping ({cls.__name__})"

    def clean(self, raw: Any, path: Path, ctx: Context) -> Any:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            ctx.report(path, f"must be a mapping of keys to values, got {raw!r}; ignored")
            return DROP
        out: dict[str, Any] = {}
        reported: set[str] = set()
        for name, raw_value in raw.items():
            f = self.fields.get(name.replace("-", "_")) if isinstance(name, str) else None
            if f is None:
                known = ", ".join(self.fields)
                ctx.report(
                    (*path, str(name)),
                    f"unknown key (known: {known}); ignored",
                    ProblemKind.UNKNOWN_KEY,
                )
                continue
            if self.meta[f.name]["secret"] and not ctx.secrets_allowed:
                ctx.report((*path, f.name), SECRET_REFUSED, ProblemKind.SECRET_REFUSED)
                reported.add(f.name)
                continue
            value = self.meta[f.name]["spec"].clean(raw_value, (*path, f.name), ctx)
            if value is DROP:
                reported.add(f.name)
            else:
                out[f.name] = value
        if self.whole:
            try:
                self.build(out, path, ctx)
            except Incomplete as e:
                if e.path[len(path) :] not in {(name,) for name in reported}:
                    ctx.report(e.path, f"{e.message}; {format_path(path)} ignored", e.kind)
                return DROP
        return out

    def build(self, data: Any, path: Path, ctx: Context) -> Any:
        values: dict[str, Any] = {}
        for name, meta in self.meta.items():
            if name not in data:
                if meta["required"]:
                    raise Incomplete((*path, name), "is required")
                continue
            try:
                values[name] = meta["spec"].build(data[name], (*path, name), ctx)
            except Incomplete as e:
                if meta["required"]:
                    raise
                ctx.report(e.path, f"{e.message}; the default is used", e.kind)
        record = self.cls(**values)
        fault = self.check(record) if self.check else None
        if fault:
            raise Incomplete((*path, fault[0]), fault[1])
        return record

    def plain(self, value: Any) -> Any:
        return {name: meta["spec"].plain(getattr(value, name)) for name, meta in self.meta.items()}

    def describe(self, path: str) -> Iterator[KeyDoc]:
        for name, f in self.fields.items():
            meta = self.meta[name]
            spec: Spec = meta["spec"]
            here = f"{path}.{name}" if path else name
            nested = list(spec.describe(here))
            if nested and isinstance(spec, Record | Optional):
                yield from nested
                continue
            if f.default is not dataclasses.MISSING:
                default = spec.plain(f.default) if f.default is not None else None
            else:
                default = spec.plain(f.default_factory())  # type: ignore[misc]
            yield KeyDoc(here, spec.what, default, meta["doc"], meta["secret"])
            yield from nested


def about(spec: Spec, doc: str, *, secret: bool = False, required: bool = False) -> dict[str, Any]:
    """What the boot config knows of one key: its spec, its documentation, whether it is a
    secret or required (a field's metadata; `Record(settings=...)` for a foreign class)."""
    return {"spec": spec, "doc": doc, "secret": secret, "required": required}


def setting(
    default: Any, spec: Spec, doc: str, *, secret: bool = False, required: bool = False
) -> Any:
    """A dataclass field with its spec and its documentation.

    Mutable defaults (lists, dicts) are given as a zero-argument callable.
    """
    meta = about(spec, doc, secret=secret, required=required)
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def merge(lower: Any, upper: Any) -> Any:
    """`upper` over `lower`: mappings merge key by key, anything else (lists too) replaces."""
    if isinstance(lower, Mapping) and isinstance(upper, Mapping):
        merged = dict(lower)
        for name, value in upper.items():
            merged[name] = merge(lower[name], value) if name in lower else value
        return merged
    return upper
