"""Where a store stands among obsdeco's revisions, read without Alembic: a store already at
the newest revision (every open but the first) needs no more than this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, inspect, text

VERSION_TABLE = "obsdeco_alembic_version"
"""Not Alembic's default `alembic_version`: the store may share its database with an
application's own Alembic history."""
HEAD = "0006"
"""The newest revision, the schema `obsdeco.storage.schema` defines (the head of `versions/`:
tests/test_migrations.py checks that they agree)."""


class UnknownStoreError(RuntimeError):
    """The database holds tables obsdeco's revisions cannot place."""


@dataclass(frozen=True)
class SchemaChange:
    """What upgrading or downgrading did to a store."""

    before: str | None
    """The store's revision before; None: none recorded (an empty database, or a store
    written before migrations)."""
    after: str
    action: Literal["none", "created", "upgraded", "downgraded"]


def stored_revision(connection: Connection) -> str | None:
    """The store's revision; None without a version table (an empty database, or a store
    written before migrations)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
