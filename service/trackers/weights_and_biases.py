"""The Weights & Biases bridge (the `wandb` extra, off by default): one W&B run per discovery run.

`follow` reads the run's event stream over the API (`DiscoveryClient.events`) and logs each candidate as
it is evaluated: its search score with its interval, its verified score and verdict once raced, its
outcome, and its learning curves at the chosen learning rate (a table: environment, update, return).
A new best updates the summary; the run's final event writes the verdict, the discovery message and
the meta-test, then finishes the W&B run. The W&B run's id is the discovery run's, so following it
again resumes the same W&B run. W&B's own settings apply (WANDB_MODE=offline logs to disk).
"""

from __future__ import annotations

from typing import Any

from service.client import DiscoveryClient
from service.runs.views import CandidateDetail, RunOut
from workers.vocabulary import EventType

INSTALL = "pip install 'discovery[wandb]'"
FINAL_EVENTS = (EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED)


class TrackerUnavailable(RuntimeError):
    """The tracker's package is not installed (the message says how to install it)."""


def _wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise TrackerUnavailable(f"the W&B bridge needs the wandb package: {INSTALL}") from None
    return wandb


def run_config(run: RunOut) -> dict[str, Any]:
    """What the W&B run records of the discovery run's set-up."""
    return {"target": run.target, "environments": run.environments, "profile": run.profile,
            "proposer": run.proposer, "budget": run.budget, "search": run.search, "seed": run.seed,
            "seeds_per_eval": run.seeds_per_eval, "verification_seeds": run.verification_seeds,
            "confidence": run.confidence, "metric": run.metric, "learning_rate": run.learning_rate,
            "preset": run.preset, "provenance": run.provenance}


def candidate_row(candidate: CandidateDetail) -> dict[str, Any]:
    """A candidate's figures as one W&B log row (its x-axis: `candidate/index`)."""
    row: dict[str, Any] = {"candidate/index": candidate.index, "candidate/outcome": candidate.outcome or "",
                           "candidate/score": candidate.score, "candidate/verified_score": candidate.verified_score,
                           "candidate/verdict": candidate.verdict or ""}
    for name, ci in (("score", candidate.score_ci), ("verified_score", candidate.verified_ci)):
        if ci is not None:
            row[f"candidate/{name}_low"], row[f"candidate/{name}_high"] = ci
    return {key: value for key, value in row.items() if value is not None}


def curve_rows(candidate: CandidateDetail) -> list[list[Any]]:
    """(environment, update, mean return) at the learning rate each search evaluation chose."""
    rows = []
    for evaluation in candidate.evaluations:
        curves = evaluation.curves or {}
        rates, returns = curves.get("learning_rates") or [], curves.get("returns") or []
        if evaluation.phase != "train" or evaluation.best_lr not in rates:
            continue
        rows += [[evaluation.env, update, value]
                 for update, value in enumerate(returns[rates.index(evaluation.best_lr)])]
    return rows


def follow(client: DiscoveryClient, run_id: str, project: str, entity: str | None = None) -> RunOut:
    """Log the run to W&B from its first event until it ends (returns the run as it ended)."""
    wandb = _wandb()
    run = client.get(run_id)
    tracked = wandb.init(project=project, entity=entity, id=run_id, name=f"{run.target} {run_id[:8]}",
                         config=run_config(run), resume="allow", reinit="create_new")
    tracked.define_metric("candidate/index")
    tracked.define_metric("candidate/*", step_metric="candidate/index")
    try:
        for event in client.events(run_id):
            if event.type == EventType.CANDIDATE_EVALUATED:
                candidate = client.candidate(event.data["candidate_id"])
                curves = curve_rows(candidate)
                extra = {"candidate/curves": wandb.Table(columns=["env", "update", "return"], data=curves)} \
                    if curves else {}
                tracked.log({**candidate_row(candidate), **extra})
            elif event.type == EventType.CANDIDATE_NEW_BEST:
                tracked.summary.update({"best/candidate_id": event.data.get("candidate_id"),
                                        "best/score": event.data.get("score")})
            elif event.type in FINAL_EVENTS:
                break
        run = client.get(run_id)
        tracked.summary.update(final_summary(run))
    finally:
        tracked.finish()
    return run


def final_summary(run: RunOut) -> dict[str, Any]:
    """The run's outcome: status, the best and its verdict, the discovery message, the meta-test per environment."""
    summary: dict[str, Any] = {"status": run.status, "discovery": run.discovery.found,
                               "discovery_message": run.discovery.message}
    if run.best is not None:
        summary.update({"best/candidate_id": run.best.candidate_id, "best/score": run.best.score,
                        "best/verdict": run.best.verdict or ""})
    for row in run.meta_test:
        for who, cell in (("best", row.best), ("warm_start", row.warm_start)):
            if cell is not None and cell.normalised_score is not None:
                summary[f"meta_test/{row.env}/{who}"] = cell.normalised_score
                if cell.score_ci is not None:
                    summary[f"meta_test/{row.env}/{who}_low"], summary[f"meta_test/{row.env}/{who}_high"] = \
                        cell.score_ci
    return summary
