"""Observatory: the facade of the architecture document over one MetricsCollector."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from obsdeco.collector import MetricsCollector
from obsdeco.context import current_agent, current_session, session_scope
from obsdeco.models import LLMCall, Session, SessionReport


class Observatory:
    """Start and end sessions, record calls into the current one, or `track()` a block."""

    def __init__(self, project_name: str | None = None) -> None:
        self.collector = MetricsCollector(project_name)
        self._open: list[Session] = []

    def start_session(
        self, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        """Open a session; `record_call()` without a session records into the newest open one."""
        session = self.collector.start_session(name, metadata)
        self._open.append(session)
        return session

    def end_session(
        self, session: Session | None = None, *, error: BaseException | None = None
    ) -> Session:
        """Close `session` (default: the newest open one)."""
        session = session or self._newest_open()
        self._open = [open_session for open_session in self._open if open_session is not session]
        return self.collector.end_session(session, error=error)

    def record_call(self, session: Session | None = None, **fields: Any) -> LLMCall:
        """Record an LLM call (fields as `MetricsCollector.record_llm_call`).

        Without `session`, the call goes to the session active in this context (inside
        `track()` or a decorated function), else to the newest session opened with
        `start_session()`. Without `agent_name`, the innermost active agent's name is used.
        """
        target = session or current_session() or self._newest_open()
        agent = current_agent()
        if agent is not None:
            fields.setdefault("agent_name", agent.name)
            fields.setdefault("operation", agent.operation)
        return self.collector.record_llm_call(target, **fields)

    @contextmanager
    def track(
        self, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Iterator[Session]:
        """A session for the block; if the block raises, the session ends with status "error"
        and the exception propagates unchanged."""
        session = self.start_session(name, metadata)
        try:
            with session_scope(session):
                yield session
        except BaseException as error:
            self.end_session(session, error=error)
            raise
        self.end_session(session)

    @asynccontextmanager
    async def atrack(
        self, name: str | None = None, metadata: dict[str, Any] | None = None
    ) -> AsyncIterator[Session]:
        """`track()` for `async with`: a session for the block, the tasks it awaits included."""
        with self.track(name, metadata) as session:
            yield session

    def get_report(self, session: Session | str) -> SessionReport:
        return self.collector.get_report(session)

    async def aget_report(self, session: Session | str) -> SessionReport:
        """`get_report()`, awaited without blocking the event loop."""
        return await self.collector.aget_report(session)

    def _newest_open(self) -> Session:
        if not self._open:
            raise RuntimeError("no open session: call start_session() first, or use track()")
        return self._open[-1]
