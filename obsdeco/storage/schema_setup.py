"""Creating a store's schema on first use, and bringing a store written by an earlier obsdeco
up to date, one process at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import BigInteger, Connection, Engine, Integer, inspect, select, text
from sqlalchemy.exc import DBAPIError

from obsdeco.models import MAX_NAME_LENGTH
from obsdeco.provider_names import MAX_PROVIDER_NAME
from obsdeco.storage import partitions, rollups
from obsdeco.storage.base import REPORT_GROUPS
from obsdeco.storage.schema import (
    ROLLUP_GROUP_STATISTICS,
    call_rollups,
    llm_calls,
    metadata,
    sessions,
)

_SCHEMA_LOCK = 0x6F6273646563  # "obsdec": the advisory lock key of schema changes


def prepare_schema(engine: Engine) -> None:
    """Create the missing tables and upgrade an earlier store, holding the schema lock."""
    with _one_process_at_a_time(engine):
        _create_schema(engine)
        _upgrade(engine)


def rebuild_rollups(engine: Engine) -> None:
    """Recompute repeats and hourly rollups from the stored calls."""
    with engine.begin() as connection:
        rollups.rebuild(connection)


@contextmanager
def _one_process_at_a_time(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, hold an advisory lock while the schema is created or upgraded:
    processes creating tables and their indexes at once deadlock on each other's new
    tables (PostgreSQL then fails one, and counts a deadlock)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})


def _create_schema(engine: Engine) -> None:
    """Create the missing tables. Another process creating them at the same moment makes an
    attempt fail on a table it has just made; each retry finds one more made."""
    attempts = len(metadata.tables) + sum(len(table.indexes) for table in metadata.tables.values())
    for attempt in range(attempts + 1):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except DBAPIError:
            if attempt == attempts:
                raise


def _upgrade(engine: Engine) -> None:
    """Bring a store written by an earlier obsdeco up to date: the columns added since, and
    rollups of the calls it already holds. Rollups without a dimension added since are
    dropped and rebuilt from the calls (their key changed). On PostgreSQL, the rollups'
    statistics the planner needs are made if missing."""
    inspector = inspect(engine)
    columns = {column["name"] for column in inspector.get_columns("llm_calls")}
    session_columns = {column["name"] for column in inspector.get_columns("sessions")}
    json_type = "JSONB" if engine.dialect.name == "postgresql" else "JSON"
    rolled = {column["name"] for column in inspector.get_columns("call_rollups")}
    postgres = engine.dialect.name == "postgresql"  # SQLite's INTEGER holds 64 bits
    narrow = [
        (table.name, column["name"])
        for table in (llm_calls, sessions)
        for column in (inspector.get_columns(table.name) if postgres else [])
        if isinstance(column["type"], Integer)
        and not isinstance(column["type"], BigInteger)
        and isinstance(table.c[column["name"]].type, BigInteger)
    ]
    added = {
        "repeated": "BOOLEAN NOT NULL DEFAULT false",
        "prompt": "TEXT",
        "completion": "TEXT",
        "provider_name": f"VARCHAR({MAX_PROVIDER_NAME})",
        "cache_hit": "BOOLEAN",
        "requested_model": f"VARCHAR({MAX_NAME_LENGTH})",
        "routed_from": f"VARCHAR({MAX_NAME_LENGTH})",
        "shadow_model": f"VARCHAR({MAX_NAME_LENGTH})",
        "experiments": json_type,
    }
    with engine.begin() as connection:
        for name, definition in added.items():
            if name not in columns:
                connection.execute(text(f"ALTER TABLE llm_calls ADD COLUMN {name} {definition}"))
        if "experiments" not in session_columns:
            connection.execute(text(f"ALTER TABLE sessions ADD COLUMN experiments {json_type}"))
        for table_name, column_name in narrow:  # 32-bit token counts (PostgreSQL)
            connection.execute(
                text(f"ALTER TABLE {table_name} ALTER COLUMN {column_name} TYPE BIGINT")
            )
        if not set(REPORT_GROUPS) <= rolled:
            call_rollups.drop(connection)
            call_rollups.create(connection)
        unrolled = connection.execute(select(call_rollups.c.calls).limit(1)).first() is None
        if unrolled and connection.execute(select(llm_calls.c.id).limit(1)).first():
            rollups.rebuild(connection)
        if postgres:
            partitions.partition_existing(connection)
            _make_rollup_statistics(connection)


def _make_rollup_statistics(connection: Connection) -> None:
    """Make the rollups' statistics of dimensions taken together where missing, and compute
    them at once (a store upgraded with many rollups would otherwise wait for autovacuum)."""
    made = set(
        connection.execute(
            text("SELECT stxname FROM pg_statistic_ext WHERE stxrelid = 'call_rollups'::regclass")
        ).scalars()
    )
    missing = [sql for name, sql in ROLLUP_GROUP_STATISTICS.items() if name not in made]
    for statement in missing:
        connection.execute(text(statement))
    if missing:
        connection.execute(text("ANALYZE call_rollups"))
