"""SQL the two dialects spell differently: INSERT ... ON CONFLICT, the UTC hour of a
timestamp, a JSON object's keys, SQLite timestamps as milliseconds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, Table, cast, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import TableValuedAlias

from obsdeco.storage.schema import UTCDateTime


def upsert_insert(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """`dialect`'s INSERT into `table`, which has `on_conflict_do_update` / `_do_nothing`."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class UTCHour(FunctionElement[datetime]):
    """The UTC hour a timestamp falls in."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(UTCHour, "sqlite")
def _utc_hour_sqlite(element: UTCHour, compiler: Any, **kw: Any) -> str:
    # SQLite keeps naive UTC text "YYYY-MM-DD HH:MM:SS.ffffff".
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 13) || ':00:00.000000'"


@compiles(UTCHour, "postgresql")
def _utc_hour_postgresql(element: UTCHour, compiler: Any, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    return f"(date_trunc('hour', {moment} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


class HasKey(FunctionElement[bool]):
    """Whether a JSON object column (NULL: none) has a key: `HasKey(column, key)`."""

    type = Boolean()
    inherit_cache = True


@compiles(HasKey, "sqlite")
def _has_key_sqlite(element: HasKey, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.key = {key})"


@compiles(HasKey, "postgresql")
def _has_key_postgresql(element: HasKey, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"coalesce(jsonb_exists({column}, {key}), false)"


def json_pairs(column: ColumnElement[Any], dialect: str) -> TableValuedAlias:
    """The (key, value) pairs of a JSON object column: experiment -> variant, one row each."""
    each = func.jsonb_each_text if dialect == "postgresql" else func.json_each
    return each(column).table_valued("key", "value").alias("assigned")


def sqlite_milliseconds(moment: ColumnElement[Any]) -> ColumnElement[float]:
    """Milliseconds since the epoch of SQLite's "YYYY-MM-DD HH:MM:SS.ffffff" text, to the
    microsecond (julianday() keeps only milliseconds)."""
    seconds = cast(func.strftime("%s", moment), Float)
    fraction = cast(func.substr(moment, 20), Float)
    return (seconds + fraction) * 1000.0
