"""The bounded history a prompt shows: the warm start, the best candidates, the most recent ones and
the latest failures with their error text.

Selection is a pure function of the entries (sorted by index first), so a run resumed from the
database prompts exactly as an uninterrupted run with the same results would. Candidates not yet
evaluated (outcome None) are left out: the prompt depends only on finished results.
"""

from __future__ import annotations

from pydantic import BaseModel

from service.proposers.base import HistoryEntry, HistorySettings
from workers.results import score_text
from workers.vocabulary import Outcome


class HistorySelection(BaseModel):
    warm_start: HistoryEntry
    best: list[HistoryEntry]  # highest score first
    recent: list[HistoryEntry]  # oldest first
    failures: list[HistoryEntry]  # oldest first


def select_history(
    warm_start: HistoryEntry, entries: list[HistoryEntry], settings: HistorySettings
) -> HistorySelection:
    finished = sorted(
        (e for e in entries if e.outcome is not None and e.candidate_id != warm_start.candidate_id),
        key=lambda e: (e.index, e.candidate_id),
    )
    scored = [e for e in finished if e.outcome == Outcome.ok and e.score is not None]
    best = sorted(scored, key=lambda e: (-(e.score or 0.0), e.index))[: settings.best_k]
    chosen = {e.candidate_id for e in best}
    recent = (
        [e for e in scored if e.candidate_id not in chosen][-settings.recent_m :] if settings.recent_m else []
    )
    failed = [e for e in finished if e.outcome != Outcome.ok]
    failures = failed[-settings.failures_f :] if settings.failures_f else []
    return HistorySelection(warm_start=warm_start, best=best, recent=recent, failures=failures)


def clip_error(text: str, limit: int) -> str:
    """Keep the end of a long error (a traceback's last lines say the most)."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return "[... earlier lines cut ...]\n" + text[-limit:]


def format_score(entry: HistoryEntry) -> str:
    return score_text(entry.score, entry.comparison)


def render_entry(entry: HistoryEntry, settings: HistorySettings, label: str = "") -> str:
    """One candidate as the model reads it: name, score or failure, its idea and its code."""
    title = f"Candidate {entry.index}: {entry.name}" + (f" ({label})" if label else "")
    lines = [f"### {title}"]
    if entry.outcome == Outcome.ok or entry.outcome is None:
        lines.append(f"Fitness: {format_score(entry)}")
    else:
        outcome = entry.outcome.value if entry.outcome else "unknown"
        lines.append(f"Result: failed ({outcome}).")
        if entry.error:
            lines.append("Error:\n```\n" + clip_error(entry.error, settings.max_error_chars) + "\n```")
    if entry.thought:
        lines.append(f"Thought: {entry.thought.strip()}")
    lines.append("```python\n" + entry.code.strip() + "\n```")
    return "\n".join(lines)


def render_sections(selection: HistorySelection, settings: HistorySettings) -> dict[str, str]:
    """The text of each history section, for the history template's slots."""
    none = "(none yet)"
    return {
        "warm_start": render_entry(selection.warm_start, settings, "warm start"),
        "best": "\n\n".join(render_entry(e, settings) for e in selection.best) or none,
        "recent": "\n\n".join(render_entry(e, settings) for e in selection.recent) or none,
        "failures": "\n\n".join(render_entry(e, settings) for e in selection.failures) or none,
    }
