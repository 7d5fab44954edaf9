"""Text from outside (a model's reply, a candidate's error, a tracer's report) as the database can keep it.

Whatever a child process or a model sends, what is stored is capped here, in the parent, and cleaned of
what PostgreSQL's text cannot hold or Python cannot encode: NUL characters and lone UTF-16 surrogates
(a JSON reply may carry `\\ud800`), each replaced by U+FFFD.
"""

from __future__ import annotations

import re
from typing import Any

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
NAME_CHARS = 200  # candidates.name
THOUGHT_CHARS = 20_000
ERROR_CHARS = 8_000  # the tail of an error is its most useful part (the last frames, the message)
CODE_CHARS = 100_000


def storable(text: str, limit: int | None = None, keep_tail: bool = False) -> str:
    """`text` without NUL or lone surrogates, cut to `limit` characters (its start, or with `keep_tail` its end)."""
    clean = UNSTORABLE.sub("\ufffd", text)
    if limit is not None and len(clean) > limit:
        marker = "[... cut ...]"
        clean = marker + clean[-(limit - len(marker)):] if keep_tail else clean[: limit - len(marker)] + marker
    return clean


def storable_json(value: Any) -> Any:
    """Every string inside a JSON-shaped value made storable (no cap: messages are as long as they were)."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    if isinstance(value, dict):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    return value
