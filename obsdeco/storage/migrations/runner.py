"""Changing a store's schema through the revisions, with Alembic, one process at a time
(see `obsdeco.storage.schema_setup`, which calls this only when a store is not current)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Connection, Engine, inspect, select

from obsdeco.storage import rollups
from obsdeco.storage.migrations import revisions
from obsdeco.storage.migrations.locking import one_process_at_a_time
from obsdeco.storage.migrations.state import SchemaChange, UnknownStoreError, stored_revision
from obsdeco.storage.schema import call_rollups, llm_calls, metadata

_FIRST_RELEASE = {
    "sessions": set(),
    "agent_spans": set(),
    "llm_calls": {"api", "retries", "rate_limited_retries"},
}
"""What a store written before migrations must have to be the first release's (or later)."""


def upgrade(engine: Engine) -> SchemaChange:
    """Bring the store at `engine` to the newest revision (creating it in an empty database)."""
    newest = revisions.head()
    with one_process_at_a_time(engine) as connection:
        before = stored_revision(connection)
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


def downgrade(engine: Engine, revision: str) -> SchemaChange:
    """Take the store at `engine` down to `revision` (see `schema_setup.downgrade_schema`)."""
    with one_process_at_a_time(engine) as connection:
        before = stored_revision(connection)
        if before is None:
            raise UnknownStoreError("the store has no revision to downgrade from")
        command.downgrade(revisions.config(connection), revision)
        return SchemaChange(before, stored_revision(connection) or revision, "downgraded")


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
