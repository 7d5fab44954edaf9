"""Result rows into views (a page's rows validated in one call, each as a plain dict), and a few rows read as one
JSON value beside other figures (`json_rows`), so they cost no statement of their own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter
from sqlalchemy import JSON, ColumnElement, Result, Row, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

V = TypeVar("V")


def views_of(result: Result[Any], rows: Sequence[Row[Any]], adapter: TypeAdapter[list[V]]) -> list[V]:
    """`rows` (of `result`) validated by `adapter` in one call, each as a plain dict: a Row answers a field it
    lacks (an alias tried first) with an exception, and its `_asdict` costs more than the validation."""
    keys = list(result.keys())
    return adapter.validate_python([dict(zip(keys, row, strict=True)) for row in rows])


class json_rows(FunctionElement[Any]):  # noqa: N801 - a SQL function, named like one
    """An aggregate: the rows it runs over as one JSON array of objects, `json_rows(name=column, ...)`
    (PostgreSQL's json_agg(json_build_object(...)), SQLite's json_group_array(json_object(...))). For a few
    small rows read beside other figures in one statement, not for stored JSON or floats (SQLite writes a
    float with 15 digits)."""

    type = JSON()
    inherit_cache = True

    def __init__(self, **columns: ColumnElement[Any]) -> None:
        pairs = [element for name, column in columns.items() for element in (literal_column(f"'{name}'"), column)]
        super().__init__(*pairs)


@compiles(json_rows, "postgresql")
def _json_rows_postgresql(element: json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg(json_build_object({compiler.process(element.clauses, **kw)}))"


@compiles(json_rows, "sqlite")
def _json_rows_sqlite(element: json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array(json_object({compiler.process(element.clauses, **kw)}))"
