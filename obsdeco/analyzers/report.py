"""Builds a `SessionReport` from a session's calls and agent spans."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from obsdeco.analyzers.columns import CallColumns
from obsdeco.analyzers.cost_analyzer import PriceTable, analyze_cost
from obsdeco.analyzers.latency_analyzer import analyze_latency
from obsdeco.analyzers.quality_analyzer import analyze_quality
from obsdeco.analyzers.suggestions import suggest
from obsdeco.analyzers.token_analyzer import analyze_tokens
from obsdeco.models import AgentSpan, LLMCall, Session, SessionReport, Totals


def price_calls(calls: Sequence[LLMCall], prices: PriceTable) -> list[LLMCall]:
    """Copies of `calls` with `cost_usd` set (None where it cannot be priced)."""
    costs = prices.price_calls(CallColumns(calls))
    return [
        call.model_copy(update={"cost_usd": None if np.isnan(cost) else float(cost)})
        for call, cost in zip(calls, costs, strict=True)
    ]


def session_totals(session: Session, calls: Sequence[LLMCall], prices: PriceTable) -> Totals:
    """The aggregates stored on the session row when it ends (computed on the writer thread).

    Sums are plain Python, cheaper than numpy for the tens of calls a session usually has;
    cost comes from the same vectorised pricing as reports.
    """
    fields = [call.__dict__ for call in calls]
    prompt = sum(f["prompt_tokens"] or 0 for f in fields)
    completion = sum(f["completion_tokens"] or 0 for f in fields)
    costs = prices.price_calls(CallColumns(calls))
    return Totals(
        calls=len(fields),
        errors=sum(not f["success"] for f in fields),
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=sum(f["cached_tokens"] or 0 for f in fields),
        reasoning_tokens=sum(f["reasoning_tokens"] or 0 for f in fields),
        total_tokens=prompt + completion,
        cost_usd=float(np.nansum(costs)),
        latency_ms=float(sum(f["latency_ms"] for f in fields)),
        duration_ms=session.duration_ms,
        calls_with_unknown_tokens=sum(
            f["prompt_tokens"] is None or f["completion_tokens"] is None for f in fields
        ),
    )


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
) -> SessionReport:
    """Every breakdown of one session, computed column-wise over its calls."""
    columns = CallColumns(calls)
    costs = prices.price_calls(columns)
    latency = analyze_latency(columns, spans)
    return SessionReport(
        session=session,
        totals=_totals(session, columns, costs),
        cost=analyze_cost(columns, costs, prices.source),
        latency=latency,
        tokens=analyze_tokens(columns),
        quality=analyze_quality(columns),
        suggestions=suggest(calls, columns, costs, prices, latency),
    )
