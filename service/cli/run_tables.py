"""What `discovery runs show ID` prints for one run: its header lines, then one table per part of the run that has
one (the meta-test, evolution's operators, an ensemble's models, the islands). Each takes the run as the API's JSON
(`RunOut`) and returns None when the run has nothing of that kind."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from service.cli.common import score_text, scored_text
from service.cli.compare import cost_text, readable_text


def run_header(r: dict[str, Any]) -> list[str]:
    """The run in a few lines: what it is, how far it got, what it cost, its best and its verdict."""
    preset = f", preset {r['preset']}" if r["preset"] else ""
    lines = [f"run {r['id']}: {r['status'].upper()}  {r['target']} on {', '.join(r['environments']['train'])}"
             f"  ({r['proposer']['kind']}, profile {r['profile']}{preset}, {r['learning_rate']} learning rate, "
             f"{r['seeds_per_eval']} search / up to {r['verification_seeds']} verification / "
             f"{r['metatest_seeds']} meta-test seeds, metric {r['metric']})"]
    p, spent = r["progress"], r["spent"]
    if p.get("generations_budget") is not None:
        lines.append(f"generations {p['generations_done']}/{p['generations_budget']}, network candidates "
                     f"{p['candidates_done']} (in flight {p['in_flight']})")
    else:
        lines.append(f"candidates {p['candidates_done']}/{p['candidates_budget']} (in flight {p['in_flight']}), "
                     f"tokens {spent['tokens']}, cost ${spent['cost_usd']:.4f}, duplicates skipped "
                     f"{spent['duplicates_skipped']}")
    lines.append(cost_text(r))
    if r["best"]:
        b = r["best"]
        lines.append(f"best: #{b['index']} {b['name']} ({b['candidate_id']}), verified score "
                     f"{scored_text(b['score'], b['score_ci'], b['verdict'], b['seeds'])}, {readable_text(b)}")
    lines.append(f"verdict: {r['discovery']['message']}")
    return lines


def _cell(value: dict[str, Any] | None) -> str:
    value = value or {}
    flag = "*" if value.get("score_basis") == "return_ratio" else ""
    return scored_text(value.get("normalised_score"), value.get("score_ci"), value.get("verdict")) + flag


def meta_test_table(r: dict[str, Any]) -> Table | None:
    if not r["meta_test"]:
        return None
    references = list(r["meta_test"][0]["references"])
    table = Table(title="meta-test (normalised score; * a return ratio: the warm start was within noise of random)")
    for column in ("environment", "best", "warm start", *references):
        table.add_column(column)
    for row in r["meta_test"]:
        table.add_row(row["env"], _cell(row["best"]), _cell(row["warm_start"]),
                      *(_cell(row["references"][name]) for name in references))
    return table


def operators_table(r: dict[str, Any]) -> Table | None:
    if not r["operators"]:
        return None
    table = Table(title="evolution operators (children turned down by the probe before training; proposals "
                        "within 20% of the warm start)")
    for column in ("operator", "tried", "broke a rule", "behavioural duplicate", "proposed", "within 20%",
                   "above 1.0", "success"):
        table.add_column(column)
    for o in r["operators"]:
        success = "-" if o["success_rate"] is None else f"{o['success_rate']:.0%}"
        table.add_row(o["operator"], *(str(o[k]) for k in ("tried", "broke_a_rule", "behavioural_duplicates",
                                                          "proposed", "within_20_percent", "above_warm_start")),
                      success)
    return table


def models_table(r: dict[str, Any]) -> Table | None:
    if len(r["models"]) <= 1:
        return None
    table = Table(title="models of the ensemble (improved: scored above its parent, the bandit's reward)")
    for column in ("model", "proposals", "trained ok", "improved", "tokens", "cost", "best"):
        table.add_column(column)
    for m in r["models"]:
        table.add_row(m["model"], str(m["proposals"]), str(m["evaluated"]), str(m["improved"]), str(m["tokens"]),
                      f"${m['cost_usd']:.4f}", score_text(m["best_score"]))
    return table


def islands_table(r: dict[str, Any]) -> Table | None:
    if not r["islands"]:
        return None
    table = Table(title=f"islands (migrating their best every {r['search']['migration_interval']} proposals each)")
    for column in ("island", "proposals", "best", "best candidate"):
        table.add_column(column)
    for i in r["islands"]:
        table.add_row(str(i["island"]), str(i["proposals"]), score_text(i["best_score"]), i["best_candidate_id"] or "-")
    return table
