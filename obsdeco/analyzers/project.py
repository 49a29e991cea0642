"""Project reports over a time range, with the aggregation done by the store.

The store returns sums per (provider name, model, agent, operation, outcome, repeat, cache and
route) group and quantiles, from its hourly rollups where the range allows; only those few rows
reach Python, never the calls themselves (but for the rare calls whose prompt crosses a price
tier, which are priced one by one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from obsdeco.analyzers.columns import NONE_KEY, CallColumns
from obsdeco.analyzers.cost_analyzer import PriceTable
from obsdeco.analyzers.engine_sections import EngineTally
from obsdeco.analyzers.scores import stored_score_breakdown
from obsdeco.analyzers.suggestions import (
    EVIDENCE_LIMIT,
    ModelUsage,
    Repeats,
    TokenSums,
    suggest,
)
from obsdeco.analyzers.token_analyzer import heaviest_operations
from obsdeco.models import (
    AgentTime,
    Bottleneck,
    CostBreakdown,
    LatencyBreakdown,
    LLMCall,
    ProjectReport,
    QualityBreakdown,
    TimeToFirstToken,
    TokenBreakdown,
    TokenCounts,
    Totals,
)
from obsdeco.storage.base import (
    LONG_PROMPT_TOKENS,
    REPORT_GROUPS,
    CallAggregate,
    CallFilter,
    GroupKey,
    ReportStore,
    ScoreFilter,
)

_TOP = 5


def _sums(row: CallAggregate) -> TokenSums:
    return TokenSums(
        calls=row.calls,
        prompt=row.prompt_tokens,
        cached=row.cached_tokens,
        written=row.cache_creation_tokens,
        completion=row.completion_tokens,
        largest_prompt=row.largest_prompt_tokens,
    )


@dataclass(frozen=True, slots=True)
class RowSavings:
    """What the cache and the router saved on a group's calls (None: unpriced)."""

    cache: float | None
    routing: float | None
    shadow: float | None


class _Costs:
    """Prices group rows from their sums, or call by call where a price tier is crossed, and
    notes what could not be priced. Cache hits cost nothing."""

    def __init__(self, backend: ReportStore, where: CallFilter, prices: PriceTable) -> None:
        self._backend, self._where, self._prices = backend, where, prices
        self.unpriced_models: set[str] = set()
        self.unpriced_calls = 0
        self._listed: dict[int, float | None] = {}
        self._calls: dict[int, CallColumns] = {}

    def of(self, row: CallAggregate) -> float | None:
        """USD paid for the row's calls; None when they cannot be priced."""
        group = row.group
        if group["cache_hit"] is True:
            return 0.0
        cost = self.listed(row)
        if cost is None:
            self.unpriced_calls += row.calls
            if group["tokens_known"]:
                self.unpriced_models.add(group["model"])
        return cost

    def listed(self, row: CallAggregate) -> float | None:
        """USD of the row's calls at their model's price, as if sent (a cache hit too)."""
        if id(row) not in self._listed:
            self._listed[id(row)] = self._at(row)
        return self._listed[id(row)]

    def savings(self, row: CallAggregate) -> RowSavings:
        """What the row's calls saved: by the cache (their list price, if hits), by the router
        (the price at `routed_from` less the list price) and by shadow rules, had they routed
        (the list price less the price at `shadow_model`). The row must be grouped by
        `SAVINGS_GROUPS`."""
        group = row.group
        listed = self.listed(row)
        routing = shadow = 0.0
        if group["routed_from"] is not None:
            instead = self._at(row, group["routed_from"])
            routing = None if instead is None or listed is None else instead - listed
        if group["shadow_model"] is not None:
            routed = self._at(row, group["shadow_model"])
            shadow = None if routed is None or listed is None else listed - routed
        return RowSavings(listed if group["cache_hit"] is True else 0.0, routing, shadow)

    def _at(self, row: CallAggregate, model: str | None = None) -> float | None:
        """USD of the row's tokens at `model`'s price (None: the row's own model); None when
        their tokens are unknown or the model has no price."""
        group = row.group
        if not group["tokens_known"]:
            return None
        key = (
            (group["provider_name"], group["model"], group["requested_model"])
            if model is None
            else (group["provider_name"], model, model)
        )
        prices = self._prices.lookup(*key)
        if prices is None:
            return None
        sums = _sums(row)
        cost = PriceTable.price_sums_with(
            prices, sums.prompt, sums.cached, sums.written, sums.completion, sums.largest_prompt
        )
        if cost is not None:
            return cost
        columns = self._row_calls(row)
        if model is None:
            return float(self._prices.list_prices(columns).sum())
        at = self._prices.price_at(columns, np.full(columns.size, model, dtype=object))
        return float(at.sum())

    def _row_calls(self, row: CallAggregate) -> CallColumns:
        """The group's calls with known tokens, read back from the store (to price them one
        by one where a price tier is crossed)."""
        if id(row) in self._calls:
            return self._calls[id(row)]
        group = row.group
        where = replace(self._where, repeated=group.get("repeated"))
        if "hour" in group:
            hour_end = group["hour"] + timedelta(hours=1)
            where = replace(
                where,
                since=max(group["hour"], where.since or group["hour"]),
                until=min(hour_end, where.until or hour_end),
            )
        keys = [key for key in group if key in _CALL_VALUE]
        calls = [
            call
            for call in self._backend.query_calls(where)
            if call.prompt_tokens is not None
            and call.completion_tokens is not None
            and all(_CALL_VALUE[key](call) == group[key] for key in keys)
        ]
        columns = self._calls[id(row)] = CallColumns(calls)
        return columns


_CALL_VALUE: dict[str, Callable[[LLMCall], object]] = {
    "provider": lambda call: call.provider.value,
    "provider_name": lambda call: call.provider_name,
    "model": lambda call: call.model_key,
    "requested_model": lambda call: call.model,
    "agent_name": lambda call: call.agent_name,
    "operation": lambda call: call.operation,
    "success": lambda call: call.success,
    "error_type": lambda call: call.error_type,
    "long_prompt": lambda call: (call.prompt_tokens or 0) >= LONG_PROMPT_TOKENS,
    "cache_hit": lambda call: call.cache_hit,
    "routed_from": lambda call: call.routed_from,
    "shadow_model": lambda call: call.shadow_model,
}
"""A call's value of each group key that `CallFilter` does not already narrow to."""


def _token_counts(rows: Iterable[CallAggregate]) -> TokenCounts:
    counts = TokenCounts()
    for row in rows:
        counts.prompt_tokens += row.prompt_tokens
        counts.completion_tokens += row.completion_tokens
        counts.cached_tokens += row.cached_tokens
        counts.cache_creation_tokens += row.cache_creation_tokens
        counts.reasoning_tokens += row.reasoning_tokens
        counts.calls += row.calls
        counts.unknown_calls += 0 if row.group["tokens_known"] else row.calls
    counts.total_tokens = counts.prompt_tokens + counts.completion_tokens
    return counts


def _by(rows: list[CallAggregate], key: str) -> dict[str, list[CallAggregate]]:
    grouped: dict[str, list[CallAggregate]] = defaultdict(list)
    for row in rows:
        grouped[row.group[key] or NONE_KEY].append(row)
    return dict(sorted(grouped.items()))


def _error_counts(failed: list[CallAggregate]) -> dict[str, int]:
    """Failed calls by error type; a failure without a type counts as "other", as in sessions."""
    counts: dict[str, int] = defaultdict(int)
    for row in failed:
        counts[row.group["error_type"] or "other"] += row.calls
    return dict(sorted(counts.items()))


def _usages(rows: list[CallAggregate]) -> list[ModelUsage]:
    """Per-model usage of the calls sent to a provider (cache hits were not)."""
    usages: dict[tuple[str, str], ModelUsage] = {}
    for row in rows:
        group = row.group
        if group["cache_hit"] is True:  # sent to no provider
            continue
        usage = usages.setdefault(
            (group["provider_name"], group["model"]),
            ModelUsage(group["provider_name"], group["model"], group["requested_model"]),
        )
        usage.calls += row.calls
        usage.rate_limited_calls += row.rate_limited_calls
        if not group["success"]:
            usage.failed += row.calls
            usage.rate_limited += row.calls if group["error_type"] == "rate_limit" else 0
        elif group["tokens_known"]:
            usage.succeeded.add(_sums(row))
        if group["tokens_known"] and group["long_prompt"]:
            usage.long_prompts.add(_sums(row))
    return [usages[key] for key in sorted(usages)]


def _repeats(
    backend: ReportStore,
    project: str | None,
    rows: list[CallAggregate],
    row_cost: dict[int, float | None],
) -> Repeats:
    """The calls that repeated an identical earlier request of the project, and their cost
    (but for cache hits: a cache already served them)."""
    repeated = [row for row in rows if row.group["repeated"] and row.group["cache_hit"] is not True]
    if not repeated:
        return Repeats(0, None, [])
    priced = [cost for row in repeated if (cost := row_cost[id(row)]) is not None]
    return Repeats(
        calls=sum(row.calls for row in repeated),
        cost_usd=sum(priced) if priced else None,
        evidence=[
            f"request_hash={request_hash}: {calls:,} identical calls in the project"
            for request_hash, calls in backend.most_repeated_requests(project, EVIDENCE_LIMIT)
        ],
    )


def _agent_time(
    backend: ReportStore, where: CallFilter, rows: list[CallAggregate]
) -> list[AgentTime]:
    spans = backend.agent_time(where.project, where.since, where.until)
    llm_ms = {
        name: sum(row.total_latency_ms for row in group)
        for name, group in _by(rows, "agent_name").items()
    }
    return [
        AgentTime(
            agent_name=name, invocations=invocations, wall_ms=wall_ms, llm_ms=llm_ms.get(name, 0.0)
        )
        for name, (invocations, wall_ms) in sorted(spans.items())
    ]


def _latency(
    backend: ReportStore, where: CallFilter, rows: list[CallAggregate]
) -> LatencyBreakdown:
    agent_time = _agent_time(backend, where, rows)
    latency = backend.quantiles(
        where, "latency_ms", (0.5, 0.95, 0.99), (None, "agent_name", "operation")
    )
    overall = latency[None].get(None)
    if overall is None:
        return LatencyBreakdown(agent_time=agent_time)
    total = sum(row.total_latency_ms for row in rows)
    first_token = backend.quantiles(where, "time_to_first_token_ms", (0.5, 0.95))[None].get(None)
    bottlenecks = []
    for kind, key in (("agent", "agent_name"), ("operation", "operation")):
        p95 = latency[key]  # type: ignore[index]
        ranked = []
        for name, group_rows in _by(rows, key).items():
            spent = sum(row.total_latency_ms for row in group_rows)
            found = p95.get(None if name == NONE_KEY else name)
            ranked.append(
                Bottleneck(
                    kind=kind,  # type: ignore[arg-type]
                    name=name,
                    calls=sum(row.calls for row in group_rows),
                    total_ms=spent,
                    share=spent / total if total else 0.0,
                    p95_ms=found.values[1] if found else 0.0,
                )
            )
        ranked.sort(key=lambda item: (-item.total_ms, item.name))
        bottlenecks += ranked[:_TOP]
    p50, p95_all, p99 = overall.values
    return LatencyBreakdown(
        p50_ms=p50,
        p95_ms=p95_all,
        p99_ms=p99,
        avg_ms=overall.mean,
        total_ms=total,
        time_to_first_token=(
            TimeToFirstToken(
                calls=first_token.count,
                p50_ms=first_token.values[0],
                p95_ms=first_token.values[1],
                avg_ms=first_token.mean,
            )
            if first_token
            else None
        ),
        bottlenecks=bottlenecks,
        agent_time=agent_time,
        percentiles_exact=overall.exact and (first_token is None or first_token.exact),
    )


def engine_tally(rows: Iterable[CallAggregate], costs: _Costs) -> EngineTally:
    """The cache and routing sections of rows grouped by at least `SAVINGS_GROUPS`."""
    tally = EngineTally()
    for row in rows:
        group, saved = row.group, costs.savings(row)
        tally.add(
            calls=row.calls,
            errors=row.errors,
            model=group["requested_model"],
            cache_hit=group["cache_hit"],
            routed_from=group["routed_from"],
            shadow_model=group["shadow_model"],
            cache_saved=saved.cache,
            routing_saved=saved.routing,
            shadow_saved=saved.shadow,
        )
    return tally


_PRICING_GROUPS: tuple[GroupKey, ...] = (
    "provider_name",
    "model",
    "requested_model",
    "tokens_known",
    "long_prompt",
    "cache_hit",
)
"""The fewest keys a group can be priced by."""

SAVINGS_GROUPS: tuple[GroupKey, ...] = (*_PRICING_GROUPS, "routed_from", "shadow_model")
"""The fewest keys a group's savings can be priced by."""


def priced_groups(
    backend: ReportStore,
    where: CallFilter,
    prices: PriceTable,
    group_by: tuple[GroupKey, ...] = REPORT_GROUPS,
) -> tuple[list[CallAggregate], dict[int, float | None], _Costs]:
    """The calls' sums per group of `group_by` (with at least the keys pricing needs), each
    group's cost keyed by the row's id (None: unpriced), and what could not be priced."""
    missing = [key for key in _PRICING_GROUPS if key not in group_by]
    rows = backend.aggregate_calls(where, group_by=(*group_by, *missing))
    costs = _Costs(backend, where, prices)
    return rows, {id(row): costs.of(row) for row in rows}, costs


def build_project_report(
    backend: ReportStore,
    prices: PriceTable,
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    agent: str | None = None,
) -> ProjectReport:
    """Every breakdown of a project's calls in [since, until) (of one model or agent, if
    given), and of the scores given in that range, aggregated by the store."""
    where = CallFilter(project=project, since=since, until=until, model=model, agent=agent)
    rows, row_cost, costs = priced_groups(backend, where, prices)

    def cost_by(key: str) -> dict[str, float]:
        return {
            name: sum(row_cost[id(row)] or 0.0 for row in group)
            for name, group in _by(rows, key).items()
        }

    counts = _token_counts(rows)
    tally = engine_tally(rows, costs)
    errors = sum(row.calls for row in rows if not row.group["success"])
    total_cost = sum(cost or 0.0 for cost in row_cost.values())
    latency = _latency(backend, where, rows)
    by_operation = {name: _token_counts(group) for name, group in _by(rows, "operation").items()}
    failed = [row for row in rows if not row.group["success"]]
    known = [row for row in rows if row.group["tokens_known"]]
    known_calls = sum(row.calls for row in known)
    return ProjectReport(
        project=project,
        since=since,
        until=until,
        sessions=backend.count_sessions(project, since, until),
        totals=Totals(
            calls=counts.calls,
            errors=errors,
            prompt_tokens=counts.prompt_tokens,
            completion_tokens=counts.completion_tokens,
            cached_tokens=counts.cached_tokens,
            reasoning_tokens=counts.reasoning_tokens,
            total_tokens=counts.total_tokens,
            cost_usd=total_cost,
            latency_ms=latency.total_ms,
            calls_with_unknown_tokens=counts.unknown_calls,
        ),
        cost=CostBreakdown(
            total_usd=total_cost,
            by_model=cost_by("model"),
            by_provider=cost_by("provider_name"),
            by_agent=cost_by("agent_name"),
            by_operation=cost_by("operation"),
            unpriced_models=sorted(costs.unpriced_models),
            unpriced_calls=costs.unpriced_calls,
            price_source=prices.source,
        ),
        latency=latency,
        tokens=TokenBreakdown(
            prompt_tokens=counts.prompt_tokens,
            completion_tokens=counts.completion_tokens,
            cached_tokens=counts.cached_tokens,
            cache_creation_tokens=counts.cache_creation_tokens,
            reasoning_tokens=counts.reasoning_tokens,
            total_tokens=counts.total_tokens,
            calls_with_unknown_tokens=counts.unknown_calls,
            by_model={name: _token_counts(group) for name, group in _by(rows, "model").items()},
            by_agent={
                name: _token_counts(group) for name, group in _by(rows, "agent_name").items()
            },
            by_provider={
                name: _token_counts(group) for name, group in _by(rows, "provider_name").items()
            },
            heaviest_operations=heaviest_operations(by_operation),
        ),
        quality=QualityBreakdown(
            calls=counts.calls,
            errors=errors,
            retries=sum(row.retries for row in rows),
            rate_limited_retries=sum(row.rate_limited_retries for row in rows),
            success_rate=1.0 - errors / counts.calls if counts.calls else 1.0,
            errors_by_type=_error_counts(failed),
            errors_by_model={
                name: sum(row.calls for row in group)
                for name, group in _by(failed, "model").items()
            },
            avg_tokens_per_call=(
                sum(row.prompt_tokens + row.completion_tokens for row in known) / known_calls
                if known_calls
                else None
            ),
        ),
        cache=tally.cache(),
        routing=tally.routing(),
        suggestions=suggest(
            _usages(rows), _repeats(backend, project, rows, row_cost), latency, prices
        ),
        scores=stored_score_breakdown(
            backend,
            ScoreFilter(project=project, since=since, until=until, model=model, agent=agent),
        ),
    )
