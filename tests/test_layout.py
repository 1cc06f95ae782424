"""The source stays readable: no module over 450 lines, no function over 80 (the layers are import-linter's)."""

import ast
from pathlib import Path

import transferkit

SRC = Path(transferkit.__file__).parent
MODULE_LINES, FUNCTION_LINES = 450, 80


def sources():
    return sorted(SRC.rglob("*.py"))


def test_no_module_is_over_450_lines():
    long = {str(p.relative_to(SRC)): n for p in sources() if (n := len(p.read_text().splitlines())) > MODULE_LINES}
    assert len(sources()) > 100 and long == {}


def test_no_function_is_over_80_lines():
    long = {}
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long[f"{path.relative_to(SRC)}:{node.lineno} {node.name}"] = lines
    assert long == {}
