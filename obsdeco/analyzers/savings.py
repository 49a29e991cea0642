"""The savings view: what the response cache and the router saved per UTC day, from the
store's hourly aggregates, and what the project report's suggestions could still save."""

from __future__ import annotations

from datetime import date, datetime

from obsdeco.analyzers.cost_analyzer import PriceTable
from obsdeco.analyzers.engine_sections import usd_or_zero
from obsdeco.analyzers.project import SAVINGS_GROUPS, build_project_report, priced_groups
from obsdeco.models import SavingsDay, SavingsReport
from obsdeco.storage.base import CallFilter, ReportStore


def build_savings(
    backend: ReportStore,
    prices: PriceTable,
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    agent: str | None = None,
) -> SavingsReport:
    """The savings of a project's calls in [since, until) (of one model or agent, if given),
    per UTC day, priced like the project report."""
    where = CallFilter(project=project, since=since, until=until, model=model, agent=agent)
    rows, _, costs = priced_groups(backend, where, prices, ("hour", *SAVINGS_GROUPS))
    days: dict[date, SavingsDay] = {}
    for row in rows:
        group = row.group
        hit, routed = group["cache_hit"] is True, group["routed_from"] is not None
        if not (hit or routed or group["shadow_model"] is not None):
            continue
        saved = costs.savings(row)
        day = group["hour"].date()
        found = days.setdefault(day, SavingsDay(day=day))
        found.cache_saved_usd += usd_or_zero(saved.cache)
        found.routing_saved_usd += usd_or_zero(saved.routing)
        found.shadow_saved_usd += usd_or_zero(saved.shadow)
        found.cache_hits += row.calls if hit else 0
        found.routed_calls += row.calls if routed else 0
    series = [days[day] for day in sorted(days)]
    suggestions = build_project_report(
        backend, prices, project, since, until, model, agent
    ).suggestions
    cache_saved = sum(day.cache_saved_usd for day in series)
    routing_saved = sum(day.routing_saved_usd for day in series)
    return SavingsReport(
        project=project,
        since=since,
        until=until,
        days=series,
        cache_saved_usd=cache_saved,
        routing_saved_usd=routing_saved,
        shadow_saved_usd=sum(day.shadow_saved_usd for day in series),
        cache_hits=sum(day.cache_hits for day in series),
        routed_calls=sum(day.routed_calls for day in series),
        saved_usd=cache_saved + routing_saved,
        remaining_potential_usd=sum(
            suggestion.estimated_savings_usd or 0.0 for suggestion in suggestions
        ),
        suggestions=suggestions,
    )
