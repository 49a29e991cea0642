"""The built-in backend: SQLAlchemy 2.x Core on SQLite (default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from obsdeco.models import AgentSpan, LLMCall, ModelProvider, Session, SessionRecord, SessionSummary
from obsdeco.storage.base import (
    LONG_PROMPT_TOKENS,
    CallAggregate,
    CallFilter,
    GroupKey,
    Quantiles,
    SessionState,
    WriteBatch,
)
from obsdeco.storage.schema import agent_spans, llm_calls, metadata, sessions

_CALL_COLUMNS = tuple(column.name for column in llm_calls.columns)
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
)
_TOTAL_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_usd",
)


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    in_memory = parsed.database in (None, "", ":memory:")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        poolclass=StaticPool if in_memory else None,
    )

    @event.listens_for(engine, "connect")
    def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.close()

    return engine


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, default=str) if value else "{}"


def _sqlite_time(value: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME stores (naive UTC, always with microseconds)."""
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


_call_values = itemgetter(*_CALL_COLUMNS)
_TIMESTAMP = _CALL_COLUMNS.index("timestamp")
_PROVIDER = _CALL_COLUMNS.index("provider")
_METADATA = _CALL_COLUMNS.index("metadata")


def _call_row(call: LLMCall, encode_time: Callable[[datetime], Any]) -> list[Any]:
    """The call's column values in table order, encoded for the driver."""
    values = list(_call_values(call.__dict__))
    values[_TIMESTAMP] = encode_time(values[_TIMESTAMP])
    values[_PROVIDER] = values[_PROVIDER].value
    values[_METADATA] = _json_text(values[_METADATA])
    return values


def _insert_calls_sqlite(connection: Connection, calls: list[LLMCall]) -> None:
    """Multi-row INSERTs, as many rows per statement as SQLite's variable limit allows.

    One statement per chunk (rather than executemany) runs in a single sqlite3_step, so the
    driver releases the GIL once per chunk instead of once per row.
    """
    driver_connection = connection.connection.driver_connection
    limit = driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    width = len(_CALL_COLUMNS)
    per_statement = max(1, limit // width)
    cursor = driver_connection.cursor()
    try:
        for start in range(0, len(calls), per_statement):
            chunk = calls[start : start + per_statement]
            values: list[Any] = []
            for call in chunk:
                values.extend(_call_values(call.__dict__))
            for row in range(0, len(values), width):
                values[row + _TIMESTAMP] = _sqlite_time(values[row + _TIMESTAMP])
                values[row + _PROVIDER] = values[row + _PROVIDER].value
                values[row + _METADATA] = _json_text(values[row + _METADATA])
            cursor.execute(_sqlite_insert_sql(len(chunk)), values)
    finally:
        cursor.close()


@lru_cache(maxsize=8)
def _sqlite_insert_sql(rows: int) -> str:
    row = f"({', '.join('?' * len(_CALL_COLUMNS))})"
    return f"INSERT INTO llm_calls ({', '.join(_CALL_COLUMNS)}) VALUES {', '.join([row] * rows)}"


def _insert_calls_postgres(connection: Connection, calls: list[LLMCall]) -> None:
    """COPY: PostgreSQL's bulk path, inside the batch's transaction."""
    driver_connection = connection.connection.driver_connection
    with (
        driver_connection.cursor() as cursor,
        cursor.copy(f"COPY llm_calls ({', '.join(_CALL_COLUMNS)}) FROM STDIN") as copy,
    ):
        for call in calls:
            copy.write_row(_call_row(call, _unchanged))


def _unchanged(value: datetime) -> datetime:
    return value


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
    values = row._asdict()
    values["provider"] = ModelProvider(values["provider"])
    return LLMCall.model_construct(**values)


def _session_from_row(row: Any) -> Session:
    return Session.model_construct(**{name: getattr(row, name) for name in _SESSION_FIELDS})


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
        self._insert_calls = _insert_calls_postgres if postgres else _insert_calls_sqlite

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                metadata.create_all(self.engine, checkfirst=True)
                self._schema_ready = True

    def _connect(self) -> Connection:
        self._ensure_schema()
        return self.engine.connect()

    # --- writing ---------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        self._ensure_schema()
        with self.engine.begin() as connection:
            if batch.sessions:
                self._upsert_sessions(connection, batch.sessions)
            if batch.calls:
                self._insert_calls(connection, batch.calls)
            if batch.spans:
                connection.execute(insert(agent_spans), [span.model_dump() for span in batch.spans])

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
    ) -> list[SessionSummary]:
        statement = (
            _sessions_filtered(select(sessions), project, since, until)
            .order_by(sessions.c.started_at.desc(), sessions.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        return [
            SessionSummary(
                session=_session_from_row(row),
                calls=row.call_count,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                total_tokens=row.total_tokens,
                cost_usd=row.cost_usd,
                total_latency_ms=row.total_latency_ms,
                errors=row.error_count,
            )
            for row in rows
        ]

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

    def aggregate_calls(
        self, where: CallFilter, group_by: Sequence[GroupKey] = (), min_calls: int = 1
    ) -> list[CallAggregate]:
        keys = [_group_column(key).label(key) for key in group_by]
        sums = [
            func.count().label("calls"),
            func.count().filter(llm_calls.c.success.is_(False)).label("errors"),
            *(
                func.coalesce(func.sum(llm_calls.c[name]), 0).label(name)
                for name in (
                    "prompt_tokens",
                    "completion_tokens",
                    "cached_tokens",
                    "cache_creation_tokens",
                    "reasoning_tokens",
                    "latency_ms",
                    "retries",
                    "rate_limited_retries",
                )
            ),
            func.max(llm_calls.c.prompt_tokens).label("largest_prompt"),
            func.count()
            .filter(
                or_(
                    and_(llm_calls.c.success.is_(False), llm_calls.c.error_type == "rate_limit"),
                    llm_calls.c.rate_limited_retries > 0,
                )
            )
            .label("rate_limited_calls"),
        ]
        statement = _filtered(select(*keys, *sums), where)
        if keys:
            statement = statement.group_by(*keys).order_by(*keys)
        if min_calls > 1:
            statement = statement.having(func.count() >= min_calls)
        with self._connect() as connection:
            rows = connection.execute(statement).all()
        return [
            CallAggregate(
                group={key: _group_value(key, getattr(row, key)) for key in group_by},
                calls=row.calls,
                errors=row.errors,
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
    ) -> int:
        statement = _sessions_filtered(
            select(func.count()).select_from(sessions), project, since, until
        )
        with self._connect() as connection:
            return int(connection.execute(statement).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def _group_value(key: GroupKey, value: Any) -> Any:
    """Booleans come back as 0/1 from SQLite."""
    if key in ("success", "tokens_known", "long_prompt"):
        return bool(value)
    return value


def _group_column(key: GroupKey) -> ColumnElement[Any]:
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
    statement: Select[Any], project: str | None, since: datetime | None, until: datetime | None
) -> Select[Any]:
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
    return statement
