"""The first release's store: sessions, calls and agent spans.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from obsdeco.storage.migrations.helpers import CODE, ID, JSON_DOCUMENT, NAME, UTC_TIME

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("project_name", NAME, nullable=False),
        sa.Column("name", NAME),
        sa.Column("parent_id", ID),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("ended_at", UTC_TIME),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_type", NAME),
        sa.Column("error_message", sa.Text),
        sa.Column("metadata", JSON_DOCUMENT, nullable=False),
        sa.Column("call_count", sa.Integer, nullable=False),
        *(
            sa.Column(name, sa.Integer, nullable=False)
            for name in (
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "reasoning_tokens",
                "total_tokens",
            )
        ),
        sa.Column("cost_usd", sa.Float),
        sa.Column("total_latency_ms", sa.Float, nullable=False),
        sa.Column("error_count", sa.Integer, nullable=False),
        sa.Column("duration_ms", sa.Float),
    )
    op.create_index("ix_sessions_project_started", "sessions", ["project_name", "started_at"])
    op.create_index("ix_sessions_started", "sessions", ["started_at"])
    op.create_table(
        "llm_calls",
        sa.Column("id", ID, primary_key=True),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("project_name", NAME, nullable=False),
        sa.Column("timestamp", UTC_TIME, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", NAME, nullable=False),
        sa.Column("response_model", NAME),
        sa.Column("api", CODE),
        sa.Column("agent_name", NAME),
        sa.Column("operation", NAME),
        *(
            sa.Column(name, sa.Integer)
            for name in (
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cache_creation_tokens",
                "reasoning_tokens",
            )
        ),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("time_to_first_token_ms", sa.Float),
        sa.Column("streamed", sa.Boolean, nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("error_type", NAME),
        sa.Column("error_message", sa.Text),
        sa.Column("finish_reason", CODE),
        sa.Column("tool_call_count", sa.Integer),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("rate_limited_retries", sa.Integer, nullable=False),
        sa.Column("request_hash", CODE),
        sa.Column("metadata", JSON_DOCUMENT, nullable=False),
    )
    op.create_index("ix_llm_calls_session", "llm_calls", ["session_id", "timestamp"])
    op.create_index("ix_llm_calls_project_timestamp", "llm_calls", ["project_name", "timestamp"])
    op.create_index("ix_llm_calls_timestamp", "llm_calls", ["timestamp"])
    op.create_table(
        "agent_spans",
        sa.Column("id", ID, primary_key=True),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("parent_id", ID),
        sa.Column("agent_name", NAME, nullable=False),
        sa.Column("operation", NAME),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("ended_at", UTC_TIME, nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("error_type", NAME),
    )
    op.create_index("ix_agent_spans_session", "agent_spans", ["session_id", "started_at"])


def downgrade() -> None:
    raise NotImplementedError(
        "0001 is the first release's store; below it is no store at all (drop its tables "
        "yourself if that is what you want)"
    )
