"""One process at a time changes a store's schema: a connection in a write transaction that
no other process's schema change runs beside."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

SCHEMA_LOCK = 0x6F6273646563
"""The PostgreSQL advisory lock key of schema changes ("obsdec")."""


@contextmanager
def one_process_at_a_time(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction, committed when the block ends (rolled back if it raises),
    that holds the store's schema lock:

    - PostgreSQL: an advisory lock, held around the whole transaction. Processes creating
      tables and indexes at once deadlock on each other's new tables, and a process that
      found the store out of date must not upgrade it while another one does.
    - SQLite: the database's write lock, taken by BEGIN IMMEDIATE before anything is read
      (waiting for another writer as long as it takes: each attempt waits for the engine's
      busy timeout). The driver is told to begin no transaction of its own meanwhile, so that
      the schema's statements run inside this one.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            with _advisory_lock(connection), connection.begin():
                yield connection
        elif connection.dialect.name == "sqlite":
            with _immediate_transaction(connection):
                yield connection
        else:
            with connection.begin():
                yield connection


@contextmanager
def _advisory_lock(connection: Connection) -> Iterator[None]:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK})
    connection.commit()
    try:
        yield
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK})
        connection.commit()


@contextmanager
def _immediate_transaction(connection: Connection) -> Iterator[None]:
    driver = connection.connection.driver_connection
    isolation_level = driver.isolation_level
    driver.isolation_level = None
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                break
            except OperationalError as error:
                connection.rollback()
                if "locked" not in str(error.orig):
                    raise
        try:
            yield
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
    finally:
        driver.isolation_level = isolation_level
