"""The fixed cost of the sandbox per evaluation, next to training time.

(a) an empty bwrap sandbox (`python -c pass`): namespaces, binds, setpriv, cgroup, seccomp;
(b) a candidate that fails at once in the sandbox: (a) plus importing jax and loading the candidate;
(c) the warm start in the sandbox with an empty compile cache (read-only: nothing is written);
(d) the warm start in the sandbox as a trusted run that fills the cache;
(e) the warm start in the sandbox, untrusted, reading the filled cache;
(f) the warm start in this process (imports already paid), for the scores and train time.
Overhead = wall time in the sandbox - compile - train. Prints one table.
Run: .venv/bin/python bench/sandbox_overhead.py [--env CartPole-v1] [--profile smoke] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workers.results import EvaluationRequest, EvaluationResult
from workers.sandbox import SandboxLimits, probe_isolation, run_in_child
from workers.sandbox.isolate import _bwrap_command, _prlimit, _scrubbed_env
from workers.targets import get_target


def empty_sandbox_seconds(limits: SandboxLimits) -> float:
    report = probe_isolation()
    cmd = _prlimit(limits) + _bwrap_command([sys.executable, "-c", "pass"], limits, report,
                                            drop_uid=report.is_root and report.setpriv, cache_dir=None,
                                            cache_writable=False, seccomp_fd=None)
    started = time.perf_counter()
    subprocess.run(cmd, env=_scrubbed_env(), check=True, capture_output=True)
    return time.perf_counter() - started


def row(label: str, walls: list[float], results: list[EvaluationResult] | None = None) -> str:
    wall = statistics.median(walls)
    if not results or results[-1].result is None:
        return f"{label:<52} {wall:8.2f} {'':>9} {'':>9} {'':>9} {'':>10}"
    compile_s = statistics.median(r.result.compile_seconds for r in results if r.result)
    train_s = statistics.median(r.result.train_seconds for r in results if r.result)
    final = results[-1].result.final_return
    return f"{label:<52} {wall:8.2f} {compile_s:9.2f} {train_s:9.2f} {wall - compile_s - train_s:9.2f} {final:10.2f}"


def split(runs: list[tuple[float, EvaluationResult]]) -> tuple[list[float], list[EvaluationResult]]:
    return [wall for wall, _ in runs], [result for _, result in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    report = probe_isolation()
    print(f"isolation: {report.summary()}")
    target = get_target("advantage")
    warm = EvaluationRequest(target="advantage", code=target.warm_start, env=args.env, profile=args.profile)
    failing = warm.model_copy(update={"code": "raise RuntimeError('fails at once')\n"})
    lines = [f"{'':<52} {'wall s':>8} {'compile':>9} {'train':>9} {'overhead':>9} {'return':>10}"]

    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        limits = SandboxLimits(timeout_seconds=900, memory_mb=6144, cache_dir=cache)

        walls = [empty_sandbox_seconds(limits) for _ in range(args.repeats)]
        lines.append(row("(a) empty sandbox (python -c pass)", walls))

        def timed(request: EvaluationRequest) -> tuple[float, EvaluationResult]:
            started = time.perf_counter()
            result = run_in_child(request, limits)
            wall = time.perf_counter() - started
            if result.outcome not in ("ok", "error"):
                print(f"unexpected outcome {result.outcome}: {result.error}", file=sys.stderr)
            return wall, result

        runs = [timed(failing) for _ in range(args.repeats)]
        lines.append(row("(b) candidate failing at once (jax import + load)", [w for w, _ in runs]))

        runs = [timed(warm) for _ in range(args.repeats)]
        lines.append(row("(c) warm start, sandbox, empty cache (read-only)", *split(runs)))

        runs = [timed(warm.model_copy(update={"trusted": True}))]
        lines.append(row("(d) warm start, sandbox, trusted: fills the cache", *split(runs)))
        entries = sum(1 for p in cache.rglob("*") if p.is_file())

        runs = [timed(warm) for _ in range(args.repeats)]
        lines.append(row("(e) warm start, sandbox, untrusted, cache filled", *split(runs)))

    try:
        from workers.evaluate import evaluate_in_process
    except ImportError:
        evaluate_in_process = None
    if evaluate_in_process is not None:
        evaluate_in_process(warm)  # imports and first compile paid once
        results, walls = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            results.append(evaluate_in_process(warm))
            walls.append(time.perf_counter() - started)
        lines.append(row("(f) warm start in this process (no cache)", walls, results))

    print(f"env {args.env}, profile {args.profile}, median of {args.repeats}; compile cache entries: {entries}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
