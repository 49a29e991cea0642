"""The built-in backend: SQLAlchemy 2.x Core on SQLite (default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    Float,
    Integer,
    Select,
    and_,
    case,
    cast,
    create_engine,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import TableValuedAlias

from obsdeco.alerts.events import AlertEvent
from obsdeco.models import (
    MAX_NAME_LENGTH,
    AgentSpan,
    LLMCall,
    ModelProvider,
    Score,
    Session,
    SessionRecord,
    SessionSummary,
)
from obsdeco.provider_names import MAX_PROVIDER_NAME, default_provider_name
from obsdeco.storage import rollups
from obsdeco.storage.base import (
    LONG_PROMPT_TOKENS,
    REPORT_GROUPS,
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
    SessionState,
    TransientStorageError,
    WriteBatch,
)
from obsdeco.storage.engines import is_sqlite, sqlite_engine
from obsdeco.storage.histogram import Histogram
from obsdeco.storage.schema import (
    UTCDateTime,
    agent_spans,
    alert_events,
    call_rollups,
    llm_calls,
    metadata,
    request_hashes,
    scores,
    sessions,
)
from obsdeco.storage.stored_calls import StoredCalls, insert_postgres, insert_sqlite

_SESSION_FIELDS = (
    "id",
    "project_name",
    "name",
    "parent_id",
    "started_at",
    "ended_at",
    "status",
    "error_type",
    "error_message",
    "metadata",
    "experiments",
)
_TOTAL_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
)


_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
"""SQLAlchemy's errors for a database that cannot be reached or used just now."""
_SCHEMA_LOCK = 0x6F6273646563  # "obsdec": the advisory lock key of schema changes


def _create_engine(url: str) -> Engine:
    if is_sqlite(url):
        return sqlite_engine(url, busy_timeout_ms=5_000, cache_kib=65_536)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


def _session_row(state: SessionState) -> dict[str, Any]:
    values = state.session.__dict__
    row = {name: values[name] for name in _SESSION_FIELDS}
    totals = state.totals
    if totals is None:
        return row
    row.update({name: getattr(totals, name) for name in _TOTAL_FIELDS})
    row["call_count"] = totals.calls
    row["total_latency_ms"] = totals.latency_ms
    row["error_count"] = totals.errors
    row["duration_ms"] = totals.duration_ms
    return row


def _call_from_row(row: Any) -> LLMCall:
    return _call_from_values(row._asdict())


def _calls_from_rows(rows: Sequence[Any]) -> list[LLMCall]:
    """`_call_from_row` of each row, the column names looked up once for all."""
    if not rows:
        return []
    names = rows[0]._fields
    return [_call_from_values(dict(zip(names, row, strict=True))) for row in rows]


def _call_from_values(values: dict[str, Any]) -> LLMCall:
    del values["repeated"]
    values["provider"] = ModelProvider(values["provider"])
    if values["provider_name"] is None:  # imported without one, rollups not yet rebuilt
        values["provider_name"] = default_provider_name(values["provider"])
    if values["experiments"] is None:  # none assigned, or stored by an earlier obsdeco
        values["experiments"] = {}
    return LLMCall.model_construct(**values)


def _session_from_row(row: Any) -> Session:
    values = {name: getattr(row, name) for name in _SESSION_FIELDS}
    if values["experiments"] is None:  # stored by an earlier obsdeco
        values["experiments"] = {}
    return Session.model_construct(**values)


def _summary_from_row(row: Any) -> SessionSummary:
    return SessionSummary(
        session=_session_from_row(row),
        calls=row.call_count,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        reasoning_tokens=row.reasoning_tokens,
        total_tokens=row.total_tokens,
        cost_usd=row.cost_usd,
        total_latency_ms=row.total_latency_ms,
        errors=row.error_count,
    )


_SPAN_FIELDS = tuple(column.name for column in agent_spans.columns)


def _score_from_row(row: Any) -> Score:
    return Score.model_construct(**row._asdict())


def _assignments(column: ColumnElement[Any], dialect: str) -> TableValuedAlias:
    """The (key, value) pairs of a JSON object column: experiment -> variant, one row each."""
    each = func.jsonb_each_text if dialect == "postgresql" else func.json_each
    return each(column).table_valued("key", "value").alias("assigned")


def _span_from_row(row: Any) -> AgentSpan:
    return AgentSpan.model_construct(**row._asdict())


class SQLAlchemyStorage:
    """Stores obsdeco records through SQLAlchemy; the schema is created on first use."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine if engine is not None else _create_engine(url)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        dialect = self.engine.dialect.name
        postgres = dialect == "postgresql"
        self._insert = postgresql.insert if postgres else sqlite.insert
        self._insert_calls = insert_postgres if postgres else insert_sqlite

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                with self._one_process_at_a_time():
                    self._create_schema()
                    self._upgrade()
                self._schema_ready = True

    @contextmanager
    def _one_process_at_a_time(self) -> Iterator[None]:
        """On PostgreSQL, hold an advisory lock while the schema is created or upgraded:
        processes creating tables and their indexes at once deadlock on each other's new
        tables (PostgreSQL then fails one, and counts a deadlock)."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})

    def _create_schema(self) -> None:
        """Create the missing tables. Another process creating them at the same moment makes an
        attempt fail on a table it has just made; each retry finds one more made."""
        attempts = len(metadata.tables) + sum(
            len(table.indexes) for table in metadata.tables.values()
        )
        for attempt in range(attempts + 1):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                return
            except DBAPIError:
                if attempt == attempts:
                    raise

    def _upgrade(self) -> None:
        """Bring a store written by an earlier obsdeco up to date: the columns added since, and
        rollups of the calls it already holds. Rollups without a dimension added since are
        dropped and rebuilt from the calls (their key changed)."""
        inspector = inspect(self.engine)
        columns = {column["name"] for column in inspector.get_columns("llm_calls")}
        session_columns = {column["name"] for column in inspector.get_columns("sessions")}
        json_type = "JSONB" if self.engine.dialect.name == "postgresql" else "JSON"
        rolled = {column["name"] for column in inspector.get_columns("call_rollups")}
        postgres = self.engine.dialect.name == "postgresql"  # SQLite's INTEGER holds 64 bits
        narrow = [
            (table.name, column["name"])
            for table in (llm_calls, sessions)
            for column in (inspector.get_columns(table.name) if postgres else [])
            if isinstance(column["type"], Integer)
            and not isinstance(column["type"], BigInteger)
            and isinstance(table.c[column["name"]].type, BigInteger)
        ]
        added = {
            "repeated": "BOOLEAN NOT NULL DEFAULT false",
            "prompt": "TEXT",
            "completion": "TEXT",
            "provider_name": f"VARCHAR({MAX_PROVIDER_NAME})",
            "cache_hit": "BOOLEAN",
            "requested_model": f"VARCHAR({MAX_NAME_LENGTH})",
            "routed_from": f"VARCHAR({MAX_NAME_LENGTH})",
            "shadow_model": f"VARCHAR({MAX_NAME_LENGTH})",
            "experiments": json_type,
        }
        with self.engine.begin() as connection:
            for name, definition in added.items():
                if name not in columns:
                    connection.execute(
                        text(f"ALTER TABLE llm_calls ADD COLUMN {name} {definition}")
                    )
            if "experiments" not in session_columns:
                connection.execute(text(f"ALTER TABLE sessions ADD COLUMN experiments {json_type}"))
            for table_name, column_name in narrow:  # 32-bit token counts (PostgreSQL)
                connection.execute(
                    text(f"ALTER TABLE {table_name} ALTER COLUMN {column_name} TYPE BIGINT")
                )
            if not set(REPORT_GROUPS) <= rolled:
                call_rollups.drop(connection)
                call_rollups.create(connection)
            unrolled = connection.execute(select(call_rollups.c.calls).limit(1)).first() is None
            if unrolled and connection.execute(select(llm_calls.c.id).limit(1)).first():
                rollups.rebuild(connection, self._insert)

    def rebuild_rollups(self) -> None:
        """Recompute repeats and hourly rollups from the stored calls: needed only after calls
        were inserted other than through obsdeco (a bulk import)."""
        self._ensure_schema()
        with self.engine.begin() as connection:
            rollups.rebuild(connection, self._insert)

    def _connect(self) -> Connection:
        self._ensure_schema()
        return self.engine.connect()

    # --- writing ---------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        try:
            self._write(batch)
        except _TRANSIENT as error:
            raise TransientStorageError(str(error)) from error

    def _write(self, batch: WriteBatch) -> None:
        self._ensure_schema()
        with self.engine.begin() as connection:
            if batch.sessions:
                self._upsert_sessions(connection, batch.sessions)
            if batch.calls:
                calls = StoredCalls(batch.calls)
                columns = calls.columns
                calls.mark_repeated(
                    rollups.mark_repeats(
                        connection,
                        columns["project_name"],
                        columns["request_hash"],
                        columns["success"],
                    )
                )
                self._insert_calls(connection, calls)
                sums: dict[rollups.RollupKey, Any] = {}
                rollups.accumulate(sums, columns)
                rollups.add(connection, self._insert, sums)
            if batch.spans:
                connection.execute(insert(agent_spans), [span.model_dump() for span in batch.spans])
            if batch.scores:
                connection.execute(insert(scores), [score.model_dump() for score in batch.scores])

    def _upsert_sessions(self, connection: Connection, states: list[SessionState]) -> None:
        latest = {state.session.id: state for state in states}
        started = [_session_row(s) for s in latest.values() if s.totals is None]
        ended = [_session_row(s) for s in latest.values() if s.totals is not None]
        for rows in (started, ended):
            if not rows:
                continue
            statement = self._insert(sessions)
            updated = {name: statement.excluded[name] for name in rows[0] if name != "id"}
            connection.execute(
                statement.on_conflict_do_update(index_elements=["id"], set_=updated), rows
            )

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
            session=_session_from_row(row),
            calls=[_call_from_row(call) for call in calls],
            spans=[_span_from_row(span) for span in spans],
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
            _sessions_filtered(select(sessions), project, since, until, search, model, agent)
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
        return [_summary_from_row(row) for row in rows]

    def query_calls(
        self, where: CallFilter, limit: int | None = None, offset: int = 0
    ) -> list[LLMCall]:
        statement = _filtered(select(llm_calls), where).order_by(
            llm_calls.c.timestamp, llm_calls.c.id
        )
        if limit is not None:
            statement = statement.limit(limit)
        if offset:
            statement = statement.offset(offset)
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        return [_call_from_row(row) for row in rows]

    def iter_calls(self, where: CallFilter, batch_size: int = 1_000) -> Iterator[list[LLMCall]]:
        statement = _filtered(select(llm_calls), where)
        for rows in self._pages(statement, llm_calls.c.timestamp, llm_calls.c.id, batch_size):
            yield _calls_from_rows(rows)

    def iter_sessions(
        self, where: SessionFilter, batch_size: int = 1_000
    ) -> Iterator[list[SessionSummary]]:
        statement = _sessions_filtered(
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
            yield [_summary_from_row(row) for row in rows]

    def iter_spans(
        self, where: SessionFilter, batch_size: int = 1_000
    ) -> Iterator[list[ProjectSpan]]:
        spans = agent_spans.c
        statement = _sessions_filtered(
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
                ProjectSpan(
                    span=AgentSpan.model_construct(
                        **{name: getattr(row, name) for name in _SPAN_FIELDS}
                    ),
                    project_name=row.project_name,
                )
                for row in rows
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
        parts = _rolled_up_parts(where, group_by)
        if parts is None:
            found = self._aggregate_raw(where, group_by)
        else:
            hours, edges = parts
            found = self._aggregate_rollups(where, hours, group_by)
            for edge in edges:
                found += self._aggregate_raw(edge, group_by)
            found = _merged(found, group_by)
        return [row for row in found if row.calls >= min_calls]

    def _aggregate_raw(
        self, where: CallFilter, group_by: Sequence[GroupKey]
    ) -> list[CallAggregate]:
        keys = [_group_column(key).label(key) for key in group_by]
        calls = llm_calls.c
        rate_limited = or_(
            and_(calls.success.is_(False), calls.error_type == "rate_limit"),
            calls.rate_limited_retries > 0,
        )
        statement = _filtered(
            select(
                *keys,
                func.count().label("calls"),
                func.count().filter(calls.success.is_(False)).label("errors"),
                *(func.coalesce(func.sum(calls[name]), 0).label(name) for name in _SUMMED),
                func.max(calls.prompt_tokens).label("largest_prompt"),
                func.count().filter(rate_limited).label("rate_limited_calls"),
            ),
            where,
        )
        if keys:
            statement = statement.group_by(*keys).order_by(*keys)
        return self._aggregates(statement, group_by)

    def _aggregate_rollups(
        self, where: CallFilter, hours: _Hours, group_by: Sequence[GroupKey]
    ) -> list[CallAggregate]:
        keys = [call_rollups.c[key].label(key) for key in group_by]
        rolled = call_rollups.c
        statement = _hours_filtered(
            select(
                *keys,
                func.sum(rolled.calls).label("calls"),
                func.coalesce(func.sum(rolled.calls).filter(rolled.success.is_(False)), 0).label(
                    "errors"
                ),
                *(func.sum(rolled[name]).label(name) for name in _SUMMED),
                func.max(rolled.largest_prompt_tokens).label("largest_prompt"),
                func.sum(rolled.rate_limited_calls).label("rate_limited_calls"),
            ),
            where,
            hours,
        )
        if keys:
            statement = statement.group_by(*keys)
        return self._aggregates(statement, group_by)

    def _aggregates(
        self, statement: Select[Any], group_by: Sequence[GroupKey]
    ) -> list[CallAggregate]:
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        return [
            CallAggregate(
                group={key: _group_value(key, getattr(row, key)) for key in group_by},
                calls=int(row.calls),
                errors=int(row.errors),
                prompt_tokens=int(row.prompt_tokens),
                completion_tokens=int(row.completion_tokens),
                cached_tokens=int(row.cached_tokens),
                cache_creation_tokens=int(row.cache_creation_tokens),
                reasoning_tokens=int(row.reasoning_tokens),
                total_latency_ms=float(row.latency_ms),
                largest_prompt_tokens=int(row.largest_prompt or 0),
                retries=int(row.retries),
                rate_limited_retries=int(row.rate_limited_retries),
                rate_limited_calls=int(row.rate_limited_calls),
            )
            for row in rows
            if row.calls
        ]

    def quantiles(
        self,
        where: CallFilter,
        column: Literal["latency_ms", "time_to_first_token_ms"],
        quantiles: Sequence[float],
        groupings: Sequence[GroupKey | None] = (None,),
    ) -> dict[GroupKey | None, dict[str | None, Quantiles]]:
        rollup_keys = tuple(key for key in groupings if key is not None)
        parts = _rolled_up_parts(where, rollup_keys)
        if parts is not None:
            histograms = self._histograms(where, column, groupings, *parts)
            if sum(count for count, _, _ in histograms[groupings[0]].values()) > (
                rollups.EXACT_PERCENTILES_UP_TO
            ):
                return {
                    grouping: _estimated(found, quantiles) for grouping, found in histograms.items()
                }
        return {
            grouping: self._exact_quantiles(where, column, quantiles, grouping)
            for grouping in groupings
        }

    def _histograms(
        self,
        where: CallFilter,
        column: Literal["latency_ms", "time_to_first_token_ms"],
        groupings: Sequence[GroupKey | None],
        hours: _Hours,
        edges: list[CallFilter],
    ) -> dict[GroupKey | None, dict[Any, tuple[int, float, Histogram]]]:
        """Per grouping and group: the count, the sum and the histogram of `column`."""
        rolled = call_rollups.c
        if column == "latency_ms":
            count, total, encoded = rolled.calls, rolled.latency_ms, rolled.latency_histogram
        else:
            count, total = rolled.first_token_calls, rolled.first_token_ms
            encoded = rolled.first_token_histogram
        keys = [key for key in groupings if key is not None]
        combined: dict[tuple[Any, ...], tuple[int, float, Histogram]] = {}

        def add(names: tuple[Any, ...], calls: int, summed: float, values: Any) -> None:
            known = combined.get(names) or (0, 0.0, Histogram())
            if isinstance(values, bytes):
                known[2].add_encoded(values)
            else:
                known[2].add_values(values)
            combined[names] = (known[0] + calls, known[1] + summed, known[2])

        statement = _hours_filtered(
            select(*(rolled[key] for key in keys), count, total, encoded).where(count > 0),
            where,
            hours,
        )
        with self._connect() as connection:
            for row in connection.execute(statement):
                add(tuple(row[:-3]), row[-3], row[-2], row[-1])
            values = llm_calls.c[column]
            for edge in edges:
                grouped: dict[tuple[Any, ...], list[float]] = {}
                statement = _filtered(
                    select(*(_rollup_value(key) for key in keys), values).where(
                        values.is_not(None)
                    ),
                    edge,
                )
                for row in connection.execute(statement):
                    grouped.setdefault(tuple(row[:-1]), []).append(row[-1])
                for names, edge_values in grouped.items():
                    add(names, len(edge_values), sum(edge_values), edge_values)
        found: dict[GroupKey | None, dict[Any, tuple[int, float, Histogram]]] = {}
        for grouping in groupings:
            merged = found[grouping] = {}
            for names, (calls, summed, histogram) in combined.items():
                name = (
                    None
                    if grouping is None
                    else _group_value(grouping, names[keys.index(grouping)])
                )
                known = merged.get(name) or (0, 0.0, Histogram())
                known[2].merge(histogram)
                merged[name] = (known[0] + calls, known[1] + summed, known[2])
        return found

    def _exact_quantiles(
        self,
        where: CallFilter,
        column: Literal["latency_ms", "time_to_first_token_ms"],
        quantiles: Sequence[float],
        group_by: GroupKey | None = None,
    ) -> dict[str | None, Quantiles]:
        values = llm_calls.c[column]
        keys = [] if group_by is None else [_group_column(group_by).label("group_key")]
        if self.engine.dialect.name == "postgresql":
            statement = _filtered(
                select(
                    *keys,
                    func.count(values).label("count"),
                    func.avg(values).label("mean"),
                    *(
                        func.percentile_cont(q).within_group(values).label(f"q{index}")
                        for index, q in enumerate(quantiles)
                    ),
                ).where(values.is_not(None)),
                where,
            )
            if keys:
                statement = statement.group_by(*keys)
            with self._connect() as connection:
                rows = connection.execute(statement).all()
            return {
                (row.group_key if keys else None): Quantiles(
                    row.count,
                    float(row.mean),
                    [float(getattr(row, f"q{index}")) for index in range(len(quantiles))],
                )
                for row in rows
                if row.count
            }
        # SQLite has no percentile aggregate: read the one column and let numpy compute.
        statement = _filtered(select(*keys, values).where(values.is_not(None)), where)
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        grouped: dict[str | None, list[float]] = {}
        for row in rows:
            grouped.setdefault(row[0] if keys else None, []).append(row[-1])
        percents = [q * 100 for q in quantiles]
        return {
            key: Quantiles(
                len(found), float(np.mean(found)), np.percentile(found, percents).tolist()
            )
            for key, found in grouped.items()
        }

    def count_sessions(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: str | None = None,
        model: str | None = None,
        agent: str | None = None,
    ) -> int:
        statement = _sessions_filtered(
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
            duration = _sqlite_milliseconds(spans.ended_at) - _sqlite_milliseconds(spans.started_at)
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
                return _session_from_row(row)
            row = connection.execute(select(llm_calls).where(llm_calls.c.id == target_id)).first()
        return None if row is None else _call_from_row(row)

    def iter_scores(self, where: ScoreFilter, batch_size: int = 1_000) -> Iterator[list[Score]]:
        statement = self._scores_filtered(select(scores), where)
        for rows in self._pages(statement, scores.c.created_at, scores.c.id, batch_size):
            yield [_score_from_row(row) for row in rows]

    def query_scores(
        self, where: ScoreFilter, limit: int | None = None, offset: int = 0
    ) -> list[Score]:
        statement = self._scores_filtered(select(scores), where).order_by(
            scores.c.created_at, scores.c.id
        )
        if limit is not None:
            statement = statement.limit(limit)
        if offset:
            statement = statement.offset(offset)
        with self._connect() as connection:
            return [_score_from_row(row) for row in connection.execute(statement)]

    def aggregate_scores(
        self, where: ScoreFilter, group_by: Sequence[ScoreGroup] = ("name",)
    ) -> list[ScoreAggregate]:
        keys: list[ColumnElement[Any]] = []
        statement = select()
        for key in group_by:
            if key == "variant":
                assigned = _assignments(scores.c.experiments, self.engine.dialect.name)
                statement = statement.select_from(scores).join(assigned, true())
                keys += [assigned.c.key.label("experiment"), assigned.c.value.label("variant")]
            else:
                keys.append(scores.c[key].label(key))
                if key != "name":
                    statement = statement.where(scores.c.call_id.is_not(None))
        statement = self._scores_filtered(
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

    def _scores_filtered(self, statement: Select[Any], where: ScoreFilter) -> Select[Any]:
        column = scores.c
        for name, value in (
            ("project_name", where.project),
            ("target_id", where.target_id),
            ("session_id", where.session_id),
            ("name", where.name),
            ("model", where.model),
            ("agent_name", where.agent),
        ):
            if value is not None:
                statement = statement.where(column[name] == value)
        if where.since is not None:
            statement = statement.where(column.created_at >= where.since)
        if where.until is not None:
            statement = statement.where(column.created_at < where.until)
        if where.experiment is not None:
            statement = statement.where(_HasKey(column.experiments, where.experiment))
        return statement

    def experiment_sessions(
        self,
        experiment: str,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, str]:
        assigned = _assignments(sessions.c.experiments, self.engine.dialect.name)
        statement = _sessions_filtered(
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
        assigned = _assignments(sessions.c.experiments, self.engine.dialect.name)
        statement = _sessions_filtered(
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
            connection.execute(insert(alert_events), [_alert_event_row(event)])

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
            return [_alert_event_from_row(row) for row in connection.execute(statement)]

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
                row.alert_name: _alert_event_from_row(row) for row in connection.execute(statement)
            }
        return list(found.values())

    def close(self) -> None:
        self.engine.dispose()


def _alert_event_row(event: AlertEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "alert_name": event.alert,
        "metric": event.metric,
        "state": event.state,
        "value": event.value,
        "threshold": event.threshold,
        "direction": event.direction,
        "time_window": event.window,
        "project_name": event.project,
        "budget_name": event.budget,
        "fired_at": event.fired_at,
    }


def _alert_event_from_row(row: Any) -> AlertEvent:
    return AlertEvent(
        id=row.id,
        alert=row.alert_name,
        metric=row.metric,
        state=row.state,
        value=row.value,
        threshold=row.threshold,
        direction=row.direction,
        window=row.time_window,
        project=row.project_name,
        budget=row.budget_name,
        fired_at=row.fired_at,
    )


def _group_value(key: GroupKey, value: Any) -> Any:
    """Booleans come back as 0/1 from SQLite; rollups keep a missing name as '' and
    `cache_hit` as text."""
    if key in ("success", "tokens_known", "long_prompt", "repeated"):
        return bool(value)
    if key == "cache_hit":
        if isinstance(value, str):
            return rollups.CACHE_HIT_OF_TEXT[value]
        return None if value is None else bool(value)
    if key in rollups.OPTIONAL_TEXT and value == "":
        return None
    return value


_SUMMED = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "latency_ms",
    "retries",
    "rate_limited_retries",
)


@dataclass(frozen=True, slots=True)
class _Hours:
    """Whole hours [first, end) of a range, read from the rollups; None is unbounded."""

    first: datetime | None
    end: datetime | None


def _rolled_up_parts(
    where: CallFilter, group_by: Sequence[GroupKey]
) -> tuple[_Hours, list[CallFilter]] | None:
    """The whole hours the rollups answer for `where` and the partial hours at its edges, read
    from the calls; None when the rollups cannot answer (a session, or a key they do not keep).
    """
    if where.session_id is not None or where.repeated is not None or where.experiment is not None:
        return None
    if not set(group_by) <= {*REPORT_GROUPS, "hour"}:
        return None
    first = None if where.since is None else _hour_at_or_after(where.since)
    end = None if where.until is None else rollups.hour_of(where.until)
    if first is not None and end is not None and first >= end:
        return None
    edges = []
    if where.since is not None and first is not None and where.since < first:
        edges.append(replace(where, until=first))
    if where.until is not None and end is not None and end < where.until:
        edges.append(replace(where, since=end))
    return _Hours(first, end), edges


def _hour_at_or_after(moment: datetime) -> datetime:
    hour = rollups.hour_of(moment)
    return hour if hour == moment else hour + timedelta(hours=1)


def _hours_filtered(statement: Select[Any], where: CallFilter, hours: _Hours) -> Select[Any]:
    if where.project is not None:
        statement = statement.where(call_rollups.c.project_name == where.project)
    if where.model is not None:
        statement = statement.where(call_rollups.c.model == where.model)
    if where.agent is not None:
        statement = statement.where(call_rollups.c.agent_name == where.agent)
    if hours.first is not None:
        statement = statement.where(call_rollups.c.hour >= hours.first)
    if hours.end is not None:
        statement = statement.where(call_rollups.c.hour < hours.end)
    return statement


def _merged(found: list[CallAggregate], group_by: Sequence[GroupKey]) -> list[CallAggregate]:
    """One aggregate per group from the rollups' and the edges' aggregates of it."""
    merged: dict[tuple[Any, ...], CallAggregate] = {}
    for row in found:
        key = tuple(row.group[name] for name in group_by)
        known = merged.get(key)
        if known is None:
            merged[key] = row
            continue
        merged[key] = replace(
            known,
            **{name: getattr(known, name) + getattr(row, name) for name in _AGGREGATE_SUMS},
            largest_prompt_tokens=max(known.largest_prompt_tokens, row.largest_prompt_tokens),
        )
    return [merged[key] for key in sorted(merged, key=_none_first)]


_AGGREGATE_SUMS = (
    "calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "total_latency_ms",
    "retries",
    "rate_limited_retries",
    "rate_limited_calls",
)


def _none_first(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((value is not None, value) for value in key)


def _estimated(
    histograms: dict[Any, tuple[int, float, Histogram]], quantiles: Sequence[float]
) -> dict[str | None, Quantiles]:
    estimated = {}
    for name, (count, total, found) in histograms.items():
        if count:
            estimated[name] = Quantiles(
                count, total / count, found.percentiles(quantiles), exact=False
            )
    return estimated


def _rollup_value(key: GroupKey) -> ColumnElement[Any]:
    """A call's value of `key` as its rollup row holds it."""
    if key in rollups.OPTIONAL_TEXT:
        return func.coalesce(llm_calls.c[key], "")
    if key == "cache_hit":
        hit = llm_calls.c.cache_hit
        return case(
            (hit.is_(True), rollups.CACHE_HIT_TEXT[True]),
            (hit.is_(False), rollups.CACHE_HIT_TEXT[False]),
            else_=rollups.CACHE_HIT_TEXT[None],
        )
    return _group_column(key)


def _sqlite_milliseconds(moment: ColumnElement[Any]) -> ColumnElement[float]:
    """Milliseconds since the epoch of SQLite's "YYYY-MM-DD HH:MM:SS.ffffff" text, to the
    microsecond (julianday() keeps only milliseconds)."""
    seconds = cast(func.strftime("%s", moment), Float)
    fraction = cast(func.substr(moment, 20), Float)
    return (seconds + fraction) * 1000.0


class _UTCHour(FunctionElement[datetime]):
    """The UTC hour a timestamp falls in."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(_UTCHour, "sqlite")
def _utc_hour_sqlite(element: _UTCHour, compiler: Any, **kw: Any) -> str:
    # SQLite keeps naive UTC text "YYYY-MM-DD HH:MM:SS.ffffff".
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 13) || ':00:00.000000'"


@compiles(_UTCHour, "postgresql")
def _utc_hour_postgresql(element: _UTCHour, compiler: Any, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    return f"(date_trunc('hour', {moment} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


class _HasKey(FunctionElement[bool]):
    """Whether a JSON object column (NULL: none) has a key: `_HasKey(column, key)`."""

    type = Boolean()
    inherit_cache = True


@compiles(_HasKey, "sqlite")
def _has_key_sqlite(element: _HasKey, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.key = {key})"


@compiles(_HasKey, "postgresql")
def _has_key_postgresql(element: _HasKey, compiler: Any, **kw: Any) -> str:
    column, key = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"coalesce(jsonb_exists({column}, {key}), false)"


def _group_column(key: GroupKey) -> ColumnElement[Any]:
    if key == "hour":
        return _UTCHour(llm_calls.c.timestamp)
    if key == "model":
        return func.coalesce(llm_calls.c.response_model, llm_calls.c.model)
    if key == "requested_model":
        return llm_calls.c.model
    if key == "tokens_known":
        return and_(
            llm_calls.c.prompt_tokens.is_not(None), llm_calls.c.completion_tokens.is_not(None)
        )
    if key == "long_prompt":
        return func.coalesce(llm_calls.c.prompt_tokens, 0) >= LONG_PROMPT_TOKENS
    return llm_calls.c[key]


def _sessions_filtered(
    statement: Select[Any],
    project: str | None,
    since: datetime | None,
    until: datetime | None,
    search: str | None = None,
    model: str | None = None,
    agent: str | None = None,
) -> Select[Any]:
    if model is not None or agent is not None:
        made = _filtered(
            select(llm_calls.c.id).where(llm_calls.c.session_id == sessions.c.id),
            CallFilter(model=model, agent=agent),
        )
        statement = statement.where(made.exists())
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(
            or_(
                sessions.c.name.ilike(pattern, escape="\\"),
                sessions.c.id.ilike(pattern, escape="\\"),
            )
        )
    if project is not None:
        statement = statement.where(sessions.c.project_name == project)
    if since is not None:
        statement = statement.where(sessions.c.started_at >= since)
    if until is not None:
        statement = statement.where(sessions.c.started_at < until)
    return statement


def _filtered(statement: Select[Any], where: CallFilter) -> Select[Any]:
    if where.project is not None:
        statement = statement.where(llm_calls.c.project_name == where.project)
    if where.session_id is not None:
        statement = statement.where(llm_calls.c.session_id == where.session_id)
    if where.since is not None:
        statement = statement.where(llm_calls.c.timestamp >= where.since)
    if where.until is not None:
        statement = statement.where(llm_calls.c.timestamp < where.until)
    if where.repeated is not None:
        statement = statement.where(llm_calls.c.repeated.is_(where.repeated))
    if where.model is not None:
        statement = statement.where(_group_column("model") == where.model)
    if where.agent is not None:
        statement = statement.where(llm_calls.c.agent_name == where.agent)
    if where.experiment is not None:
        statement = statement.where(_HasKey(llm_calls.c.experiments, where.experiment))
    return statement
