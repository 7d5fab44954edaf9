"""A run's best algorithm as a standalone Python file (`GET /v1/runs/{id}/best.py`).

Only the candidate's own function is code; everything else (its name, the model's thought, scores) is
data, written as `#` comments with every character that could end a comment or break the file (line
breaks of any kind, NUL, other control characters) escaped. So a hostile name or thought cannot close a
docstring, start a statement, or make the file fail to parse.
"""

from __future__ import annotations

import textwrap

from service.db.models import Candidate, Evaluation, Run
from workers.results import score_text


def comment_safe(text: str) -> str:
    """`text` on one line that Python reads as comment text: non-printable characters as `\\uXXXX` escapes."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def comments(text: str, width: int | None = None) -> list[str]:
    """`text` as `#` comment lines, wrapped at `width` when given (its own line breaks are escaped, not kept)."""
    safe = comment_safe(text)
    return ["# " + line for line in (textwrap.wrap(safe, width) if width else [safe]) or [""]]


def best_file(run: Run, best: Candidate, evaluations: list[Evaluation], verdict: str) -> str:
    """The file: a commented header (provenance, scores with their intervals, the verdict), then the code."""
    verified = best.stats.get("verification")
    header = [
        *comments(f"{best.name}: discovered by Discovery run {run.id}."),
        *comments(f"Target: {run.target}; proposer: {run.proposer.get('kind')}; profile: {run.profile}; "
                  f"seed: {run.seed}."),
        *comments(f"Candidate #{best.index} ({best.id}): {score_text(best.verified_score, verified)} "
                  "(1.0 = the warm start, 0.0 = a random policy)."),
        *comments(f"Verdict: {verdict}."),
    ]
    for e in sorted(evaluations, key=lambda e: (e.phase, e.round, e.env)):
        if e.normalised_score is not None:
            scored = score_text(e.normalised_score, (e.stats or {}).get("comparison"))
            header += comments(f"  {e.phase} {e.env}: {scored}, return {e.final_return:.2f}")
    if best.thought:
        header += ["#", *comments("Idea: " + best.thought, width=100)]
    return "\n".join(header) + "\n\n" + best.code
