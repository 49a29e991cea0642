"""The optimisation engine, scores and experiments, alerts, shared budgets.

Calls gain `cache_hit`, `requested_model`, `routed_from`, `shadow_model` and `experiments`
(rollup dimensions too, but `requested_model`, which they had), sessions `experiments`; the
tables `scores`, `alert_events` and `budget_accounts` appear.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from obsdeco.storage.migrations.helpers import (
    CODE,
    ID,
    JSON_DOCUMENT,
    NAME,
    UTC_TIME,
    add_missing_columns,
    column_names,
    dimension,
    drop_columns,
    has_table,
    replace_rollups,
)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ROLLUP_COMMENT = (
    "calls summed per hour and report dimension; '' stands for a missing agent, operation, "
    "error type, routed_from or shadow_model; cache_hit is 'hit', 'miss' or '' (made outside "
    "obsdeco.cache())"
)
OLD_ROLLUP_COMMENT = (
    "calls summed per hour and report dimension; '' stands for a missing agent, operation or "
    "error type"
)
ENGINE_DIMENSIONS = ("cache_hit", "routed_from", "shadow_model")
CALL_COLUMNS = ("cache_hit", "requested_model", "routed_from", "shadow_model", "experiments")


def rollup_dimensions(engine: bool) -> list[sa.Column[object]]:
    return [
        dimension("project_name", NAME),
        dimension("hour", UTC_TIME),
        dimension("provider", sa.String(32)),
        dimension("provider_name", sa.String(64)),
        dimension("model", NAME),
        dimension("requested_model", NAME),
        dimension("agent_name", NAME),
        dimension("operation", NAME),
        dimension("success", sa.Boolean),
        dimension("error_type", NAME),
        dimension("tokens_known", sa.Boolean),
        dimension("long_prompt", sa.Boolean),
        dimension("repeated", sa.Boolean),
        *(
            [
                dimension("cache_hit", sa.String(4)),
                dimension("routed_from", NAME),
                dimension("shadow_model", NAME),
            ]
            if engine
            else []
        ),
    ]


def upgrade() -> None:
    add_missing_columns(
        "llm_calls",
        [
            sa.Column("cache_hit", sa.Boolean, comment="None: made outside obsdeco.cache()"),
            sa.Column(
                "requested_model",
                NAME,
                comment="what the code asked for, when the router changed it",
            ),
            sa.Column("routed_from", NAME),
            sa.Column("shadow_model", NAME),
            sa.Column(
                "experiments", JSON_DOCUMENT, comment="the session's assignments when recorded"
            ),
        ],
    )
    add_missing_columns(
        "sessions",
        [
            sa.Column(
                "experiments",
                JSON_DOCUMENT,
                comment="experiment -> variant; NULL in earlier rows",
            )
        ],
    )
    if not set(ENGINE_DIMENSIONS) <= column_names("call_rollups"):
        replace_rollups(rollup_dimensions(engine=True), ROLLUP_COMMENT)
    if not has_table("scores"):
        create_scores()
    if not has_table("alert_events"):
        create_alert_events()
    if not has_table("budget_accounts"):
        op.create_table(
            "budget_accounts",
            sa.Column("budget", NAME, primary_key=True, comment="the budget's label"),
            sa.Column(
                "period", UTC_TIME, primary_key=True, comment="its window's start; epoch if none"
            ),
            sa.Column("limit_usd", sa.Float, nullable=False),
            sa.Column("spent_usd", sa.Float, nullable=False),
            sa.Column("reserved_usd", sa.Float, nullable=False, comment="held by calls in flight"),
            comment="project budgets, shared by every process writing this store",
        )


def create_scores() -> None:
    op.create_table(
        "scores",
        sa.Column("id", ID, primary_key=True),
        sa.Column("target_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("call_id", ID),
        sa.Column("project_name", NAME, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column(
            "comment", sa.Text, comment="user text: secrets and PII scrubbed, maybe encrypted"
        ),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("model", NAME, comment="the scored call's model as reports key it"),
        sa.Column("agent_name", NAME),
        sa.Column("experiments", JSON_DOCUMENT, nullable=False),
        comment="quality feedback on sessions and calls, values in [0, 1]",
    )
    op.create_index("ix_scores_target", "scores", ["target_id"])
    op.create_index("ix_scores_session", "scores", ["session_id"])
    op.create_index("ix_scores_project_created", "scores", ["project_name", "created_at"])


def create_alert_events() -> None:
    op.create_table(
        "alert_events",
        sa.Column("id", ID, primary_key=True),
        sa.Column("alert_name", NAME, nullable=False),
        sa.Column("metric", CODE, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, comment="firing or resolved"),
        sa.Column("value", sa.Float, comment="in the metric's units; NULL: nothing to measure"),
        sa.Column("threshold", sa.Float),
        sa.Column("direction", sa.String(8), nullable=False, comment="above or below"),
        sa.Column("time_window", CODE, nullable=False, comment="the rule's window, e.g. 1h"),
        sa.Column("project_name", NAME, comment="the rule's project; NULL: every project"),
        sa.Column("budget_name", NAME),
        sa.Column("fired_at", UTC_TIME, nullable=False),
        comment="alerts that fired or resolved",
    )
    op.create_index("ix_alert_events_fired", "alert_events", ["fired_at"])
    op.create_index("ix_alert_events_name_fired", "alert_events", ["alert_name", "fired_at"])


def downgrade() -> None:
    op.drop_table("budget_accounts")
    op.drop_table("alert_events")
    op.drop_table("scores")
    replace_rollups(rollup_dimensions(engine=False), OLD_ROLLUP_COMMENT)
    drop_columns("sessions", ["experiments"])
    drop_columns("llm_calls", CALL_COLUMNS)
