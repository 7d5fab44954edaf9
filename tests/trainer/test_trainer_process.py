"""The sandboxed, warm trainer as a worker uses it: batches, failures that stay with their candidate,
deadlines, the compile cache, and the GPU wiring (as far as a CPU machine can show it)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.trainer.conftest import (
    ENDLESS_IN_TRAINING_DRIFT,
    NAN_IN_TRAINING_DRIFT,
    SMALL_DRIFT,
    USELESS_DRIFT,
    artifact_of,
)
from workers.anchor import Anchor
from workers.evaluate import artifact_sha256, train_batch
from workers.results import EnvResult
from workers.sandbox.command import bwrap_options
from workers.sandbox.host import IsolationReport, SandboxLimits
from workers.targets import TARGETS
from workers.trainer import client
from workers.trainer.client import TrainerConfig, TrainerProcess, cuda_backend_installed, trainer_sandbox
from workers.trainer.protocol import TrainRequest
from workers.vocabulary import Outcome

WARM = TARGETS["lpo"].warm_start


def request(*codes: str, seeds: tuple[int, ...] = (0, 1)) -> TrainRequest:
    return TrainRequest(target="lpo", env="CartPole-v1", profile="smoke", seeds=list(seeds), learning_rates=[1e-3],
                        artifacts=[artifact_of(code) for code in codes])


# A warm start measured at 1 s for 2 lanes: deadlines of about 30 s plus a few seconds per lane.
QUICK_ANCHOR = Anchor(
    env="CartPole-v1", profile="smoke", artifact_sha256="0" * 64, random_returns=[22.0, 22.0], return_floor=0.0,
    result=EnvResult(env="CartPole-v1", profile="smoke", seeds=[0, 1], learning_rates=[1e-3], returns=[[190.0, 210.0]],
                     curves=[[200.0]], best_lr=1e-3, final_return=200.0, env_steps=16384, compile_seconds=0.0,
                     train_seconds=1.0))


def test_a_nan_candidate_fails_alone_and_the_others_keep_their_results(trainer: TrainerProcess) -> None:
    with_nan = train_batch(trainer, request(WARM, NAN_IN_TRAINING_DRIFT, SMALL_DRIFT), QUICK_ANCHOR)
    assert [r.outcome for r in with_nan] == [Outcome.ok, Outcome.nan, Outcome.ok]
    assert "NaN" in (with_nan[1].error or "")
    honest_instead = train_batch(trainer, request(WARM, USELESS_DRIFT, SMALL_DRIFT), QUICK_ANCHOR)
    assert [r.outcome for r in honest_instead] == [Outcome.ok, Outcome.ok, Outcome.ok]
    for k in (0, 2):  # same lanes, same seeds: bit for bit the same returns, whatever the middle one did
        assert with_nan[k].result is not None and honest_instead[k].result is not None
        assert with_nan[k].result.returns == honest_instead[k].result.returns
        assert with_nan[k].result.curves == honest_instead[k].result.curves


def test_results_carry_the_hash_of_the_artifact_that_was_trained(trainer: TrainerProcess) -> None:
    req = request(SMALL_DRIFT, seeds=(3,))
    [result] = train_batch(trainer, req, QUICK_ANCHOR)
    assert result.outcome is Outcome.ok and result.result is not None
    assert result.result.artifact_sha256 == artifact_sha256(req.artifacts[0])


def test_a_batch_that_never_ends_is_split_and_only_the_endless_candidate_times_out(
        trainer: TrainerProcess) -> None:
    started = time.monotonic()
    results = train_batch(trainer, request(SMALL_DRIFT, ENDLESS_IN_TRAINING_DRIFT), QUICK_ANCHOR)
    elapsed = time.monotonic() - started
    assert [r.outcome for r in results] == [Outcome.ok, Outcome.timeout], [r.error for r in results]
    assert "deadline" in (results[1].error or "")
    assert elapsed < 150, elapsed  # two deadlines of about 35 s, and one honest batch
    again = train_batch(trainer, request(SMALL_DRIFT), QUICK_ANCHOR)  # a fresh trainer takes over
    assert again[0].outcome is Outcome.ok


def test_the_trainer_writes_its_compile_cache_and_nothing_else(trainer: TrainerProcess, cache_root: Path) -> None:
    train_batch(trainer, request(SMALL_DRIFT), QUICK_ANCHOR)
    written = [p for p in cache_root.rglob("*") if p.is_file()]
    assert written and all(p.is_relative_to(cache_root / "jax") for p in written)


def _fake_gpu_host(tmp_path: Path) -> Path:
    dev = tmp_path / "dev"
    (dev / "nvidia-caps").mkdir(parents=True)
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps/nvidia-cap1",
                 "sda", "null", "nvme0"):
        (dev / name).touch()
    return dev


def test_a_gpu_host_with_cpu_only_jax_trains_on_the_cpu_with_one_warning(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    if cuda_backend_installed():
        pytest.skip("this JAX has a CUDA backend")
    dev = _fake_gpu_host(tmp_path)
    with caplog.at_level("WARNING", logger="workers.trainer.client"):
        for _ in range(3):
            assert trainer_sandbox(TrainerConfig(limits=SandboxLimits(cache_dir=None), dev_root=dev))[1:] == (
                [], {"JAX_PLATFORMS": "cpu"})
    [warning] = [r.getMessage() for r in caplog.records]
    assert "no CUDA backend: training on the CPU" in warning and "pip install 'discovery[cuda12]'" in warning
    with pytest.raises(RuntimeError, match=r"no CUDA backend: pip install 'discovery\[cuda12\]'"):
        TrainerConfig(limits=SandboxLimits(), device="gpu", dev_root=dev).platform()


def test_a_gpu_host_gives_the_trainer_exactly_its_nvidia_devices(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _fake_gpu_host(tmp_path)
    monkeypatch.setattr(client, "cuda_backend_installed", lambda: True)  # a host with `discovery[cuda12]`
    config = TrainerConfig(limits=SandboxLimits(cache_dir=None), device="auto", dev_root=dev)
    args, binds, env = trainer_sandbox(config)
    assert env == {"JAX_PLATFORMS": "cuda"}
    report = IsolationReport(is_root=True, bwrap=True, setpriv=True, cgroup_memory=True, cgroup_pids=True,
                             seccomp=True, network_namespace=True)
    options = bwrap_options(config.limits, report, 65533, binds, env, None)
    device_binds = [tuple(options[i + 1:i + 3]) for i, a in enumerate(options) if a == "--dev-bind"]
    expected = ["nvidia-caps/nvidia-cap1", "nvidia-uvm", "nvidia-uvm-tools", "nvidia0", "nvidia1", "nvidiactl"]
    assert sorted(device_binds) == sorted((str(dev / n), str(dev / n)) for n in expected)
    assert "--unshare-net" in options and ("--setenv", "JAX_PLATFORMS", "cuda") == tuple(
        options[options.index("JAX_PLATFORMS") - 1:options.index("JAX_PLATFORMS") + 2])

    cpu_only = TrainerConfig(limits=SandboxLimits(), device="auto", dev_root=tmp_path / "empty")
    assert trainer_sandbox(cpu_only)[1:] == ([], {"JAX_PLATFORMS": "cpu"})
    with pytest.raises(RuntimeError, match="no NVIDIA device nodes"):
        TrainerConfig(limits=SandboxLimits(), device="gpu", dev_root=tmp_path / "empty").platform()


def test_the_trainer_runs_contained(trainer: TrainerProcess) -> None:
    train_batch(trainer, request(SMALL_DRIFT, seeds=(5,)), QUICK_ANCHOR)  # make sure it is up
    assert trainer.child is not None and trainer.child.proc is not None
    group = trainer.child.group
    assert group is not None and group.pids_inside()
    inside = sorted(group.pids_inside())
    statuses = [Path(f"/proc/{pid}/status").read_text() for pid in inside if Path(f"/proc/{pid}/status").exists()]
    python = [s for s in statuses if s.startswith("Name:\tpython")]
    assert python, "the trainer is not in its cgroup"
    for status in python:
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] == "65533"
        assert fields["CapEff"].strip() == "0000000000000000"
        assert fields["Seccomp"].strip() == "2"
        assert fields["NoNewPrivs"].strip() == "1"
