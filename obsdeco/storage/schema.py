"""The one definition of obsdeco's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: obsdeco stores timezone-aware UTC times")
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONDocument = JSON().with_variant(JSONB(), "postgresql")
ID = String(32)

metadata = MetaData()

sessions = Table(
    "sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_name", String(200), nullable=False),
    Column("name", String(200)),
    Column("parent_id", ID),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("error_type", String(200)),
    Column("error_message", Text),
    Column("metadata", JSONDocument, nullable=False),
    Column("call_count", Integer, nullable=False, default=0),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("total_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float),
    Column("total_latency_ms", Float, nullable=False, default=0.0),
    Column("error_count", Integer, nullable=False, default=0),
    Column("duration_ms", Float),
    Index("ix_sessions_project_started", "project_name", "started_at"),
    Index("ix_sessions_started", "started_at"),
)

llm_calls = Table(
    "llm_calls",
    metadata,
    Column("id", ID, primary_key=True),
    Column("session_id", ID, nullable=False),
    Column("project_name", String(200), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("provider", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("response_model", String(200)),
    Column("api", String(64)),
    Column("agent_name", String(200)),
    Column("operation", String(200)),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("cached_tokens", Integer),
    Column("cache_creation_tokens", Integer),
    Column("reasoning_tokens", Integer),
    Column("latency_ms", Float, nullable=False),
    Column("time_to_first_token_ms", Float),
    Column("streamed", Boolean, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("error_type", String(200)),
    Column("error_message", Text),
    Column("finish_reason", String(64)),
    Column("tool_call_count", Integer),
    Column("retries", Integer, nullable=False, default=0),
    Column("rate_limited_retries", Integer, nullable=False, default=0),
    Column("request_hash", String(64)),
    Column("metadata", JSONDocument, nullable=False),
    Index("ix_llm_calls_session", "session_id", "timestamp"),
    Index("ix_llm_calls_project_timestamp", "project_name", "timestamp"),
    Index("ix_llm_calls_timestamp", "timestamp"),
)

agent_spans = Table(
    "agent_spans",
    metadata,
    Column("id", ID, primary_key=True),
    Column("session_id", ID, nullable=False),
    Column("parent_id", ID),
    Column("agent_name", String(200), nullable=False),
    Column("operation", String(200)),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("error_type", String(200)),
    Index("ix_agent_spans_session", "session_id", "started_at"),
)
