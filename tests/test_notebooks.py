"""The stage notebooks stay thin and call what exists: no definitions, at most 25 lines of code, and every
``gvsl`` name they import or reach through a module alias resolves (a notebook no test runs cannot rot)."""

import ast
import json
import re

import pytest

from tests.test_pipeline import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def code_lines(path):
    cells = json.loads(path.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # IPython's `%magic` and `!shell` lines are not Python
    return [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_is_a_few_calls_into_gvsl(path):
    lines = code_lines(path)
    tree = ast.parse("\n".join(lines))
    definitions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
    assert definitions == [], f"{path.name} defines {[type(d).__name__ for d in definitions]}"
    code = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 25, f"{path.name}: {len(code)} lines of code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_gvsl_name_a_notebook_uses_exists(path):
    tree = ast.parse("\n".join(code_lines(path)))
    namespace: dict = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([node], []), path.name, "exec"), namespace)
    modules = {alias: value for alias, value in namespace.items() if getattr(value, "__name__", "").startswith("gvsl")}
    for alias, module in modules.items():
        if not hasattr(module, "__path__") and not hasattr(module, "__file__"):
            continue  # an imported function or class, not a module
        for attribute in set(re.findall(rf"\b{re.escape(alias)}\.([A-Za-z_]\w*)", "\n".join(code_lines(path)))):
            assert hasattr(module, attribute), f"{path.name}: {alias}.{attribute} does not exist"
