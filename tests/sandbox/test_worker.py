"""The sandbox as a worker uses it: probing, refusing, equal scores, and 50 evaluations without leaks."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from jax import export
from jax._src.interpreters import mlir as jax_mlir
from jax._src.lib.mlir import ir

from workers.artifact import Artifact
from workers.results import TraceRequest
from workers.sandbox import IsolationUnavailable, SandboxLimits, probe_isolation, run_tracer, trace_candidate
from workers.sandbox.cgroups import CGROUP_ROOT, GROUP
from workers.sandbox.host import process_mode_problem, unreachable_for
from workers.sandbox.tracer import trace
from workers.targets import get_target
from workers.vocabulary import Outcome

ADVANTAGE = get_target("advantage")
REPO = Path(__file__).resolve().parents[2]


def request(code: str) -> TraceRequest:
    return TraceRequest(target="advantage", code=code)


def fn(body: str) -> str:
    return ("import jax\nimport jax.numpy as jnp\n\n\ndef advantages(rewards, values, dones, last_value, gamma, lam):\n"
            + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    "))


def test_probe_finds_the_isolation_of_this_machine() -> None:
    report = probe_isolation()
    assert report.bwrap
    assert report.seccomp
    assert report.network_namespace
    assert "bwrap=yes" in report.summary()
    if report.is_root:
        assert report.setpriv


def test_refuses_to_evaluate_when_bwrap_is_required_but_missing(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        from workers.results import TraceRequest
        from workers.sandbox import IsolationUnavailable, SandboxLimits, trace_candidate, probe_isolation
        from workers.targets import get_target
        req = TraceRequest(target="advantage", code=get_target("advantage").warm_start)
        try:
            trace_candidate(req, SandboxLimits(isolation="bwrap"))
        except IsolationUnavailable as exc:
            print("REFUSED:", exc)
        print("bwrap", probe_isolation().bwrap)
    """)
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(REPO)}  # a PATH without bwrap
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert "REFUSED: sandbox isolation 'bwrap' is required but bubblewrap does not work here" in done.stdout, (
        done.stdout + done.stderr
    )
    assert "set DISCOVERY_SANDBOX_ISOLATION=process, which gives up the namespaces" in done.stdout  # the way out
    assert "bwrap False" in done.stdout


@pytest.mark.parametrize("target", ["lpo", "optimizer", "advantage"])
def test_the_sandbox_exports_exactly_what_an_unsandboxed_trace_exports(target: str) -> None:
    warm = get_target(target).warm_start
    sandboxed = trace_candidate(TraceRequest(target=target, code=warm), SandboxLimits(timeout_seconds=120))
    assert sandboxed.outcome == Outcome.ok, (sandboxed.error, sandboxed.stderr[-2000:])
    here = trace(TraceRequest(target=target, code=warm))

    def programs(encoded: str) -> dict[str, str]:  # the operations, without source locations (paths differ)
        artifact = Artifact.from_bytes(base64.b64decode(encoded))
        out = {}
        with jax_mlir.make_ir_context():
            for name in artifact.modules:
                text = export.deserialize(bytearray(artifact.module_bytes(name))).mlir_module()
                out[name] = ir.Module.parse(text).operation.get_asm(enable_debug_info=False)
        return out

    assert programs(sandboxed.artifact) == programs(here.artifact)
    assert sandboxed.fingerprint == here.fingerprint is not None  # what the warm start computes on the probe
    # What a tracer can say: a verdict, an artifact and a fingerprint, and for distillation a grid's values (checked
    # by the parent: exact shape, finite, bounded) and a fit's report (from a child that runs no candidate code);
    # there is no field for a return or a score.
    assert set(type(sandboxed).model_fields) == {"outcome", "error", "artifact", "fingerprint", "seconds", "stdout",
                                                 "stderr", "values", "fit_report"}
    assert sandboxed.values is None and sandboxed.fit_report is None


PROCESS_MODE = SandboxLimits(timeout_seconds=60, memory_mb=1024, isolation="process")


def refused_where_unreachable() -> bool:
    """In `process` mode a checkout under a private folder is out of the sandbox uid's reach: then every
    evaluation is refused up front with the reason in one line (and the process-mode tests check that)."""
    problem = process_mode_problem(PROCESS_MODE)
    if problem is None:
        return False
    with pytest.raises(IsolationUnavailable, match="cannot reach") as refused:
        run_tracer(request(fn("return rewards")), PROCESS_MODE)
    assert "\n" not in str(refused.value)
    return True


def test_unreachable_folders_are_named() -> None:
    top = Path(tempfile.mkdtemp())  # not under pytest's own private folder
    try:
        top.chmod(0o755)
        private = top / "private"
        (private / "checkout").mkdir(parents=True)
        private.chmod(0o700)
        expected = f"{private} (mode 0700, owner uid {os.getuid()})"
        assert unreachable_for(65534, 65534, [private / "checkout"]) == expected
        private.chmod(0o755)
        assert unreachable_for(65534, 65534, [private / "checkout"]) is None
    finally:
        shutil.rmtree(top)


def test_process_isolation_scrubs_the_environment_and_removes_its_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    if refused_where_unreachable():
        return
    monkeypatch.setenv("OPENAI_API_KEY", "sk-process-mode-5ecret")
    before = set(Path(tempfile.gettempdir()).glob("discovery-sandbox-*"))
    code = fn("""
        import os
        print(dict(os.environ))
        open("scratch-file", "w").write("in the scratch folder")
        return rewards[0]""")
    result = run_tracer(request(code), PROCESS_MODE)
    assert result.outcome == Outcome.invalid
    assert "must return the shape of rewards" in (result.error or "")
    assert "sk-process-mode-5ecret" not in result.stdout
    assert "PATH" in result.stdout  # the print ran and was captured
    assert set(Path(tempfile.gettempdir()).glob("discovery-sandbox-*")) == before


INTROSPECT = fn("""
    import os, socket
    print(open("/proc/self/status").read())
    print("root entries:", sorted(os.listdir("/")))
    print("net:", open("/proc/net/dev").read())
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        print("inet socket:", exc)
    return rewards[0]""")


def _status_field(stdout: str, name: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith(name + ":"))
    return line.split(":", 1)[1].split()[0]


def test_the_candidate_sees_the_layers_the_probe_reports() -> None:
    result = run_tracer(request(INTROSPECT), SandboxLimits(timeout_seconds=60, memory_mb=1024))
    assert result.outcome == Outcome.invalid
    out = result.stdout
    assert _status_field(out, "Uid") == "65534" and _status_field(out, "Gid") == "65534"
    assert _status_field(out, "CapEff") == "0000000000000000"
    assert _status_field(out, "NoNewPrivs") == "1"
    assert _status_field(out, "Seccomp") == "2"
    entries = next(line for line in out.splitlines() if line.startswith("root entries:"))
    assert "'home'" not in entries and "'sys'" not in entries and "'var'" not in entries
    assert "    lo:" in out and "eth0" not in out  # a network namespace with loopback only
    assert "inet socket: [Errno 97] Address family not supported by protocol" in out


def test_process_isolation_still_drops_privileges_and_filters_syscalls() -> None:
    if refused_where_unreachable():
        return
    result = run_tracer(request(INTROSPECT), PROCESS_MODE)
    assert result.outcome == Outcome.invalid
    report = probe_isolation()
    if report.is_root and report.setpriv:
        assert _status_field(result.stdout, "Uid") == "65534"
        assert _status_field(result.stdout, "CapEff") == "0000000000000000"
    if report.seccomp:
        assert _status_field(result.stdout, "Seccomp") == "2"
        assert "inet socket: [Errno 97]" in result.stdout


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _own_sandbox_cgroups() -> list[Path]:
    """The per-evaluation cgroups this process created and did not remove (other workers may run)."""
    # cgroup v2: one tree (/sys/fs/cgroup/discovery-sandbox); v1: one per controller.
    parents = [CGROUP_ROOT / GROUP] + [CGROUP_ROOT / controller / GROUP for controller in ("memory", "pids", "cpu")]
    return [p for parent in parents if parent.is_dir() for p in parent.glob(f"{os.getpid()}-*") if p.is_dir()]


def test_fifty_evaluations_in_a_row_leak_nothing() -> None:
    limits = SandboxLimits(timeout_seconds=30, memory_mb=1024, cpu_seconds=60)
    short = limits.model_copy(update={"timeout_seconds": 4})
    in_child = [
        (fn("import ctypes\nctypes.string_at(0)"), limits, Outcome.killed),
        (fn("import os\nos._exit(3)"), limits, Outcome.killed),
        (fn("blob = bytearray(8 * 1024**3)"), limits, Outcome.memory),
        (fn("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"), short,
         Outcome.timeout),
        (fn("import time\ntime.sleep(600)"), short, Outcome.timeout),
        (fn("return rewards[0]"), limits, Outcome.invalid),
        (fn('print("x" * 10_000_000)\nreturn rewards[0]'), limits, Outcome.invalid),
        ("SCALE = 1 / 0\n" + fn("return rewards"), limits, Outcome.error),
        (fn("import subprocess\nsubprocess.Popen(['sleep', '600'])\nreturn rewards[0]"), limits, Outcome.invalid),
        (fn("import os\nif os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(600)\nreturn rewards[0]"),
         limits, Outcome.invalid),
    ]
    rejected = [fn(f"import os\nx = {i}\nreturn rewards") for i in range(40)]

    children_before = set(_children_of(os.getpid()))  # warm trainers of earlier tests may be alive
    cgroups_before = set(_own_sandbox_cgroups())
    fds_before = len(os.listdir("/proc/self/fd"))
    scratch_before = set(Path(tempfile.gettempdir()).glob("discovery-sandbox-*"))
    outcomes = []
    for i in range(50):
        if i % 5 == 0:
            code, lim, expected = in_child[i // 5]
            result = run_tracer(request(code), lim)
        else:
            code, lim, expected = rejected.pop(), limits, Outcome.invalid
            result = trace_candidate(request(code), lim)
        outcomes.append(result.outcome)
        assert result.outcome == expected, (i, result.outcome, result.error)

    assert len(outcomes) == 50
    assert set(_children_of(os.getpid())) == children_before
    assert set(_own_sandbox_cgroups()) == cgroups_before  # removed only once every process in it is gone
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert set(Path(tempfile.gettempdir()).glob("discovery-sandbox-*")) == scratch_before


def test_a_worker_killed_mid_evaluation_leaves_nothing_behind() -> None:
    script = textwrap.dedent("""
        import textwrap
        from workers.results import TraceRequest
        from workers.sandbox import SandboxLimits, run_tracer
        code = "import time\\ntime.sleep(600)\\n"
        run_tracer(TraceRequest(target="advantage", code=code),
                     SandboxLimits(timeout_seconds=600, memory_mb=1024))
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    try:
        for _ in range(300):  # wait until its sandbox is up
            if _children_of(worker.pid):
                break
            time.sleep(0.05)
        time.sleep(2)
        sandbox = _descendants(worker.pid)
        assert sandbox, "the worker did not start a sandbox"
    finally:
        worker.kill()
        worker.wait()
    dead = worker.pid

    result = run_tracer(request("import jax\n"), SandboxLimits(timeout_seconds=60, memory_mb=1024))
    assert result.outcome == Outcome.invalid  # no function defined

    leftovers = [p for c in ("memory", "pids", "cpu") for p in (CGROUP_ROOT / c / GROUP).glob(f"{dead}-*")]
    assert leftovers == []
    for _ in range(100):  # orphans are reaped by init, not by us: give it a moment
        alive = [pid for pid in sandbox if _running(pid)]
        if not alive:
            break
        time.sleep(0.05)
    assert alive == [], "processes of the killed worker's sandbox are still running"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        children = _children_of(queue.pop())
        found += children
        queue += children
    return found


SNOOP = '''import jax.numpy as jnp

g = getattr
builtins = g(print, "_" * 2 + "self" + "_" * 2)
load = g(builtins, "_" * 2 + "import" + "_" * 2)
os = load("os")
pid1 = builtins.open("/proc/1/cmdline").read().replace(chr(0), " ")
mine = builtins.open("/proc/self/cmdline").read().replace(chr(0), " ")
shown = builtins.print("PID1", pid1, "SELF", mine, "PREFIX", load("sys").prefix,
                       "CACHE", g(os.path, "exists")("/cache"), "HOME", g(os, "listdir")("/"))


def drift(ratio, advantage, epsilon):
    return 0.0 * ratio
'''


def test_the_tracer_sees_no_host_path_and_no_cache(tmp_path: Path) -> None:
    """/proc/1/cmdline used to show bwrap's binds (host paths, the cache); the tracer gets no cache at all."""
    cache = tmp_path / "cache"
    (cache / "anchors").mkdir(parents=True)
    result = run_tracer(TraceRequest(target="lpo", code=SNOOP), SandboxLimits(timeout_seconds=60, cache_dir=cache))
    assert result.outcome == Outcome.ok, (result.error, result.stderr[-2000:])
    out = result.stdout
    assert "PID1 bwrap --args" in out and "SELF" in out
    assert str(REPO) not in out and str(tmp_path) not in out and "anchors" not in out
    assert "CACHE False" in out
