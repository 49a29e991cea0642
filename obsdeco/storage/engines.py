"""SQLite engines tuned the one way obsdeco uses them (the store's and the response cache's)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

_WAL_SWITCH_WAIT_S = 5.0


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode. Two connections switching a new file at once deadlock on
    its lock, and SQLite fails one of them at once (its busy timeout does not apply): that one
    tries again until the other has switched."""
    deadline = time.monotonic() + _WAL_SWITCH_WAIT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_engine(url: str, busy_timeout_ms: int, cache_kib: int | None = None) -> Engine:
    """An engine for a SQLite file (in WAL mode) or an in-memory database (one connection,
    shared by every thread), waiting up to `busy_timeout_ms` for another writer.

    `hide_parameters`: an error's text (logged, kept in `stats().last_error`) must not quote
    the rows' values, which hold metadata, error messages and cached answers.
    """
    in_memory = make_url(url).database in (None, "", ":memory:")
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        poolclass=StaticPool if in_memory else None,
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _tune(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if cache_kib is not None:
            cursor.execute(f"PRAGMA cache_size=-{cache_kib}")
        cursor.close()

    return engine
