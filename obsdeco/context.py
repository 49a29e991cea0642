"""The active session and agent stack, carried by `contextvars`.

Each asyncio task and each thread has its own context, so concurrent sessions never see each
other's state. `propagating()` carries obsdeco's context (and only obsdeco's) into work run on
another thread, such as a `ThreadPoolExecutor` job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import ParamSpec, TypeVar

from obsdeco.models import Session

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class AgentFrame:
    """One active agent invocation; `span_id` becomes the id of its stored agent span."""

    name: str
    operation: str | None
    span_id: str
    parent: AgentFrame | None


_current_session: ContextVar[Session | None] = ContextVar("obsdeco_session", default=None)
_current_agent: ContextVar[AgentFrame | None] = ContextVar("obsdeco_agent", default=None)


def current_session() -> Session | None:
    """The session active in this context (task or thread), or None."""
    return _current_session.get()


def current_agent() -> AgentFrame | None:
    """The innermost agent active in this context, or None."""
    return _current_agent.get()


@contextmanager
def session_scope(session: Session) -> Iterator[Session]:
    """Make `session` the active one for the duration of the block."""
    token = _current_session.set(session)
    try:
        yield session
    finally:
        _current_session.reset(token)


def propagating(function: Callable[P, R]) -> Callable[P, R]:
    """`function` bound to the caller's obsdeco session and agent, wherever it later runs.

    Nothing is bound (and `function` is returned as is) when no session or agent is active.
    """
    session, agent = _current_session.get(), _current_agent.get()
    if session is None and agent is None:
        return function

    @wraps(function)
    def run_in_caller_context(*args: P.args, **kwargs: P.kwargs) -> R:
        session_token = _current_session.set(session)
        agent_token = _current_agent.set(agent)
        try:
            return function(*args, **kwargs)
        finally:
            _current_agent.reset(agent_token)
            _current_session.reset(session_token)

    return run_in_caller_context
