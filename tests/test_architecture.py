"""The house rules of docs/architecture.md, checked on the source with `ast`, and what the API process loads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JAX_STACK = ("jax", "jaxlib", "gymnax", "flax", "optax")


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at the top level) for every import in the file (the project uses absolute imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            found += [(base, node.lineno, id(node) in top_level)]
            found += [(f"{base}.{alias.name}", node.lineno, id(node) in top_level) for alias in node.names]
    return found


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _breaks(files: list[Path], forbidden: tuple[str, ...], top_level_only: bool = False) -> list[str]:
    return [f"{_name(path)}:{line} imports {module}" for path in files for module, line, top in _imports(path)
            if (top or not top_level_only) and any(module == f or module.startswith(f + ".") for f in forbidden)]


def test_workers_import_nothing_from_the_service_but_the_celery_bridge() -> None:
    files = [p for p in _modules("workers") if _name(p) != "workers/tasks.py"]
    assert _breaks(files, ("service",)) == []


def test_the_service_never_imports_the_celery_tasks() -> None:
    assert _breaks(_modules("service"), ("workers.tasks",)) == []


def test_route_modules_do_not_import_each_other() -> None:
    routes = [*_modules("service/api/routes"), ROOT / "service/web/routes.py"]
    assert _breaks(routes, ("service.api.routes", "service.web.routes")) == []


def test_only_the_settings_read_discovery_variables() -> None:
    reads = []
    for path in [*_modules("service"), *_modules("workers")]:
        if _name(path) == "service/settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(("getenv", "environ.get")):
                key = node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
                key = node.slice
            else:
                continue
            if isinstance(key, ast.Constant) and str(key.value).startswith("DISCOVERY_"):
                reads.append(f"{_name(path)}:{node.lineno}")
    assert reads == []


def test_jax_is_imported_only_by_the_evaluation_side() -> None:
    """JAX, gymnax and flax at the top of a module only in the RL code, the target kernels, the trainer and its
    tests' helpers; the service and the target cards stay free of them (the tracer imports them lazily)."""
    allowed = ("workers/rl/", "workers/targets/kernels/", "workers/trainer/server.py", "workers/trainer/audit.py",
               "workers/trainer/verify.py", "workers/trainer/lanes.py")
    files = [p for p in [*_modules("service"), *_modules("workers")] if not _name(p).startswith(allowed)]
    assert _breaks(files, JAX_STACK, top_level_only=True) == []


def test_openai_is_imported_only_by_the_llm_proposer() -> None:
    files = [p for p in [*_modules("service"), *_modules("workers")] if _name(p) != "service/proposers/llm.py"]
    assert _breaks(files, ("openai",)) == []


@pytest.mark.parametrize("module", ["service.api.app", "workers.tasks"])
def test_the_api_and_a_celery_worker_load_no_jax_and_no_llm_client(module: str) -> None:
    probe = (f"import json, sys; import {module}; "
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True,
                                           text=True).stdout))
    assert loaded & {*JAX_STACK, "openai", "scipy", "wandb"} == set()
