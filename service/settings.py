"""Settings: the one reader of DISCOVERY_* environment variables (pydantic-settings)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ANCHOR_SEEDS = {"smoke": 64, "quick": 64, "full": 32}


class Settings(BaseSettings):
    # DISCOVERY_ENV_FILE names another file of settings than ./.env (the tests point it at /dev/null).
    model_config = SettingsConfigDict(env_prefix="DISCOVERY_", env_file=os.environ.get("DISCOVERY_ENV_FILE", ".env"),
                                      extra="ignore")

    database_url: str = "sqlite:///./discovery.db"
    broker_url: str | None = None  # unset: the local executor (a thread pool in this process)
    # Requests one API process runs at once (service/api/admission.py), and so its pooled database connections.
    api_threads: int = 16
    # How long an API process trusts a key it verified (a key revoked in the database is refused within this).
    api_key_cache_seconds: float = Field(default=5.0, ge=0.0, le=300.0)
    # The largest request body any route reads (413 beyond it, before it is read whole).
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)

    # Where `discovery runs ...` / `discovery candidates ...` find the API, and the key they send.
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None

    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    # Other endpoints a run may name as proposer.base_url (comma-separated): the operator's key goes only to these
    # and to openai_base_url. A run naming any other endpoint is refused.
    openai_allowed_base_urls: str = ""

    # Where JAX's persistent compilation cache and the anchor cache live (shared by a host).
    cache_dir: Path = Path.home() / ".cache" / "discovery"

    # Sandbox: "bwrap" requires bubblewrap isolation and refuses to evaluate without it;
    # "process" runs a plain child process with rlimits (for machines without namespaces).
    # The sandbox_* limits are the tracer's (load, probe and export one candidate; no training).
    sandbox_isolation: Literal["bwrap", "process"] = "bwrap"
    sandbox_timeout_seconds: float = 60.0
    sandbox_memory_mb: int = 4096
    sandbox_cpu_seconds: int = 120
    sandbox_max_output_bytes: int = 65536

    # The trainer (long-lived, contained, project code only). Its deadlines follow the warm start's
    # measured time; "auto" uses the GPU when the host has NVIDIA device nodes.
    trainer_memory_mb: int = 12288
    trainer_cpus: float = 0.0  # CPU quota in cores; 0: all of this machine's cores
    trainer_device: Literal["auto", "cpu", "gpu"] = "auto"
    evaluate_batch_size: int = 8  # compatible evaluations trained together in one program
    # Seeds of the anchor per profile: the warm start's own artifact, trained once per environment, profile and
    # host; its mean is every score's reference and its spread the noise model (more on a GPU is cheap).
    anchor_seeds: dict[Literal["smoke", "quick", "full"], Annotated[int, Field(ge=2, le=4096)]] = ANCHOR_SEEDS

    @field_validator("cache_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("anchor_seeds")
    @classmethod
    def _every_profile(cls, given: dict[str, int]) -> dict[str, int]:
        """A profile left out keeps its default."""
        return {**ANCHOR_SEEDS, **given}

    # Signs the web UI's session cookie; unset: a random secret per process (sessions end on restart).
    session_secret: SecretStr | None = None

    webhook_allowed_hosts: str = ""  # comma-separated hosts allowed despite resolving to private addresses
    # Seconds between attempts after the first (Standard Webhooks' schedule, about a day in all).
    webhook_retry_schedule: list[float] = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    webhook_timeout_seconds: float = 10.0
    webhook_max_response_bytes: int = 65536


    def llm_endpoint_allowed(self, base_url: str) -> bool:
        """Whether a run may send the operator's LLM key to `base_url` (trailing slashes aside)."""
        allowed = [self.openai_base_url or "", *self.openai_allowed_base_urls.split(",")]
        return base_url.strip().rstrip("/") in {url.strip().rstrip("/") for url in allowed if url.strip()}


@lru_cache
def get_settings() -> Settings:
    return Settings()
