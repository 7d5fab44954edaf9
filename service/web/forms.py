"""The new-run form: the browser's fields into the same run request the REST API takes.

Empty fields are left out, so a preset's values (or the spec's defaults) apply; every field filled in
wins over the preset's, exactly as in `POST /v1/runs` and `discovery run`. The request is then
validated by `RunSpec`; its errors are shown one per line, named by field.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from service.runs.spec import RunSpec

NUMBERS = ("candidates", "seeds_per_eval", "metatest_seeds", "seed", "concurrency")


class FormError(ValueError):
    """The form cannot become a run spec; `problems` are readable lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def first(fields: dict[str, list[str]], name: str) -> str:
    return (fields.get(name) or [""])[0].strip()


def run_request(fields: dict[str, list[str]]) -> dict[str, Any]:
    """The run request the form describes (only the fields the user filled in)."""
    request: dict[str, Any] = {}
    problems = []
    for name in ("preset", "target", "profile", "learning_rate"):
        if value := first(fields, name):
            request[name] = value
    for name in NUMBERS:
        if value := first(fields, name):
            try:
                number = int(value)
            except ValueError:
                problems.append(f"{name}: {value!r} is not a whole number")
                continue
            if name == "candidates":
                request["budget"] = {"candidates": number}
            else:
                request[name] = number
    environments = {phase: [e for e in fields.get(f"{phase}_envs", []) if e] for phase in ("train", "test")}
    if any(environments.values()):
        request["environments"] = {phase: envs for phase, envs in environments.items() if envs}
    if first(fields, "proposer") == "llm":
        request["proposer"] = {"kind": "llm", "model": first(fields, "model")}
        if history := first(fields, "history"):
            request["proposer"]["history"] = history
    if problems:
        raise FormError(problems)
    return request


def run_spec(fields: dict[str, list[str]]) -> RunSpec:
    """The validated run spec, or FormError naming every field that is wrong."""
    request = run_request(fields)
    try:
        return RunSpec.model_validate(request)
    except ValidationError as exc:
        raise FormError([f"{'.'.join(str(p) for p in e['loc']) or 'run'}: {e['msg']}" for e in exc.errors()]) from None
