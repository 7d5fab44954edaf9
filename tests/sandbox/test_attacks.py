"""Hostile candidates: each must fail with its exact outcome and achieve nothing it tries.

Every attack runs once in a sandboxed tracer child. Those that the static check rejects are also checked
through `trace_candidate` (rejected with a reason, no process started) and then run through
`run_tracer` without the static check, to show that the runtime layer holds on its own.
After each run the test looks for evidence: a marker file on the host, a connection to a loopback
listener, the parent's secrets in any output, a forged compile-cache entry, a file in the package.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import workers
from workers.results import TraceRequest, TraceResult
from workers.sandbox import SandboxLimits, run_tracer, trace_candidate
from workers.vocabulary import Outcome

HEADER = "import jax\nimport jax.numpy as jnp\n\n\n"
SIGNATURE = "def advantages(rewards, values, dones, last_value, gamma, lam):\n"


def in_function(body: str) -> str:
    """The attack inside the target's function (it runs when the probe calls the function)."""
    return HEADER + SIGNATURE + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")


def at_import(code: str) -> str:
    """The attack at the top level (it runs when the module is executed), then a valid function."""
    return HEADER + textwrap.dedent(code).strip() + "\n\n\n" + SIGNATURE + "    return jnp.zeros_like(rewards)\n"


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    outcome: Outcome  # exact outcome in the sandbox
    static_reason: str | None  # a phrase of the static check's rejection; None: the check lets it through
    timeout: float = 60.0
    cpu_seconds: int = 120


FINISH = 'raise RuntimeError("attack finished")'

ATTACKS = [
    Attack("read_etc_passwd", in_function('print(open("/etc/passwd").read())'), Outcome.invalid, "`open`"),
    Attack("read_env_vars", in_function(f"import os\nprint(dict(os.environ))\n{FINISH}"), Outcome.invalid,
           "`import os`"),
    Attack("read_proc_environ", in_function(f"""
        import os
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    print(open(f"/proc/{{pid}}/environ", "rb").read())
                except OSError as exc:
                    print(exc)
        {FINISH}"""), Outcome.invalid, "`import os`"),
    Attack("write_marker_on_host", in_function(f"""
        import os
        os.makedirs(os.path.dirname("@MARKER@"), exist_ok=True)
        open("@MARKER@", "w").write("pwned")
        {FINISH}"""), Outcome.invalid, "`open`"),
    Attack("write_into_package", in_function("""
        open("/opt/discovery/workers/pwned.py", "w").write("pwned")
        open("@PACKAGE@/pwned.py", "w").write("pwned")"""), Outcome.invalid, "`open`"),
    Attack("forge_compile_cache", in_function("""
        open("/cache/jax/baseline-entry", "w").write("forged program")
        open("/cache/jax/new-entry", "w").write("forged program")"""), Outcome.invalid, "`open`"),
    Attack("fill_disk", in_function("""
        with open("/tmp/big", "wb") as f:
            for _ in range(400):
                f.write(b"x" * 1024 * 1024)"""), Outcome.invalid, "`with` statements"),
    Attack("tcp_to_loopback", in_function(f"""
        import socket
        s = socket.create_connection(("127.0.0.1", @PORT@), timeout=2)
        s.sendall(b"pwned")
        {FINISH}"""), Outcome.invalid, "`import socket`"),
    Attack("inet_socket_in_netns", in_function(f"""
        import socket
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        print("ESCAPED created an inet socket")
        {FINISH}"""), Outcome.invalid, "`import socket`"),
    Attack("dns_lookup", in_function(f'import socket\nprint(socket.getaddrinfo("example.com", 80))\n{FINISH}'),
           Outcome.invalid, "`import socket`"),
    Attack("os_via_jax_internals", in_function(f"""
        os = jax._src.xla_bridge.os
        os.system("echo pwned > @MARKER@")
        print("uid", os.getuid(), dict(os.environ))
        {FINISH}"""), Outcome.invalid, "private attribute `._src`"),
    Attack("subprocess_shell", in_function(f"""
        import subprocess
        subprocess.run(["sh", "-c", "mkdir -p $(dirname @MARKER@); touch @MARKER@; cat /etc/shadow"])
        {FINISH}"""), Outcome.invalid, "`import subprocess`"),
    Attack("ctypes_segfault", in_function("import ctypes\nctypes.string_at(0)"), Outcome.killed, "`import ctypes`"),
    Attack("ctypes_unshare_namespaces", in_function(f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for flag in (0x10000000, 0x40000000, 0x00020000):
            if libc.unshare(flag) == 0:
                print("ESCAPED unshare", flag)
        if libc.ptrace(16, 1, 0, 0) == 0:
            print("ESCAPED ptrace")
        {FINISH}"""), Outcome.invalid, "`import ctypes`"),
    Attack("setuid_root", in_function('import os\nos.setuid(0)\nprint("ESCAPED setuid")'), Outcome.invalid,
           "`import os`"),
    Attack("pickle_payload", in_function(f"""
        import pickle
        pickle.loads(b"cos\\nsystem\\n(S'mkdir -p $(dirname @MARKER@); touch @MARKER@'\\ntR.")
        {FINISH}"""), Outcome.invalid, "`import pickle`"),
    Attack("dunder_import", in_function(f'__import__("os").system("touch @MARKER@")\n{FINISH}'), Outcome.invalid,
           "`__import__`"),
    Attack("getattr_builtins", in_function("""
        opener = getattr(__builtins__, "g" + "et")("op" + "en")
        opener("@MARKER@", "w").write("pwned")"""), Outcome.invalid, "`getattr` is not allowed"),
    Attack("subclasses_walk", in_function(f"""
        for cls in ().__class__.__base__.__subclasses__():
            if cls.__name__ == "_wrap_close":
                cls.__init__.__globals__["system"]("mkdir -p $(dirname @MARKER@); touch @MARKER@")
        {FINISH}"""), Outcome.invalid, "`for` loops"),
    Attack("format_string_dunder", in_function(f'print("{{0.__class__.__mro__}}".format(rewards))\n{FINISH}'),
           Outcome.invalid, "double underscores"),
    Attack("pure_callback", in_function("""
        def leak(x):
            open("@MARKER@", "w").write("pwned")
            return x
        return jax.pure_callback(leak, jax.ShapeDtypeStruct(rewards.shape, rewards.dtype), rewards)"""),
           Outcome.invalid, "pure_callback"),
    Attack("debug_callback", in_function(f"""
        jax.debug.callback(lambda x: open("@MARKER@", "w").write("pwned"), rewards)
        {FINISH}"""), Outcome.invalid, "jax.debug"),
    Attack("io_callback", HEADER + "from jax.experimental import io_callback\n\n\n" + SIGNATURE + textwrap.indent(
        textwrap.dedent("""
        def leak(x):
            open("@MARKER@", "w").write("pwned")
            return x
        return io_callback(leak, jax.ShapeDtypeStruct(rewards.shape, rewards.dtype), rewards)
        """).strip() + "\n", "    "), Outcome.invalid, "jax.experimental"),
    Attack("fork_bomb", at_import("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass"""), Outcome.timeout, "`import os`", timeout=5),
    Attack("thread_bomb", in_function("""
        import threading, time
        for _ in range(100000):
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()"""),
           Outcome.invalid, "`import threading`"),
    Attack("memory_bomb_at_once", in_function("blob = bytearray(8 * 1024**3)\nreturn rewards"), Outcome.memory,
           "`bytearray`"),
    Attack("memory_bomb_gradual", in_function("""
        chunks = []
        while True:
            chunks.append(bytearray(64 * 1024 * 1024))"""), Outcome.memory, "`while` loops"),
    Attack("memory_bomb_shared_mmap", in_function("""
        import mmap
        size = 3 * 1024**3
        m = mmap.mmap(-1, size)
        for i in range(0, size, 4096):
            m[i] = 1"""), Outcome.memory, "`import mmap`"),
    Attack("memory_bomb_in_xla", in_function("""
        big = jnp.ones((30000, 30000)) * rewards[0, 0]
        return rewards + jnp.cumsum(big, axis=0)[-1, -1]"""), Outcome.memory, None),
    Attack("infinite_loop_python", in_function("while True:\n    pass"), Outcome.timeout, "`while` loops", timeout=5),
    Attack("infinite_lax_while_loop", in_function("""
        return jax.lax.while_loop(lambda c: jnp.all(c == c), lambda c: c + 1.0, rewards)"""),
           Outcome.timeout, None, timeout=5),
    Attack("sleep_forever", in_function("import time\ntime.sleep(10**6)"), Outcome.timeout, "`import time`",
           timeout=5),
    Attack("cpu_limit", at_import("while True:\n    pass"), Outcome.timeout, "top-level `while`", cpu_seconds=6),
    Attack("huge_stdout", in_function(f'print("x" * 50_000_000)\n{FINISH}'), Outcome.invalid, "`print` is not allowed"),
    Attack("huge_stderr", in_function(f'import sys\nsys.stderr.write("y" * 50_000_000)\n{FINISH}'), Outcome.invalid,
           "`import sys`"),
    Attack("huge_error_message", in_function('raise ValueError("z" * 10_000_000)'), Outcome.invalid,
           "`raise` statements"),
    Attack("raises_in_function", in_function("return rewards / undefined_name"), Outcome.invalid,
           "`undefined_name` is not available"),
    Attack("raises_at_import", at_import("SCALE = 1 / 0"), Outcome.error, None),
    Attack("recursion", in_function("def f(n):\n    return f(n + 1)\nreturn f(0)"), Outcome.invalid, None),
    Attack("system_exit", at_import("raise SystemExit(0)"), Outcome.error, "top-level `raise`"),
    Attack("os_exit_without_result", in_function("import os\nos._exit(0)"), Outcome.killed, "`import os`"),
    Attack("kill_parent", in_function(f"""
        import os, signal
        for pid in (os.getppid(), 1):
            os.kill(pid, signal.SIGKILL)
        {FINISH}"""), Outcome.invalid, "`import os`"),
    Attack("returns_nan_on_probe", in_function("return rewards * jnp.nan"), Outcome.invalid, None),
    Attack("wrong_shape", in_function("return rewards[0]"), Outcome.invalid, None),
]


def _prepare(attack: Attack, tmp_path: Path, port: int) -> tuple[str, Path]:
    marker = tmp_path / "attack" / "marker"
    package = Path(workers.__file__).resolve().parent
    code = attack.code.replace("@MARKER@", str(marker)).replace("@PORT@", str(port))
    return code.replace("@PACKAGE@", str(package)), marker


def _assert_contained(result: TraceResult, marker: Path, accepted_before: int, listener, secrets: dict[str, str],
                      planted_cache: Path, limits: SandboxLimits) -> None:
    assert not marker.exists() and not marker.parent.exists(), "the attack wrote on the host"
    assert listener.accepted == accepted_before, "the attack reached the loopback listener"
    seen = "\n".join([result.stdout, result.stderr, result.error or ""])
    for value in secrets.values():
        assert value not in seen, "a secret of the parent leaked into the sandbox"
    assert "ESCAPED" not in seen
    assert "root:x:0:0" not in seen
    assert not (Path(workers.__file__).resolve().parent / "pwned.py").exists()
    assert sorted(p.name for p in (planted_cache / "jax").iterdir()) == ["baseline-entry"]
    assert (planted_cache / "jax" / "baseline-entry").read_text() == "compiled program of the warm start"
    cut_note = 100
    assert len(result.stdout.encode()) <= limits.max_output_bytes + cut_note
    assert len(result.stderr.encode()) <= limits.max_output_bytes + cut_note
    assert len(result.error or "") <= 5000


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(attack: Attack, tmp_path: Path, listener, secrets, planted_cache: Path,
                             limits: SandboxLimits) -> None:
    limits = limits.model_copy(update={"timeout_seconds": attack.timeout, "cpu_seconds": attack.cpu_seconds})
    code, marker = _prepare(attack, tmp_path, listener.port)
    request = TraceRequest(target="advantage", code=code)
    accepted_before = listener.accepted

    if attack.static_reason is not None:
        rejected = trace_candidate(request, limits)
        assert rejected.outcome == Outcome.invalid
        assert attack.static_reason in (rejected.error or ""), rejected.error
        assert rejected.error.startswith("line ")
        result = run_tracer(request, limits)  # the runtime layer on its own
    else:
        result = trace_candidate(request, limits)

    assert result.outcome == attack.outcome, (result.outcome, result.error, result.stderr[-2000:])
    _assert_contained(result, marker, accepted_before, listener, secrets, planted_cache, limits)


def test_there_are_at_least_30_attacks() -> None:
    assert len(ATTACKS) >= 30
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)
