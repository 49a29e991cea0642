"""Builds a `SessionReport` from a session's calls and agent spans."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from obsdeco.analyzers.columns import CallColumns
from obsdeco.analyzers.cost_analyzer import PriceTable, analyze_cost
from obsdeco.analyzers.latency_analyzer import analyze_latency
from obsdeco.analyzers.quality_analyzer import analyze_quality
from obsdeco.analyzers.token_analyzer import analyze_tokens
from obsdeco.models import AgentSpan, LLMCall, Session, SessionReport, Totals


def price_calls(calls: Sequence[LLMCall], prices: PriceTable) -> list[LLMCall]:
    """Copies of `calls` with `cost_usd` set (None where it cannot be priced)."""
    costs = prices.price_calls(CallColumns.from_calls(calls))
    return [
        call.model_copy(update={"cost_usd": None if np.isnan(cost) else float(cost)})
        for call, cost in zip(calls, costs, strict=True)
    ]


def session_totals(session: Session, calls: Sequence[LLMCall], prices: PriceTable) -> Totals:
    """The aggregates stored on the session row when it ends."""
    columns = CallColumns.from_calls(calls)
    return _totals(session, columns, prices.price_calls(columns))


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
    columns = CallColumns.from_calls(calls)
    costs = prices.price_calls(columns)
    return SessionReport(
        session=session,
        totals=_totals(session, columns, costs),
        cost=analyze_cost(columns, costs, prices.source),
        latency=analyze_latency(columns, spans),
        tokens=analyze_tokens(columns),
        quality=analyze_quality(columns),
        suggestions=[],
    )
