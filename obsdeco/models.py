"""The records obsdeco keeps and the reports it builds from them (pydantic v2 models)."""

from __future__ import annotations

import hashlib
import random
import time
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from obsdeco.provider_names import MAX_PROVIDER_NAME, default_provider_name

_random_bits = random.getrandbits


def new_id() -> str:
    """A 128-bit identifier as 32 hex digits: 48 bits of Unix milliseconds, then 80 random bits.

    Time-ordered like UUIDv7, so that primary-key indexes grow at their end. The random part
    comes from `random` (reseeded in forked children), which is unique enough and cheaper
    than the OS source on this hot path; ids are not secrets.
    """
    return f"{(time.time_ns() // 1_000_000) << 80 | _random_bits(80):032x}"


def implicit_session_id(project: str, day: date) -> str:
    """The id of the implicit session of a project and UTC day (calls made outside sessions)."""
    return hashlib.blake2b(
        f"implicit:{project}:{day.isoformat()}".encode(), digest_size=16
    ).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)


# What every backend stores, so what the API accepts (bounds shared with storage/schema.py).
MAX_ID_LENGTH = 32
MAX_NAME_LENGTH = 200
"""Project, session, model, agent, operation and error type names."""
MAX_CODE_LENGTH = 64
"""Short codes: the API name, finish reason, request hash."""
MAX_TOKENS = 10**12
"""Tokens of one call (a session's sums stay within 64-bit columns)."""
MAX_COUNT = 2**31 - 1
"""Retries and tool calls of one call."""
MAX_LATENCY_MS = 1e12
"""About 31 years."""

_WITHOUT_NUL = r"^[^\x00]*$"


def storable_text(text: str) -> str:
    """`text` without NUL characters and lone surrogates, which PostgreSQL and UTF-8 refuse."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")


# Constrained strings also refuse lone surrogates (text no database stores as UTF-8).
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=_WITHOUT_NUL)
]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=_WITHOUT_NUL)
]
Code = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CODE_LENGTH, pattern=_WITHOUT_NUL)
]
_name_adapter: TypeAdapter[str] = TypeAdapter(Name)


def checked_name(value: str, what: str) -> str:
    """`value` if it is a storable name, else a `ValueError` saying why, naming `what`."""
    try:
        return _name_adapter.validate_python(value)
    except ValidationError as error:
        problem = error.errors()[0]
        reason = _NAME_PROBLEMS.get(problem["type"], problem["msg"])
        raise ValueError(f"{what}: {reason} (got {value!r:.80})") from None


_NAME_PROBLEMS = {
    "string_pattern_mismatch": "must not contain NUL characters",
    "string_unicode": "must be valid Unicode text (no lone surrogates)",
    "string_too_short": "must not be empty",
    "string_too_long": f"must be at most {MAX_NAME_LENGTH} characters",
}


ProviderName = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=MAX_PROVIDER_NAME,
        pattern=r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$",
    ),
]
"""A provider name: printable, without surrounding spaces (one pattern: no Python per call)."""
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Milliseconds = Annotated[float, Field(ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False)]


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

    id: Identifier = Field(default_factory=new_id)
    project_name: Name
    name: Name | None = None
    parent_id: Identifier | None = None
    started_at: AwareDatetime = Field(default_factory=utc_now)
    ended_at: AwareDatetime | None = None
    status: SessionStatus = "running"
    error_type: Name | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    experiments: dict[str, str] = Field(
        default_factory=dict,
        description="prompt experiments this session takes part in: experiment -> variant",
    )
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

    id: Identifier = Field(default_factory=new_id)
    session_id: Identifier
    project_name: Name
    timestamp: AwareDatetime = Field(default_factory=utc_now)
    provider: ModelProvider
    provider_name: ProviderName = Field(
        default_factory=lambda fields: default_provider_name(str(fields.get("provider", "other"))),
        description='the service that answered, OpenTelemetry style ("openai", "groq", '
        '"gcp.gemini", ...): from the endpoint\'s host, else from `provider`',
    )
    model: Name = Field(
        validation_alias=AliasChoices("model", "model_name"),
        description="the model that was called: the one requested, or the router's choice",
    )
    response_model: Name | None = Field(default=None, description="the model the provider returned")
    api: Code | None = Field(
        default=None, description='the SDK endpoint, e.g. "chat.completions", "messages"'
    )
    agent_name: Name | None = None
    operation: Name | None = None
    prompt_tokens: Tokens | None = None
    completion_tokens: Tokens | None = None
    cached_tokens: Tokens | None = None
    cache_creation_tokens: Tokens | None = None
    reasoning_tokens: Tokens | None = None
    latency_ms: Milliseconds
    time_to_first_token_ms: Milliseconds | None = None
    streamed: bool = False
    success: bool = True
    error_type: Name | None = None
    error_message: str | None = None
    finish_reason: Code | None = None
    tool_call_count: Count | None = None
    retries: Count = Field(default=0, description="attempts the SDK retried within the call")
    rate_limited_retries: Count = Field(
        default=0, description="how many of those retries followed a rate limit (429)"
    )
    cost_usd: float | None = None
    request_hash: Code | None = None
    cache_hit: bool | None = Field(
        default=None,
        description="True: answered by obsdeco's response cache, without a request; False: a "
        "miss inside `obsdeco.cache()`; None: made outside it",
    )
    saved_usd: float | None = Field(
        default=None,
        description="what the cache (the whole price of a hit) or the router (the price at "
        "`routed_from` less the price paid) saved on this call; priced like `cost_usd`",
    )
    requested_model: Name | None = Field(
        default=None, description="the model the code asked for, when the router changed it"
    )
    routed_from: Name | None = Field(
        default=None, description="the `from_model` of the route rule that changed the model"
    )
    shadow_model: Name | None = Field(
        default=None, description="the model a shadow route rule would have sent the call to"
    )
    experiments: dict[str, str] = Field(
        default_factory=dict,
        description="the session's experiment assignments (experiment -> variant) when the "
        "call was recorded",
    )
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
    `materialize()` (by the writer thread, or by whoever reads it first).

    `experiments` is set when the call is recorded in its session (the session's experiment
    assignments then); the `LLMCall` carries it.
    """

    __slots__ = ("experiments",)

    def materialize(self) -> LLMCall:
        raise NotImplementedError

    def built(self) -> LLMCall | None:
        """The `LLMCall` if it is already built, else None (nothing is built here)."""
        raise NotImplementedError


def materialized(calls: list[LLMCall | PendingCall]) -> list[LLMCall]:
    """The `LLMCall`s of a list that may hold calls still pending."""
    return [call if type(call) is LLMCall else call.materialize() for call in calls]  # type: ignore[union-attr]


ScoreValue = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Score(BaseModel):
    """Quality feedback on a session or on one LLM call: a number in [0, 1].

    `model`, `agent_name` and `experiments` are the scored target's, copied when the score is
    given, so that reports group scores without reading the calls back.
    """

    model_config = ConfigDict(extra="forbid")

    id: Identifier = Field(default_factory=new_id)
    target_id: Identifier = Field(description="the id scored: the session's or the call's")
    session_id: Identifier
    call_id: Identifier | None = Field(default=None, description="None for a session score")
    project_name: Name
    name: Name
    value: ScoreValue
    comment: str | None = None
    created_at: AwareDatetime = Field(default_factory=utc_now)
    model: Name | None = Field(
        default=None, description="the scored call's model as reports key it; None for sessions"
    )
    agent_name: Name | None = Field(default=None, description="the scored call's agent")
    experiments: dict[str, str] = Field(
        default_factory=dict,
        description="the target's experiment assignments (experiment -> variant)",
    )


class AgentSpan(BaseModel):
    """The wall time of one agent invocation inside a session."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier = Field(default_factory=new_id)
    session_id: Identifier
    parent_id: Identifier | None = None
    agent_name: Name
    operation: Name | None = None
    started_at: AwareDatetime
    ended_at: AwareDatetime
    success: bool = True
    error_type: Name | None = None

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000.0


class ScoreStats(BaseModel):
    """How many scores and their mean."""

    count: int
    mean: float


class ScoreBreakdown(BaseModel):
    """Mean scores by score name, and per score name by model, agent and experiment variant.

    A call scored directly counts under its model and agent ("(none)" without one); a score
    counts for every experiment variant its target (the session, or the call) was assigned.
    """

    count: int = 0
    by_name: dict[str, ScoreStats] = Field(default_factory=dict)
    by_model: dict[str, dict[str, ScoreStats]] = Field(
        default_factory=dict, description="model -> score name -> stats (scored calls only)"
    )
    by_agent: dict[str, dict[str, ScoreStats]] = Field(
        default_factory=dict, description="agent -> score name -> stats (scored calls only)"
    )
    by_variant: dict[str, dict[str, dict[str, ScoreStats]]] = Field(
        default_factory=dict, description="experiment -> variant -> score name -> stats"
    )


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
    cached_tokens: int = 0
    reasoning_tokens: int = 0
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
    by_provider: dict[str, TokenCounts] = Field(
        default_factory=dict, description="keyed by provider name, as cost.by_provider"
    )
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


class CacheSummary(BaseModel):
    """Calls made inside `obsdeco.cache()`: answered by the cache (hits, which count among the
    report's calls) or sent (misses); `saved_usd` is the hits' list price."""

    hits: int = 0
    misses: int = 0
    saved_usd: float = 0.0
    hit_rate: float | None = Field(default=None, description="hits / (hits + misses)")


class RouteRuleSummary(BaseModel):
    """One route rule's calls (`RoutingSummary.by_rule`, keyed "from_model -> to_model")."""

    routed_calls: int = 0
    saved_usd: float = 0.0
    shadow_calls: int = 0
    shadow_saved_usd: float = 0.0
    success_rate: float | None = Field(default=None, description="of the rule's routed calls")
    shadow_success_rate: float | None = Field(
        default=None, description="of its shadow calls (made with `from_model`)"
    )


class RoutingSummary(BaseModel):
    """What the model router changed (`routed_calls`, `saved_usd`: the price at the rules'
    `from_model` less the price paid) and what shadow rules would have saved; the quality of
    routed calls against the others."""

    routed_calls: int = 0
    saved_usd: float = 0.0
    shadow_calls: int = 0
    shadow_saved_usd: float = Field(
        default=0.0, description="the price paid less the price at the shadow rules' models"
    )
    routed_success_rate: float | None = None
    unrouted_success_rate: float | None = Field(
        default=None, description="of the calls the router did not change (shadow calls too)"
    )
    by_rule: dict[str, RouteRuleSummary] = Field(default_factory=dict)


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
    cache: CacheSummary = Field(default_factory=CacheSummary)
    routing: RoutingSummary = Field(default_factory=RoutingSummary)
    suggestions: list[Suggestion] = Field(default_factory=list)
    scores: ScoreBreakdown = Field(default_factory=ScoreBreakdown)
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
    cache: CacheSummary = Field(default_factory=CacheSummary)
    routing: RoutingSummary = Field(default_factory=RoutingSummary)
    suggestions: list[Suggestion] = Field(default_factory=list)
    scores: ScoreBreakdown = Field(default_factory=ScoreBreakdown)


class SavingsDay(BaseModel):
    """One UTC day of what the response cache and the router saved."""

    day: date
    cache_saved_usd: float = 0.0
    routing_saved_usd: float = 0.0
    shadow_saved_usd: float = 0.0
    cache_hits: int = 0
    routed_calls: int = 0


class SavingsReport(_Rendered):
    """What obsdeco's optimisation engine saved over a time range, per UTC day (days without
    a cache hit, routed or shadow call are left out), and what the report's suggestions
    could still save (`remaining_potential_usd`, the sum of their estimates)."""

    project: str | None
    since: datetime | None = None
    until: datetime | None = None
    days: list[SavingsDay] = Field(default_factory=list)
    cache_saved_usd: float = 0.0
    routing_saved_usd: float = 0.0
    shadow_saved_usd: float = 0.0
    cache_hits: int = 0
    routed_calls: int = 0
    saved_usd: float = Field(default=0.0, description="by the cache and the router together")
    remaining_potential_usd: float = 0.0
    suggestions: list[Suggestion] = Field(default_factory=list)
