"""`discovery runs ...` and `discovery candidates show` talk to a real server over the API."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.api.conftest import ApiServer
from tests.api.test_api_basics import SMALL_RUN
from tests.conftest import process_env


def discovery(api: ApiServer, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = process_env()
    env.update(DISCOVERY_API_URL=api.url, COLUMNS="200")
    if key:
        env["DISCOVERY_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_runs_and_candidates_commands_show_what_the_api_has(api: ApiServer) -> None:
    key = api.new_key("cli")
    client = api.client(key)
    run = client.post("/v1/runs", json={**SMALL_RUN, "seed": 7}).json()
    listed = discovery(api, key, "runs", "list")
    assert listed.returncode == 0 and run["id"] in listed.stdout
    shown = discovery(api, key, "runs", "show", run["id"])
    assert shown.returncode == 0 and run["id"] in shown.stdout and "candidates 0/1" in shown.stdout
    assert "fixed learning rate" in shown.stdout and "meta-test" in shown.stdout
    assert "DPO" in shown.stdout  # the reference's column in the meta-test table
    assert "made with: discovery" in shown.stdout and "jax " in shown.stdout
    warm = client.get(f"/v1/runs/{run['id']}/candidates").json()["items"][0]
    candidate = discovery(api, key, "candidates", "show", warm["id"])
    assert candidate.returncode == 0 and "def drift(ratio, advantage, epsilon)" in candidate.stdout
    cancelled = discovery(api, key, "runs", "cancel", run["id"])
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    refused = discovery(api, key, "runs", "extend", run["id"], "--candidates", "2")
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
    assert "409" in refused.stderr and "only a completed run can be extended" in refused.stderr


def test_cli_errors_are_one_line_with_exit_codes_scripts_can_use(api: ApiServer) -> None:
    key = api.new_key("cli")
    missing = discovery(api, key, "runs", "show", "no-such-run")
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "404" in missing.stderr
    no_key = discovery(api, None, "runs", "list")
    assert no_key.returncode == 2 and "DISCOVERY_API_KEY" in no_key.stderr
    wrong_key = discovery(api, "dsk_wrong", "runs", "list")
    assert wrong_key.returncode == 2 and "401" in wrong_key.stderr
    env = process_env()
    env.update(DISCOVERY_API_URL="http://127.0.0.1:9", DISCOVERY_API_KEY=key)
    down = subprocess.run([sys.executable, "-m", "service.cli", "runs", "list"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 1 and "cannot reach the API" in down.stderr


def test_json_output_can_be_scripted(api: ApiServer) -> None:
    key = api.new_key("cli-json")
    client = api.client(key)
    run = client.post("/v1/runs", json={**SMALL_RUN, "seed": 8}).json()
    listed = json.loads(discovery(api, key, "runs", "list", "--json").stdout)
    assert run["id"] in [r["id"] for r in listed["items"]]
    shown = json.loads(discovery(api, key, "runs", "show", run["id"], "--json").stdout)
    assert shown["id"] == run["id"] and shown["progress"]["candidates_budget"] == 1
    warm = client.get(f"/v1/runs/{run['id']}/candidates").json()["items"][0]
    candidate = json.loads(discovery(api, key, "candidates", "show", warm["id"], "--json").stdout)
    assert candidate["id"] == warm["id"] and "def drift(ratio, advantage, epsilon)" in candidate["code"]
    client.post(f"/v1/runs/{run['id']}/cancel")
