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

from sqlalchemy import Engine

from obsdeco.storage import rollups
from obsdeco.storage.migrations.state import (
    HEAD,
    SchemaChange,
    UnknownStoreError,
    stored_revision,
)

__all__ = [
    "SchemaChange",
    "UnknownStoreError",
    "downgrade_schema",
    "prepare_schema",
    "rebuild_rollups",
    "schema_revision",
]


def prepare_schema(engine: Engine) -> SchemaChange:
    """Bring the store at `engine` to the newest revision (creating it in an empty database)."""
    with engine.connect() as connection:
        if stored_revision(connection) == HEAD:
            return SchemaChange(HEAD, HEAD, "none")
    # Alembic is loaded only when a store must change: with its templates it adds some 16,000
    # objects to the heap, which the garbage collector would scan for the life of the process.
    from obsdeco.storage.migrations import runner

    return runner.upgrade(engine)


def downgrade_schema(engine: Engine, revision: str) -> SchemaChange:
    """Take the store at `engine` down to `revision`, dropping what later revisions added
    (their columns' and tables' data too; the hourly rollups are emptied, and rebuilt by
    the obsdeco that opens the store next). Raises `alembic.util.CommandError` for a
    revision that is not below the store's."""
    from obsdeco.storage.migrations import runner  # Alembic only when a store changes

    return runner.downgrade(engine, revision)


def schema_revision(engine: Engine) -> str | None:
    """The store's revision (None: an empty database, or a store written before migrations)."""
    with engine.connect() as connection:
        return stored_revision(connection)


def rebuild_rollups(engine: Engine) -> None:
    """Recompute repeats and hourly rollups from the stored calls."""
    with engine.begin() as connection:
        rollups.rebuild(connection)
