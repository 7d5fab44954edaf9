"""Deployment files agree with the code: every setting is documented, every compose command is real.

Docker does not run on CI machines, so docker-compose.yml and the Dockerfile are checked only this way.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from service.cli import app
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_setting() -> None:
    documented = set(re.findall(r"^(DISCOVERY_[A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert documented == {f"DISCOVERY_{name.upper()}" for name in Settings.model_fields}


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
    evaluate = compose["services"]["worker-evaluate"]
    assert "evaluate" in evaluate["command"] and evaluate["deploy"]["resources"]["reservations"]["devices"]
    assert "seccomp=unconfined" in evaluate["security_opt"]
    assert "security_opt" not in compose["services"]["worker-cpu"]
    assert (REPO / "Dockerfile").read_text().count("bubblewrap") == 1


def test_the_api_reference_in_docs_is_current() -> None:
    from service.api.app import create_app
    from service.api.reference import render

    current = render(create_app().openapi())
    assert (REPO / "docs" / "api.md").read_text() == current, "run: python -m service.api.reference > docs/api.md"
