"""API keys: created once and shown once; only a SHA-256 hash is stored. The CLI's runs belong to the key in
DISCOVERY_API_KEY, or to this machine's local identity."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import ApiKey
from service.settings import Settings

KEY_PREFIX = "dsk_"
LOCAL_KEY_NAME = "local"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str) -> tuple[str, ApiKey]:
    """A new key (plain text, to show once) and its stored row."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=key[:10], key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return key, row


def find_key(session: Session, key: str) -> ApiKey | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    return row if row is not None and row.revoked_at is None else None


class KeyCache:
    """Keys the API verified recently, so a client's burst of requests costs one lookup per `seconds`.

    Only keys found valid are kept, at most `seconds` (a key revoked in the database is refused by every
    process within that time; 0 turns the cache off); unknown keys are looked up every time. The rows are
    detached copies: the API reads their id and name only.
    """

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds, self.max_entries = seconds, max_entries
        self._valid: dict[str, tuple[ApiKey, float]] = {}

    def cached(self, key: str) -> ApiKey | None:
        """The key's row if it was verified less than `seconds` ago (no database, no thread)."""
        hit = self._valid.get(hash_key(key))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def find(self, factory: sessionmaker[Session], key: str) -> ApiKey | None:
        """Look the key up in a session of its own, remembering it when it is valid."""
        with factory() as session:
            row = find_key(session, key)
        if row is not None and self.seconds > 0:
            if len(self._valid) >= self.max_entries:
                self._valid.clear()
            self._valid[row.key_hash] = (row, time.monotonic() + self.seconds)
        return row


class UnknownKey(ValueError):
    """DISCOVERY_API_KEY names no key of this database."""


def local_key_file(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "local-api-key"


def local_key(session: Session, settings: Settings) -> str:
    """The key of this machine's default identity, created once and kept in a 0600 file beside the caches.

    Runs started from the CLI without DISCOVERY_API_KEY belong to it, so the API and the UI can show them
    (`discovery keys local` prints it to log in with).
    """
    path = local_key_file(settings)
    if path.is_file():
        key = path.read_text().strip()
        if find_key(session, key) is not None:
            return key
    key, _ = create_key(session, LOCAL_KEY_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(key + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


def cli_owner(session: Session, settings: Settings) -> ApiKey:
    """Who owns what the CLI starts: the key in DISCOVERY_API_KEY, else this machine's local identity."""
    key = settings.api_key.get_secret_value() if settings.api_key else local_key(session, settings)
    row = find_key(session, key)
    if row is None:
        raise UnknownKey("DISCOVERY_API_KEY is not a key of this database (create one with `discovery keys create`)")
    return row
