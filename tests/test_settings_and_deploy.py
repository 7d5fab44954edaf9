"""Deployment files agree with the code: every setting is documented, every compose command is real.

Docker does not run on CI machines, so docker-compose.yml and the Dockerfile are checked only this way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.cli import app
from service.db import head_revision
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_setting() -> None:
    documented = set(re.findall(r"^(DISCOVERY_[A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert documented == {f"DISCOVERY_{name.upper()}" for name in Settings.model_fields}


def test_the_readme_tables_and_commands_match_the_code() -> None:
    """Every DISCOVERY_* default the README states is the code's; every bench script and example it names exists."""
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `(DISCOVERY_[A-Z_]+)` \| ([^|]+) \|", readme, re.MULTILINE)
    assert len(rows) >= 10
    fields = Settings.model_fields
    for variable, stated in rows:
        field = variable.removeprefix("DISCOVERY_").lower()
        assert field in fields, f"README names {variable}, which is no setting"
        default = fields[field].default
        if stated.strip() == "unset":
            assert default in (None, ""), f"{variable}: README says unset, the code says {default!r}"
        elif field == "cache_dir":
            assert stated.strip() == "`~/.cache/discovery`" and default == Path.home() / ".cache" / "discovery"
        else:
            shown = json.dumps(default) if isinstance(default, dict) else f"{default:g}" if isinstance(
                default, float) else str(default)
            assert stated.strip() == f"`{shown}`", f"{variable}: README says {stated.strip()}, the code {shown}"
    for script in re.findall(r"bench/[a-z_]+\.py", readme):
        assert (REPO / script).is_file(), f"README names {script}, which does not exist"
    for example in re.findall(r"examples/[a-z_]+\.(?:py|ipynb)", readme):
        assert (REPO / example).is_file(), f"README names {example}, which does not exist"


def test_the_cache_folder_expands_a_home_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(cache_dir="~/discovery-cache").cache_dir == tmp_path / "discovery-cache"


def test_every_compose_service_runs_a_real_entry_point() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    commands = {group.name for group in app.registered_groups} | {
        (c.name or c.callback.__name__) for c in app.registered_commands}
    for name, service in compose["services"].items():
        assert "restart" in service, f"{name} has no restart policy"
        if "build" not in service:
            assert "healthcheck" in service, f"{name} has no health check"
            continue
        command = service["command"]
        assert command[0] == "discovery" and command[1] in commands, f"{name}: {command}"
    cpu, gpu = compose["services"]["worker-evaluate"], compose["services"]["worker-evaluate-gpu"]
    assert "evaluate" in cpu["command"] and cpu["environment"]["DISCOVERY_TRAINER_DEVICE"] == "cpu"
    assert "deploy" not in cpu and "profiles" not in cpu  # `docker compose up` evaluates on the CPU
    assert "evaluate" in gpu["command"] and gpu["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["DISCOVERY_TRAINER_DEVICE"] == "gpu"
    assert gpu["build"]["args"]["JAX_EXTRA"] == "cuda12"
    assert all("seccomp=unconfined" in worker["security_opt"] for worker in (cpu, gpu))
    assert "security_opt" not in compose["services"]["worker-cpu"]
    assert (REPO / "Dockerfile").read_text().count("bubblewrap") == 1


def test_operation_ids_read_as_names_and_the_event_stream_is_described() -> None:
    from service.api.app import create_app
    from workers.vocabulary import EventType

    spec = create_app().openapi()
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z_]+", i) for i in ids), ids
    assert {"post_run", "get_run", "list_candidates", "best_file", "export_evaluations"} <= set(ids)
    events = spec["paths"]["/v1/runs/{run_id}/events"]["get"]["responses"]["200"]
    assert "example" in events["content"]["text/event-stream"]
    assert all(f"`{t.value}`" in events["description"] for t in EventType)


def test_the_api_reference_in_docs_is_current() -> None:
    from service.api.app import create_app
    from service.api.reference import render

    current = render(create_app().openapi())
    assert (REPO / "docs" / "api.md").read_text() == current, "run: python -m service.api.reference > docs/api.md"


def test_a_plain_install_can_migrate_and_prompt(tmp_path: Path) -> None:
    """`pip install .` (not -e) ships prompts/ and migrations/: the installed package finds them, not the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # The new environment's own pip: installing with this one would replace the checkout's editable install.
    built = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(REPO)],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    deps = [p for p in sys.path if p.endswith("site-packages")]  # this environment's dependencies, no checkout
    script = ("import service, sys\n"
              "from service.db import head_revision, upgrade_database\n"
              "from service.proposers.prompts import load_template\n"
              "upgrade_database('sqlite:///plain.db')\n"
              "print(service.__file__, head_revision(), len(load_template('system.md').template))\n")
    ran = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(deps)})
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, revision, prompt_chars = ran.stdout.split()
    assert where.startswith(str(venv)) and revision == head_revision() and int(prompt_chars) > 100
