"""The core stays sans-I/O: every import under imcore/core is checked against an allow-list.

Parsed with ast rather than checked through sys.modules, since PyJWT itself imports
urllib.request (and so socket) when the core imports jwt.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "imcore" / "core"
ALLOWED = {
    "__future__",
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


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_pure_libraries(path: Path) -> None:
    assert imports(path) <= ALLOWED


def test_chat_never_imports_session() -> None:
    tree = ast.parse((CORE / "chat.py").read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "session" not in modules
