"""The built-in backend: SQLAlchemy 2.x Core on SQLite (default) and PostgreSQL (psycopg 3).

It holds the engine and answers the storage contract; the work is done by modules with one job
each: `schema_setup` (create and upgrade), `bulk_writes` (a batch in one transaction),
`rollup_reads` (sums from rollups and calls), `quantiles`, `where` (filters as SQL) and `rows`
(records from rows).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    create_engine,
    func,
    insert,
    or_,
    select,
    true,
)
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from obsdeco.alerts.events import AlertEvent
from obsdeco.models import LLMCall, Score, Session, SessionRecord, SessionSummary
from obsdeco.storage import partitions, retention, schema_setup
from obsdeco.storage.base import (
    CallAggregate,
    CallFilter,
    ExperimentVariant,
    GroupKey,
    ProjectSpan,
    Quantiles,
    ScoreAggregate,
    ScoreFilter,
    ScoreGroup,
    SessionFilter,
    SessionOrder,
    TransientStorageError,
    WriteBatch,
)
from obsdeco.storage.bulk_writes import write_batch
from obsdeco.storage.engines import is_sqlite, sqlite_engine
from obsdeco.storage.quantiles import call_quantiles
from obsdeco.storage.rollup_reads import aggregate_calls
from obsdeco.storage.rows import (
    alert_event_from_row,
    alert_event_row,
    call_from_row,
    calls_from_rows,
    score_from_row,
    session_from_row,
    span_from_row,
    summary_from_row,
)
from obsdeco.storage.schema import (
    agent_spans,
    alert_events,
    llm_calls,
    request_hashes,
    scores,
    sessions,
)
from obsdeco.storage.sql_functions import json_pairs, sqlite_milliseconds
from obsdeco.storage.where import calls_where, scores_where, sessions_where

_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
"""SQLAlchemy's errors for a database that cannot be reached or used just now."""


def _create_engine(url: str) -> Engine:
    if is_sqlite(url):
        return sqlite_engine(url, busy_timeout_ms=5_000, cache_kib=65_536)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


class SQLAlchemyStorage:
    """Stores obsdeco records through SQLAlchemy; the schema is created on first use."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine if engine is not None else _create_engine(url)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        postgres = self.engine.dialect.name == "postgresql"
        self._partitions = partitions.DayPartitions() if postgres else None

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                schema_setup.prepare_schema(self.engine)
                if self._partitions is not None:
                    with self.engine.begin() as connection:
                        self._partitions.prepare(connection, datetime.now(UTC).date())
                self._schema_ready = True

    def apply_retention(
        self, policy: retention.RetentionPolicy, now: datetime
    ) -> retention.RetentionResult:
        """Remove what `policy` no longer keeps at `now` (see `obsdeco.storage.retention`)."""
        self._ensure_schema()
        result = retention.apply(self.engine, policy, now)
        if result.dropped_partitions and self._partitions is not None:
            self._partitions.forget()
        return result

    def rebuild_rollups(self) -> None:
        """Recompute repeats and hourly rollups from the stored calls: needed only after calls
        were inserted other than through obsdeco (a bulk import)."""
        self._ensure_schema()
        schema_setup.rebuild_rollups(self.engine)

    def _connect(self) -> Connection:
        self._ensure_schema()
        return self.engine.connect()

    # --- writing ---------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        try:
            self._ensure_schema()
            if self._partitions is None:
                self._write(batch)
                return
            self._partitions.ensure(self.engine, batch)
            try:
                self._write(batch)
            except Exception as error:
                if not partitions.is_missing_partition(error):
                    raise
                self._partitions.forget()  # another process's retention dropped one meanwhile
                self._partitions.ensure(self.engine, batch)
                self._write(batch)
        except _TRANSIENT as error:
            raise TransientStorageError(str(error)) from error

    def _write(self, batch: WriteBatch) -> None:
        with self.engine.begin() as connection:
            write_batch(connection, batch)

    # --- reading ---------------------------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRecord | None:
        with self._connect() as connection:
            row = connection.execute(select(sessions).where(sessions.c.id == session_id)).first()
            if row is None:
                return None
            calls = connection.execute(
                select(llm_calls)
                .where(llm_calls.c.session_id == session_id)
                .order_by(llm_calls.c.timestamp, llm_calls.c.id)
            ).all()
            spans = connection.execute(
                select(agent_spans)
                .where(agent_spans.c.session_id == session_id)
                .order_by(agent_spans.c.started_at, agent_spans.c.id)
            ).all()
        return SessionRecord(
            session=session_from_row(row),
            calls=[call_from_row(call) for call in calls],
            spans=[span_from_row(span) for span in spans],
        )

    def query_sessions(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
        search: str | None = None,
        order_by: SessionOrder = "started_at",
        descending: bool = True,
        model: str | None = None,
        agent: str | None = None,
    ) -> list[SessionSummary]:
        if order_by not in get_args(SessionOrder):
            raise ValueError(f"cannot order sessions by {order_by!r}")
        order = [sessions.c[order_by], sessions.c.id]
        statement = (
            sessions_where(select(sessions), project, since, until, search, model, agent)
            .order_by(
                *(
                    column.desc().nulls_last() if descending else column.asc().nulls_last()
                    for column in order
                )
            )
            .limit(limit)
            .offset(offset)
        )
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        return [summary_from_row(row) for row in rows]

    def query_calls(
        self, where: CallFilter, limit: int | None = None, offset: int = 0
    ) -> list[LLMCall]:
        statement = calls_where(select(llm_calls), where).order_by(
            llm_calls.c.timestamp, llm_calls.c.id
        )
        if limit is not None:
            statement = statement.limit(limit)
        if offset:
            statement = statement.offset(offset)
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        return [call_from_row(row) for row in rows]

    def iter_calls(self, where: CallFilter, batch_size: int = 1_000) -> Iterator[list[LLMCall]]:
        statement = calls_where(select(llm_calls), where)
        for rows in self._pages(statement, llm_calls.c.timestamp, llm_calls.c.id, batch_size):
            yield calls_from_rows(rows)

    def iter_sessions(
        self, where: SessionFilter, batch_size: int = 1_000
    ) -> Iterator[list[SessionSummary]]:
        statement = sessions_where(
            select(sessions),
            where.project,
            where.since,
            where.until,
            model=where.model,
            agent=where.agent,
        )
        if where.session_id is not None:
            statement = statement.where(sessions.c.id == where.session_id)
        for rows in self._pages(statement, sessions.c.started_at, sessions.c.id, batch_size):
            yield [summary_from_row(row) for row in rows]

    def iter_spans(
        self, where: SessionFilter, batch_size: int = 1_000
    ) -> Iterator[list[ProjectSpan]]:
        spans = agent_spans.c
        statement = sessions_where(
            select(agent_spans, sessions.c.project_name).join(
                sessions, sessions.c.id == spans.session_id
            ),
            where.project,
            None,
            None,
            None,
            where.model,
        )
        for name, value in (("session_id", where.session_id), ("agent_name", where.agent)):
            if value is not None:
                statement = statement.where(spans[name] == value)
        if where.since is not None:
            statement = statement.where(spans.started_at >= where.since)
        if where.until is not None:
            statement = statement.where(spans.started_at < where.until)
        for rows in self._pages(statement, spans.started_at, spans.id, batch_size):
            yield [
                ProjectSpan(span=span_from_row(row), project_name=row.project_name) for row in rows
            ]

    def _pages(
        self,
        statement: Select[Any],
        moment: ColumnElement[datetime],
        key: ColumnElement[str],
        batch_size: int,
    ) -> Iterator[Sequence[Any]]:
        """The rows of `statement` ordered by (moment, key), a page of `batch_size` at a time:
        each page is its own short query starting after the last row of the one before (no
        transaction or cursor stays open while the caller works on a page)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        ordered = statement.order_by(moment, key).limit(batch_size)
        page = ordered
        while True:
            with self._connect() as connection:
                rows = connection.execute(page).all()
            if rows:
                yield rows
            if len(rows) < batch_size:
                return
            last_moment, last_key = rows[-1]._mapping[moment], rows[-1]._mapping[key]
            # `moment >= last` on its own lets the database seek in its index on `moment`.
            page = ordered.where(moment >= last_moment, or_(moment > last_moment, key > last_key))

    def aggregate_calls(
        self, where: CallFilter, group_by: Sequence[GroupKey] = (), min_calls: int = 1
    ) -> list[CallAggregate]:
        with self._connect() as connection:
            found = aggregate_calls(connection, where, group_by)
        return [row for row in found if row.calls >= min_calls]

    def quantiles(
        self,
        where: CallFilter,
        column: Literal["latency_ms", "time_to_first_token_ms"],
        quantiles: Sequence[float],
        groupings: Sequence[GroupKey | None] = (None,),
    ) -> dict[GroupKey | None, dict[str | None, Quantiles]]:
        with self._connect() as connection:
            return call_quantiles(connection, where, column, quantiles, groupings)

    def count_sessions(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: str | None = None,
        model: str | None = None,
        agent: str | None = None,
    ) -> int:
        statement = sessions_where(
            select(func.count()).select_from(sessions),
            project,
            since,
            until,
            search,
            model,
            agent,
        )
        with self._connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def project_names(self) -> list[str]:
        statement = select(sessions.c.project_name).distinct().order_by(sessions.c.project_name)
        with self._connect() as connection:
            return list(connection.execute(statement).scalars())

    def most_repeated_requests(self, project: str | None, limit: int) -> list[tuple[str, int]]:
        hashes = request_hashes.c
        statement = (
            select(hashes.request_hash, hashes.calls)
            .where(hashes.calls > 1)
            .order_by(hashes.calls.desc(), hashes.request_hash)
            .limit(limit)
        )
        if project is not None:
            statement = statement.where(hashes.project_name == project)
        with self._connect() as connection:
            return [(row.request_hash, int(row.calls)) for row in connection.execute(statement)]

    def agent_time(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, tuple[int, float]]:
        spans = agent_spans.c
        if self.engine.dialect.name == "postgresql":
            duration = func.extract("epoch", spans.ended_at - spans.started_at) * 1000.0
        else:
            duration = sqlite_milliseconds(spans.ended_at) - sqlite_milliseconds(spans.started_at)
        statement = (
            select(
                spans.agent_name,
                func.count().label("invocations"),
                func.sum(duration).label("wall_ms"),
            )
            .join(sessions, sessions.c.id == spans.session_id)
            .group_by(spans.agent_name)
        )
        if project is not None:
            statement = statement.where(sessions.c.project_name == project)
        if since is not None:
            statement = statement.where(spans.started_at >= since)
        if until is not None:
            statement = statement.where(spans.started_at < until)
        with self._connect() as connection:
            return {
                row.agent_name: (int(row.invocations), float(row.wall_ms))
                for row in connection.execute(statement)
            }

    def find_target(self, target_id: str) -> Session | LLMCall | None:
        with self._connect() as connection:
            row = connection.execute(select(sessions).where(sessions.c.id == target_id)).first()
            if row is not None:
                return session_from_row(row)
            row = connection.execute(
                select(llm_calls).where(llm_calls.c.id == target_id).order_by(llm_calls.c.timestamp)
            ).first()
        return None if row is None else call_from_row(row)

    def iter_scores(self, where: ScoreFilter, batch_size: int = 1_000) -> Iterator[list[Score]]:
        statement = scores_where(select(scores), where)
        for rows in self._pages(statement, scores.c.created_at, scores.c.id, batch_size):
            yield [score_from_row(row) for row in rows]

    def query_scores(
        self, where: ScoreFilter, limit: int | None = None, offset: int = 0
    ) -> list[Score]:
        statement = scores_where(select(scores), where).order_by(scores.c.created_at, scores.c.id)
        if limit is not None:
            statement = statement.limit(limit)
        if offset:
            statement = statement.offset(offset)
        with self._connect() as connection:
            return [score_from_row(row) for row in connection.execute(statement)]

    def aggregate_scores(
        self, where: ScoreFilter, group_by: Sequence[ScoreGroup] = ("name",)
    ) -> list[ScoreAggregate]:
        keys: list[ColumnElement[Any]] = []
        statement = select()
        for key in group_by:
            if key == "variant":
                assigned = json_pairs(scores.c.experiments, self.engine.dialect.name)
                statement = statement.select_from(scores).join(assigned, true())
                keys += [assigned.c.key.label("experiment"), assigned.c.value.label("variant")]
            else:
                keys.append(scores.c[key].label(key))
                if key != "name":
                    statement = statement.where(scores.c.call_id.is_not(None))
        statement = scores_where(
            statement.add_columns(
                *keys, func.count().label("count"), func.sum(scores.c.value).label("total")
            ),
            where,
        )
        if keys:
            statement = statement.group_by(*keys).order_by(*keys)
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        names = [key.name for key in keys]
        return [
            ScoreAggregate(
                group={name: getattr(row, name) for name in names},
                count=int(row.count),
                total=float(row.total),
            )
            for row in rows
            if row.count
        ]

    def experiment_sessions(
        self,
        experiment: str,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, str]:
        assigned = json_pairs(sessions.c.experiments, self.engine.dialect.name)
        statement = sessions_where(
            select(sessions.c.id, assigned.c.value)
            .select_from(sessions)
            .join(assigned, true())
            .where(assigned.c.key == experiment),
            project,
            since,
            until,
        )
        with self._connect() as connection:
            return {row[0]: row[1] for row in connection.execute(statement)}

    def experiment_variants(self, project: str | None = None) -> list[ExperimentVariant]:
        assigned = json_pairs(sessions.c.experiments, self.engine.dialect.name)
        statement = sessions_where(
            select(assigned.c.key, assigned.c.value, func.count())
            .select_from(sessions)
            .join(assigned, true())
            .group_by(assigned.c.key, assigned.c.value)
            .order_by(assigned.c.key, assigned.c.value),
            project,
            None,
            None,
        )
        with self._connect() as connection:
            return [
                ExperimentVariant(row[0], row[1], int(row[2]))
                for row in connection.execute(statement)
            ]

    def add_alert_event(self, event: AlertEvent) -> None:
        self._ensure_schema()
        with self.engine.begin() as connection:
            connection.execute(insert(alert_events), [alert_event_row(event)])

    def query_alert_events(
        self,
        since: datetime | None = None,
        name: str | None = None,
        project: str | None = None,
        limit: int = 100,
    ) -> list[AlertEvent]:
        column = alert_events.c
        statement = select(alert_events)
        if since is not None:
            statement = statement.where(column.fired_at >= since)
        if name is not None:
            statement = statement.where(column.alert_name == name)
        if project is not None:
            statement = statement.where(column.project_name == project)
        statement = statement.order_by(column.fired_at.desc(), column.alert_name).limit(limit)
        with self._connect() as connection:
            return [alert_event_from_row(row) for row in connection.execute(statement)]

    def latest_alert_events(self) -> list[AlertEvent]:
        column = alert_events.c
        newest = (
            select(column.alert_name, func.max(column.fired_at).label("fired_at"))
            .group_by(column.alert_name)
            .subquery()
        )
        statement = (
            select(alert_events)
            .join(
                newest,
                and_(
                    column.alert_name == newest.c.alert_name,
                    column.fired_at == newest.c.fired_at,
                ),
            )
            .order_by(column.alert_name, column.id)
        )
        with self._connect() as connection:
            found = {
                row.alert_name: alert_event_from_row(row) for row in connection.execute(statement)
            }
        return list(found.values())

    def close(self) -> None:
        self.engine.dispose()
