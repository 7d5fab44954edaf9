"""Attacks by a model's reply on what the service stores and prints: a lone surrogate and a NUL in a name, an
oversized thought, rich markup in a name. Each is stored cleaned and capped, the run goes on, the model's
tokens are counted, and every CLI command prints the text as it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from service.api.app import create_app
from service.db import session_scope
from service.db.models import Candidate, Run
from service.db.text import THOUGHT_CHARS, storable
from service.runs.spec import RunSpec
from service.runtime import Runtime
from tests.api.conftest import uvicorn_in_thread
from tests.conftest import process_env
from tests.proposers.scripted_llm import ScriptedLLM, completion
from tests.runs.conftest import REPO, cli, run_as_new_key
from tests.runs.test_llm_run import SQUARED, WIDER_CLIP, llm, runtime  # noqa: F401

MARKUP_NAME = "[/] [bold red]not bold[/bold red] [link=https://evil.example]x"


def test_storable_text_has_no_nul_or_lone_surrogate_and_keeps_within_its_cap() -> None:
    assert storable("a\ud800b\x00c") == "a\ufffdb\ufffdc"
    assert storable("x" * 100, 40).endswith("[... cut ...]") and len(storable("x" * 100, 40)) == 40
    assert storable("x" * 99 + "END", 40, keep_tail=True).endswith("END")


def test_a_hostile_reply_is_stored_cleaned_and_printed_as_it_is(runtime: Runtime, llm: ScriptedLLM,  # noqa: F811
                                                                tmp_path: Path) -> None:
    # json.dumps writes the lone surrogate as the escape `\ud800`, which the client's JSON parser turns back into it.
    llm.script += [
        completion(json.dumps({"thought": "t" * (THOUGHT_CHARS * 2), "name": "lone \ud800 surrogate \x00 nul",
                               "code": WIDER_CLIP}), 1000, 200),
        completion(json.dumps({"thought": "markup", "name": MARKUP_NAME, "code": SQUARED}), 1000, 200),
    ]
    spec = RunSpec.model_validate({
        "target": "lpo", "profile": "smoke", "environments": {"train": ["CartPole-v1"], "test": ["CartPole-v1"]},
        "concurrency": 1, "seeds_per_eval": 1, "metatest_seeds": 1, "verification_seeds": 2,
        "budget": {"candidates": 2}, "proposer": {"kind": "llm", "model": "scripted-model"}})
    key, run_id = run_as_new_key(runtime, spec, timeout=400)
    with session_scope(runtime.factory) as session:
        run = session.get(Run, run_id)
        first, second = session.scalars(select(Candidate).where(Candidate.run_id == run_id, Candidate.index > 0)
                                        .order_by(Candidate.index)).all()
        assert first.name == "lone \ufffd surrogate \ufffd nul" and first.outcome is not None
        assert len(first.thought) == THOUGHT_CHARS and first.thought.endswith("[... cut ...]")
        assert run.tokens_used == 2 * 1200  # both calls counted
        markup_id = second.id
    with uvicorn_in_thread(create_app(runtime)) as url:
        candidate = cli(url, key, tmp_path, "candidates", "show", markup_id)
        assert candidate.returncode == 0 and MARKUP_NAME in candidate.stdout.replace("\n", ""), candidate.stderr
        assert cli(url, key, tmp_path, "runs", "show", run_id).returncode == 0


def test_an_unknown_proposer_is_refused_in_one_line(tmp_path: Path) -> None:
    env = process_env()
    env.update(DISCOVERY_CACHE_DIR=str(tmp_path), DISCOVERY_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    for name in ("banana", "openai"):
        done = subprocess.run([sys.executable, "-m", "service.cli", "run", "--proposer", name, "--dry-run"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and name in done.stderr, (done.stdout, done.stderr)
