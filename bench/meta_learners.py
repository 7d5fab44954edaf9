"""Meta-learners side by side (issue 25's bench): AST evolution of code against black-box ES of a network (ES-LPO).

Both run as ordinary runs of the service (the local executor, a fresh SQLite database each, the sandboxed trainer)
on the same meta-train environment, profile and run seed, at a comparable budget of environment steps: ES trains
`population × seeds-per-member` members for `generations` generations; evolution gets as many proposals as make the
same number of trainings at `seeds` search seeds each (`--candidates` overrides it). Then each method's pick (the
run's best when it is not the warm start, else its best-scoring proposal: ES's is its final mean, a network
candidate) is measured here by one protocol, off the runs' clocks: its verified score with its interval on
`--verification-seeds` fresh seeds of the meta-train environment, and its meta-test score with its interval on
`--metatest-seeds` fresh seeds of one held-out environment, both against the warm start's anchor (= 1.0).

Per method it prints: the pick, the verified score [interval] and verdict, the meta-test score [interval], the
search's environment steps (every training of the method's own candidates and ES members, the warm start and the
references aside) and the trainer seconds they took, the run's wall time (its own small meta-test included, the
same for both), and the device the trainer ran on. Then each pick is distilled (item 2) into a student network of
`--student-width` units inside its run (`POST /v1/runs/{id}/distill`'s path: the teacher's gradient map from the
sandbox, the fit in a fresh child, then the student evaluated, raced and meta-tested in the run like any candidate),
and the student is measured by the same protocol: a row `<method> -> student` with the student's own evaluations'
environment steps and trainer seconds (the fit samples no environment) and the distillation's wall time.
`--no-distill` skips it.

Run (CPU, small): .venv/bin/python bench/meta_learners.py --generations 2
     (smallest: --profile smoke --population 4 --generations 1 --verification-seeds 2 --metatest-seeds 1
      --anchor-seeds 8)
Options: [--env CartPole-v1] [--test-env Acrobot-v1] [--profile quick] [--population 16] [--generations 8]
         [--seeds-per-member 1] [--seeds 1] [--candidates N] [--seed 0] [--concurrency 2] [--student-width 128]
         [--no-distill]
"""

from __future__ import annotations

import argparse
import base64
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import session_scope, upgrade_database
from service.db.models import Artifact, Candidate, ESGeneration, Evaluation, ParameterVector, Run
from service.evaluation import Trainable, anchor_of, env_score, evaluate_artifacts
from service.runs.distill import DistillRequest, NetworkStudent, request_distillation
from service.runs.orchestrator import advance
from service.runs.runner import start_run
from service.runs.spec import RunSpec
from service.runtime import Runtime, build_runtime
from service.settings import Settings, get_settings
from workers.results import Comparison, SeedPlan
from workers.rl.envs import get_config
from workers.vocabulary import RUN_FINAL_STATUSES, EvalPhase, RunStatus

METHODS = ("evolution", "es")
VERIFY_SEED_BASE = 7_000_000  # the bench's own seeds: apart from every run's (seed·1000 + < 500) and the anchors'
METATEST_SEED_BASE = 8_000_000
PAPER_SCALE = ("DISCOVERY_TRAINER_DEVICE=gpu .venv/bin/python bench/meta_learners.py --profile full --population 64 "
               "--generations 800 --seeds-per-member 1 --verification-seeds 32 --metatest-seeds 16 "
               "--test-env Acrobot-v1   # the es-lpo preset's ES (the paper's population and generations), on a GPU")


@dataclass
class MethodReport:
    method: str
    status: str
    pick: str
    verified: Comparison | str  # the comparison, or why there is none
    metatest: Comparison | str
    env_steps: int
    trainer_seconds: float
    wall_seconds: float
    devices: list[str]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1", help="the meta-train environment")
    parser.add_argument("--test-env", default="Acrobot-v1", help="the held-out environment of the meta-test")
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--seeds-per-member", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="evolution's search seeds per evaluation")
    parser.add_argument("--candidates", type=int, default=None, help="evolution's proposals (default: the same "
                        "number of trainings as ES's generations)")
    parser.add_argument("--verification-seeds", type=int, default=16)
    parser.add_argument("--metatest-seeds", type=int, default=8)
    parser.add_argument("--anchor-seeds", type=int, default=None, help="the anchor's seeds (default: the settings')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--student-width", type=int, default=128, help="hidden units of each pick's student")
    parser.add_argument("--no-distill", dest="distill", action="store_false", help="skip distilling the picks")
    return parser.parse_args()


def evolution_candidates(args: argparse.Namespace) -> int:
    if args.candidates is not None:
        return int(args.candidates)
    return max(1, math.ceil(args.generations * args.population * args.seeds_per_member / args.seeds))


def spec_of_method(method: str, args: argparse.Namespace) -> RunSpec:
    proposer: dict[str, object] = {"kind": "evolution"}
    budget = {"candidates": evolution_candidates(args)}
    if method == "es":
        proposer = {"kind": "es", "every_k": args.generations, "seeds_per_member": args.seeds_per_member,
                    "es": {"population": args.population, "generations": args.generations}}
    return RunSpec.model_validate({
        "target": "lpo", "profile": args.profile, "seed": args.seed, "concurrency": args.concurrency,
        "environments": {"train": [args.env], "test": [args.test_env]}, "seeds_per_eval": args.seeds,
        "metatest_seeds": 1, "verification_seeds": args.verification_seeds, "budget": budget,
        "proposer": proposer,
    })


def wait_until_stopped(runtime: Runtime, run_id: str) -> str:
    while True:
        with session_scope(runtime.factory) as session:
            status = session.get(Run, run_id).status
        if status in RUN_FINAL_STATUSES:
            return status
        time.sleep(2)


def run_method(method: str, args: argparse.Namespace, settings: Settings) -> list[MethodReport]:
    """The method's report, then (unless `--no-distill`) its pick's student's."""
    runtime = build_runtime(settings, local_workers=args.concurrency, sweep_interval=5.0)
    started = time.monotonic()
    try:
        run_id = start_run(runtime, spec_of_method(method, args))
        status = wait_until_stopped(runtime, run_id)
        wall = time.monotonic() - started
        with session_scope(runtime.factory) as session:
            run = session.get(Run, run_id)
            steps, seconds, devices = search_cost(session, run)
            candidate, trainable = pick(session, run)
            name = "-" if candidate is None else f"#{candidate.index} {candidate.name}"
        student = None
        if args.distill and candidate is not None and status == RunStatus.COMPLETED:
            student = distil(runtime, run_id, candidate.id, args.student_width)
    finally:
        runtime.executor.close()
    reports = [MethodReport(method, status, name, *measured(settings, args, trainable), steps, seconds, wall, devices)]
    if student is not None:
        reports.append(MethodReport(f"{method} -> student", *student[:2], *measured(settings, args, student[2]),
                                    *student[3:]))
    return reports


def measured(settings: Settings, args: argparse.Namespace, trainable: Trainable | None
             ) -> tuple[Comparison | str, Comparison | str]:
    """The verified score on the meta-train environment and the meta-test score on the held-out one."""
    return (measure(settings, args, args.env, trainable, VERIFY_SEED_BASE, args.verification_seeds),
            measure(settings, args, args.test_env, trainable, METATEST_SEED_BASE, args.metatest_seeds))


def distil(runtime: Runtime, run_id: str, teacher_id: str, width: int
           ) -> tuple[str, str, Trainable | None, int, float, float, list[str]]:
    """Distil the teacher into a student network in its run and wait for the run to settle again: the student's
    (status, name, vector, environment steps, trainer seconds, wall seconds, devices)."""
    started = time.monotonic()
    # The fit's rates are raised from the paper's 1e-4 -> 1e-5, which barely moves a student in a CPU's steps.
    request = DistillRequest(candidate_id=teacher_id, student=NetworkStudent(width=width, learning_rate=1e-2,
                                                                             final_learning_rate=1e-3))
    student_id, _ = request_distillation(runtime.factory, run_id, request)
    advance(runtime.factory, run_id, runtime.publish)
    wait_until_stopped(runtime, run_id)
    with session_scope(runtime.factory) as session:
        student = session.get(Candidate, student_id)
        if student.parameters_sha256 is None:
            return student.status, f"#{student.index} (no fit: {student.error})", None, 0, 0.0, 0.0, []
        vector = session.get(ParameterVector, student.parameters_sha256)
        rows = session.scalars(select(Evaluation).where(
            Evaluation.candidate_id == student_id, Evaluation.phase.in_([EvalPhase.TRAIN, EvalPhase.REEVAL]))).all()
        profile = session.get(Run, run_id).profile
        steps = sum(len(e.seeds) * len(e.learning_rates) * get_config(e.env, profile).env_steps for e in rows)
        seconds = sum((e.compile_seconds or 0.0) + (e.train_seconds or 0.0) for e in rows)
        devices = sorted({e.device for e in rows if e.device})
        return (student.status, f"#{student.index} {student.name}",
                np.frombuffer(vector.data, dtype="<f4").astype(np.float32), steps, seconds,
                time.monotonic() - started, devices)


def search_cost(session: Session, run: Run) -> tuple[int, float, list[str]]:
    """Environment steps and trainer seconds of the method's own trainings (search and verification of its
    candidates, and ES's generations), and the devices its trainings ran on."""
    rows = session.execute(select(Evaluation).join(Candidate).where(
        Candidate.run_id == run.id, Candidate.is_warm_start.is_(False), Candidate.reference.is_(None),
        Evaluation.phase.in_([EvalPhase.TRAIN, EvalPhase.REEVAL]))).scalars().all()
    steps = sum(len(e.seeds) * len(e.learning_rates) * get_config(e.env, run.profile).env_steps for e in rows)
    seconds = sum((e.compile_seconds or 0.0) + (e.train_seconds or 0.0) for e in rows)
    generations = session.scalars(select(ESGeneration).where(ESGeneration.run_id == run.id)).all()
    steps += sum(g.env_steps for g in generations)
    seconds += sum(g.trainer_seconds for g in generations)
    devices = sorted({e.device for e in session.scalars(select(Evaluation).join(Candidate).where(
        Candidate.run_id == run.id)).all() if e.device})
    return steps, seconds, devices


def pick(session: Session, run: Run) -> tuple[Candidate | None, Trainable | None]:
    """The method's result: the run's best unless it is the warm start, else its best-scoring proposal."""
    best = session.get(Candidate, run.best_candidate_id) if run.best_candidate_id else None
    if best is None or best.is_warm_start:
        proposals = session.scalars(select(Candidate).where(
            Candidate.run_id == run.id, Candidate.is_warm_start.is_(False), Candidate.reference.is_(None),
            Candidate.score.is_not(None))).all()
        best = max(proposals, key=lambda c: c.score, default=None)
    if best is None:
        return None, None
    if best.parameters_sha256 is not None:
        vector = session.get(ParameterVector, best.parameters_sha256)
        return best, np.frombuffer(vector.data, dtype="<f4").astype(np.float32)
    artifact = session.get(Artifact, best.artifact_sha256)
    return best, base64.b64encode(artifact.data).decode()


def measure(settings: Settings, args: argparse.Namespace, env: str, trainable: Trainable | None, base: int,
            count: int) -> Comparison | str:
    """The pick's score on `count` fresh seeds of `env` against the anchor, with its interval."""
    if trainable is None:
        return "no candidate"
    plan = SeedPlan(score=[base + i for i in range(count)])
    [result], anchor = evaluate_artifacts(settings, "lpo", env, args.profile, "fixed", plan, [trainable], [None])
    if result.result is None:
        return f"{result.outcome}: {(result.error or '').splitlines()[0][:80]}"
    return env_score(result.result, anchor).comparison


def shown(value: Comparison | str) -> str:
    if isinstance(value, str):
        return value
    return f"{value.score:6.3f} [{value.ci[0]:.3f}, {value.ci[1]:.3f}] {value.verdict}"


def main() -> None:
    args = parse()
    folder = Path(tempfile.mkdtemp(prefix="discovery-meta-learners-"))
    overrides = {} if args.anchor_seeds is None else {"anchor_seeds": {args.profile: args.anchor_seeds}}
    settings = Settings(database_url=f"sqlite:///{folder / 'bench.db'}", broker_url=None,
                        cache_dir=get_settings().cache_dir, **overrides)
    upgrade_database(settings.database_url)
    members = args.generations * args.population * args.seeds_per_member
    print(f"lpo on {args.env} ({args.profile}), held-out {args.test_env}, run seed {args.seed}: ES population "
          f"{args.population} x {args.generations} generations x {args.seeds_per_member} seed(s) = {members} "
          f"trainings; evolution {evolution_candidates(args)} proposals x {args.seeds} seed(s)", flush=True)
    started = time.monotonic()
    for env in dict.fromkeys([args.env, args.test_env]):  # the anchors, once, before any method's clock starts
        anchor = anchor_of(settings, "lpo", env, args.profile, "fixed", SeedPlan(score=[0]))
        print(f"anchor {env}: the warm start's return {np.mean(anchor.result.per_seed()):.1f} on "
              f"{len(anchor.result.seeds)} seeds ({anchor.result.device or anchor.result.platform})", flush=True)
    print(f"anchors ready in {time.monotonic() - started:.0f} s", flush=True)
    reports = [report for method in args.methods for report in run_method(method, args, settings)]
    print(f"\n{'method':20} {'status':10} {'pick':28} {'verified on ' + args.env:42} "
          f"{'meta-test on ' + args.test_env:42} {'env steps':>10} {'trainer s':>9} {'wall s':>7}  device")
    for r in reports:
        print(f"{r.method:20} {r.status:10} {r.pick[:28]:28} {shown(r.verified):42} {shown(r.metatest):42} "
              f"{r.env_steps:10,} {r.trainer_seconds:9.0f} {r.wall_seconds:7.0f}  {', '.join(r.devices) or '-'}")
    print(f"\nscores: normalised per seed against the warm start's anchor (warm start = 1.0, random policy = 0), "
          f"{args.verification_seeds} verification and {args.metatest_seeds} meta-test seeds, 95% intervals; env "
          f"steps: the method's own trainings (search, its verification races, ES's generations; a student's: its "
          f"own evaluations in the run, the fit samples no environment)")
    print(f"the paper's scale, on a GPU:\n  {PAPER_SCALE}")


if __name__ == "__main__":
    main()
