"""The records obsdeco keeps and the reports it builds from them (pydantic v2 models)."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

_random_bits = random.getrandbits


def new_id() -> str:
    """A 128-bit identifier as 32 hex digits: 48 bits of Unix milliseconds, then 80 random bits.

    Time-ordered like UUIDv7, so that primary-key indexes grow at their end. The random part
    comes from `random` (reseeded in forked children), which is unique enough and cheaper
    than the OS source on this hot path; ids are not secrets.
    """
    return f"{(time.time_ns() // 1_000_000) << 80 | _random_bits(80):032x}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class ModelProvider(StrEnum):
    """Who served an LLM call."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"
    OTHER = "other"


SessionStatus = Literal["running", "ok", "error"]


class Session(BaseModel):
    """One unit of agent work (a request handled, a job run) that LLM calls are grouped under."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id, min_length=1)
    project_name: str = Field(min_length=1)
    name: str | None = None
    parent_id: str | None = None
    started_at: AwareDatetime = Field(default_factory=utc_now)
    ended_at: AwareDatetime | None = None
    status: SessionStatus = "running"
    error_type: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    sampled: bool = True
    """False when `sample_rate` left this session out of storage (still reported in-process)."""

    @property
    def duration_ms(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds() * 1000.0


class LLMCall(BaseModel):
    """One call to an LLM API, with normalised token counts (None means the provider did not say).

    `prompt_tokens` counts every input token, cached ones included; `cached_tokens` is the
    cache-read part of it and `cache_creation_tokens` the cache-write part. `completion_tokens`
    counts every output token; `reasoning_tokens` is the reasoning part of it.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id, min_length=1)
    session_id: str = Field(min_length=1)
    project_name: str = Field(min_length=1)
    timestamp: AwareDatetime = Field(default_factory=utc_now)
    provider: ModelProvider
    model: str = Field(
        min_length=1,
        validation_alias=AliasChoices("model", "model_name"),
        description="the model that was requested",
    )
    response_model: str | None = Field(default=None, description="the model the provider returned")
    api: str | None = Field(
        default=None, description='the SDK endpoint, e.g. "chat.completions", "messages"'
    )
    agent_name: str | None = None
    operation: str | None = None
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
    cached_tokens: int | None = Field(default=None, ge=0)
    cache_creation_tokens: int | None = Field(default=None, ge=0)
    reasoning_tokens: int | None = Field(default=None, ge=0)
    latency_ms: float = Field(ge=0, allow_inf_nan=False)
    time_to_first_token_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    streamed: bool = False
    success: bool = True
    error_type: str | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    tool_call_count: int | None = Field(default=None, ge=0)
    retries: int = Field(default=0, ge=0, description="attempts the SDK retried within the call")
    rate_limited_retries: int = Field(
        default=0, ge=0, description="how many of those retries followed a rate limit (429)"
    )
    cost_usd: float | None = None
    request_hash: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = Field(
        default=None,
        description="the request's messages as JSON; only with capture_content, scrubbed",
    )
    completion: str | None = Field(
        default=None,
        description='the answer as JSON {"text", "tool_calls"}; only with capture_content',
    )

    @model_validator(mode="after")
    def _parts_within_totals(self) -> LLMCall:
        prompt = self.prompt_tokens
        if (
            prompt is not None
            and (self.cached_tokens or 0) + (self.cache_creation_tokens or 0) > prompt
        ):
            raise ValueError(
                "cached_tokens + cache_creation_tokens exceed prompt_tokens "
                "(prompt_tokens must count every input token, cached ones included)"
            )
        completion = self.completion_tokens
        if completion is not None and (self.reasoning_tokens or 0) > completion:
            raise ValueError(
                "reasoning_tokens exceed completion_tokens "
                "(completion_tokens must count every output token, reasoning included)"
            )
        return self

    @property
    def model_key(self) -> str:
        """The name reports group this call under: the returned model, else the requested one."""
        return self.response_model or self.model


class PendingCall:
    """An LLM call captured on the hot path and turned into an `LLMCall` off it, on first
    `materialize()` (by the writer thread, or by whoever reads it first)."""

    __slots__ = ()

    def materialize(self) -> LLMCall:
        raise NotImplementedError


def materialized(calls: list[LLMCall | PendingCall]) -> list[LLMCall]:
    """The `LLMCall`s of a list that may hold calls still pending."""
    return [call if type(call) is LLMCall else call.materialize() for call in calls]  # type: ignore[union-attr]


class AgentSpan(BaseModel):
    """The wall time of one agent invocation inside a session."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=new_id)
    session_id: str
    parent_id: str | None = None
    agent_name: str = Field(min_length=1)
    operation: str | None = None
    started_at: AwareDatetime
    ended_at: AwareDatetime
    success: bool = True
    error_type: str | None = None

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000.0


class SessionRecord(NamedTuple):
    """A stored session with everything recorded in it, oldest first."""

    session: Session
    calls: list[LLMCall]
    spans: list[AgentSpan]


class SessionSummary(BaseModel):
    """A session row with the aggregates stored when it ended (for listings)."""

    session: Session
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = None
    total_latency_ms: float = 0.0
    errors: int = 0


# --- reports -------------------------------------------------------------------------------


class TokenCounts(BaseModel):
    """Token sums; a call whose count was unknown adds nothing and is counted in `unknown_calls`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    calls: int = 0
    unknown_calls: int = Field(default=0, description="calls whose token counts were not reported")


class Totals(BaseModel):
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = Field(default=0.0, description="sum of the calls' latencies")
    duration_ms: float | None = Field(default=None, description="session wall time")
    calls_with_unknown_tokens: int = 0


class CostBreakdown(BaseModel):
    total_usd: float = 0.0
    by_model: dict[str, float] = Field(default_factory=dict)
    by_provider: dict[str, float] = Field(default_factory=dict)
    by_agent: dict[str, float] = Field(default_factory=dict)
    by_operation: dict[str, float] = Field(default_factory=dict)
    unpriced_models: list[str] = Field(default_factory=list)
    unpriced_calls: int = 0
    price_source: str = ""


class TimeToFirstToken(BaseModel):
    calls: int
    p50_ms: float
    p95_ms: float
    avg_ms: float


class Bottleneck(BaseModel):
    kind: Literal["agent", "operation"]
    name: str
    calls: int
    total_ms: float
    share: float = Field(description="fraction of the total LLM latency")
    p95_ms: float


class AgentTime(BaseModel):
    agent_name: str
    invocations: int
    wall_ms: float
    llm_ms: float


class LatencyBreakdown(BaseModel):
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    avg_ms: float | None = None
    total_ms: float = 0.0
    time_to_first_token: TimeToFirstToken | None = None
    bottlenecks: list[Bottleneck] = Field(default_factory=list)
    agent_time: list[AgentTime] = Field(default_factory=list)
    percentiles_exact: bool = Field(
        default=True,
        description="False when the percentiles were estimated from hourly histograms "
        "(project reports over more than 50,000 calls), each within 1% of the exact value",
    )


class OperationTokens(BaseModel):
    operation: str
    calls: int
    total_tokens: int
    tokens_per_call: float


class TokenBreakdown(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    calls_with_unknown_tokens: int = 0
    by_model: dict[str, TokenCounts] = Field(default_factory=dict)
    by_agent: dict[str, TokenCounts] = Field(default_factory=dict)
    heaviest_operations: list[OperationTokens] = Field(default_factory=list)


class QualityBreakdown(BaseModel):
    calls: int = 0
    errors: int = 0
    retries: int = Field(default=0, description="attempts the SDKs retried within calls")
    rate_limited_retries: int = 0
    success_rate: float = 1.0
    errors_by_type: dict[str, int] = Field(default_factory=dict)
    errors_by_model: dict[str, int] = Field(default_factory=dict)
    avg_tokens_per_call: float | None = None


class Suggestion(BaseModel):
    """A concrete change to make, with the records that justify it."""

    kind: str
    message: str
    estimated_savings_usd: float | None = None
    evidence: list[str] = Field(default_factory=list)


class _Rendered(BaseModel):
    """Reports print as aligned text (`str(report)`) and render as Markdown."""

    def __str__(self) -> str:
        from obsdeco.rendering import render_text

        return render_text(self)  # type: ignore[arg-type]

    def to_markdown(self) -> str:
        """The report as Markdown."""
        from obsdeco.rendering import render_markdown

        return render_markdown(self)  # type: ignore[arg-type]


class SessionReport(_Rendered):
    """Everything obsdeco knows about one session: totals, breakdowns and suggestions."""

    session: Session
    totals: Totals
    cost: CostBreakdown
    latency: LatencyBreakdown
    tokens: TokenBreakdown
    quality: QualityBreakdown
    suggestions: list[Suggestion] = Field(default_factory=list)
    custom: dict[str, Any] = Field(
        default_factory=dict, description="outputs of analyzers added with register_analyzer()"
    )


class ProjectReport(_Rendered):
    """A project over a time range, aggregated by the store (see `obsdeco.report()`)."""

    project: str | None
    since: datetime | None = None
    until: datetime | None = None
    sessions: int = 0
    totals: Totals
    cost: CostBreakdown
    latency: LatencyBreakdown
    tokens: TokenBreakdown
    quality: QualityBreakdown
    suggestions: list[Suggestion] = Field(default_factory=list)
