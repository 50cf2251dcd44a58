"""The kernel command line layer: `kurma.KEY=VALUE` words of /proc/cmdline as nested maps.

Words are split as the kernel's `next_arg()` (lib/cmdline.c) splits them, since /proc/cmdline
shows the text before that split: whitespace separates words except inside double quotes, the
first '=' ends the name, and the quotes around a value (`kurma.hostname="a b"`) or around the
whole word (`"kurma.hostname=a b"`) are dropped. Words after `--` are init's own arguments, not
kernel parameters, and are not read.

`kurma.a.b.c=V` sets `{"a": {"b": {"c": V}}}`; V is read as one YAML scalar (`true`, `1500`,
`'007'` as a string, empty for null), or a flow list/map when it starts with '[' or '{'. A word
without '=' is a flag: `kurma.console.autologin` means `true`. When a key repeats, the last
one wins, as for kernel parameters. Other words (`console=ttyS0`, `quiet`) are not ours.
"""

from __future__ import annotations

from typing import Any

from ._problem import CMDLINE, ConfigProblem, ProblemKind

PREFIX = "kurma."


def split_cmdline(text: str) -> list[tuple[str, str | None]]:
    """(name, value) per word, value None for a word without '=' (the kernel's rules)."""
    words: list[tuple[str, str | None]] = []
    rest = text.lstrip()
    while rest:
        quoted = rest.startswith('"')
        if quoted:
            rest = rest[1:]
        in_quote = quoted
        equals = -1
        i = 0
        while i < len(rest):
            c = rest[i]
            if c.isspace() and not in_quote:
                break
            if equals < 0 and c == "=":
                equals = i
            if c == '"':
                in_quote = not in_quote
            i += 1
        word, rest = rest[:i], rest[i:].lstrip()
        if equals < 0:
            name, value = word, None
        else:
            name, value = word[:equals], word[equals + 1 :]
            if value.startswith('"'):
                value = value[1:]
                if value.endswith('"'):
                    value = value[:-1]
                quoted = False  # the kernel strips that trailing quote once
        if quoted and (value if value is not None else name).endswith('"'):
            if value is None:
                name = name[:-1]
            else:
                value = value[:-1]
        if name == "--" and value is None:
            break
        words.append((name, value))
    return words


def parse_value(text: str) -> Any:
    """One command-line value as YAML: a scalar, or a flow collection in '[...]' / '{...}'."""
    import yaml

    try:
        value = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return text  # `@x`, `a: b: c`, unbalanced quotes: the text itself
    if isinstance(value, dict | list) and not text.lstrip().startswith(("[", "{")):
        return text  # `a: b` or `- a` are not flow collections: keep the text
    return value


def parse_cmdline(text: str) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """The `kurma.` words of a kernel command line as a nested map, and the malformed ones."""
    tree: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for name, raw in split_cmdline(text):
        if not name.startswith(PREFIX):
            continue
        path = name[len(PREFIX) :].split(".")
        if not all(path):
            problems.append(
                ConfigProblem(
                    CMDLINE,
                    name,
                    "a key needs names between its dots, like kurma.console.ttys; ignored",
                    ProblemKind.UNKNOWN_KEY,
                )
            )
            continue
        node = tree
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):  # a later, deeper key replaces a scalar
                child = node[part] = {}
            node = child
        node[path[-1]] = True if raw is None else parse_value(raw)
    return tree, problems
