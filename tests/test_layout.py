"""The folder layout is the pipeline: each room imports only rooms below it, and no module imports itself back."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "capella_deploy"

# Rooms from the bottom up; a room may import its own modules and any room on a lower floor.
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"__init__", "errors", "secrets", "clock", "net", "schemas", "lease", "catalog"}),
    frozenset({"manifest", "api", "outputs"}),
    frozenset({"kinds"}),
    frozenset({"live"}),
    frozenset({"plan"}),
    frozenset({"apply", "checks"}),
    frozenset({"views", "gitops"}),
    frozenset({"run"}),
    frozenset({"cli"}),
)
# The sandbox is a wing of its own: it may use the foundations and nothing else of the tool.
SANDBOX_MAY_IMPORT = FLOORS[0]


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(room: str) -> int:
    return next(index for index, rooms in enumerate(FLOORS) if room in rooms)


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(path) for path in SOURCES}


def _type_only(tree: ast.Module) -> set[int]:
    """Lines of imports under ``if TYPE_CHECKING:``: they name types, they load nothing."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines.update(inner.lineno for stmt in node.body for inner in ast.walk(stmt) if hasattr(inner, "lineno"))
    return lines


def imports(path: Path, *, with_types: bool = True) -> Iterator[tuple[int, str]]:
    """Every capella_deploy module ``path`` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set() if with_types else _type_only(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("capella_deploy"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("capella_deploy"):
            for alias in node.names:
                # `from capella_deploy.plan import planfile` imports a module; `import Plan` a name of the package.
                submodule = f"{node.module}.{alias.name}"
                yield node.lineno, submodule if submodule in MODULES else str(node.module)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_room_imports_only_rooms_below_it(path: Path) -> None:
    here = module_name(path)
    room = room_of(here)
    problems = []
    for line, target in sorted(set(imports(path))):
        other = room_of(target)
        if other == room:
            continue
        if room == "sandbox":
            allowed = other in SANDBOX_MAY_IMPORT
        else:
            allowed = other != "sandbox" or room in ("run", "cli")
            allowed = allowed and (other == "sandbox" or floor_of(other) < floor_of(room))
        if not allowed:
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {room} imports {target}")
    assert not problems, "\n".join(problems)


def test_no_module_imports_itself_back() -> None:
    graph = {module_name(path): {target for _, target in imports(path, with_types=False)} for path in SOURCES}
    edges = {module: targets & MODULES - {module} for module, targets in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
