"""The storage interface: everything the rest of obsdeco asks of a backend.

A backend is any object with these methods; `register_backend()` makes one reachable from a
`database_url` scheme. The built-in backend is `SQLAlchemyStorage` (SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from obsdeco.alerts.events import AlertEvent
from obsdeco.models import (
    AgentSpan,
    LLMCall,
    Score,
    Session,
    SessionRecord,
    SessionSummary,
    Totals,
)

GroupKey = Literal[
    "provider",
    "provider_name",
    "model",
    "requested_model",
    "agent_name",
    "operation",
    "session_id",
    "error_type",
    "success",
    "request_hash",
    "tokens_known",
    "long_prompt",
    "repeated",
    "cache_hit",
    "routed_from",
    "shadow_model",
    "hour",
]
"""What calls can be grouped by. "provider" is the API format's `ModelProvider`,
"provider_name" the service that answered (reports key providers by it); "model" is the
returned model, else the requested one; "tokens_known" is whether both prompt and completion
counts were reported; "long_prompt" is whether the prompt had at least `LONG_PROMPT_TOKENS`
tokens; "repeated" is whether an identical successful request was stored earlier in the
project; "cache_hit" is True, False or None as the call's; "routed_from" and "shadow_model"
are the call's (None when not routed); "hour" is the UTC hour the call started in."""

SessionOrder = Literal[
    "started_at", "name", "duration_ms", "call_count", "total_tokens", "cost_usd", "status"
]
"""What sessions can be listed by."""

REPORT_GROUPS: tuple[GroupKey, ...] = (
    "provider",
    "provider_name",
    "model",
    "requested_model",
    "agent_name",
    "operation",
    "success",
    "error_type",
    "tokens_known",
    "long_prompt",
    "repeated",
    "cache_hit",
    "routed_from",
    "shadow_model",
)
"""What a project report groups calls by; a store may keep sums per hour over these."""

LONG_PROMPT_TOKENS = 1_024
"""Prompts this long can use provider prompt caching (the OpenAI and Anthropic minimum)."""


@dataclass(slots=True)
class SessionState:
    """A session as it should now be stored; `totals` is set once the session has ended."""

    session: Session
    totals: Totals | None = None


class TransientStorageError(Exception):
    """The store cannot take a write now but may soon: the database is down or restarting, a
    connection dropped, the pool is exhausted. A backend's `write` raises it for such failures
    (from the driver's own error); the writer then keeps the batch and tries it again with
    backoff. Any other exception from `write` rejects the batch's records, counted."""


@dataclass(slots=True)
class WriteBatch:
    """Records committed together, in one transaction."""

    sessions: list[SessionState] = field(default_factory=list)
    calls: list[LLMCall] = field(default_factory=list)
    spans: list[AgentSpan] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sessions) + len(self.calls) + len(self.spans) + len(self.scores)


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls a query or an aggregate covers; None means no restriction."""

    project: str | None = None
    session_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    repeated: bool | None = None
    model: str | None = None
    """The returned model, else the requested one, as reports key models."""
    agent: str | None = None
    experiment: str | None = None
    """Calls recorded with an assignment in this experiment (rollups cannot answer)."""


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Which sessions, or agent spans, a listing covers; None means no restriction. `since`
    and `until` bound when each started; `model` and `agent` keep the sessions that made a
    call to that model (as reports key models) or from that agent. For spans, `agent` is the
    span's own agent and `model` keeps the spans of sessions that called it."""

    project: str | None = None
    session_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class ProjectSpan:
    """An agent span with the project of its session."""

    span: AgentSpan
    project_name: str


@dataclass(frozen=True, slots=True)
class ScoreFilter:
    """Which scores a query or an aggregate covers; None means no restriction. `since` and
    `until` bound `created_at`; `experiment` keeps the scores of targets assigned in it."""

    project: str | None = None
    target_id: str | None = None
    session_id: str | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    experiment: str | None = None
    model: str | None = None
    """Scores of calls of this model (as reports key models)."""
    agent: str | None = None


ScoreGroup = Literal["name", "model", "agent_name", "variant"]
"""What scores can be grouped by; "variant" groups by experiment and variant (group keys
"experiment" and "variant"), a score counting once per assignment of its target."""


@dataclass(frozen=True, slots=True)
class ScoreAggregate:
    group: dict[str, Any]
    count: int
    total: float


@dataclass(frozen=True, slots=True)
class ExperimentVariant:
    """Sessions started with one variant of an experiment (for listings)."""

    experiment: str
    variant: str
    sessions: int


@dataclass(frozen=True, slots=True)
class CallAggregate:
    """Sums over a group of calls. Token sums skip unknown (None) counts."""

    group: dict[str, Any]
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    reasoning_tokens: int
    total_latency_ms: float
    largest_prompt_tokens: int = 0
    retries: int = 0
    rate_limited_retries: int = 0
    rate_limited_calls: int = 0
    """Calls that failed with a rate limit or were retried by their SDK after one."""


@dataclass(frozen=True, slots=True)
class Quantiles:
    count: int
    mean: float
    values: list[float]
    exact: bool = True
    """False when estimated from histograms, each value within `RELATIVE_ACCURACY` (1%)."""


@runtime_checkable
class RecordWriter(Protocol):
    """What the background writer needs of a store: to write batches, and to let go of it."""

    def write(self, batch: WriteBatch) -> None:
        """Store a batch atomically: all of it or, on error, none of it. Raise
        `TransientStorageError` when the store may take it later (the writer then retries
        with backoff); any other exception rejects the batch's records, counted."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class ReportStore(Protocol):
    """What reports, exports, the dashboard, experiments and alerts read from a store, and the
    alert events the alert evaluator keeps there. Every method may raise on an unreachable
    database."""

    def get_session(self, session_id: str) -> SessionRecord | None:
        """One session with its calls and agent spans, oldest first; None if unknown."""

    def query_sessions(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
        search: str | None = None,
        order_by: SessionOrder = "started_at",
        descending: bool = True,
        model: str | None = None,
        agent: str | None = None,
    ) -> list[SessionSummary]:
        """Sessions started in [since, until) whose name or id contains `search` (any case) and
        that made a call to `model` / from `agent` when given, ordered by `order_by` (newest
        first by default), with their stored aggregates."""

    def query_calls(
        self, where: CallFilter, limit: int | None = None, offset: int = 0
    ) -> list[LLMCall]:
        """Calls matching `where` with timestamp in [since, until), oldest first."""

    def iter_calls(self, where: CallFilter, batch_size: int = 1_000) -> Iterator[list[LLMCall]]:
        """The calls `query_calls` returns, in pages of at most `batch_size`, each page read
        when the previous one has been consumed (keyset pagination on (timestamp, id)), so
        that no more than a page is held however many calls match. Unlike `query_calls`, it
        returns encrypted values as stored when no key is configured."""

    def iter_sessions(
        self, where: SessionFilter, batch_size: int = 1_000
    ) -> Iterator[list[SessionSummary]]:
        """Sessions matching `where` with their stored aggregates, oldest first (by
        (started_at, id)), in pages of at most `batch_size`, read page by page; encrypted
        metadata as `iter_calls` returns it."""

    def iter_spans(
        self, where: SessionFilter, batch_size: int = 1_000
    ) -> Iterator[list[ProjectSpan]]:
        """Agent spans matching `where`, oldest first (by (started_at, id)), in pages of at
        most `batch_size`, read page by page."""

    def iter_scores(self, where: ScoreFilter, batch_size: int = 1_000) -> Iterator[list[Score]]:
        """Scores matching `where`, oldest first (by (created_at, id)), in pages of at most
        `batch_size`, read page by page; encrypted comments as `iter_calls` returns content."""

    def aggregate_calls(
        self, where: CallFilter, group_by: Sequence[GroupKey] = (), min_calls: int = 1
    ) -> list[CallAggregate]:
        """Counts and sums over the matching calls, computed by the store, one row per group
        of at least `min_calls` calls."""

    def quantiles(
        self,
        where: CallFilter,
        column: Literal["latency_ms", "time_to_first_token_ms"],
        quantiles: Sequence[float],
        groupings: Sequence[GroupKey | None] = (None,),
    ) -> dict[GroupKey | None, dict[str | None, Quantiles]]:
        """For each grouping (None: all calls as one group), per group: the count, mean and
        quantiles of the non-null values of `column`, interpolated linearly as
        numpy.percentile does by default. Over many calls a backend may estimate the quantiles
        (`Quantiles.exact` False) within 1%."""

    def most_repeated_requests(self, project: str | None, limit: int) -> list[tuple[str, int]]:
        """The identical successful requests made more than once in a project (in any project
        for None), as (request_hash, calls) over all time, the most frequent first."""

    def count_sessions(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        search: str | None = None,
        model: str | None = None,
        agent: str | None = None,
    ) -> int:
        """The sessions `query_sessions` would list, counted."""

    def project_names(self) -> list[str]:
        """Every project with a stored session, sorted."""

    def agent_time(
        self,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, tuple[int, float]]:
        """Per agent name: the invocations started in [since, until) and their summed wall
        time in milliseconds."""

    def find_target(self, target_id: str) -> Session | LLMCall | None:
        """The session, else the call, with this id; None if neither is stored."""

    def query_scores(
        self, where: ScoreFilter, limit: int | None = None, offset: int = 0
    ) -> list[Score]:
        """Scores matching `where`, oldest first."""

    def aggregate_scores(
        self, where: ScoreFilter, group_by: Sequence[ScoreGroup] = ("name",)
    ) -> list[ScoreAggregate]:
        """Count and sum of the matching scores per group, computed by the store; grouping by
        "model" or "agent_name" keeps only scores of calls."""

    def experiment_sessions(
        self,
        experiment: str,
        project: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, str]:
        """The sessions started in [since, until) assigned in `experiment`: id -> variant."""

    def experiment_variants(self, project: str | None = None) -> list[ExperimentVariant]:
        """Every experiment and variant with its sessions, by experiment then variant name."""

    def add_alert_event(self, event: AlertEvent) -> None:
        """Store an alert that fired or resolved (called by the alert evaluator)."""

    def query_alert_events(
        self,
        since: datetime | None = None,
        name: str | None = None,
        project: str | None = None,
        limit: int = 100,
    ) -> list[AlertEvent]:
        """Alert events fired at or after `since`, of alert `name`, of rules on `project`
        (each when given), newest first, at most `limit`."""

    def latest_alert_events(self) -> list[AlertEvent]:
        """Each alert's newest event (its current state), by alert name."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class StorageBackend(RecordWriter, ReportStore, Protocol):
    """A whole store: what the writer writes and what reports read. `register_backend()`
    takes a factory of these."""
