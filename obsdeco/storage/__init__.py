"""Storage: the backend contracts (`RecordWriter` for the writer, `ReportStore` for reports,
`StorageBackend` for both), the built-in SQLAlchemy backend, and the backend registry."""

from __future__ import annotations

from collections.abc import Callable

from obsdeco.storage.base import (
    CallAggregate,
    CallFilter,
    RecordWriter,
    ReportStore,
    SessionState,
    StorageBackend,
    TransientStorageError,
    WriteBatch,
)
from obsdeco.storage.sqlalchemy_backend import SQLAlchemyStorage

BackendFactory = Callable[[str], StorageBackend]

_factories: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make `configure(database_url="<scheme>://...")` open `factory(url)` as the store."""
    if not scheme or "+" in scheme or ":" in scheme:
        raise ValueError(f"backend scheme {scheme!r} must be a bare URL scheme such as 'mystore'")
    _factories[scheme] = factory


def registered_scheme(url: str) -> str | None:
    """The registered scheme `url` uses, if any."""
    scheme = url.partition("://")[0]
    return scheme if scheme in _factories else None


def open_backend(url: str) -> StorageBackend:
    """The backend for `url`: a registered one for its scheme, else SQLAlchemy."""
    scheme = registered_scheme(url)
    if scheme is not None:
        return _factories[scheme](url)
    return SQLAlchemyStorage(url)


__all__ = [
    "BackendFactory",
    "CallAggregate",
    "CallFilter",
    "RecordWriter",
    "ReportStore",
    "SQLAlchemyStorage",
    "SessionState",
    "StorageBackend",
    "TransientStorageError",
    "WriteBatch",
    "open_backend",
    "register_backend",
    "registered_scheme",
]
