"""Suggestions: concrete changes, each backed by the calls or groups that justify it.

The rules read per-model usage (`ModelUsage`), repeated requests and the latency breakdown,
which a session report computes from its calls and a project report from SQL aggregates, so
both give the same advice on the same data. Thresholds are module constants; a rule without
evidence says nothing, so a clean dataset yields no suggestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from obsdeco.analyzers.columns import CallColumns, FloatArray
from obsdeco.analyzers.cost_analyzer import PriceTable, UnitPrices
from obsdeco.models import LatencyBreakdown, LLMCall, Suggestion
from obsdeco.storage.base import LONG_PROMPT_TOKENS

SMALL_OUTPUT_TOKENS = 300
"""A model is worth downgrading for calls whose outputs average at most this many tokens."""
MIN_CALLS_FOR_A_PATTERN = 3
LOW_CACHED_SHARE = 0.2
BOTTLENECK_SHARE = 0.5
MIN_BOTTLENECK_MS = 1_000.0
"""A bottleneck must hold at least this much LLM time to be worth acting on."""
HIGH_ERROR_RATE = 0.1
HIGH_RATE_LIMIT_RATE = 0.05
EVIDENCE_LIMIT = 10

CHEAPER_MODELS: dict[str, str] = {
    "gpt-4": "gpt-4o-mini",
    "gpt-4-turbo": "gpt-4o-mini",
    "gpt-4o": "gpt-4o-mini",
    "gpt-4.1": "gpt-4.1-mini",
    "gpt-4.1-mini": "gpt-4.1-nano",
    "gpt-5": "gpt-5-mini",
    "gpt-5-mini": "gpt-5-nano",
    "o1": "o3-mini",
    "o3": "o4-mini",
    "claude-opus-4-1": "claude-sonnet-4-5",
    "claude-opus-4-5": "claude-sonnet-4-5",
    "claude-sonnet-4-5": "claude-haiku-4-5",
    "claude-sonnet-4-6": "claude-haiku-4-5",
    "claude-3-7-sonnet-20250219": "claude-haiku-4-5",
    "claude-3-5-sonnet-20241022": "claude-3-5-haiku-20241022",
}
"""Same provider, same family, cheaper: the candidates the cheaper-model rule may propose."""


def cheaper_candidate(model: str) -> str | None:
    """The cheaper model to propose for `model` (dated names take their family's)."""
    if model in CHEAPER_MODELS:
        return CHEAPER_MODELS[model]
    for family in sorted(CHEAPER_MODELS, key=len, reverse=True):
        if model.startswith(family + "-2"):
            return CHEAPER_MODELS[family]
    return None


@dataclass(slots=True)
class TokenSums:
    """Token sums of calls whose prompt and completion counts are known."""

    calls: int = 0
    prompt: float = 0.0
    cached: float = 0.0
    written: float = 0.0
    completion: float = 0.0
    largest_prompt: float = 0.0

    def add(self, other: TokenSums) -> None:
        self.calls += other.calls
        self.prompt += other.prompt
        self.cached += other.cached
        self.written += other.written
        self.completion += other.completion
        self.largest_prompt = max(self.largest_prompt, other.largest_prompt)


@dataclass(slots=True)
class ModelUsage:
    """One provider and model: what the rules need to know about its calls."""

    provider: str
    model: str
    requested_model: str
    calls: int = 0
    failed: int = 0
    rate_limited: int = 0
    succeeded: TokenSums = field(default_factory=TokenSums)
    """Successful calls with known tokens (what a cheaper model would have answered)."""
    long_prompts: TokenSums = field(default_factory=TokenSums)
    """Calls whose prompt had at least LONG_PROMPT_TOKENS tokens."""
    evidence: list[str] = field(default_factory=list)
    failed_evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RepeatedRequest:
    request_hash: str
    count: int
    repeat_cost_usd: float


def _cost(prices: UnitPrices | None, sums: TokenSums) -> float | None:
    if prices is None:
        return None
    return PriceTable.price_sums_with(
        prices, sums.prompt, sums.cached, sums.written, sums.completion, sums.largest_prompt
    )


def cheaper_model(usages: Sequence[ModelUsage], prices: PriceTable) -> list[Suggestion]:
    """(a) Small outputs on an expensive model: the same tokens at the candidate's price."""
    suggestions = []
    for usage in usages:
        candidate = cheaper_candidate(usage.model)
        done = usage.succeeded
        if candidate is None or done.calls < MIN_CALLS_FOR_A_PATTERN:
            continue
        average_output = done.completion / done.calls
        if average_output > SMALL_OUTPUT_TOKENS:
            continue
        actual = _cost(prices.lookup(usage.provider, usage.model, usage.requested_model), done)
        instead = _cost(prices.lookup(usage.provider, candidate, candidate), done)
        if actual is None or instead is None or actual - instead <= 0:
            continue
        suggestions.append(
            Suggestion(
                kind="cheaper_model",
                message=(
                    f"{done.calls} calls to {usage.model} produced short outputs (avg "
                    f"{average_output:.0f} tokens); {candidate} would have cost "
                    f"${instead:.4f} instead of ${actual:.4f}"
                ),
                estimated_savings_usd=actual - instead,
                evidence=[f"model={usage.model}", f"candidate={candidate}", *usage.evidence],
            )
        )
    return suggestions


def duplicate_requests(repeats: Sequence[RepeatedRequest]) -> list[Suggestion]:
    """(b) Identical requests (same request_hash) a response cache would have served."""
    repeats = [repeat for repeat in repeats if repeat.count > 1]
    if not repeats:
        return []
    repeated_calls = sum(repeat.count - 1 for repeat in repeats)
    ranked = sorted(repeats, key=lambda repeat: (-repeat.count, repeat.request_hash))
    return [
        Suggestion(
            kind="response_cache",
            message=(
                f"{repeated_calls} calls repeated an identical earlier request "
                f"({len(repeats)} distinct requests); a response cache would have served them"
            ),
            estimated_savings_usd=sum(repeat.repeat_cost_usd for repeat in repeats),
            evidence=[
                f"request_hash={repeat.request_hash} x{repeat.count}"
                for repeat in ranked[:EVIDENCE_LIMIT]
            ],
        )
    ]


def prompt_caching(usages: Sequence[ModelUsage], prices: PriceTable) -> list[Suggestion]:
    """(c) Long prompts, repeated on one model, with a low cached share."""
    suggestions = []
    for usage in usages:
        long = usage.long_prompts
        if long.calls < MIN_CALLS_FOR_A_PATTERN or long.prompt == 0:
            continue
        share = long.cached / long.prompt
        if share >= LOW_CACHED_SHARE:
            continue
        unit = prices.lookup(usage.provider, usage.model, usage.requested_model)
        savings = None
        if unit is not None:
            # The most caching could save: every uncached input token read from cache.
            uncached = TokenSums(
                calls=long.calls,
                prompt=long.prompt - long.cached - long.written,
                largest_prompt=long.largest_prompt,
            )
            as_cache_reads = TokenSums(
                calls=long.calls,
                prompt=uncached.prompt,
                cached=uncached.prompt,
                largest_prompt=long.largest_prompt,
            )
            now, cached = _cost(unit, uncached), _cost(unit, as_cache_reads)
            if now is not None and cached is not None and now > cached:
                savings = now - cached
        suggestions.append(
            Suggestion(
                kind="prompt_caching",
                message=(
                    f"{long.calls} calls to {usage.model} sent prompts of {LONG_PROMPT_TOKENS}+ "
                    f"tokens with only {share:.0%} read from cache; put the stable part first "
                    "and enable prompt caching (the savings shown are the most it could save)"
                ),
                estimated_savings_usd=savings,
                evidence=[f"model={usage.model}", f"cached_share={share:.2f}", *usage.evidence],
            )
        )
    return suggestions


def latency_bottlenecks(latency: LatencyBreakdown) -> list[Suggestion]:
    """(d) One agent or operation taking most of the LLM time, among several."""
    suggestions = []
    for kind in ("agent", "operation"):
        ranked = [item for item in latency.bottlenecks if item.kind == kind]
        if len(ranked) < 2:
            continue
        top = ranked[0]
        if top.share < BOTTLENECK_SHARE or top.total_ms < MIN_BOTTLENECK_MS or top.name == "(none)":
            continue
        suggestions.append(
            Suggestion(
                kind="latency_bottleneck",
                message=(
                    f"{kind} {top.name} takes {top.share:.0%} of the LLM time "
                    f"({top.total_ms:,.0f} ms over {top.calls} calls, p95 {top.p95_ms:,.0f} ms): "
                    "stream its output, run its calls concurrently, or give it a faster model"
                ),
                estimated_savings_usd=None,
                evidence=[f"{kind}={top.name}", f"share={top.share:.2f}", f"calls={top.calls}"],
            )
        )
    return suggestions


def error_rates(usages: Sequence[ModelUsage]) -> list[Suggestion]:
    """(e) High error or rate-limit rates, per provider and model."""
    suggestions = []
    for usage in usages:
        if usage.calls < MIN_CALLS_FOR_A_PATTERN:
            continue
        where = [f"provider={usage.provider}", f"model={usage.model}", *usage.failed_evidence]
        if usage.rate_limited / usage.calls >= HIGH_RATE_LIMIT_RATE:
            suggestions.append(
                Suggestion(
                    kind="rate_limits",
                    message=(
                        f"{usage.rate_limited} of {usage.calls} calls to {usage.provider} "
                        f"{usage.model} were rate limited: raise the limit, spread the load, "
                        "or back off with jitter"
                    ),
                    evidence=where,
                )
            )
        elif usage.failed / usage.calls >= HIGH_ERROR_RATE:
            suggestions.append(
                Suggestion(
                    kind="error_rate",
                    message=(
                        f"{usage.failed} of {usage.calls} calls to {usage.provider} {usage.model} "
                        f"failed ({usage.failed / usage.calls:.0%}); see errors_by_type"
                    ),
                    evidence=where,
                )
            )
    return suggestions


def suggest(
    usages: Sequence[ModelUsage],
    repeats: Sequence[RepeatedRequest],
    latency: LatencyBreakdown,
    prices: PriceTable,
) -> list[Suggestion]:
    """Every rule's suggestions, the ones with the largest estimated savings first."""
    suggestions = [
        *cheaper_model(usages, prices),
        *duplicate_requests(repeats),
        *prompt_caching(usages, prices),
        *latency_bottlenecks(latency),
        *error_rates(usages),
    ]
    return sorted(suggestions, key=lambda item: -(item.estimated_savings_usd or 0.0))


# --- from a session's calls -------------------------------------------------------------------


def _sums(columns: CallColumns, rows: np.ndarray) -> TokenSums:
    prompt = columns.prompt_tokens[rows]
    return TokenSums(
        calls=int(np.count_nonzero(rows)),
        prompt=float(prompt.sum()),
        cached=float(np.nan_to_num(columns.cached_tokens[rows]).sum()),
        written=float(np.nan_to_num(columns.cache_creation_tokens[rows]).sum()),
        completion=float(columns.completion_tokens[rows].sum()),
        largest_prompt=float(prompt.max()) if prompt.size else 0.0,
    )


def usages_from_calls(calls: Sequence[LLMCall], columns: CallColumns) -> list[ModelUsage]:
    """Per-model usage of a session's calls, with call ids as evidence."""
    usages = []
    known = ~columns.tokens_unknown
    long = np.nan_to_num(columns.prompt_tokens) >= LONG_PROMPT_TOKENS
    pairs = sorted({(str(p), str(m)) for p, m in zip(columns.provider, columns.model, strict=True)})
    for provider, model in pairs:
        rows = (columns.provider == provider) & (columns.model == model)
        failed = rows & ~columns.success
        limited = failed & (columns.error_type == "rate_limit")
        first = int(np.flatnonzero(rows)[0])
        usages.append(
            ModelUsage(
                provider=provider,
                model=model,
                requested_model=str(columns.requested_model[first]),
                calls=int(np.count_nonzero(rows)),
                failed=int(np.count_nonzero(failed)),
                rate_limited=int(np.count_nonzero(limited)),
                succeeded=_sums(columns, rows & columns.success & known),
                long_prompts=_sums(columns, rows & known & long),
                evidence=[calls[i].id for i in np.flatnonzero(rows)[:EVIDENCE_LIMIT]],
                failed_evidence=[calls[i].id for i in np.flatnonzero(failed)[:EVIDENCE_LIMIT]],
            )
        )
    return usages


def repeats_from_calls(calls: Sequence[LLMCall], costs: FloatArray) -> list[RepeatedRequest]:
    """Successful calls grouped by request hash, with the cost of all but the first."""
    groups: dict[str, list[int]] = {}
    for index, call in enumerate(calls):
        if call.request_hash and call.success:
            groups.setdefault(call.request_hash, []).append(index)
    return [
        RepeatedRequest(digest, len(rows), float(np.nansum(costs[rows[1:]])))
        for digest, rows in groups.items()
        if len(rows) > 1
    ]
