"""Targets and environments: what can be discovered, and where."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from service.api.deps import KeyDep
from service.api.schemas import EnvironmentOut, Problem, ReferenceOut, TargetInputOut, TargetOut, TrainingOut
from workers.rl.envs import ENVIRONMENTS, PROFILES, get_config
from workers.targets import TARGETS, Target

router = APIRouter(prefix="/v1", tags=["targets"], responses={401: {"model": Problem}})


def target_out(target: Target) -> TargetOut:
    return TargetOut(
        name=target.name, signature=target.signature, summary=target.summary,
        inputs=[TargetInputOut(name=i.name, description=i.description) for i in target.inputs],
        returns=target.returns, rules=list(target.rules), warm_start=target.warm_start,
        default_train_envs=list(target.default_train_envs), default_test_envs=list(target.default_test_envs),
        references=[ReferenceOut(name=r.name, description=r.description, code=r.code) for r in target.references],
        training=TrainingOut(
            learning_rates={name: target.training.learning_rate(name, env.lr) for name, env in ENVIRONMENTS.items()},
            optimizer_noise=target.training.optimizer_noise, batch_proportion=target.training.batch_proportion,
            gradient_clipping=target.training.gradient_clipping),
    )


@router.get("/targets", response_model=list[TargetOut])
def list_targets(_: KeyDep) -> list[TargetOut]:
    return [target_out(t) for t in TARGETS.values()]


@router.get("/targets/{name}", response_model=TargetOut, responses={404: {"model": Problem}})
def get_target(name: str, _: KeyDep) -> TargetOut:
    if name not in TARGETS:
        raise HTTPException(404, f"no target {name!r}; known: {', '.join(TARGETS)}")
    return target_out(TARGETS[name])


@router.get("/environments", response_model=list[EnvironmentOut])
def list_environments(_: KeyDep) -> list[EnvironmentOut]:
    return [
        EnvironmentOut(name=e.name, family=e.family, description=e.description, learning_rate=e.lr,
                       profiles={p: get_config(e.name, p).model_dump() for p in PROFILES})
        for e in ENVIRONMENTS.values()
    ]
