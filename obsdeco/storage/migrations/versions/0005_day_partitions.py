"""Calls and agent spans by UTC day.

On PostgreSQL, `llm_calls` and `agent_spans` become tables partitioned by day (on `timestamp`
and `started_at`), every row copied into its day's partition; their keys become
`(id, timestamp)` and `(id, started_at)`, as a partitioned table's key must hold its partition
column. SQLite keys them the same way (the tables copied), so both databases have one schema.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from obsdeco.storage import partitions

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KEYS = {"llm_calls": "timestamp", "agent_spans": "started_at"}
"""Table -> the column its key gains."""


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        partitions.partition_existing(connection)
        return
    for table, column in KEYS.items():
        if _key_columns(table) != ["id", column]:
            _rekey_sqlite(table, ["id", column])


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        partitions.unpartition_existing(connection)
        return
    for table in KEYS:
        if _key_columns(table) != ["id"]:
            _rekey_sqlite(table, ["id"])


def _key_columns(table: str) -> list[str]:
    key = sa.inspect(op.get_bind()).get_pk_constraint(table)
    return list(key["constrained_columns"])


def _rekey_sqlite(table: str, columns: list[str]) -> None:
    """SQLite cannot change a table's key in place: the table is copied with the new one."""
    found = sa.Table(table, sa.MetaData(), autoload_with=op.get_bind())
    rekeyed = sa.Table(
        table,
        sa.MetaData(),
        *(
            sa.Column(
                column.name,
                column.type,
                nullable=column.nullable,
                server_default=column.server_default,
                primary_key=column.name in columns,
            )
            for column in found.columns
        ),
    )
    for index in found.indexes:
        sa.Index(
            index.name, *(rekeyed.c[column.name] for column in index.columns), unique=index.unique
        )
    with op.batch_alter_table(table, recreate="always", copy_from=rekeyed):
        pass
