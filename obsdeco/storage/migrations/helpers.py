"""What the revisions share: the column types they were written with, and steps that tolerate a
store already partly there.

Stores written by obsdeco between two releases, or by an earlier obsdeco after a downgrade, can
hold part of a revision's change already; each step therefore looks before it changes.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)
ID = sa.String(32)
NAME = sa.String(200)
CODE = sa.String(64)


def is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def column_names(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def add_missing_columns(table: str, columns: Iterable[sa.Column[object]]) -> None:
    present = column_names(table)
    for column in columns:
        if column.name not in present:
            op.add_column(table, column)


def drop_columns(table: str, names: Iterable[str]) -> None:
    """Drop columns (SQLite: by copying the table, which works on every SQLite version)."""
    with op.batch_alter_table(table) as batch:
        for name in names:
            batch.drop_column(name)


def set_integer_type(table: str, columns: Iterable[str], wide: bool) -> None:
    """PostgreSQL: make the columns BIGINT (`wide`) or INTEGER, when they are not already.
    SQLite's INTEGER always holds 64 bits. Narrowing fails, changing nothing, if a value does
    not fit."""
    if not is_postgresql():
        return
    target: type[sa.Integer] = sa.BigInteger if wide else sa.Integer
    found = {
        column["name"]: column["type"] for column in sa.inspect(op.get_bind()).get_columns(table)
    }
    for name in columns:
        is_wide = isinstance(found[name], sa.BigInteger)
        if is_wide != wide:
            op.alter_column(table, name, type_=target(), existing_nullable=True)


ROLLUP_SUMS = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
)


def replace_rollups(dimensions: list[sa.Column[object]], comment: str) -> None:
    """(Re)create `call_rollups`, empty, keyed by `dimensions` (its sums have not changed since
    they were introduced): its rows cannot be rekeyed, and the calls are rolled up again after
    the upgrade (see `obsdeco.storage.migrations`)."""
    if has_table("call_rollups"):
        op.drop_table("call_rollups")
    op.create_table(
        "call_rollups",
        *dimensions,
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in ROLLUP_SUMS),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("largest_prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("retries", sa.BigInteger, nullable=False),
        sa.Column("rate_limited_retries", sa.BigInteger, nullable=False),
        sa.Column("rate_limited_calls", sa.BigInteger, nullable=False),
        sa.Column("first_token_calls", sa.BigInteger, nullable=False),
        sa.Column("first_token_ms", sa.Float, nullable=False),
        sa.Column("latency_histogram", sa.LargeBinary, nullable=False),
        sa.Column("first_token_histogram", sa.LargeBinary, nullable=False),
        comment=comment,
    )


def dimension(name: str, type_: sa.types.TypeEngine[object]) -> sa.Column[object]:
    return sa.Column(name, type_, primary_key=True)
