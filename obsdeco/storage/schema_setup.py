"""Creating a store's schema on first use, and bringing a store written by an earlier obsdeco
up to date through the Alembic revisions of `obsdeco.storage.migrations`.

`prepare_schema(engine)` runs at a store's first use in each process and behind
`obsdeco db upgrade`:

- a store at the newest revision costs one query (its version table's row);
- an empty database gets the newest schema from `obsdeco.storage.schema.metadata` at once,
  stamped with the newest revision (no history replayed: opening a new store stays cheap);
- a store written before migrations (tables, no version table) is stamped `0001` and taken
  through every revision, each of which leaves alone what the store already has;
- a store at an older revision is taken through the revisions after it.

Whatever a revision emptied of the hourly rollups is rebuilt from the stored calls at the end.
Everything happens in one transaction that one process at a time runs (`locking`), so
several processes opening one new or old store at once neither fail nor deadlock: the first
upgrades it, the others then find it current.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alembic import command
from sqlalchemy import Connection, Engine, inspect, select

from obsdeco.storage import rollups
from obsdeco.storage.migrations import revisions
from obsdeco.storage.migrations.locking import one_process_at_a_time
from obsdeco.storage.schema import call_rollups, llm_calls, metadata

_FIRST_RELEASE = {
    "sessions": set(),
    "agent_spans": set(),
    "llm_calls": {"api", "retries", "rate_limited_retries"},
}
"""What a store written before migrations must have to be the first release's (or later)."""


class UnknownStoreError(RuntimeError):
    """The database holds tables obsdeco's revisions cannot place."""


@dataclass(frozen=True)
class SchemaChange:
    """What `prepare_schema` or `downgrade_schema` did to a store."""

    before: str | None
    """The store's revision before; None: none recorded (an empty database, or a store
    written before migrations)."""
    after: str
    action: Literal["none", "created", "upgraded", "downgraded"]


def prepare_schema(engine: Engine) -> SchemaChange:
    """Bring the store at `engine` to the newest revision (creating it in an empty database)."""
    newest = revisions.head()
    with engine.connect() as connection:
        if revisions.current(connection) == newest:
            return SchemaChange(newest, newest, "none")
    with one_process_at_a_time(engine) as connection:
        before = revisions.current(connection)
        if before == newest:
            return SchemaChange(newest, newest, "none")
        if before is None and not inspect(connection).has_table(llm_calls.name):
            metadata.create_all(connection)
            revisions.stamp(connection, newest)
            return SchemaChange(None, newest, "created")
        if before is None:
            _check_first_release(connection)
            revisions.stamp(connection, revisions.FIRST)
        elif not revisions.is_known(before):
            raise UnknownStoreError(
                f"the store is at revision {before!r}, which this obsdeco (newest revision "
                f"{newest}) does not know: it was upgraded by a newer obsdeco"
            )
        command.upgrade(revisions.config(connection), newest)
        _roll_up_if_emptied(connection)
        return SchemaChange(before, newest, "upgraded")


def downgrade_schema(engine: Engine, revision: str) -> SchemaChange:
    """Take the store at `engine` down to `revision`, dropping what later revisions added
    (their columns' and tables' data too; the hourly rollups are emptied, and rebuilt by
    the obsdeco that opens the store next). Raises `alembic.util.CommandError` for a
    revision that is not below the store's."""
    with one_process_at_a_time(engine) as connection:
        before = revisions.current(connection)
        if before is None:
            raise UnknownStoreError("the store has no revision to downgrade from")
        command.downgrade(revisions.config(connection), revision)
        return SchemaChange(before, revisions.current(connection) or revision, "downgraded")


def schema_revision(engine: Engine) -> str | None:
    """The store's revision (None: an empty database, or a store written before migrations)."""
    with engine.connect() as connection:
        return revisions.current(connection)


def _check_first_release(connection: Connection) -> None:
    inspector = inspect(connection)
    for table, needed in _FIRST_RELEASE.items():
        if not inspector.has_table(table):
            raise UnknownStoreError(
                f"the database has obsdeco's table llm_calls but no {table}: not a store "
                "obsdeco wrote, or a damaged one"
            )
        missing = needed - {column["name"] for column in inspector.get_columns(table)}
        if missing:
            raise UnknownStoreError(
                f"{table} has no {', '.join(sorted(missing))}: written by an obsdeco older "
                "than its first release, which cannot be upgraded"
            )


def _roll_up_if_emptied(connection: Connection) -> None:
    """Rebuild repeats and rollups when a revision emptied them (or made them) and there are
    calls to roll up."""
    if connection.execute(select(call_rollups.c.calls).limit(1)).first() is not None:
        return
    if connection.execute(select(llm_calls.c.id).limit(1)).first() is None:
        return
    rollups.rebuild(connection)


def rebuild_rollups(engine: Engine) -> None:
    """Recompute repeats and hourly rollups from the stored calls."""
    with engine.begin() as connection:
        rollups.rebuild(connection)
