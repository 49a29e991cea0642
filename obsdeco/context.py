"""The active session, carried by `contextvars` so that concurrent tasks keep their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from obsdeco.models import Session

_current_session: ContextVar[Session | None] = ContextVar("obsdeco_session", default=None)


def current_session() -> Session | None:
    """The session active in this context (task or thread), or None."""
    return _current_session.get()


@contextmanager
def session_scope(session: Session) -> Iterator[Session]:
    """Make `session` the active one for the duration of the block."""
    token = _current_session.set(session)
    try:
        yield session
    finally:
        _current_session.reset(token)
