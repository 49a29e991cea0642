"""Suggestions: concrete changes, each backed by the calls or groups that justify it.

The rules read per-model usage (`ModelUsage`), repeated requests and the latency breakdown,
which a session report computes from its calls and a project report from SQL aggregates, so
both give the same advice on the same data; calls answered by obsdeco's response cache were
sent to no provider and are left out of both. Thresholds are module constants; a rule without
evidence says nothing, so a clean dataset yields no suggestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from obsdeco.analyzers.columns import CallColumns, FloatArray
from obsdeco.analyzers.cost_analyzer import PriceTable, TokenColumns, UnitPrices
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
    """Token sums of calls whose prompt and completion counts are known. `per_call` keeps
    the calls' own counts when they are at hand (a session), so that each call is priced at
    its own price tier; from sums alone (a project) a tier crossing leaves the cost unknown."""

    calls: int = 0
    prompt: float = 0.0
    cached: float = 0.0
    written: float = 0.0
    completion: float = 0.0
    largest_prompt: float = 0.0
    per_call: TokenColumns | None = None

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

    provider_name: str
    model: str
    requested_model: str
    calls: int = 0
    failed: int = 0
    rate_limited: int = 0
    """Calls that failed with a rate limit."""
    rate_limited_calls: int = 0
    """Calls that met at least one rate limit: failed with one, or retried by the SDK after one."""
    succeeded: TokenSums = field(default_factory=TokenSums)
    """Successful calls with known tokens (what a cheaper model would have answered)."""
    long_prompts: TokenSums = field(default_factory=TokenSums)
    """Calls whose prompt had at least LONG_PROMPT_TOKENS tokens."""
    succeeded_evidence: list[str] = field(default_factory=list)
    long_prompt_evidence: list[str] = field(default_factory=list)
    rate_limited_evidence: list[str] = field(default_factory=list)
    other_failure_evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Repeats:
    """Successful calls that repeated an identical earlier successful request."""

    calls: int
    cost_usd: float | None
    """What they cost; None when none of them could be priced."""
    evidence: list[str]
    """The most repeated requests, most repeated first."""
    distinct: int | None = None
    """How many distinct requests were repeated, where known."""


def _cost(prices: UnitPrices | None, sums: TokenSums) -> float | None:
    if prices is None:
        return None
    if sums.per_call is not None:
        return float(sums.per_call.cost(prices).sum())
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
        actual = _cost(prices.lookup(usage.provider_name, usage.model, usage.requested_model), done)
        instead = _cost(prices.lookup(usage.provider_name, candidate, candidate), done)
        if actual is None or instead is None or actual - instead <= 0:
            continue
        suggestions.append(
            Suggestion(
                kind="cheaper_model",
                message=(
                    f"{done.calls} calls to {usage.model} produced short outputs (avg "
                    f"{average_output:.0f} tokens); {candidate} would have cost "
                    f"${instead:.4f} instead of ${actual:.4f}: route such requests with "
                    f"obsdeco.Route(from_model={usage.requested_model!r}, "
                    f"to_model={candidate!r}) (try shadow=True first)"
                ),
                estimated_savings_usd=actual - instead,
                evidence=[
                    f"model={usage.model}",
                    f"candidate={candidate}",
                    *usage.succeeded_evidence,
                ],
            )
        )
    return suggestions


def duplicate_requests(repeats: Repeats) -> list[Suggestion]:
    """(b) Identical requests (same request_hash) a response cache would have served."""
    if not repeats.calls:
        return []
    distinct = "" if repeats.distinct is None else f" ({repeats.distinct} distinct requests)"
    return [
        Suggestion(
            kind="response_cache",
            message=(
                f"{repeats.calls} calls repeated an identical earlier request{distinct}; "
                "a response cache would have served them: make them inside "
                "with obsdeco.cache(ttl_s=...)"
            ),
            estimated_savings_usd=repeats.cost_usd,
            evidence=repeats.evidence[:EVIDENCE_LIMIT],
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
        unit = prices.lookup(usage.provider_name, usage.model, usage.requested_model)
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
                evidence=[
                    f"model={usage.model}",
                    f"cached_share={share:.2f}",
                    *usage.long_prompt_evidence,
                ],
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
    """(e) High rate-limit rates and high rates of other errors, per provider and model."""
    suggestions = []
    for usage in usages:
        if usage.calls < MIN_CALLS_FOR_A_PATTERN:
            continue
        model = [f"provider={usage.provider_name}", f"model={usage.model}"]
        limits = usage.rate_limited_calls
        if limits / usage.calls >= HIGH_RATE_LIMIT_RATE:
            suggestions.append(
                Suggestion(
                    kind="rate_limits",
                    message=(
                        f"{limits} of {usage.calls} calls to {usage.provider_name} {usage.model} "
                        f"hit a rate limit ({usage.rate_limited} failed; the others were retried "
                        "by the SDK at the cost of latency): raise the limit, spread the load, or "
                        "back off with jitter"
                    ),
                    evidence=[*model, *usage.rate_limited_evidence],
                )
            )
        other_errors = usage.failed - usage.rate_limited
        if other_errors / usage.calls >= HIGH_ERROR_RATE:
            suggestions.append(
                Suggestion(
                    kind="error_rate",
                    message=(
                        f"{other_errors} of {usage.calls} calls to {usage.provider_name} "
                        f"{usage.model} failed other than by rate limits "
                        f"({other_errors / usage.calls:.0%}); see errors_by_type"
                    ),
                    evidence=[*model, *usage.other_failure_evidence],
                )
            )
    return suggestions


def suggest(
    usages: Sequence[ModelUsage],
    repeats: Repeats,
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
    per_call = TokenColumns.of(columns).select(rows)
    return TokenSums(
        calls=int(np.count_nonzero(rows)),
        prompt=float(per_call.prompt.sum()),
        cached=float(per_call.cached.sum()),
        written=float(per_call.written.sum()),
        completion=float(per_call.completion.sum()),
        largest_prompt=float(per_call.prompt.max()) if per_call.prompt.size else 0.0,
        per_call=per_call,
    )


def usages_from_calls(calls: Sequence[LLMCall], columns: CallColumns) -> list[ModelUsage]:
    """Per-model usage of a session's calls sent to a provider (cache hits were not), with
    the ids of the calls behind each figure."""

    def ids(rows: np.ndarray) -> list[str]:
        return [calls[index].id for index in np.flatnonzero(rows)[:EVIDENCE_LIMIT]]

    usages = []
    known = ~columns.tokens_unknown
    long = np.nan_to_num(columns.prompt_tokens) >= LONG_PROMPT_TOKENS
    sent = ~columns.cache_hit
    pairs = sorted(
        {
            (str(p), str(m))
            for p, m in zip(columns.provider_name[sent], columns.model[sent], strict=True)
        }
    )
    for provider_name, model in pairs:
        rows = sent & (columns.provider_name == provider_name) & (columns.model == model)
        failed = rows & ~columns.success
        limited = failed & (columns.error_type == "rate_limit")
        met_limits = limited | (rows & (columns.rate_limited_retries > 0))
        succeeded, long_prompts = rows & columns.success & known, rows & known & long
        first = int(np.flatnonzero(rows)[0])
        usages.append(
            ModelUsage(
                provider_name=provider_name,
                model=model,
                requested_model=str(columns.requested_model[first]),
                calls=int(np.count_nonzero(rows)),
                failed=int(np.count_nonzero(failed)),
                rate_limited=int(np.count_nonzero(limited)),
                rate_limited_calls=int(np.count_nonzero(met_limits)),
                succeeded=_sums(columns, succeeded),
                long_prompts=_sums(columns, long_prompts),
                succeeded_evidence=ids(succeeded),
                long_prompt_evidence=ids(long_prompts),
                rate_limited_evidence=ids(met_limits),
                other_failure_evidence=ids(failed & ~limited),
            )
        )
    return usages


def repeats_from_calls(calls: Sequence[LLMCall], costs: FloatArray) -> Repeats:
    """Successful calls grouped by request hash; every call after the first is a repeat (but
    for cache hits: a cache already served them)."""
    rows = [
        index
        for index, call in enumerate(calls)
        if call.request_hash and call.success and call.cache_hit is not True
    ]
    if not rows:
        return Repeats(0, None, [])
    hashes = np.array([calls[index].request_hash for index in rows], dtype=str)
    names, first, counts = np.unique(hashes, return_index=True, return_counts=True)
    repeated = np.ones(len(rows), dtype=bool)
    repeated[first] = False
    repeat_costs = costs[rows][repeated]
    priced = repeat_costs[~np.isnan(repeat_costs)]
    ranked = sorted(
        ((int(count), str(name)) for name, count in zip(names, counts, strict=True) if count > 1),
        key=lambda item: (-item[0], item[1]),
    )
    return Repeats(
        calls=int(repeated.sum()),
        cost_usd=float(priced.sum()) if priced.size else None,
        evidence=[f"request_hash={name} x{count}" for count, name in ranked],
        distinct=len(ranked),
    )
