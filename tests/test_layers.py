"""The package's floors (docs/extending.md): each room imports only rooms on lower floors, and
no module imports itself through others (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# A room is a subpackage or a top-level module of eqflow; the floors go from the bottom up.
FLOORS = [
    {"__init__", "errors", "progress", "compat", "settings"},
    {"io"},
    {"nets", "dynamics", "plots"},
    {"data", "metrics"},
    {"models"},
    {"protocols"},
    {"callbacks", "config"},
    {"stages"},
    {"pipeline", "runs", "hydra_callbacks", "sweep_jobs"},
    {"analysis"},
    {"evaluation"},
]


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports(path: Path) -> set[str]:
    """Every eqflow module ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eqflow"):
            if node.module == "eqflow":
                found |= {f"eqflow.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("eqflow")}
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (src / "eqflow").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in imports(path):
            while target not in modules and "." in target:  # a name imported from a module
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor(module: str) -> int:
    return next(i for i, rooms in enumerate(FLOORS) if room(module) in rooms)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if room(a) != room(b) and floor(b) >= floor(a)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles (one path each), by depth-first search."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_room_has_a_floor():
    rooms = {room(m) for m in import_graph()}
    assert rooms <= set().union(*FLOORS), rooms - set().union(*FLOORS)


def test_no_room_imports_a_room_above_or_beside_it():
    assert upward_imports(import_graph()) == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import():
    graph = {"eqflow.io.a": {"eqflow.pipeline"}, "eqflow.pipeline": {"eqflow.io.a"}}
    assert upward_imports(graph) == ["eqflow.io.a -> eqflow.pipeline"]
    assert cycles(graph) == [["eqflow.io.a", "eqflow.pipeline", "eqflow.io.a"]]
