"""Prompt templates: files in prompts/ with named `$slots` (string.Template), filled from the target
module and the run's history.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from service.data_dirs import data_dir
from service.proposers.base import HistorySettings, ProposalContext
from service.proposers.history import render_sections, select_history
from workers.sandbox.subset import describe_subset
from workers.targets import Target

PROMPTS_DIR = data_dir("prompts")

def load_template(name: str, prompts_dir: Path = PROMPTS_DIR) -> Template:
    return Template((prompts_dir / name).read_text(encoding="utf-8"))


def component(target: Target) -> str:
    return target.component


def system_prompt(target: Target, prompts_dir: Path = PROMPTS_DIR) -> str:
    inputs = "\n".join(f"- `{i.name}`: {i.description}" for i in target.inputs)
    rules = "\n".join(f"- {rule[0].upper()}{rule[1:]}." for rule in target.rules)
    return load_template("system.md", prompts_dir).substitute(
        component=component(target),
        summary=target.summary,
        signature=target.signature,
        returns=target.returns,
        inputs=inputs,
        rules=rules,
        subset=describe_subset(target),
    )


def history_prompt(
    target: Target, context: ProposalContext, settings: HistorySettings, prompts_dir: Path = PROMPTS_DIR
) -> str:
    selection = select_history(context.warm_start, context.history, settings)
    return load_template("history.md", prompts_dir).substitute(
        component=component(target), index=context.index, **render_sections(selection, settings)
    )


def repair_prompt(target: Target, issues: str, prompts_dir: Path = PROMPTS_DIR) -> str:
    return load_template("repair.md", prompts_dir).substitute(issues=issues, signature=target.signature)


def format_prompt(problem: str, prompts_dir: Path = PROMPTS_DIR) -> str:
    return load_template("format.md", prompts_dir).substitute(problem=problem)


def duplicate_prompt(prompts_dir: Path = PROMPTS_DIR) -> str:
    return load_template("duplicate.md", prompts_dir).substitute()
