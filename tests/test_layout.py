"""The package's rooms: layers import one way, no module imports itself back, Delta only in core."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "seglake"
# Lower layers never import higher ones (a module may import its own layer and those below).
LAYERS = {"core": 0, "segmentation": 1, "report": 2, "serving": 2, "usecases": 3, "top": 4}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every seglake module ``path`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            if target in modules and target != name:
                found.add(target)
    return found


def _layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.get(parts[1], LAYERS["top"]) if len(parts) > 1 else LAYERS["top"]


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(path, name, modules) - {"seglake"} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_layers_import_downwards_only():
    modules = _modules()
    wrong = [f"{name} imports {target}"
             for name, path in modules.items() if name != "seglake"
             for target in _imports(path, name, modules)
             if target != "seglake" and _layer(target) > _layer(name)]
    assert not wrong, "; ".join(sorted(wrong))


def test_delta_io_only_in_core():
    pattern = re.compile(r'DeltaTable|\.format\("delta"\)')
    outside = [f"{path.relative_to(PACKAGE)}:{number}"
               for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] != "core"
               for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not outside, outside
