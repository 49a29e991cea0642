"""The revision scripts of this package, and a store's place among them (its version table)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from obsdeco.storage.migrations.state import VERSION_TABLE

FIRST = "0001"
"""The first release's store, where a store written before migrations is placed."""
LOCATION = Path(__file__).resolve().parent


@cache
def scripts() -> ScriptDirectory:
    """The revisions, read once per process."""
    return ScriptDirectory(LOCATION)


def head() -> str:
    """The newest revision: the schema `obsdeco.storage.schema` defines."""
    newest = scripts().get_current_head()
    if newest is None:
        raise RuntimeError(f"no revisions in {LOCATION / 'versions'}")
    return newest


def is_known(revision: str) -> bool:
    """Whether `revision` is one of these scripts (a newer obsdeco may have written another)."""
    return any(script.revision == revision for script in scripts().walk_revisions())


def _context(connection: Connection) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})


def stamp(connection: Connection, revision: str) -> None:
    """Record `revision` as the store's, changing nothing else."""
    _context(connection).stamp(scripts(), revision)


def config(connection: Connection) -> Config:
    """The configuration Alembic's commands take: these scripts, run on `connection`."""
    settings = Config()
    settings.set_main_option("script_location", str(LOCATION).replace("%", "%%"))
    settings.attributes["connection"] = connection
    return settings
