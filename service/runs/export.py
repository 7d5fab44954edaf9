"""What leaves the service: a run's best algorithm as a standalone Python file (`GET /v1/runs/{id}/best.py`)
and its evaluations as a table (`GET /v1/runs/{id}/export?format=csv|jsonl`, `discovery runs export`).

In `best.py` only the candidate's own function is code (for a network candidate, the target's network in plain
JAX and its parameters as a list of floats, which read back as the exact float32 vector that was trained);
everything else (its name, the model's thought, scores) is data, written as `#` comments with every character
that could end a comment or break the file (line breaks of any kind, NUL, other control characters) escaped. So
a hostile name or thought cannot close a docstring, start a statement, or make the file fail to parse.

The table has one row per candidate × environment × phase (and race round) × seed: the seed's return at
the learning rate the candidate was scored at, its normalised score against the anchor, and where it came
from (the artifact's SHA-256). JSONL rows also carry the seed's learning curve.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Candidate, Evaluation, ParameterVector, Run
from service.runs.provenance import provenance_text, trained_on_text
from service.runs.spec import spec_of
from workers.results import score_text
from workers.targets import TARGETS
from workers.targets.base import Network
from workers.vocabulary import CandidateKind


def comment_safe(text: str) -> str:
    """`text` on one line that Python reads as comment text: non-printable characters as `\\uXXXX` escapes."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def comments(text: str, width: int | None = None) -> list[str]:
    """`text` as `#` comment lines, wrapped at `width` when given (its own line breaks are escaped, not kept)."""
    safe = comment_safe(text)
    return ["# " + line for line in (textwrap.wrap(safe, width) if width else [safe]) or [""]]


def network_module(network: Network, vector: np.ndarray) -> str:
    """The network's standalone source and its parameters: `PARAMETERS = [...]`, each float32 written as the
    shortest float that reads back as it."""
    values = [repr(float(x)) for x in np.asarray(vector, dtype=np.float32)]
    rows = [", ".join(values[i:i + 8]) for i in range(0, len(values), 8)]
    return (network.source + f"\n\n# {network.name}'s {len(values)} parameters (float32).\nPARAMETERS = [\n"
            + "".join(f"    {row},\n" for row in rows) + "]\n")


def best_file(run: Run, best: Candidate, evaluations: list[Evaluation], verdict: str, body: str | None = None) -> str:
    """The file: a commented header (provenance, scores with their intervals, the verdict), then the code (or
    `body`: a network candidate's module)."""
    verified = best.stats.get("verification")
    header = [
        *comments(f"{best.name}: discovered by Discovery run {run.id}."),
        *comments(f"Target: {run.target}; proposer: {spec_of(run).proposer.kind}; profile: {run.profile}; "
                  f"seed: {run.seed}."),
        *comments(f"Candidate #{best.index} ({best.id}): {score_text(best.verified_score, verified)} "
                  "(1.0 = the warm start, 0.0 = a random policy)."),
        *comments(f"Verdict: {verdict}."),
        *comments(f"Made with: {provenance_text((run.config or {}).get('provenance'))}."),
        *comments("Trained on: " + trained_on_text((e.platform, e.device) for e in evaluations if e.platform) + "."),
    ]
    for e in sorted(evaluations, key=lambda e: (e.phase, e.round, e.env)):
        if e.normalised_score is not None:
            scored = score_text(e.normalised_score, (e.stats or {}).get("comparison"))
            header += comments(f"  {e.phase} {e.env}: {scored}, return {e.final_return:.2f}")
    if best.thought:
        header += ["#", *comments("Idea: " + best.thought, width=100)]
    return "\n".join(header) + "\n\n" + (best.code if body is None else body)


EXPORT_COLUMNS = ("run_id", "candidate_id", "candidate_index", "candidate_name", "reference", "phase", "round", "env",
                  "seed", "learning_rate", "return", "score", "score_basis", "metric", "outcome", "artifact_sha256")


def evaluation_rows(session: Session, run: Run, with_curves: bool = False) -> Iterator[dict[str, Any]]:
    """One row per candidate × environment × phase (and round) × seed; an evaluation that failed is one row
    with its outcome and no seed."""
    query = (select(Evaluation, Candidate).join(Candidate, Candidate.id == Evaluation.candidate_id)
             .where(Candidate.run_id == run.id)
             .order_by(Candidate.index, Evaluation.phase, Evaluation.round, Evaluation.env, Evaluation.created_at))
    for evaluation, candidate in session.execute(query):
        base = {"run_id": run.id, "candidate_id": candidate.id, "candidate_index": candidate.index,
                "candidate_name": candidate.name, "reference": candidate.reference, "phase": evaluation.phase,
                "round": evaluation.round, "env": evaluation.env, "outcome": evaluation.outcome,
                "artifact_sha256": evaluation.artifact_sha256, "learning_rate": evaluation.best_lr,
                "score_basis": evaluation.score_basis, "metric": (evaluation.stats or {}).get("metric")}
        if evaluation.returns is None or evaluation.best_lr is None:
            yield base | {"seed": None, "return": None, "score": None}
            continue
        returns = evaluation.returns[evaluation.learning_rates.index(evaluation.best_lr)]
        scores = (evaluation.stats or {}).get("scores") or [None] * len(returns)
        curves = (evaluation.curves or {}).get("seed_curves") or [None] * len(returns)
        for seed, value, score, curve in zip(evaluation.seeds, returns, scores, curves, strict=False):
            row = base | {"seed": seed, "return": value, "score": score}
            yield row | {"curve": curve} if with_curves else row


def export_csv(rows: Iterator[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def export_jsonl(rows: Iterator[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def best_download(session: Session, run: Run, verdict: str) -> tuple[str, str] | None:
    """The run's `best.py` and its file name, or None while no candidate is evaluated (the API and the UI)."""
    best = session.get(Candidate, run.best_candidate_id) if run.best_candidate_id else None
    if best is None:
        return None
    evaluations = list(session.scalars(select(Evaluation).where(Evaluation.candidate_id == best.id)))
    body = None
    network = TARGETS[run.target].network
    network = network.resolve(best.network or network.name) if network is not None else None  # a student's width
    if best.kind == CandidateKind.NETWORK and best.parameters_sha256 and network is not None:
        stored = session.get(ParameterVector, best.parameters_sha256)
        body = network_module(network, np.frombuffer(stored.data, dtype="<f4"))
    return best_file(run, best, evaluations, verdict, body), f"{run.target}_{run.id[:8]}.py"


EXPORT_MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def table_download(session: Session, run: Run, format: str) -> tuple[str, str, str]:  # noqa: A002 - the API's name
    """The run's evaluations as `format` (csv or jsonl), its media type and its file name."""
    rows = evaluation_rows(session, run, with_curves=format == "jsonl")
    body = export_csv(rows) if format == "csv" else export_jsonl(rows)
    return body, EXPORT_MEDIA_TYPES[format], f"{run.id}.{format}"
