"""Builds a `SessionReport` from a session's calls and agent spans."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from obsdeco.analyzers.columns import CallColumns
from obsdeco.analyzers.cost_analyzer import CallPrices, PriceTable, analyze_cost
from obsdeco.analyzers.engine_sections import EngineTally
from obsdeco.analyzers.latency_analyzer import analyze_latency
from obsdeco.analyzers.quality_analyzer import analyze_quality
from obsdeco.analyzers.registry import run_custom_analyzers
from obsdeco.analyzers.scores import score_breakdown
from obsdeco.analyzers.suggestions import repeats_from_calls, suggest, usages_from_calls
from obsdeco.analyzers.token_analyzer import analyze_tokens
from obsdeco.models import AgentSpan, LLMCall, Score, Session, SessionReport, Totals


def _usd(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def price_calls(calls: Sequence[LLMCall], prices: PriceTable) -> list[LLMCall]:
    """Copies of `calls` with `cost_usd` and `saved_usd` set (None where they cannot be
    priced; `saved_usd` also for calls neither served from the cache nor routed)."""
    priced = prices.call_prices(CallColumns(calls))
    return [
        call.model_copy(update={"cost_usd": _usd(cost), "saved_usd": _usd(saved)})
        for call, cost, saved in zip(calls, priced.cost, priced.saved, strict=True)
    ]


def engine_tally(calls: Sequence[LLMCall], priced: CallPrices) -> EngineTally:
    """The cache and routing sections of these calls."""
    tally = EngineTally()
    for index, call in enumerate(calls):
        tally.add(
            calls=1,
            errors=int(not call.success),
            model=call.model,
            cache_hit=call.cache_hit,
            routed_from=call.routed_from,
            shadow_model=call.shadow_model,
            cache_saved=float(priced.cache_saved[index]),
            routing_saved=float(priced.routing_saved[index]),
            shadow_saved=float(priced.shadow_saved[index]),
        )
    return tally


def session_totals(session: Session, calls: Sequence[LLMCall], prices: PriceTable) -> Totals:
    """The aggregates stored on the session row when it ends (computed on the writer thread).

    Plain Python sums per provider name and model, cheaper than numpy for the tens of calls a
    session usually has; each model's cost comes from its token sums, priced by the same
    formula as reports. Cache hits cost nothing.
    """
    prompt = completion = cached = reasoning = errors = unknown = 0
    latency = 0.0
    groups: dict[tuple[str, str, str], list[float]] = {}
    for call in calls:
        fields = call.__dict__
        call_prompt, call_completion = fields["prompt_tokens"], fields["completion_tokens"]
        call_cached, call_written = (
            fields["cached_tokens"] or 0,
            fields["cache_creation_tokens"] or 0,
        )
        latency += fields["latency_ms"]
        errors += not fields["success"]
        cached += call_cached
        reasoning += fields["reasoning_tokens"] or 0
        if call_prompt is None or call_completion is None:
            unknown += 1
            prompt += call_prompt or 0
            completion += call_completion or 0
            continue
        prompt += call_prompt
        completion += call_completion
        if fields["cache_hit"] is True:
            continue
        key = (
            fields["provider_name"],
            fields["response_model"] or fields["model"],
            fields["model"],
        )
        sums = groups.setdefault(key, [0.0, 0.0, 0.0, 0.0, 0.0])
        sums[0] += call_prompt
        sums[1] += call_cached
        sums[2] += call_written
        sums[3] += call_completion
        sums[4] = max(sums[4], call_prompt)
    cost = 0.0
    for key, (group_prompt, group_cached, written, group_completion, largest) in groups.items():
        group_cost = prices.price_sums(
            key, group_prompt, group_cached, written, group_completion, largest
        )
        if group_cost is None:
            rows = [call for call in calls if _key(call) == key]
            group_cost = float(np.nansum(prices.price_calls(CallColumns(rows))))
        cost += group_cost
    return Totals(
        calls=len(calls),
        errors=errors,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        total_tokens=prompt + completion,
        cost_usd=cost,
        latency_ms=latency,
        duration_ms=session.duration_ms,
        calls_with_unknown_tokens=unknown,
    )


def _key(call: LLMCall) -> tuple[str, str, str]:
    return (call.provider_name, call.model_key, call.model)


def _totals(session: Session, columns: CallColumns, costs: np.ndarray) -> Totals:
    prompt = int(np.nansum(columns.prompt_tokens))
    completion = int(np.nansum(columns.completion_tokens))
    return Totals(
        calls=columns.size,
        errors=int(np.count_nonzero(~columns.success)),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=int(np.nansum(columns.cached_tokens)),
        reasoning_tokens=int(np.nansum(columns.reasoning_tokens)),
        total_tokens=prompt + completion,
        cost_usd=float(np.nansum(costs)),
        latency_ms=float(columns.latency_ms.sum()),
        duration_ms=session.duration_ms,
        calls_with_unknown_tokens=int(np.count_nonzero(columns.tokens_unknown)),
    )


def build_report(
    session: Session,
    calls: Sequence[LLMCall],
    spans: Sequence[AgentSpan],
    prices: PriceTable,
    scores: Sequence[Score] = (),
) -> SessionReport:
    """Every breakdown of one session, computed column-wise over its calls, and the mean of
    its scores (of the session and of its calls)."""
    columns = CallColumns(calls)
    priced = prices.call_prices(columns)
    costs = priced.cost
    latency = analyze_latency(columns, spans)
    tally = engine_tally(calls, priced)
    report = SessionReport(
        session=session,
        totals=_totals(session, columns, costs),
        cost=analyze_cost(columns, costs, prices.source),
        latency=latency,
        tokens=analyze_tokens(columns),
        quality=analyze_quality(columns),
        cache=tally.cache(),
        routing=tally.routing(),
        suggestions=suggest(
            usages_from_calls(calls, columns), repeats_from_calls(calls, costs), latency, prices
        ),
        scores=score_breakdown(scores),
    )
    return run_custom_analyzers(report, calls)
