"""Provider identity and 64-bit token counts.

Calls gain `provider_name` (the service that answered), a rollup dimension too; token counts
of calls and sessions become BIGINT on PostgreSQL (SQLite's INTEGER already holds 64 bits).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa

from obsdeco.storage.migrations.helpers import (
    NAME,
    UTC_TIME,
    add_missing_columns,
    column_names,
    dimension,
    drop_columns,
    replace_rollups,
    set_integer_type,
)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CALL_TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)
SESSION_TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
)
ROLLUP_COMMENT = (
    "calls summed per hour and report dimension; '' stands for a missing agent, operation or "
    "error type"
)


def rollup_dimensions(provider_name: bool) -> list[sa.Column[object]]:
    return [
        dimension("project_name", NAME),
        dimension("hour", UTC_TIME),
        dimension("provider", sa.String(32)),
        *([dimension("provider_name", sa.String(64))] if provider_name else []),
        dimension("model", NAME),
        dimension("requested_model", NAME),
        dimension("agent_name", NAME),
        dimension("operation", NAME),
        dimension("success", sa.Boolean),
        dimension("error_type", NAME),
        dimension("tokens_known", sa.Boolean),
        dimension("long_prompt", sa.Boolean),
        dimension("repeated", sa.Boolean),
    ]


def upgrade() -> None:
    add_missing_columns(
        "llm_calls",
        [
            sa.Column(
                "provider_name",
                sa.String(64),
                comment="the service that answered; NULL only in rows stored without it (by an "
                "earlier obsdeco, or imported), filled from provider when the rollups are rebuilt",
            )
        ],
    )
    if "provider_name" not in column_names("call_rollups"):
        replace_rollups(rollup_dimensions(provider_name=True), ROLLUP_COMMENT)
    set_integer_type("llm_calls", CALL_TOKENS, wide=True)
    set_integer_type("sessions", SESSION_TOKENS, wide=True)


def downgrade() -> None:
    set_integer_type("sessions", SESSION_TOKENS, wide=False)
    set_integer_type("llm_calls", CALL_TOKENS, wide=False)
    replace_rollups(rollup_dimensions(provider_name=False), ROLLUP_COMMENT)
    drop_columns("llm_calls", ["provider_name"])
