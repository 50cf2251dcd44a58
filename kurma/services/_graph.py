"""The services' dependency graph: what cannot start (unknown names, cycles), the order of
starting, and the levels of stopping (dependents first).

A dependency is another service's name, or a condition: `network`/`clock`, one PID 1 lists
as `ready`, or one some service `provides`. A condition's providers count as the edges.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._spec import KNOWN_CONDITIONS, ServiceSpec


def providers(specs: Mapping[str, ServiceSpec]) -> dict[str, list[str]]:
    """condition -> the services that provide it."""
    out: dict[str, list[str]] = {}
    for spec in specs.values():
        for condition in spec.provides:
            out.setdefault(condition, []).append(spec.name)
    return out


def _edges(specs: Mapping[str, ServiceSpec]) -> dict[str, list[str]]:
    """service -> the services it waits for (directly, or through a provided condition)."""
    provided = providers(specs)
    edges: dict[str, list[str]] = {}
    for spec in specs.values():
        targets: list[str] = []
        for dep in spec.depends_on:
            if dep in specs:
                targets.append(dep)
            else:
                targets += [p for p in provided.get(dep, ()) if p != spec.name]
        edges[spec.name] = targets
    return edges


def check_graph(specs: Mapping[str, ServiceSpec], ready: tuple[str, ...]) -> dict[str, str]:
    """service -> why it can never start: an unknown dependency, or a cycle it is part of."""
    provided = providers(specs)
    known = KNOWN_CONDITIONS | set(ready) | set(provided)
    problems: dict[str, str] = {}
    for spec in specs.values():
        unknown = [d for d in spec.depends_on if d not in specs and d not in known]
        if unknown:
            problems[spec.name] = (
                f"depends on unknown service or condition {', '.join(map(repr, unknown))}"
            )
    edges = _edges(specs)
    for cycle in _cycles(edges):
        text = " -> ".join([*cycle, cycle[0]])
        for name in cycle:
            problems.setdefault(name, f"dependency cycle: {text}")
    return problems


def _cycles(edges: Mapping[str, list[str]]) -> list[list[str]]:
    """Every cycle's members, found by a depth-first walk (each reported once)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def levels(specs: Mapping[str, ServiceSpec]) -> dict[str, int]:
    """service -> its level: 0 waits for no service, n for services of levels below n.
    Members of cycles get the level their other edges give (they never start anyway)."""
    edges = _edges(specs)
    level: dict[str, int] = {}
    visiting: set[str] = set()

    def of(node: str) -> int:
        if node in level:
            return level[node]
        if node in visiting:
            return -1  # a cycle: ignore that edge
        visiting.add(node)
        value = 1 + max((of(d) for d in edges.get(node, ())), default=-1)
        visiting.discard(node)
        level[node] = value
        return value

    for name in specs:
        of(name)
    return level


def stop_order(specs: Mapping[str, ServiceSpec]) -> list[list[str]]:
    """Groups to stop one after another, each in parallel: dependents first."""
    by_level: dict[int, list[str]] = {}
    for name, value in levels(specs).items():
        by_level.setdefault(value, []).append(name)
    return [sorted(by_level[k]) for k in sorted(by_level, reverse=True)]
