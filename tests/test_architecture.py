"""The one-way flow of docs/ARCHITECTURE.md, as a test over every import in the package.

Pure core modules have ranks and import only lower ranks; the client imports only errors, models
and the kinds' wire mapping; the emulator imports nothing of ours; the CLI is imported by nobody;
nothing imports in a circle. Imports inside functions count too (they are still dependencies).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reconciler"

# The pure core, by rank: a module imports only modules of a lower rank (errors and models are
# everyone's vocabulary). Nothing here does I/O, so none of it may import an edge.
CORE_RANK = {
    "errors": 0,
    "models": 0,
    "pointers": 0,
    "kinds": 1,  # the pure per-kind wire mapping
    "loader": 1,  # reads files, nothing else
    "redact": 1,
    "metrics": 1,
    "schemas": 1,
    "rules": 2,
    "diff": 2,
    "export": 2,
    "plan": 3,
    "prompting": 3,
    "plan_json": 4,
    "promise": 4,
    "previews": 4,
    "rollback": 4,
    "render": 5,
    "drift": 6,
}
# Deliberate exceptions, each with its reason.
ALLOWED = {
    # rollback plans from journal records: it reads their data types, never the file.
    ("rollback", "journal"),
}
# models, kinds <- client: the client maps wire bodies with the kinds, and knows nothing else.
CLIENT_MAY_USE = {"errors", "models", "kinds"}
EDGES = {"journal", "journal_git", "notify", "client", "client.http", "client.api", "client.connect"}
ORCHESTRATION = {"apply", "health", "workspace"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> Iterator[str]:
    """Every reconciler module ``path`` imports, as a name relative to the package
    (``from reconciler.cli import apply`` is the module cli.apply)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reconciler"):
            base = "" if node.module == "reconciler" else node.module.removeprefix("reconciler.")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                yield sub if sub in MODULES else base
        elif isinstance(node, ast.Import):
            yield from (
                a.name.removeprefix("reconciler.") for a in node.names if a.name.startswith("reconciler.")
            )


def is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


GRAPH = {m: set(imports(p)) - {"", m} for p in PACKAGE.rglob("*.py") for m in [module_name(p)]}


def violations() -> Iterator[str]:
    for module, deps in sorted(GRAPH.items()):
        for dep in sorted(deps):
            if (module, dep) in ALLOWED:
                continue
            if is_in(module, "emulator") and not is_in(dep, "emulator"):
                yield f"{module} -> {dep}: the emulator shares no code with the client"
            if is_in(dep, "cli") and not is_in(module, "cli"):
                yield f"{module} -> {dep}: nothing imports the command line"
            if module in CORE_RANK and dep not in CORE_RANK:
                yield f"{module} -> {dep}: the pure core imports no edge"
            elif module in CORE_RANK and CORE_RANK[dep] >= CORE_RANK[module] and CORE_RANK[dep] > 0:
                ranks = f"rank {CORE_RANK[module]} -> {CORE_RANK[dep]}"
                yield f"{module} -> {dep}: against the one-way flow ({ranks})"
            if is_in(module, "client") and not (is_in(dep, "client") or dep in CLIENT_MAY_USE):
                yield f"{module} -> {dep}: the client knows only errors, models and itself"
            if module in EDGES and (dep in ORCHESTRATION or is_in(dep, "emulator")):
                yield f"{module} -> {dep}: an edge does not reach up into orchestration"
            if (
                dep.startswith("emulator")
                and module != "workspace"
                and not module.startswith(("emulator", "cli"))
            ):
                yield f"{module} -> {dep}: only the workspace (the edge) wires in the embedded emulator"


def cycles() -> Iterator[str]:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> Iterator[str]:
        state[module] = 1
        path.append(module)
        for dep in sorted(GRAPH.get(module, ())):
            # The CLI package imports its command modules only so they register on its group.
            if dep not in GRAPH or (module == "cli" and is_in(dep, "cli")):
                continue
            if state.get(dep) == 1:
                yield " -> ".join([*path[path.index(dep) :], dep])
            elif dep not in state:
                yield from visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            yield from visit(module)


def test_every_module_is_classified() -> None:
    known = set(CORE_RANK) | EDGES | ORCHESTRATION | {""}
    unclassified = sorted(
        m for m in GRAPH if m not in known and not is_in(m, "cli") and not is_in(m, "emulator")
    )
    assert unclassified == [], "give each new module its place in CORE_RANK, EDGES or ORCHESTRATION"


def test_imports_follow_the_one_way_flow() -> None:
    assert list(violations()) == []


def test_no_import_cycles() -> None:
    assert list(cycles()) == []


def test_the_checker_sees_a_back_edge() -> None:
    """The rules would catch what they claim to: plan importing render is reported."""
    GRAPH["plan"].add("render")
    try:
        assert "plan -> render: against the one-way flow (rank 3 -> 5)" in list(violations())
        assert any(c.startswith("plan -> render") or "render -> plan" in c for c in cycles())
    finally:
        GRAPH["plan"].discard("render")
