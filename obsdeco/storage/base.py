"""The storage interface: everything the rest of obsdeco asks of a backend.

A backend is any object with these methods; `register_backend()` makes one reachable from a
`database_url` scheme. The built-in backend is `SQLAlchemyStorage` (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from obsdeco.models import AgentSpan, LLMCall, Session, SessionRecord, SessionSummary, Totals

GroupKey = Literal["provider", "model", "agent_name", "operation", "session_id", "error_type"]


@dataclass(slots=True)
class SessionState:
    """A session as it should now be stored; `totals` is set once the session has ended."""

    session: Session
    totals: Totals | None = None


@dataclass(slots=True)
class WriteBatch:
    """Records committed together, in one transaction."""

    sessions: list[SessionState] = field(default_factory=list)
    calls: list[LLMCall] = field(default_factory=list)
    spans: list[AgentSpan] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sessions) + len(self.calls) + len(self.spans)


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls a query or an aggregate covers; None means no restriction."""

    project: str | None = None
    session_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class CallAggregate:
    """Sums over a group of calls. Token sums skip unknown (None) counts."""

    group: dict[str, str | None]
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    total_latency_ms: float


@runtime_checkable
class StorageBackend(Protocol):
    """What obsdeco needs from a store. Every method may raise on an unreachable database."""

    def write(self, batch: WriteBatch) -> None:
        """Store a batch atomically: all of it or, on error, none of it (the writer retries)."""

    def get_session(self, session_id: str) -> SessionRecord | None:
        """One session with its calls and agent spans, oldest first; None if unknown."""

    def query_sessions(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[SessionSummary]:
        """Sessions started in [since, until), newest first, with their stored aggregates."""

    def query_calls(
        self, where: CallFilter, limit: int | None = None, offset: int = 0
    ) -> list[LLMCall]:
        """Calls matching `where` with timestamp in [since, until), oldest first."""

    def aggregate_calls(
        self, where: CallFilter, group_by: Sequence[GroupKey] = ()
    ) -> list[CallAggregate]:
        """Counts and sums over the matching calls, computed by the store, one row per group."""

    def close(self) -> None:
        """Release connections."""
