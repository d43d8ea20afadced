"""`recsys.config` imports every model's config; nothing it imports may import it back, even lazily
inside a function (the circle that lazy imports used to hide). Checked on the source, so a new
import anywhere in the chain fails here rather than at some call's run time."""

from __future__ import annotations

import ast
from pathlib import Path

import recsys

ROOT = Path(recsys.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every recsys module `path` imports, at any depth of the file (function bodies included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("recsys")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recsys"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_nothing_recsys_config_imports_imports_it_back():
    graph = {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}
    graph = {name: {m for m in targets if m in graph} for name, targets in graph.items()}
    paths = {m: ["recsys.config", m] for m in graph["recsys.config"]}
    todo = list(paths)
    while todo:
        current = todo.pop()
        for nxt in graph.get(current, ()):
            if nxt not in paths:
                paths[nxt] = [*paths[current], nxt]
                todo.append(nxt)
    assert "recsys.config" not in paths, " -> ".join(paths.get("recsys.config", []))
