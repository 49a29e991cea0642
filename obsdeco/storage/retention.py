"""Retention: what is older than the kept UTC days is deleted, in steps short enough that the
writer never waits long.

On PostgreSQL the calls and agent spans go a whole day partition at a time (`DROP TABLE` of
the partition, one transaction each); on SQLite, and for the sessions and scores on both, rows
go in batches of `BATCH_ROWS`, one transaction each. The successful calls removed are taken off
`request_hashes` in the same transaction, so that it keeps counting the calls still stored: a
call is `repeated` when an identical successful call is still stored before it. The hourly
rollups are kept for their own number of days, at least as many as the calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    text,
)

from obsdeco.storage import partitions, rollups
from obsdeco.storage.schema import (
    agent_spans,
    call_rollups,
    llm_calls,
    request_hashes,
    scores,
    sessions,
)

BATCH_ROWS = 5_000
"""Rows deleted per transaction where whole partitions cannot be dropped."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many whole UTC days before today are kept (today is always kept)."""

    days: int
    rollup_days: int

    def cutoff(self, now: datetime) -> datetime:
        """Calls, spans, sessions and scores before this moment are removed."""
        return _midnight(partitions.utc_day(now) - timedelta(days=self.days))

    def rollup_cutoff(self, now: datetime) -> datetime:
        """Rollups of hours before this moment are removed."""
        return _midnight(partitions.utc_day(now) - timedelta(days=self.rollup_days))


@dataclass(slots=True)
class RetentionResult:
    """What one pass removed: partitions dropped by name, rows deleted by table."""

    dropped_partitions: list[str] = field(default_factory=list)
    deleted: Counter[str] = field(default_factory=Counter)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def apply(engine: Engine, policy: RetentionPolicy, now: datetime) -> RetentionResult:
    """Remove what `policy` no longer keeps at `now`."""
    result = RetentionResult()
    cutoff = policy.cutoff(now)
    if engine.dialect.name == "postgresql":
        _drop_partitions(engine, cutoff.date(), result)
    else:
        calls = llm_calls.c
        _delete_batches(engine, llm_calls, calls.timestamp < cutoff, result, uncount=True)
        _delete_batches(engine, agent_spans, agent_spans.c.started_at < cutoff, result)
    ended = func.coalesce(sessions.c.ended_at, sessions.c.started_at)
    _delete_batches(engine, sessions, and_(sessions.c.started_at < cutoff, ended < cutoff), result)
    _delete_batches(engine, scores, scores.c.created_at < cutoff, result)
    _delete_batches(engine, call_rollups, call_rollups.c.hour < policy.rollup_cutoff(now), result)
    return result


def _drop_partitions(engine: Engine, cutoff: date, result: RetentionResult) -> None:
    """Drop each day partition wholly before `cutoff`, one transaction per partition."""
    for table in partitions.PARTITIONED:
        with engine.connect() as connection:
            days = sorted(
                day for day in partitions.existing_days(connection, table) if day < cutoff
            )
        for day in days:
            name = partitions.partition_name(table, day)
            with engine.begin() as connection:
                partitions.lock_partitions(connection, partitions.DROP_LOCK_TIMEOUT)
                if day not in partitions.existing_days(connection, table):
                    continue  # another process dropped it meanwhile
                # Writers adding to the partition finish first, so that every call uncounted
                # is one that goes (the lock waits at most DROP_LOCK_TIMEOUT).
                connection.execute(text(f'LOCK TABLE "{name}" IN ACCESS EXCLUSIVE MODE'))
                if table == llm_calls.name:
                    _uncount_partition(connection, name)
                connection.execute(text(f'DROP TABLE "{name}"'))
            result.dropped_partitions.append(name)


_UNCOUNT_PARTITION = (
    "INSERT INTO request_hashes (project_name, request_hash, calls) "
    'SELECT project_name, request_hash, -count(*) FROM "{partition}" '
    "WHERE success AND request_hash IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2 "
    "ON CONFLICT (project_name, request_hash) "
    "DO UPDATE SET calls = request_hashes.calls + excluded.calls"
)
_FORGET_UNCOUNTED = (
    "DELETE FROM request_hashes USING "
    '(SELECT DISTINCT project_name, request_hash FROM "{partition}" '
    "WHERE success AND request_hash IS NOT NULL) AS gone "
    "WHERE request_hashes.project_name = gone.project_name "
    "AND request_hashes.request_hash = gone.request_hash AND request_hashes.calls <= 0"
)


def _uncount_partition(connection: Connection, partition: str) -> None:
    """Take a partition's successful calls off `request_hashes` (rows in key order, as the
    writer locks them); requests no longer stored at all are forgotten."""
    connection.execute(text(_UNCOUNT_PARTITION.format(partition=partition)))
    connection.execute(text(_FORGET_UNCOUNTED.format(partition=partition)))


def _uncount_deleted(connection: Connection, deleted: Iterable[Any]) -> None:
    """Take deleted calls (rows of project_name, request_hash, success) off `request_hashes`."""
    gone = Counter(
        (row.project_name, row.request_hash) for row in deleted if row.success and row.request_hash
    )
    if not gone:
        return
    stored = rollups.add_request_counts(connection, {key: -calls for key, calls in gone.items()})
    emptied = [
        {"project": project, "request": request} for project, request, calls in stored if calls <= 0
    ]
    if emptied:
        hashes = request_hashes.c
        connection.execute(
            delete(request_hashes).where(
                hashes.project_name == bindparam("project"),
                hashes.request_hash == bindparam("request"),
            ),
            emptied,
        )


def _delete_batches(
    engine: Engine,
    table: Table,
    condition: ColumnElement[bool],
    result: RetentionResult,
    *,
    uncount: bool = False,
) -> None:
    """Delete the rows matching `condition`, `BATCH_ROWS` per transaction; with `uncount` (the
    calls, on SQLite), each batch's successful calls are taken off `request_hashes` in its
    transaction."""
    key = _batch_key(engine, table)
    statement = delete(table).where(
        key.in_(select(key).select_from(table).where(condition).limit(BATCH_ROWS))
    )
    if uncount:
        statement = statement.returning(
            llm_calls.c.project_name, llm_calls.c.request_hash, llm_calls.c.success
        )
    while True:
        with engine.begin() as connection:
            outcome = connection.execute(statement)
            if uncount:
                rows = outcome.all()
                _uncount_deleted(connection, rows)
                count = len(rows)
            else:
                count = outcome.rowcount
        if count:
            result.deleted[table.name] += count
        if count < BATCH_ROWS:
            return


def _batch_key(engine: Engine, table: Table) -> ColumnElement[Any]:
    """What a batch of `table`'s rows is picked by: SQLite's rowid, else the id (PostgreSQL's
    row address for the rollups, keyed by many columns)."""
    if engine.dialect.name == "sqlite":
        return literal_column("rowid")
    if "id" in table.c:
        return table.c.id
    return literal_column("ctid")
