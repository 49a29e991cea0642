"""MetricsCollector: sessions, recording LLM calls, and reports.

Recording validates the record, keeps it with its session in memory (for the in-process
report) and queues it for the writer; it never touches the database.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from obsdeco.analyzers import build_report, price_calls
from obsdeco.analyzers.project import build_project_report
from obsdeco.analyzers.savings import build_savings
from obsdeco.models import (
    MAX_NAME_LENGTH,
    AgentSpan,
    LLMCall,
    ModelProvider,
    PendingCall,
    ProjectReport,
    SavingsReport,
    Score,
    Session,
    SessionRecord,
    SessionReport,
    checked_name,
    implicit_session_id,
    materialized,
    utc_now,
)
from obsdeco.runtime import flush, get_runtime, pipeline
from obsdeco.storage import SessionState
from obsdeco.storage.base import ScoreFilter
from obsdeco.writer import SessionEnd

_RECENT_SESSIONS = 256
_RECENT_CALLS = 50_000
"""Ended sessions stay in memory (for their in-process reports) up to these many sessions and
calls; older ones are read back from storage."""


@dataclass(slots=True)
class _LiveSession:
    session: Session
    calls: list[LLMCall | PendingCall] = field(default_factory=list)
    spans: list[AgentSpan] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)

    def record(self) -> SessionRecord:
        return SessionRecord(self.session, materialized(list(self.calls)), list(self.spans))


class _SessionRegistry:
    """Sessions of this process kept in memory: the active ones and the last ended ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active: dict[str, _LiveSession] = {}
        self._recent: OrderedDict[str, _LiveSession] = OrderedDict()
        self._recent_calls = 0

    def start(self, session: Session) -> _LiveSession:
        live = _LiveSession(session)
        with self._lock:
            self.active[session.id] = live
        return live

    def end(self, session_id: str) -> _LiveSession | None:
        with self._lock:
            live = self.active.pop(session_id, None)
            if live is not None:
                self._recent[session_id] = live
                self._recent_calls += len(live.calls)
                while len(self._recent) > _RECENT_SESSIONS or (
                    self._recent_calls > _RECENT_CALLS and len(self._recent) > 1
                ):
                    _, evicted = self._recent.popitem(last=False)
                    self._recent_calls -= len(evicted.calls)
            return live

    def clear(self) -> None:
        """Forget every in-memory session (their stored records stay stored)."""
        with self._lock:
            self.active.clear()
            self._recent.clear()
            self._recent_calls = 0

    def find(self, session_id: str) -> _LiveSession | None:
        live = self.active.get(session_id)
        if live is None:
            with self._lock:
                live = self._recent.get(session_id)
        return live

    def find_call(self, call_id: str) -> tuple[_LiveSession, LLMCall] | None:
        """The in-memory session holding the call with this id, and the call (only calls
        already built have an id)."""
        with self._lock:
            held = [*self.active.values(), *self._recent.values()]
        for live in held:
            for call in list(live.calls):
                built = call if type(call) is LLMCall else call.built()  # type: ignore[union-attr]
                if built is not None and built.id == call_id:
                    return live, built
        return None


sessions_in_memory = _SessionRegistry()


def keep(session: Session, record: LLMCall | PendingCall | AgentSpan) -> None:
    """Add a record to its session: in memory (while the session is among the active or
    recent ones), and to storage. A call that arrives after its session ended (a stream read
    after the session function returned) also refreshes the session's stored aggregates.
    A call takes the session's experiment assignments at this moment."""
    experiments = session.experiments
    if isinstance(record, PendingCall):
        record.experiments = experiments
    elif experiments and type(record) is LLMCall:
        given = record.experiments
        record.experiments = {**experiments, **given} if given else experiments
    live = sessions_in_memory.find(session.id)
    if live is not None:
        if type(record) is AgentSpan:
            live.spans.append(record)
        else:
            live.calls.append(record)  # type: ignore[arg-type]
    if not session.sampled:
        pipeline.count_unsampled(records=1)
        return
    pipeline.submit(record)
    if live is not None and session.ended_at is not None and type(record) is not AgentSpan:
        pipeline.submit(SessionEnd(session.model_copy(), list(live.calls)))


def implicit_session(project: str | None = None) -> Session:
    """The session that calls made outside any session go to: one per project and UTC day.

    Its id is derived from the project and the day, so every process of a project shares it.
    It is not kept in memory (its report is read from storage) and is always persisted.
    """
    runtime = get_runtime()
    project = project or runtime.settings.project
    day = utc_now().date()
    known = runtime.implicit_sessions
    session = known.get((project, day))
    if session is None:
        session = Session(
            id=implicit_session_id(project, day),
            project_name=project,
            name=f"implicit:{day.isoformat()}",
            started_at=datetime.combine(day, datetime.min.time(), tzinfo=UTC),
        )
        for stale in [key for key in known if key[1] != day]:
            del known[stale]
        known[(project, day)] = session
        runtime.writer.submit(SessionState(session))
    return session


def _refuse_known_id(session: Session, call_id: str) -> None:
    """A call id given by the caller must be new (the store keeps one call per id)."""
    live = sessions_in_memory.find(session.id)
    if live is not None and any(
        type(call) is LLMCall and call.id == call_id  # type: ignore[union-attr]
        for call in live.calls
    ):
        raise ValueError(f"id: a call with id {call_id!r} is already recorded in this session")


def _session_id(session: Session | str) -> str:
    if isinstance(session, Session):
        return session.id
    if isinstance(session, str) and session:
        return session
    raise TypeError(f"session must be a Session or a session id, got {type(session).__name__}")


def load_session(session_id: str) -> SessionRecord:
    """A session of this process from memory, else from storage (after a flush)."""
    live = sessions_in_memory.find(session_id)
    if live is not None:
        return live.record()
    flush()
    record = get_runtime().backend.get_session(session_id)
    if record is None:
        raise LookupError(f"no session with id {session_id!r} in memory or in storage")
    return record


def keep_score(score: Score) -> None:
    """Add a score to its session in memory (if there) and queue it for storage, unless its
    session is left out of storage by sampling."""
    live = sessions_in_memory.find(score.session_id)
    if live is not None:
        live.scores.append(score)
        if not live.session.sampled:
            pipeline.count_unsampled(records=1)
            return
    pipeline.submit(score)


def get_report(session_id: str) -> SessionReport:
    """The `SessionReport` of a session of this process or of storage. A session in memory
    is reported with the scores given in this process; another from the store's."""
    live = sessions_in_memory.find(session_id)
    session, calls, spans = load_session(session_id)
    scores = (
        list(live.scores)
        if live is not None
        else get_runtime().backend.query_scores(ScoreFilter(session_id=session_id))
    )
    return build_report(session, calls, spans, get_runtime().prices, scores)


def checked_range(since: datetime | None, until: datetime | None) -> None:
    """A `ValueError` unless both ends of a time range are timezone-aware (or None)."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise ValueError(
                f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {moment!r}"
            )


def report(
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    model: str | None = None,
    agent: str | None = None,
) -> ProjectReport:
    """The report of a project's stored calls in [since, until) (every project if None),
    aggregated by the store; records still queued are flushed first. `model` and `agent`
    narrow it to one model (as reports name them) or one agent."""
    checked_range(since, until)
    flush()
    return build_project_report(
        get_runtime().backend,
        get_runtime().prices,
        project,
        since,
        until,
        model,
        agent,
    )


def savings(
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    model: str | None = None,
    agent: str | None = None,
) -> SavingsReport:
    """What the response cache and the model router saved on a project's stored calls in
    [since, until) (every project if None), per UTC day, and what the project report's
    suggestions could still save; records still queued are flushed first."""
    checked_range(since, until)
    flush()
    return build_savings(
        get_runtime().backend,
        get_runtime().prices,
        project,
        since,
        until,
        model,
        agent,
    )


def get_calls(session_id: str) -> list[LLMCall]:
    """A session's calls, oldest first, with `cost_usd` and `saved_usd` priced."""
    calls = load_session(session_id).calls
    return price_calls(calls, get_runtime().prices)


class MetricsCollector:
    """Records sessions and LLM calls for one project and builds their reports."""

    def __init__(self, project_name: str | None = None) -> None:
        self.project_name = (
            None if project_name is None else checked_name(project_name, "project_name")
        )

    def start_session(
        self,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        parent_id: str | None = None,
    ) -> Session:
        """Open a session; whether it is persisted (`sample_rate`) is decided here, once."""
        runtime = get_runtime()
        rate = runtime.settings.sample_rate
        session = Session(
            project_name=self.project_name or runtime.settings.project,
            name=name,
            parent_id=parent_id,
            metadata=metadata or {},
            sampled=rate >= 1.0 or random.random() < rate,
        )
        sessions_in_memory.start(session)
        if session.sampled:
            pipeline.submit(SessionState(session.model_copy()))
        else:
            pipeline.count_unsampled(sessions=1)
        return session

    def record_llm_call(
        self,
        session: Session,
        *,
        provider: ModelProvider | str,
        model_name: str,
        latency_ms: float,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        **details: Any,
    ) -> LLMCall:
        """Record one LLM call in `session` and return the validated record.

        `details` takes any other `LLMCall` field (agent_name, operation, cached_tokens,
        reasoning_tokens, time_to_first_token_ms, success, error_type, ...). Invalid input
        raises `pydantic.ValidationError` naming the field; nothing is recorded then.
        """
        if not isinstance(session, Session):
            raise TypeError(f"session must be a Session, got {type(session).__name__}")
        details["session_id"] = session.id
        details["project_name"] = session.project_name
        details["provider"] = provider
        details["model_name"] = model_name
        details["latency_ms"] = latency_ms
        details["prompt_tokens"] = prompt_tokens
        details["completion_tokens"] = completion_tokens
        # model_validate on one dict skips BaseModel.__init__'s keyword repacking (~1 us).
        call = LLMCall.model_validate(details)
        if "id" in details:
            _refuse_known_id(session, call.id)
        keep(session, call)
        return call

    def record_agent_span(
        self,
        session: Session,
        *,
        agent_name: str,
        started_at: datetime,
        ended_at: datetime,
        operation: str | None = None,
        parent_id: str | None = None,
        success: bool = True,
        error_type: str | None = None,
        span_id: str | None = None,
    ) -> AgentSpan:
        """Record the wall time of one agent invocation in `session`."""
        span = AgentSpan(
            **({"id": span_id} if span_id else {}),
            session_id=session.id,
            parent_id=parent_id,
            agent_name=agent_name,
            operation=operation,
            started_at=started_at,
            ended_at=ended_at,
            success=success,
            error_type=error_type,
        )
        keep(session, span)
        return span

    def end_session(self, session: Session, *, error: BaseException | None = None) -> Session:
        """Close `session` (status "error" when `error` is given) and store its aggregates."""
        if session.ended_at is not None:
            return session
        session.ended_at = utc_now()
        session.status = "ok" if error is None else "error"
        if error is not None:
            session.error_type = type(error).__name__[:MAX_NAME_LENGTH]
            session.error_message = str(error)
        live = sessions_in_memory.end(session.id)
        if session.sampled:
            calls = list(live.calls) if live is not None else []
            pipeline.submit(SessionEnd(session.model_copy(), calls))
        return session

    def get_report(self, session: Session | str) -> SessionReport:
        """The report of a session of this process (in memory) or of storage."""
        return get_report(_session_id(session))

    def get_calls(self, session: Session | str) -> list[LLMCall]:
        """A session's calls, oldest first, with `cost_usd` priced."""
        return get_calls(_session_id(session))

    async def aget_report(self, session: Session | str) -> SessionReport:
        """`get_report()`, awaited without blocking the event loop (run in a worker thread)."""
        return await asyncio.to_thread(get_report, _session_id(session))

    async def aget_calls(self, session: Session | str) -> list[LLMCall]:
        """`get_calls()`, awaited without blocking the event loop (run in a worker thread)."""
        return await asyncio.to_thread(get_calls, _session_id(session))
