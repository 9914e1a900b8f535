"""The codebase's own rules (docs/extending.md): short functions, a short README."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
MAX_README_LINES = 150


def long_functions(folder: Path, limit: int) -> list[str]:
    """``path:line name (n lines)`` for every function in ``folder`` longer than ``limit``."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    where = f"{path.relative_to(folder)}:{node.lineno}"
                    found.append(f"{where} {node.name} ({n} lines)")
    return found


def test_the_finder_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def too_long():\n{body}\n")
    (tmp_path / "short.py").write_text("def short():\n    return 1\n")
    assert long_functions(tmp_path, MAX_FUNCTION_LINES) == ["long.py:1 too_long (61 lines)"]


def test_no_function_in_src_is_over_60_lines():
    assert long_functions(ROOT / "src", MAX_FUNCTION_LINES) == []


def test_readme_stays_short():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move details to docs/"
