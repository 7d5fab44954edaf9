"""The first messages of a proposal in each history mode: `bounded`, `conversation` and `none`.

`conversation` is the paper's protocol (DiscoPOP's loop): one multi-turn chat. The system prompt, a
first user message with the warm start, then for every earlier proposal of the run, in index order,
the model's own reply as an `assistant` message followed by a `user` message with its feedback
("Fitness: 0.9300.", "Code not valid. Error: ...", "Training failed (nan). Error: ...", or "Not
evaluated yet" while it trains) and the request for the next proposal. The replies are the stored
ones (the last call of each proposal, so a repaired or re-asked proposal shows its final answer; a
`<think>` block is dropped); a candidate no model made is replayed as its {thought, name, code} JSON.
The chat keeps the last `max_turns` proposals: older turns are dropped, the warm start's message
stays and says how many were left out. Until the cut starts moving, an earlier message changes only
when its candidate's result arrives (or its re-evaluation pools the score), so endpoints that cache
prompt prefixes can reuse most of the chat from one proposal to the next.

`none` is best-of-N: the system prompt and the warm start's message only, never an earlier candidate.
`bounded` is one user message with the best, the most recent and the failed candidates (history.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from service.proposers.base import HistoryEntry, HistorySettings, ProposalContext
from service.proposers.history import clip_error, format_score, render_entry, select_history
from service.proposers.prompts import PROMPTS_DIR, component, history_prompt, load_template, system_prompt
from workers.targets import Target
from workers.vocabulary import Outcome

THINK = re.compile(r"<think>.*?</think>", re.DOTALL)

Message = dict[str, str]


def replayed_reply(entry: HistoryEntry) -> str:
    """The model's own reply for a candidate, or its {thought, name, code} as JSON when none was stored."""
    if entry.reply is not None:
        text = THINK.sub("", entry.reply).strip()
        if text:
            return text
    return json.dumps({"thought": entry.thought, "name": entry.name, "code": entry.code})


def feedback(entry: HistoryEntry, settings: HistorySettings, prompts_dir: Path = PROMPTS_DIR) -> str:
    """What the user says about a proposal once it is known: its fitness, or why it failed."""
    if entry.outcome is None:
        return load_template("conversation_pending.md", prompts_dir).substitute()
    if entry.outcome == Outcome.ok:
        return load_template("conversation_scored.md", prompts_dir).substitute(fitness=format_score(entry))
    error = clip_error(entry.error or "(no error text)", settings.max_error_chars)
    if entry.outcome == Outcome.invalid:
        return load_template("conversation_invalid.md", prompts_dir).substitute(error=error)
    return load_template("conversation_failed.md", prompts_dir).substitute(outcome=entry.outcome.value, error=error)


def conversation_turns(context: ProposalContext, settings: HistorySettings) -> tuple[list[HistoryEntry], int]:
    """(the earlier proposals kept as turns, oldest first; how many older ones were dropped)."""
    warm = context.warm_start  # proposals come after it; a negative index is no proposal (a reference)
    earlier = sorted(
        (e for e in context.history if e.candidate_id != warm.candidate_id and warm.index < e.index < context.index),
        key=lambda e: (e.index, e.candidate_id),
    )
    dropped = max(0, len(earlier) - settings.max_turns)
    return earlier[dropped:], dropped


def _start(target: Target, context: ProposalContext, settings: HistorySettings, dropped: int,
           prompts_dir: Path) -> str:
    parts = [
        load_template("conversation_start.md", prompts_dir)
        .substitute(warm_start=render_entry(context.warm_start, settings, "warm start"))
        .strip()
    ]
    if dropped:
        parts.append(load_template("conversation_dropped.md", prompts_dir).substitute(dropped=dropped).strip())
    return "\n\n".join(parts)


def _with_request(text: str, target: Target, prompts_dir: Path) -> str:
    request = load_template("conversation_next.md", prompts_dir).substitute(component=component(target))
    return f"{text.strip()}\n\n{request.strip()}"


def initial_messages(
    target: Target, context: ProposalContext, settings: HistorySettings, prompts_dir: Path = PROMPTS_DIR
) -> list[Message]:
    """The messages that open proposal `context.index`, ending with a user message asking for it."""
    system = {"role": "system", "content": system_prompt(target, prompts_dir)}
    if settings.mode == "bounded":
        return [system, {"role": "user", "content": history_prompt(target, context, settings, prompts_dir)}]
    if settings.mode == "none":
        start = _start(target, context, settings, 0, prompts_dir)
        return [system, {"role": "user", "content": _with_request(start, target, prompts_dir)}]
    turns, dropped = conversation_turns(context, settings)
    messages = [system, {"role": "user", "content": _with_request(
        _start(target, context, settings, dropped, prompts_dir), target, prompts_dir)}]
    for entry in turns:
        messages.append({"role": "assistant", "content": replayed_reply(entry)})
        messages.append({"role": "user", "content": _with_request(feedback(entry, settings, prompts_dir), target,
                                                                  prompts_dir)})
    return messages


def shown_entries(context: ProposalContext, settings: HistorySettings) -> list[HistoryEntry]:
    """The scored candidates (and the warm start) whose code the opening messages show."""
    if settings.mode == "none":
        return [context.warm_start]
    if settings.mode == "conversation":
        turns, _ = conversation_turns(context, settings)
        return [context.warm_start, *(e for e in turns if e.outcome == Outcome.ok and e.score is not None)]
    selection = select_history(context.warm_start, context.history, settings)
    return [context.warm_start, *selection.best, *selection.recent]
