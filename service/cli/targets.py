"""`discovery targets list` and `discovery targets show NAME`: what can be discovered, and what a candidate for
it must look like (signature, inputs, rules, the subset of Python it is written in), before writing one."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from service.cli.common import JsonFlag, console, fail

targets_app = typer.Typer(help="What can be discovered: the targets and what a candidate for each looks like.",
                          no_args_is_help=True)


@targets_app.command("list")
def targets_list(as_json: JsonFlag = False) -> None:
    """List the targets: what a candidate replaces and the function it defines."""
    from workers.targets import TARGETS

    if as_json:
        print(json.dumps([{"name": t.name, "component": t.component, "signature": t.signature}
                          for t in TARGETS.values()]))
        return
    table = Table(title="targets")
    for column in ("name", "a candidate is", "it defines", "default environments"):
        table.add_column(column)
    for t in TARGETS.values():
        table.add_row(t.name, t.component, t.signature, f"{', '.join(t.default_train_envs)} (test: "
                      f"{', '.join(t.default_test_envs)})")
    console.print(table)
    console.print("`discovery targets show NAME` prints a target's inputs, rules and the Python a candidate may use")


@targets_app.command("show")
def targets_show(
    name: Annotated[str, typer.Argument(help="lpo, optimizer, open or advantage")],
    warm_start: Annotated[bool, typer.Option("--warm-start", help="print only the warm start's source (a template "
                                             "to start from)")] = False,
    as_json: JsonFlag = False,
) -> None:
    """A target in full: its signature, what each input means, the rules, what candidate code may use."""
    from workers.sandbox.subset import ALLOWED_BUILTINS, describe_subset
    from workers.targets import TARGETS

    if name not in TARGETS:
        fail(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    target = TARGETS[name]
    if warm_start:
        print(target.warm_start, end="")
        return
    if as_json:
        print(json.dumps({
            "name": target.name, "component": target.component, "summary": target.summary,
            "signature": target.signature, "inputs": {i.name: i.description for i in target.inputs},
            "returns": target.returns, "rules": list(target.rules),
            "allowed_modules": sorted(target.allowed_modules), "allowed_functions": sorted(target.allowed_functions),
            "allowed_builtins": sorted(ALLOWED_BUILTINS), "references": [r.name for r in target.references],
            "default_train_envs": list(target.default_train_envs), "default_test_envs": list(target.default_test_envs),
        }))
        return
    lines = [f"{target.name}: a {target.component}", "", target.summary, "", target.signature,
             f"    returns {target.returns}", "", "inputs:"]
    lines += [f"  {i.name}: {i.description}" for i in target.inputs]
    lines += ["", "rules:", *(f"  - {rule}" for rule in target.rules), "", "candidate code:"]
    lines += [f"  {line}" for line in describe_subset(target).splitlines()]
    modules = sorted({f.rsplit(".", 1)[0] for f in target.allowed_functions})
    for module in modules:
        names = sorted(f.rsplit(".", 1)[1] for f in target.allowed_functions if f.rsplit(".", 1)[0] == module)
        lines.append(f"  {module}: {' '.join(names)}")
    lines += ["", f"references meta-tested beside the warm start: {', '.join(r.name for r in target.references)}"
              if target.references else "references: none",
              f"default environments: {', '.join(target.default_train_envs)} (meta-test: "
              f"{', '.join(target.default_test_envs)})",
              f"start from the warm start: discovery targets show {target.name} --warm-start > my_{target.name}.py"]
    console.print("\n".join(lines))
