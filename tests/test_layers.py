"""The dependency rules, checked by parsing imports with ast: the core (and the frame
format, `imcore/wsframes.py`) stays sans-I/O, checked against an allow-list; the package
never imports tools or tests; tests never import tools.

Parsed with ast rather than checked through sys.modules, since PyJWT itself imports
urllib.request (and so socket) when the core imports jwt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "imcore" / "core"
#: Sans-I/O modules outside the core, held to the same allow-list.
PURE = [ROOT / "imcore" / "wsframes.py"]
ALLOWED = {
    "__future__",
    "array",
    "bisect",
    "hashlib",
    "collections",
    "dataclasses",
    "enum",
    "itertools",
    "json",
    "math",
    "re",
    "typing",
    "zlib",
    "struct",
    "cbor2",
    "sortedcontainers",
    "jwt",
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", [*sorted(CORE.glob("*.py")), *PURE], ids=lambda p: p.name)
def test_core_module_imports_only_pure_libraries(path: Path) -> None:
    assert imports(path) <= ALLOWED


def importers(tree: Path, of: set[str]) -> dict[str, set[str]]:
    """The files under `tree` that import a top-level package in `of`, and which."""
    found = {str(p.relative_to(ROOT)): imports(p) & of for p in sorted(tree.rglob("*.py"))}
    return {path: names for path, names in found.items() if names}


def test_tests_do_not_import_tools() -> None:
    assert importers(ROOT / "tests", {"tools"}) == {}


def test_the_package_imports_neither_tools_nor_tests() -> None:
    assert importers(ROOT / "imcore", {"tools", "tests"}) == {}


def test_chat_never_imports_session() -> None:
    tree = ast.parse((CORE / "chat.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "session" not in modules
