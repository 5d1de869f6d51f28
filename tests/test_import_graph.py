"""No import cycles in the package, counting imports inside functions too (they are edges at run time).

The graph is built with `ast`, so nothing is imported: `import a.b`, `from a import b` (b a submodule:
an edge to a.b, else to a), relative imports at any level, at module level or inside functions.
Imports under `if TYPE_CHECKING:` never run and are left out; so are modules named by string to
`importlib.import_module` (a package's lazy registry).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import rwkv_tune

PACKAGE_DIR = Path(rwkv_tune.__file__).parent


def module_files(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Every module of a package: dotted name → (file, is a package __init__)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if _is_type_checking_block(node):
            children = node.orelse
        stack.extend(children)


def _known(name: str, modules: dict) -> str | None:
    """The longest prefix of a dotted name that is one of our modules (None: a third-party import)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """module → the package modules it imports (anywhere in its body)."""
    modules = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str | None] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_known(alias.name, modules) for alias in node.names)
                continue
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else _known(base, modules))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle (first module repeated at the end) per group of modules that import each other."""
    cycles, seen = [], set()
    for start in sorted(graph):
        if start in seen:
            continue
        previous: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if start in graph[node]:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                cycle = [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
                cycles.append(cycle)
                seen.update(cycle)
                break
            for nxt in sorted(graph[node]):
                if nxt not in previous and nxt != start:
                    previous[nxt] = node
                    queue.append(nxt)
    return cycles


def describe(cycles: list[list[str]]) -> str:
    return "\n".join(" → ".join(c) for c in cycles)


def test_the_package_has_no_import_cycles():
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) > 50 and "rwkv_tune.peft.adapter" in graph  # the walk found the package
    assert "rwkv_tune.model.v7" in graph["rwkv_tune.model"]  # `from rwkv_tune.model import v7` inside a function
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + describe(cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_detector_names_a_cycle_hidden_in_a_function(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "import importlib\n\ndef get(n):\n    return importlib.import_module('pkg.' + n)\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/a.py": "from pkg.sub.b import thing\n",
        "pkg/sub/b.py": "def thing():\n    from . import a\n    return a\n",
        "pkg/c.py": "from .sub import b\nimport json\n",
        "pkg/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n",
    })
    graph = import_graph(tmp_path / "pkg")
    assert graph["pkg.sub.b"] == {"pkg.sub.a"}  # relative import inside a function
    assert graph["pkg.c"] == {"pkg.sub.b"}  # `from package import submodule` is an edge to the submodule
    assert graph["pkg.typed"] == set() and graph["pkg"] == set()
    assert describe(find_cycles(graph)) == "pkg.sub.a → pkg.sub.b → pkg.sub.a"


def test_the_detector_finds_longer_cycles_through_relative_parents(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/x/__init__.py": "from .. import y\n",
        "pkg/y.py": "def f():\n    import pkg.z.deep\n",
        "pkg/z/__init__.py": "",
        "pkg/z/deep.py": "from ..x import nothing_here\n",
    })
    assert describe(find_cycles(import_graph(tmp_path / "pkg"))) == "pkg.x → pkg.y → pkg.z.deep → pkg.x"
