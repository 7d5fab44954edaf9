"""Fixtures for the sandbox tests: limits, a loopback listener, secrets in the parent's environment."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.sandbox import SandboxLimits, probe_isolation

SECRETS = {
    "OPENAI_API_KEY": "sk-test-5ecret-never-in-the-sandbox",
    "DATABASE_URL": "postgresql://user:db-5ecret-password@localhost/discovery",
    "BROKER_URL": "redis://:broker-5ecret@localhost:6379/0",
    "JAX_TEST_TOKEN": "jax-5ecret-token",
}


class Listener:
    """A TCP listener on loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="session", autouse=True)
def require_bwrap() -> None:
    report = probe_isolation()
    if not report.bwrap:
        pytest.fail(f"bubblewrap does not work here: {report.bwrap_detail}")


@pytest.fixture(scope="session")
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture()
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


@pytest.fixture()
def planted_cache(tmp_path: Path) -> Path:
    path = tmp_path / "compile-cache"
    (path / "jax").mkdir(parents=True)
    (path / "jax" / "baseline-entry").write_text("compiled program of the warm start")
    return path


@pytest.fixture()
def limits(planted_cache: Path) -> SandboxLimits:
    return SandboxLimits(timeout_seconds=60, memory_mb=1024, cpu_seconds=120, max_output_bytes=8192,
                         isolation="bwrap", cache_dir=planted_cache)


_ATTACKS: dict[str, bool] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_attack_is_contained[" in report.nodeid and (report.when == "call" or report.failed):
        _ATTACKS[report.nodeid] = _ATTACKS.get(report.nodeid, True) and report.passed


def pytest_terminal_summary(terminalreporter) -> None:
    if _ATTACKS:
        contained = sum(_ATTACKS.values())
        terminalreporter.write_line(f"sandbox attacks: {len(_ATTACKS)} tried, {contained} contained")
