"""The package's house plan (docs/architecture.md): every import — module level or inside a function —
follows an allowed arrow between rooms, and no module imports itself back through others (no cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import hedgenet

PACKAGE = Path(hedgenet.__file__).parent

# Shared helpers every room may use: the version, config errors/paths, the run-directory life cycle.
BASE = {"hedgenet", "config", "config_schema", "run_io"}

# room -> rooms it may import (besides itself and BASE); cli may import anything, nothing imports cli.
ALLOWED = {
    "orbitals": set(),
    "structures": {"orbitals"},
    "reference": {"orbitals", "structures"},
    "graphs": {"orbitals", "structures"},
    "data": {"orbitals", "structures", "reference"},
    "models": {"orbitals", "graphs"},
    "training": {"orbitals", "structures", "data", "graphs", "models"},
    "calculators": {"orbitals", "structures", "reference", "graphs", "models"},
    "physics": {"orbitals", "structures", "calculators"},
    "report": set(),
    "pipeline": {"orbitals", "structures", "calculators", "physics", "report"},
    "config": {"structures"},
    "run_io": {"config"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hedgenet"


def imports() -> dict[str, set[str]]:
    """Every module of the package -> the hedgenet modules it imports anywhere in its source."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    out = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hedgenet"):
                for alias in node.names:  # `from hedgenet.physics import comparison` imports a module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("hedgenet")}
        out[name] = {m for m in found if m != name}
    return out


def test_every_import_follows_an_allowed_arrow():
    bad = []
    for module, targets in sorted(imports().items()):
        src = room(module)
        for target in sorted(targets):
            dst = room(target)
            if src == dst or src == "cli" or dst in BASE - {src} and src not in ("orbitals", "structures"):
                continue
            if dst == "cli" or dst not in ALLOWED.get(src, set()):
                bad.append(f"{module} -> {target}  ({src} -> {dst})")
    assert not bad, "imports against the house plan (docs/architecture.md):\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = imports()
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    # a package's __init__ re-exporting its own submodules, which import siblings by their full path, is
    # not a cycle of rooms; a cycle that crosses rooms is
    crossing = [c for c in cycles if len({room(m) for m in c}) > 1]
    assert not crossing, f"import cycles across rooms: {crossing}"
    rooms = {}
    for module, targets in graph.items():
        for t in targets:
            if room(t) != room(module):
                rooms.setdefault(room(module), set()).add(room(t))
    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in rooms.get(a, ()))
    room_cycles = sorted({tuple(sorted((a, b))) for a in rooms for b in rooms[a] if reaches(b, a)})
    assert not room_cycles, f"rooms that import each other (directly or through others): {room_cycles}"


def test_every_import_inside_functions_resolves():
    """Imports inside functions run only when the function does: a moved name must not wait for a user."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hedgenet"):
                try:
                    module = importlib.import_module(node.module)
                except ImportError as err:
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {err}")
                    continue
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: "
                                           f"{node.module} has no {alias.name}")
    assert not missing, "imports that fail when their function runs:\n" + "\n".join(missing)
