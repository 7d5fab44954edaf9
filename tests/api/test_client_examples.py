"""The client examples (`examples/run_from_python.py`, `examples/discovery.ipynb`) are valid Python that calls
only what `DiscoveryClient` and the models it returns have. (The client itself drives a live server in
tests/api/test_api_run_e2e.py.)"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from service.client import DiscoveryClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _source(path: Path) -> str:
    if path.suffix == ".ipynb":
        notebook = json.loads(path.read_text())
        assert notebook["nbformat"] == 4
        return "\n\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    return path.read_text()


@pytest.mark.parametrize("name", ["run_from_python.py", "discovery.ipynb"])
def test_a_client_example_calls_only_what_the_client_has(name: str) -> None:
    tree = ast.parse(_source(EXAMPLES / name))
    called = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
              and node.func.value.id in ("client", "python")}
    assert called and called <= {name for name in dir(DiscoveryClient) if not name.startswith("_")}
