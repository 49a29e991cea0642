"""The one definition of obsdeco's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from obsdeco.models import MAX_CODE_LENGTH, MAX_ID_LENGTH, MAX_NAME_LENGTH
from obsdeco.provider_names import MAX_PROVIDER_NAME
from obsdeco.storage.base import REPORT_GROUPS


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
ID = String(MAX_ID_LENGTH)
NAME = String(MAX_NAME_LENGTH)
CODE = String(MAX_CODE_LENGTH)

metadata = MetaData()

sessions = Table(
    "sessions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("project_name", NAME, nullable=False),
    Column("name", NAME),
    Column("parent_id", ID),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("error_type", NAME),
    Column("error_message", Text),
    Column("metadata", JSONDocument, nullable=False),
    Column("experiments", JSONDocument, comment="experiment -> variant; NULL in earlier rows"),
    Column("call_count", Integer, nullable=False, default=0),
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("reasoning_tokens", BigInteger, nullable=False, default=0),
    Column("total_tokens", BigInteger, nullable=False, default=0),
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
    Column("project_name", NAME, nullable=False),
    Column(
        "timestamp", UTCDateTime, primary_key=True, comment="partitions by UTC day (PostgreSQL)"
    ),
    Column("provider", String(32), nullable=False),
    Column(
        "provider_name",
        String(MAX_PROVIDER_NAME),
        comment="the service that answered; NULL only in rows stored without it (by an earlier "
        "obsdeco, or imported), filled from provider when the rollups are rebuilt",
    ),
    Column("model", NAME, nullable=False),
    Column("response_model", NAME),
    Column("api", CODE),
    Column("agent_name", NAME),
    Column("operation", NAME),
    Column("prompt_tokens", BigInteger),
    Column("completion_tokens", BigInteger),
    Column("cached_tokens", BigInteger),
    Column("cache_creation_tokens", BigInteger),
    Column("reasoning_tokens", BigInteger),
    Column("latency_ms", Float, nullable=False),
    Column("time_to_first_token_ms", Float),
    Column("streamed", Boolean, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("error_type", NAME),
    Column("error_message", Text),
    Column("finish_reason", CODE),
    Column("tool_call_count", Integer),
    Column("retries", Integer, nullable=False, default=0),
    Column("rate_limited_retries", Integer, nullable=False, default=0),
    Column("request_hash", CODE),
    Column(
        "repeated",
        Boolean,
        nullable=False,
        default=False,
        server_default=false(),
        comment="an identical successful request was stored earlier in the project",
    ),
    Column("cache_hit", Boolean, comment="None: made outside obsdeco.cache()"),
    Column("requested_model", NAME, comment="what the code asked for, when the router changed it"),
    Column("routed_from", NAME),
    Column("shadow_model", NAME),
    Column("experiments", JSONDocument, comment="the session's assignments when recorded"),
    Column("metadata", JSONDocument, nullable=False),
    Column("prompt", Text, comment="captured only with capture_content; scrubbed, maybe encrypted"),
    Column("completion", Text, comment="captured only with capture_content"),
    Index("ix_llm_calls_session", "session_id", "timestamp"),
    Index("ix_llm_calls_project_timestamp", "project_name", "timestamp"),
    Index("ix_llm_calls_timestamp", "timestamp"),
    comment="keyed by (id, timestamp): a partitioned table's key holds its partition key",
    postgresql_partition_by='RANGE ("timestamp")',
)

agent_spans = Table(
    "agent_spans",
    metadata,
    Column("id", ID, primary_key=True),
    Column("session_id", ID, nullable=False),
    Column("parent_id", ID),
    Column("agent_name", NAME, nullable=False),
    Column("operation", NAME),
    Column("started_at", UTCDateTime, primary_key=True, comment="partitions by UTC day"),
    Column("ended_at", UTCDateTime, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("error_type", NAME),
    Index("ix_agent_spans_session", "session_id", "started_at"),
    postgresql_partition_by="RANGE (started_at)",
)

scores = Table(
    "scores",
    metadata,
    Column("id", ID, primary_key=True),
    Column("target_id", ID, nullable=False),
    Column("session_id", ID, nullable=False),
    Column("call_id", ID),
    Column("project_name", NAME, nullable=False),
    Column("name", NAME, nullable=False),
    Column("value", Float, nullable=False),
    Column("comment", Text, comment="user text: secrets and PII scrubbed, maybe encrypted"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("model", NAME, comment="the scored call's model as reports key it"),
    Column("agent_name", NAME),
    Column("experiments", JSONDocument, nullable=False),
    Index("ix_scores_target", "target_id"),
    Index("ix_scores_session", "session_id"),
    Index("ix_scores_project_created", "project_name", "created_at"),
    comment="quality feedback on sessions and calls, values in [0, 1]",
)

_DIMENSION = {"primary_key": True}

call_rollups = Table(
    "call_rollups",
    metadata,
    Column("project_name", NAME, **_DIMENSION),
    Column("hour", UTCDateTime, **_DIMENSION),
    Column("provider", String(32), **_DIMENSION),
    Column("provider_name", String(MAX_PROVIDER_NAME), **_DIMENSION),
    Column("model", NAME, **_DIMENSION),
    Column("requested_model", NAME, **_DIMENSION),
    Column("agent_name", NAME, **_DIMENSION),
    Column("operation", NAME, **_DIMENSION),
    Column("success", Boolean, **_DIMENSION),
    Column("error_type", NAME, **_DIMENSION),
    Column("tokens_known", Boolean, **_DIMENSION),
    Column("long_prompt", Boolean, **_DIMENSION),
    Column("repeated", Boolean, **_DIMENSION),
    Column("cache_hit", String(4), **_DIMENSION),
    Column("routed_from", NAME, **_DIMENSION),
    Column("shadow_model", NAME, **_DIMENSION),
    Column("calls", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("cache_creation_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("largest_prompt_tokens", BigInteger, nullable=False),
    Column("retries", BigInteger, nullable=False),
    Column("rate_limited_retries", BigInteger, nullable=False),
    Column("rate_limited_calls", BigInteger, nullable=False),
    Column("first_token_calls", BigInteger, nullable=False),
    Column("first_token_ms", Float, nullable=False),
    Column("latency_histogram", LargeBinary, nullable=False),
    Column("first_token_histogram", LargeBinary, nullable=False),
    comment="calls summed per hour and report dimension; '' stands for a missing agent, "
    "operation, error type, routed_from or shadow_model; cache_hit is 'hit', 'miss' or '' "
    "(made outside obsdeco.cache())",
)

ROLLUP_GROUP_STATISTICS = {
    f"call_rollups_groups_{part}": f"CREATE STATISTICS call_rollups_groups_{part} (ndistinct) "
    f"ON {', '.join(columns)} FROM call_rollups"
    for part, columns in (("a", REPORT_GROUPS[:7]), ("b", REPORT_GROUPS[7:]))
}
"""PostgreSQL: distinct counts of the report dimensions taken together (at most 8 columns a
statistics object). Without them the planner multiplies each column's distinct count,
expects a group per rollup row where there are a few thousand, and sorts a project's rollups
on disk instead of hashing them (ten times slower). Made with the table (and by revision 0006
on stores made before)."""
for _statement in ROLLUP_GROUP_STATISTICS.values():
    event.listen(call_rollups, "after_create", DDL(_statement).execute_if(dialect="postgresql"))

request_hashes = Table(
    "request_hashes",
    metadata,
    Column("project_name", NAME, primary_key=True),
    Column("request_hash", CODE, primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Index(
        "ix_request_hashes_repeated",
        "project_name",
        "calls",
        sqlite_where=text("calls > 1"),
        postgresql_where=text("calls > 1"),
    ),
    comment="successful calls per identical request, to tell repeats at write time",
    sqlite_with_rowid=False,
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("alert_name", NAME, nullable=False),
    Column("metric", CODE, nullable=False),
    Column("state", String(16), nullable=False, comment="firing or resolved"),
    Column("value", Float, comment="in the metric's units; NULL: nothing to measure"),
    Column("threshold", Float),
    Column("direction", String(8), nullable=False, comment="above or below"),
    Column("time_window", CODE, nullable=False, comment="the rule's window, e.g. 1h"),
    Column("project_name", NAME, comment="the rule's project; NULL: every project"),
    Column("budget_name", NAME),
    Column("fired_at", UTCDateTime, nullable=False),
    Index("ix_alert_events_fired", "fired_at"),
    Index("ix_alert_events_name_fired", "alert_name", "fired_at"),
    comment="alerts that fired or resolved",
)

budget_accounts = Table(
    "budget_accounts",
    metadata,
    Column("budget", NAME, primary_key=True, comment="the budget's label"),
    Column("period", UTCDateTime, primary_key=True, comment="its window's start; epoch if none"),
    Column("limit_usd", Float, nullable=False),
    Column("spent_usd", Float, nullable=False, default=0.0),
    Column("reserved_usd", Float, nullable=False, default=0.0, comment="held by calls in flight"),
    comment="project budgets, shared by every process writing this store",
)
