"""Hourly rollups, repeats told at write time, captured content.

Calls gain `repeated`, `prompt` and `completion`; the tables `call_rollups` and
`request_hashes` appear (filled from the stored calls after the upgrade).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from obsdeco.storage.migrations.helpers import (
    CODE,
    NAME,
    UTC_TIME,
    add_missing_columns,
    dimension,
    drop_columns,
    has_table,
    replace_rollups,
)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLLUP_COMMENT = (
    "calls summed per hour and report dimension; '' stands for a missing agent, operation or "
    "error type"
)


def rollup_dimensions() -> list[sa.Column[object]]:
    return [
        dimension("project_name", NAME),
        dimension("hour", UTC_TIME),
        dimension("provider", sa.String(32)),
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
                "repeated",
                sa.Boolean,
                nullable=False,
                server_default=sa.false(),
                comment="an identical successful request was stored earlier in the project",
            ),
            sa.Column(
                "prompt",
                sa.Text,
                comment="captured only with capture_content; scrubbed, maybe encrypted",
            ),
            sa.Column("completion", sa.Text, comment="captured only with capture_content"),
        ],
    )
    if not has_table("call_rollups"):
        replace_rollups(rollup_dimensions(), ROLLUP_COMMENT)
    if not has_table("request_hashes"):
        op.create_table(
            "request_hashes",
            sa.Column("project_name", NAME, primary_key=True),
            sa.Column("request_hash", CODE, primary_key=True),
            sa.Column("calls", sa.BigInteger, nullable=False),
            comment="successful calls per identical request, to tell repeats at write time",
            sqlite_with_rowid=False,
        )
        op.create_index(
            "ix_request_hashes_repeated",
            "request_hashes",
            ["project_name", "calls"],
            sqlite_where=sa.text("calls > 1"),
            postgresql_where=sa.text("calls > 1"),
        )


def downgrade() -> None:
    op.drop_table("request_hashes")
    op.drop_table("call_rollups")
    drop_columns("llm_calls", ["completion", "prompt", "repeated"])
