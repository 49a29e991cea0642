"""A batch's records written in one transaction, by each dialect's bulk path: multi-row
INSERTs on SQLite, COPY on PostgreSQL; sessions upserted; repeats and rollups kept."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, insert

from obsdeco.models import LLMCall
from obsdeco.storage import rollups
from obsdeco.storage.base import SessionState, WriteBatch
from obsdeco.storage.rows import SESSION_FIELDS
from obsdeco.storage.schema import agent_spans, llm_calls, scores, sessions
from obsdeco.storage.sql_functions import upsert_insert

_CALL_COLUMNS = tuple(column.name for column in llm_calls.columns if column.name != "repeated")
_STORED_COLUMNS = (*_CALL_COLUMNS, "repeated")
_TOTAL_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
)

_call_values = itemgetter(*_CALL_COLUMNS)
_TIMESTAMP = _CALL_COLUMNS.index("timestamp")
_PROVIDER = _CALL_COLUMNS.index("provider")
_METADATA = _CALL_COLUMNS.index("metadata")
_EXPERIMENTS = _CALL_COLUMNS.index("experiments")


def write_batch(connection: Connection, batch: WriteBatch) -> None:
    """Write `batch` in `connection`'s transaction."""
    postgres = connection.dialect.name == "postgresql"
    if batch.sessions:
        _upsert_sessions(connection, batch.sessions)
    if batch.calls:
        repeated = rollups.mark_repeats(connection, batch.calls)
        (_insert_calls_postgres if postgres else _insert_calls_sqlite)(
            connection, batch.calls, repeated
        )
        sums: dict[rollups.RollupKey, Any] = {}
        rollups.accumulate(sums, rollups.call_facts(batch.calls, repeated))
        rollups.add(connection, sums)
    if batch.spans:
        connection.execute(insert(agent_spans), [span.model_dump() for span in batch.spans])
    if batch.scores:
        connection.execute(insert(scores), [score.model_dump() for score in batch.scores])


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, default=str) if value else "{}"


def _sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME stores (naive UTC, always with microseconds)."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


def _call_row(call: LLMCall, repeated: bool, encode_time: Callable[[datetime], Any]) -> list[Any]:
    """The call's column values in `_STORED_COLUMNS` order, encoded for the driver."""
    values = list(_call_values(call.__dict__))
    values[_TIMESTAMP] = encode_time(values[_TIMESTAMP])
    values[_PROVIDER] = values[_PROVIDER].value
    values[_METADATA] = _json_text(values[_METADATA])
    values[_EXPERIMENTS] = _json_text(values[_EXPERIMENTS]) if values[_EXPERIMENTS] else None
    values.append(repeated)
    return values


def _insert_calls_sqlite(
    connection: Connection, calls: list[LLMCall], repeated: list[bool]
) -> None:
    """Multi-row INSERTs, as many rows per statement as SQLite's variable limit allows.

    One statement per chunk (rather than executemany) runs in a single sqlite3_step, so the
    driver releases the GIL once per chunk instead of once per row.
    """
    driver_connection = connection.connection.driver_connection
    getlimit = getattr(driver_connection, "getlimit", None)  # sqlcipher3 has none
    limit = 999 if getlimit is None else getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    width = len(_STORED_COLUMNS)
    per_statement = max(1, limit // width)
    cursor = driver_connection.cursor()
    try:
        for start in range(0, len(calls), per_statement):
            chunk = calls[start : start + per_statement]
            values: list[Any] = []
            for call, is_repeat in zip(chunk, repeated[start : start + per_statement], strict=True):
                values.extend(_call_values(call.__dict__))
                values.append(is_repeat)
            for row in range(0, len(values), width):
                values[row + _TIMESTAMP] = _sqlite_time(values[row + _TIMESTAMP])
                values[row + _PROVIDER] = values[row + _PROVIDER].value
                values[row + _METADATA] = _json_text(values[row + _METADATA])
                if values[row + _EXPERIMENTS]:
                    values[row + _EXPERIMENTS] = _json_text(values[row + _EXPERIMENTS])
                else:
                    values[row + _EXPERIMENTS] = None
            cursor.execute(_sqlite_insert_sql(len(chunk)), values)
    finally:
        cursor.close()


@lru_cache(maxsize=8)
def _sqlite_insert_sql(rows: int) -> str:
    row = f"({', '.join('?' * len(_STORED_COLUMNS))})"
    return f"INSERT INTO llm_calls ({', '.join(_STORED_COLUMNS)}) VALUES {', '.join([row] * rows)}"


def _insert_calls_postgres(
    connection: Connection, calls: list[LLMCall], repeated: list[bool]
) -> None:
    """COPY: PostgreSQL's bulk path, inside the batch's transaction."""
    driver_connection = connection.connection.driver_connection
    with (
        driver_connection.cursor() as cursor,
        cursor.copy(f"COPY llm_calls ({', '.join(_STORED_COLUMNS)}) FROM STDIN") as copy,
    ):
        for call, is_repeat in zip(calls, repeated, strict=True):
            copy.write_row(_call_row(call, is_repeat, _unchanged))


def _unchanged(value: datetime) -> datetime:
    return value


def _session_row(state: SessionState) -> dict[str, Any]:
    values = state.session.__dict__
    row = {name: values[name] for name in SESSION_FIELDS}
    totals = state.totals
    if totals is None:
        return row
    row.update({name: getattr(totals, name) for name in _TOTAL_FIELDS})
    row["call_count"] = totals.calls
    row["total_latency_ms"] = totals.latency_ms
    row["error_count"] = totals.errors
    row["duration_ms"] = totals.duration_ms
    return row


def _upsert_sessions(connection: Connection, states: list[SessionState]) -> None:
    latest = {state.session.id: state for state in states}
    started = [_session_row(s) for s in latest.values() if s.totals is None]
    ended = [_session_row(s) for s in latest.values() if s.totals is not None]
    for rows in (started, ended):
        if not rows:
            continue
        statement = upsert_insert(connection, sessions)
        updated = {name: statement.excluded[name] for name in rows[0] if name != "id"}
        connection.execute(
            statement.on_conflict_do_update(index_elements=["id"], set_=updated), rows
        )
