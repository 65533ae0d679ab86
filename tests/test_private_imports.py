"""A module's underscore names are its own: no module of the checked packages imports another module's private name
(``from controller.x import _name``). A helper two modules share is public, in the module that owns it.

Checked: driftpilot's four packages, for names imported from driftpilot's own modules (an adapter may reach into a
third-party library's private name; that is the adapter's documented business, e.g. monitors/evidently_adapter.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("controller", "trainers", "monitors", "lineage")
OWN = CHECKED


def private_imports(folder: Path, root: Path = REPO) -> list[str]:
    """``path:line: from module import _name`` (path from ``root``) for every private name a module under ``folder``
    imports."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = "." * node.level + (node.module or "")
            if node.level == 0 and module.split(".")[0] not in OWN:
                continue  # a third-party library's name
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: from {module} import {alias.name}")
    return found


@pytest.mark.parametrize("package", CHECKED)
def test_no_private_name_is_imported_across_modules(package: str) -> None:
    assert private_imports(REPO / package) == []


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg").joinpath("a.py").write_text("from controller.b import public, _private\n"
                                                   "from numpy import _outside\n"
                                                   "def f():\n    from .b import _other, __version__\n")
    assert private_imports(tmp_path / "pkg", root=tmp_path) == ["pkg/a.py:1: from controller.b import _private",
                                                                "pkg/a.py:4: from .b import _other"]
