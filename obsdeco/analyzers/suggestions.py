"""Suggestions: concrete changes, each backed by the calls or groups that justify it.

Every rule states its thresholds as module constants; a rule without evidence says nothing,
so a clean dataset yields no suggestion.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from obsdeco.analyzers.columns import CallColumns, FloatArray
from obsdeco.analyzers.cost_analyzer import PriceTable
from obsdeco.models import LatencyBreakdown, LLMCall, Suggestion

SMALL_OUTPUT_TOKENS = 300
"""A model is worth downgrading for calls whose outputs average at most this many tokens."""
MIN_CALLS_FOR_A_PATTERN = 3
LONG_PROMPT_TOKENS = 1_024
"""Prompts at least this long can use provider prompt caching (OpenAI and Anthropic minimum)."""
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


def _cheaper_candidate(model: str) -> str | None:
    if model in CHEAPER_MODELS:
        return CHEAPER_MODELS[model]
    # Dated names (gpt-4o-2024-08-06) take their family's candidate.
    for family in sorted(CHEAPER_MODELS, key=len, reverse=True):
        if model.startswith(family + "-2"):
            return CHEAPER_MODELS[family]
    return None


def _ids(calls: Sequence[LLMCall], rows: np.ndarray) -> list[str]:
    return [calls[index].id for index in np.flatnonzero(rows)[:EVIDENCE_LIMIT]]


def cheaper_model(
    calls: Sequence[LLMCall], columns: CallColumns, costs: FloatArray, prices: PriceTable
) -> list[Suggestion]:
    """(a) Small outputs on an expensive model: price the same tokens at the candidate's price."""
    suggestions = []
    for model in sorted(set(columns.model.tolist())):
        candidate = _cheaper_candidate(model)
        if candidate is None:
            continue
        rows = (columns.model == model) & columns.success & ~np.isnan(costs)
        if np.count_nonzero(rows) < MIN_CALLS_FOR_A_PATTERN:
            continue
        if float(np.nanmean(columns.completion_tokens[rows])) > SMALL_OUTPUT_TOKENS:
            continue
        provider = str(columns.provider[rows][0])
        candidate_prices = prices.lookup(provider, candidate, candidate)
        if candidate_prices is None:
            continue
        candidate_cost = float(np.nansum(prices.price_with(columns, candidate_prices)[rows]))
        actual = float(costs[rows].sum())
        if actual - candidate_cost <= 0:
            continue
        count = int(np.count_nonzero(rows))
        suggestions.append(
            Suggestion(
                kind="cheaper_model",
                message=(
                    f"{count} calls to {model} produced short outputs (avg "
                    f"{np.nanmean(columns.completion_tokens[rows]):.0f} tokens); {candidate} "
                    f"would have cost ${candidate_cost:.4f} instead of ${actual:.4f}"
                ),
                estimated_savings_usd=actual - candidate_cost,
                evidence=[f"model={model}", f"candidate={candidate}", *_ids(calls, rows)],
            )
        )
    return suggestions


def duplicate_requests(calls: Sequence[LLMCall], costs: FloatArray) -> list[Suggestion]:
    """(b) Identical requests (same request_hash) a response cache would have served."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, call in enumerate(calls):
        if call.request_hash and call.success:
            groups[call.request_hash].append(index)
    repeats = {digest: rows for digest, rows in groups.items() if len(rows) > 1}
    if not repeats:
        return []
    savings = sum(float(np.nansum(costs[rows[1:]])) for rows in repeats.values())
    repeated_calls = sum(len(rows) - 1 for rows in repeats.values())
    evidence = [
        f"request_hash={digest} x{len(rows)}"
        for digest, rows in sorted(repeats.items(), key=lambda item: -len(item[1]))
    ][:EVIDENCE_LIMIT]
    return [
        Suggestion(
            kind="response_cache",
            message=(
                f"{repeated_calls} calls repeated an identical earlier request "
                f"({len(repeats)} distinct requests); a response cache would have served them"
            ),
            estimated_savings_usd=savings,
            evidence=evidence,
        )
    ]


def prompt_caching(
    calls: Sequence[LLMCall], columns: CallColumns, costs: FloatArray, prices: PriceTable
) -> list[Suggestion]:
    """(c) Long prompts, repeated on one model, with a low cached share."""
    suggestions = []
    prompt = columns.prompt_tokens
    cached = np.nan_to_num(columns.cached_tokens)
    for model in sorted(set(columns.model.tolist())):
        rows = (columns.model == model) & (np.nan_to_num(prompt) >= LONG_PROMPT_TOKENS)
        if np.count_nonzero(rows) < MIN_CALLS_FOR_A_PATTERN:
            continue
        share = float(cached[rows].sum() / prompt[rows].sum())
        if share >= LOW_CACHED_SHARE:
            continue
        provider = str(columns.provider[rows][0])
        unit = prices.lookup(provider, model, str(columns.requested_model[rows][0]))
        savings = None
        if unit is not None:
            written = np.nan_to_num(columns.cache_creation_tokens[rows])
            uncached = prompt[rows] - cached[rows] - written
            rate_gap = unit.input.per_call(prompt[rows]) - unit.cache_read.per_call(prompt[rows])
            savings = float((uncached * rate_gap).sum() / 1_000_000) or None
        count = int(np.count_nonzero(rows))
        suggestions.append(
            Suggestion(
                kind="prompt_caching",
                message=(
                    f"{count} calls to {model} sent prompts of {LONG_PROMPT_TOKENS}+ tokens with "
                    f"only {share:.0%} read from cache; put the stable part first and enable "
                    "prompt caching (savings shown are the most it could save)"
                ),
                estimated_savings_usd=savings,
                evidence=[f"model={model}", f"cached_share={share:.2f}", *_ids(calls, rows)],
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
                    f"({top.total_ms:,.0f} ms in {top.calls} calls, "
                    f"p95 {top.p95_ms:,.0f} ms): stream its output, run its calls concurrently, "
                    "or give it a faster model"
                ),
                estimated_savings_usd=None,
                evidence=[f"{kind}={top.name}", f"share={top.share:.2f}", f"calls={top.calls}"],
            )
        )
    return suggestions


def error_rates(calls: Sequence[LLMCall], columns: CallColumns) -> list[Suggestion]:
    """(e) High error or rate-limit rates, per provider and model."""
    suggestions = []
    pairs = sorted({(str(p), str(m)) for p, m in zip(columns.provider, columns.model, strict=True)})
    for provider, model in pairs:
        rows = (columns.provider == provider) & (columns.model == model)
        total = int(np.count_nonzero(rows))
        if total < MIN_CALLS_FOR_A_PATTERN:
            continue
        failed = rows & ~columns.success
        limited = failed & (columns.error_type == "rate_limit")
        errors, rate_limited = int(np.count_nonzero(failed)), int(np.count_nonzero(limited))
        if rate_limited / total >= HIGH_RATE_LIMIT_RATE:
            suggestions.append(
                Suggestion(
                    kind="rate_limits",
                    message=(
                        f"{rate_limited} of {total} calls to {provider} {model} were rate "
                        "limited: raise the limit, spread the load, or back off with jitter"
                    ),
                    evidence=[f"provider={provider}", f"model={model}", *_ids(calls, limited)],
                )
            )
        elif errors / total >= HIGH_ERROR_RATE:
            suggestions.append(
                Suggestion(
                    kind="error_rate",
                    message=(
                        f"{errors} of {total} calls to {provider} {model} failed "
                        f"({errors / total:.0%}); see errors_by_type"
                    ),
                    evidence=[f"provider={provider}", f"model={model}", *_ids(calls, failed)],
                )
            )
    return suggestions


def suggest(
    calls: Sequence[LLMCall],
    columns: CallColumns,
    costs: FloatArray,
    prices: PriceTable,
    latency: LatencyBreakdown,
) -> list[Suggestion]:
    """Every rule's suggestions, the ones with the largest estimated savings first."""
    suggestions = [
        *cheaper_model(calls, columns, costs, prices),
        *duplicate_requests(calls, costs),
        *prompt_caching(calls, columns, costs, prices),
        *latency_bottlenecks(latency),
        *error_rates(calls, columns),
    ]
    return sorted(suggestions, key=lambda item: -(item.estimated_savings_usd or 0.0))
