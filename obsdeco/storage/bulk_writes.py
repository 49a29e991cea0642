"""A batch's records written in one transaction, by each dialect's bulk path: multi-row
INSERTs on SQLite, COPY on PostgreSQL; sessions upserted; repeats and rollups kept.

The calls' field values are read once per batch into columns (no model round trip per
record); the repeat counts, the rollups and the driver's rows are made from whole columns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from itertools import chain, repeat
from operator import attrgetter, is_, itemgetter
from typing import Any

import numpy as np
from sqlalchemy import Connection, Executable, insert

from obsdeco.models import LLMCall, ModelProvider
from obsdeco.storage import rollups
from obsdeco.storage.base import SessionState, WriteBatch
from obsdeco.storage.rows import SESSION_FIELDS
from obsdeco.storage.schema import agent_spans, llm_calls, scores, sessions
from obsdeco.storage.sql_functions import upsert_insert

_TOTAL_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
)


def write_batch(connection: Connection, batch: WriteBatch) -> None:
    """Write `batch` in `connection`'s transaction."""
    if batch.sessions:
        _upsert_sessions(connection, batch.sessions)
    if batch.calls:
        calls = StoredCalls(batch.calls)
        columns = calls.columns
        calls.mark_repeated(
            rollups.mark_repeats(
                connection, columns["project_name"], columns["request_hash"], columns["success"]
            )
        )
        if connection.dialect.name == "postgresql":
            _insert_calls_postgres(connection, calls)
        else:
            _insert_calls_sqlite(connection, calls)
        sums: dict[rollups.RollupKey, Any] = {}
        rollups.accumulate(sums, columns)
        rollups.add(connection, sums)
    if batch.spans:
        connection.execute(insert(agent_spans), [span.model_dump() for span in batch.spans])
    if batch.scores:
        connection.execute(insert(scores), [score.model_dump() for score in batch.scores])


STORED_COLUMNS = tuple(column.name for column in llm_calls.columns)
_MODEL_COLUMNS = tuple(name for name in STORED_COLUMNS if name != "repeated")
_model_values = itemgetter(*_MODEL_COLUMNS)
_fields = attrgetter("__dict__")
_PROVIDER_TEXT = {provider: provider.value for provider in ModelProvider}
_BOOLEANS = ("streamed", "success", "repeated", "cache_hit")
_SQLITE_BOOLEAN = {True: 1, False: 0, None: None}


class StoredCalls:
    """The calls of one batch column-wise: for each column of `llm_calls`, the calls' values in
    batch order, as stored (the provider and the JSON documents as text; `repeated` all False
    until `mark_repeated`)."""

    def __init__(self, calls: Sequence[LLMCall]) -> None:
        self.size = len(calls)
        rows = map(_model_values, map(_fields, calls))
        columns: dict[str, Sequence[Any]] = dict(
            zip(_MODEL_COLUMNS, zip(*rows, strict=True), strict=True)
        )
        columns["provider"] = list(map(_PROVIDER_TEXT.__getitem__, columns["provider"]))
        columns["metadata"] = [
            json.dumps(value, default=str) if value else "{}" for value in columns["metadata"]
        ]
        columns["experiments"] = [
            json.dumps(value, default=str) if value else None for value in columns["experiments"]
        ]
        columns["repeated"] = [False] * self.size
        self.columns = columns

    def mark_repeated(self, repeated: list[bool]) -> None:
        self.columns["repeated"] = repeated


def _insert_calls_sqlite(connection: Connection, calls: StoredCalls) -> None:
    """Multi-row INSERTs of a few fixed sizes (each prepared once per connection), as many rows
    per statement as SQLite's variable limit allows.

    One statement per chunk (rather than executemany) runs in a single sqlite3_step, so the
    driver releases the GIL once per chunk instead of once per row. NULLs are not bound: the
    sqlite3 module binds None (and bool) through its adapter lookup, ten times the cost of a
    number, so rows are inserted in groups by which columns they leave NULL, each group naming
    only its other columns.
    """
    driver_connection = connection.connection.driver_connection
    getlimit = getattr(driver_connection, "getlimit", None)  # sqlcipher3 has none
    limit = 999 if getlimit is None else getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    columns = dict(calls.columns)
    columns["timestamp"] = _sqlite_times(columns["timestamp"])
    for name in _BOOLEANS:
        columns[name] = list(map(_SQLITE_BOOLEAN.__getitem__, columns[name]))
    cursor = driver_connection.cursor()
    try:
        for names, values in _by_nulls(columns, calls.size):
            per_statement = max(1, limit // len(names))
            rows = len(values[0])
            start = 0
            for size in _chunk_sizes(rows, per_statement):
                chunk = zip(*(column[start : start + size] for column in values), strict=True)
                cursor.execute(_sqlite_insert_sql(names, size), list(chain.from_iterable(chunk)))
                start += size
    finally:
        cursor.close()


def _by_nulls(
    columns: dict[str, Sequence[Any]], size: int
) -> list[tuple[tuple[str, ...], list[Sequence[Any]]]]:
    """The rows grouped by which columns they leave NULL: each group's column names and its
    rows' values of them, column-wise. Columns NULL in every row are left out at once."""
    present, mixed = [], []
    for name in STORED_COLUMNS:
        nulls = columns[name].count(None)
        if nulls == 0:
            present.append(name)
        elif nulls < size:
            mixed.append(name)
    if not mixed:
        return [(tuple(present), [columns[name] for name in present])]
    patterns = zip(*(map(is_, columns[name], repeat(None)) for name in mixed), strict=True)
    groups: dict[tuple[bool, ...], list[int]] = {}
    for row, pattern in enumerate(patterns):
        groups.setdefault(pattern, []).append(row)
    found = []
    for pattern, rows in groups.items():
        names = (*present, *(name for name, null in zip(mixed, pattern, strict=True) if not null))
        pick = itemgetter(*rows)
        values = [pick(columns[name]) for name in names]
        found.append((names, values if len(rows) > 1 else [(value,) for value in values]))
    return found


def _chunk_sizes(rows: int, largest: int) -> list[int]:
    """`rows` as chunks of `largest` rows and then of powers of two, so that a few statement
    sizes serve every batch (SQLite prepares a statement in about 10 us a row)."""
    full, rest = divmod(rows, largest)
    sizes = [largest] * full
    bit = 1 << rest.bit_length()
    while rest:
        bit >>= 1
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


@lru_cache(maxsize=256)
def _sqlite_insert_sql(names: tuple[str, ...], rows: int) -> str:
    row = f"({', '.join('?' * len(names))})"
    return f"INSERT INTO llm_calls ({', '.join(names)}) VALUES {', '.join([row] * rows)}"


def _sqlite_times(moments: Sequence[datetime]) -> list[str]:
    """The text SQLAlchemy's SQLite DATETIME stores of each moment: naive UTC, always with
    microseconds ("2026-12-01 15:00:00.000000"); made by numpy from exact microseconds since
    the epoch, in half the time of formatting each datetime."""
    micros = rollups.epoch_microseconds(moments).astype("datetime64[us]")
    return [text.replace("T", " ") for text in np.datetime_as_string(micros, "us").tolist()]


def _insert_calls_postgres(connection: Connection, calls: StoredCalls) -> None:
    """COPY: PostgreSQL's bulk path, inside the batch's transaction."""
    driver_connection = connection.connection.driver_connection
    columns = calls.columns
    with (
        driver_connection.cursor() as cursor,
        cursor.copy(f"COPY llm_calls ({', '.join(STORED_COLUMNS)}) FROM STDIN") as copy,
    ):
        write_row = copy.write_row
        for row in zip(*(columns[name] for name in STORED_COLUMNS), strict=True):
            write_row(row)


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
        if rows:
            connection.execute(_session_upsert(connection.dialect.name, tuple(rows[0])), rows)


@lru_cache(maxsize=16)
def _session_upsert(dialect: str, names: tuple[str, ...]) -> Executable:
    """The dialect's upsert of session rows of these columns (built once per kind of row)."""
    insert_rows = upsert_insert(dialect, sessions)
    updated = {name: insert_rows.excluded[name] for name in names if name != "id"}
    return insert_rows.on_conflict_do_update(index_elements=["id"], set_=updated)
