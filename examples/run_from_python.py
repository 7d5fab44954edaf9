"""Drive Discovery from a script or a notebook with the typed client.

    export DISCOVERY_API_KEY=$(discovery keys create notebook)
    discovery serve --port 8000 &
    python examples/run_from_python.py

It starts a small run, waits for it with progress, prints the candidates by verified score with their
intervals and verdicts, and takes the best algorithm and every evaluation home.
"""

import os

from service.client import DiscoveryClient

SPEC = {
    "target": "lpo",
    "environments": {"train": ["CartPole-v1"], "test": ["Acrobot-v1"]},
    "profile": "smoke",
    "proposer": {"kind": "evolution"},
    "budget": {"candidates": 6},
}


def show(run):
    print(f"{run.id} {run.status}: {run.progress.candidates_done}/{run.progress.candidates_budget} candidates")


with DiscoveryClient(os.environ.get("DISCOVERY_API_URL", "http://127.0.0.1:8000"),
                     os.environ["DISCOVERY_API_KEY"]) as client:
    run = client.create(SPEC, idempotency_key="examples/run_from_python")
    run = client.wait(run.id, progress=show)
    print(run.discovery.message)
    for candidate in client.candidates(run.id, sort="score"):
        ci = candidate.verified_ci or candidate.score_ci
        print(f"#{candidate.index} {candidate.name}: {candidate.verified_score or candidate.score} {ci} "
              f"{candidate.verdict}")
    with open(f"{run.id}_best.py", "w") as out:
        out.write(client.best_code(run.id))
    with open(f"{run.id}.csv", "w") as out:
        out.write(client.export(run.id, "csv"))
