"""Result rows into views: a page's rows validated in one call, each as a plain dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter
from sqlalchemy import Result, Row

V = TypeVar("V")


def views_of(result: Result[Any], rows: Sequence[Row[Any]], adapter: TypeAdapter[list[V]]) -> list[V]:
    """`rows` (of `result`) validated by `adapter` in one call, each as a plain dict: a Row answers a field it
    lacks (an alias tried first) with an exception, and its `_asdict` costs more than the validation."""
    keys = list(result.keys())
    return adapter.validate_python([dict(zip(keys, row, strict=True)) for row in rows])
