"""The import graph of driftpilot's four packages: no circle between modules, and the layers point one way
(``controller -> {trainers, monitors, lineage}``, never back; docs/architecture.md).

Only imports that run when a module loads count: module-level ones, including under ``if``/``try``, but not those under
``if TYPE_CHECKING:`` or inside functions (a deferred import is how a module says "not at load time")."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "trainers", "monitors", "lineage")


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name → file, for every module of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"


def load_time_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _type_checking(node):
            found += load_time_imports(node.body) + load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            found += load_time_imports(node.body)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of the graph it imports at load time (``from pkg import sub`` is an edge to ``pkg.sub``
    when that is a module, else to ``pkg``)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in load_time_imports(ast.parse(path.read_text(), filename=str(path)).body):
            if isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names if alias.name in modules}
                continue
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    graph[name].add(f"{target}.{alias.name}")
                elif target in modules:
                    graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start, targets in graph.items():
        if start in index:
            continue
        work = [(start, iter(sorted(targets)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_of_the_four_packages_imports_itself_round_a_circle() -> None:
    assert circles(import_graph(module_files(REPO))) == []


def test_trainers_monitors_and_lineage_never_import_the_controller() -> None:
    graph = import_graph(module_files(REPO))
    back = sorted(f"{name} -> {target}" for name, targets in graph.items() if not name.startswith("controller")
                  for target in targets if target.split(".")[0] == "controller")
    assert back == []


def test_the_check_sees_a_circle_and_ignores_deferred_imports(tmp_path: Path) -> None:
    package = tmp_path / "controller"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from controller.b import thing\n")
    (package / "b.py").write_text("from . import c\nthing = 1\n")
    (package / "c.py").write_text("import controller.a\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from controller.e import x\n"
                                  "def f():\n    from controller.e import y\n")
    (package / "e.py").write_text("from controller import d\n")
    graph = import_graph(module_files(tmp_path, ("controller",)))
    assert graph["controller.b"] == {"controller.c"}
    assert graph["controller.d"] == set()
    assert circles(graph) == [["controller.a", "controller.b", "controller.c"]]
