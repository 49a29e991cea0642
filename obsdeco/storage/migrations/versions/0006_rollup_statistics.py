"""The rollups' distinct counts of report dimensions taken together (PostgreSQL).

Two statistics objects on `call_rollups` (`call_rollups_groups_a` and `_b`, at most 8 columns
each), computed at once: without them the planner expects a group per rollup row and sorts a
project's rollups on disk instead of hashing them. Nothing changes on SQLite.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from obsdeco.storage.schema import ROLLUP_GROUP_STATISTICS

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    made = set(
        connection.execute(
            sa.text(
                "SELECT stxname FROM pg_statistic_ext WHERE stxrelid = 'call_rollups'::regclass"
            )
        ).scalars()
    )
    missing = [sql for name, sql in ROLLUP_GROUP_STATISTICS.items() if name not in made]
    for statement in missing:
        connection.execute(sa.text(statement))
    if missing:
        connection.execute(sa.text("ANALYZE call_rollups"))


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    for name in ROLLUP_GROUP_STATISTICS:
        connection.execute(sa.text(f"DROP STATISTICS IF EXISTS {name}"))
