"""What the dashboard shows, read through obsdeco's own storage and analysis code.

Every function takes the store and the filters and returns plain, picklable values, so the app
can cache them (`st.cache_data`) keyed on the filters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from pydantic import BaseModel

from obsdeco.alerts.events import AlertEvent
from obsdeco.analyzers import PriceTable, build_report
from obsdeco.analyzers.columns import NONE_KEY
from obsdeco.analyzers.project import build_project_report, priced_groups
from obsdeco.analyzers.savings import build_savings
from obsdeco.engine.accounts import StoredAccount, stored_accounts
from obsdeco.engine.experiment_report import ExperimentReport
from obsdeco.engine.experiments import stored_experiment_report
from obsdeco.models import (
    ProjectReport,
    SavingsReport,
    SessionRecord,
    SessionReport,
    SessionSummary,
)
from obsdeco.storage.base import (
    CallFilter,
    ExperimentVariant,
    ReportStore,
    ScoreFilter,
    SessionOrder,
)

HOURLY_UP_TO = timedelta(days=3)
"""Ranges up to this long are charted by the hour, longer ones by the day."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The dashboard's selection: one project (None: all), a time range, a model, an agent."""

    project: str | None
    since: datetime
    until: datetime
    model: str | None = None
    agent: str | None = None

    @property
    def where(self) -> CallFilter:
        return CallFilter(
            project=self.project,
            since=self.since,
            until=self.until,
            model=self.model,
            agent=self.agent,
        )

    def previous(self) -> Filters:
        """The period of equal length just before this one."""
        length = self.until - self.since
        return replace(self, since=self.since - length, until=self.since)


class Kpis(BaseModel):
    cost_usd: float = 0.0
    calls: int = 0
    errors: int = 0
    total_tokens: int = 0
    success_rate: float | None = None
    p95_ms: float | None = None
    unpriced_calls: int = 0


class CostPoint(BaseModel):
    bucket: datetime
    model: str
    cost_usd: float


class CallsPoint(BaseModel):
    bucket: datetime
    calls: int
    errors: int


class LatencyPoint(BaseModel):
    hour: datetime
    p50_ms: float
    p95_ms: float


class Overview(BaseModel):
    kpis: Kpis
    previous: Kpis
    bucket: str
    """"hour" or "day": how cost and calls are charted."""
    cost: list[CostPoint]
    calls: list[CallsPoint]
    latency: list[LatencyPoint]


def _bucket_of(moment: datetime, by_day: bool) -> datetime:
    return moment.replace(hour=0) if by_day else moment


def _kpis_and_series(
    backend: ReportStore, prices: PriceTable, filters: Filters
) -> tuple[Kpis, list[CostPoint], list[CallsPoint]]:
    rows, row_cost, costs = priced_groups(backend, filters.where, prices, ("hour",))
    by_day = filters.until - filters.since > HOURLY_UP_TO
    cost: dict[tuple[datetime, str], float] = {}
    calls: dict[datetime, list[int]] = {}
    kpis = Kpis(unpriced_calls=costs.unpriced_calls)
    for row in rows:
        bucket = _bucket_of(row.group["hour"], by_day)
        spent = row_cost[id(row)] or 0.0
        key = (bucket, row.group["model"])
        cost[key] = cost.get(key, 0.0) + spent
        counts = calls.setdefault(bucket, [0, 0])
        counts[0] += row.calls
        counts[1] += row.errors
        kpis.cost_usd += spent
        kpis.calls += row.calls
        kpis.errors += row.errors
        kpis.total_tokens += row.prompt_tokens + row.completion_tokens
    if kpis.calls:
        kpis.success_rate = 1.0 - kpis.errors / kpis.calls
    return (
        kpis,
        [CostPoint(bucket=b, model=m, cost_usd=usd) for (b, m), usd in sorted(cost.items())],
        [CallsPoint(bucket=b, calls=c, errors=e) for b, (c, e) in sorted(calls.items())],
    )


def overview(backend: ReportStore, prices: PriceTable, filters: Filters) -> Overview:
    """KPIs against the previous period of equal length, and the series the charts draw."""
    kpis, cost, calls = _kpis_and_series(backend, prices, filters)
    previous, _, _ = _kpis_and_series(backend, prices, filters.previous())
    latency = backend.quantiles(filters.where, "latency_ms", (0.5, 0.95), (None, "hour"))
    overall = latency[None].get(None)
    kpis.p95_ms = overall.values[1] if overall else None
    before = backend.quantiles(filters.previous().where, "latency_ms", (0.95,))[None].get(None)
    previous.p95_ms = before.values[0] if before else None
    return Overview(
        kpis=kpis,
        previous=previous,
        bucket="day" if filters.until - filters.since > HOURLY_UP_TO else "hour",
        cost=cost,
        calls=calls,
        latency=[
            LatencyPoint(hour=hour, p50_ms=found.values[0], p95_ms=found.values[1])
            for hour, found in sorted(latency["hour"].items())  # type: ignore[type-var]
        ],
    )


def choices(backend: ReportStore, filters: Filters) -> tuple[list[str], list[str]]:
    """The models and agents with calls in the filters' project and range."""
    where = replace(filters.where, model=None, agent=None)
    models = {row.group["model"] for row in backend.aggregate_calls(where, ("model",))}
    agents = {row.group["agent_name"] for row in backend.aggregate_calls(where, ("agent_name",))}
    return sorted(models), sorted(agent for agent in agents if agent is not None)


class SessionPage(BaseModel):
    sessions: list[SessionSummary]
    total: int


def session_page(
    backend: ReportStore,
    filters: Filters,
    search: str | None,
    order_by: SessionOrder,
    descending: bool,
    page: int,
    page_size: int,
) -> SessionPage:
    """One page of the sessions started in the range (made calls to the model or agent)."""
    common = {
        "project": filters.project,
        "since": filters.since,
        "until": filters.until,
        "search": search or None,
        "model": filters.model,
        "agent": filters.agent,
    }
    return SessionPage(
        sessions=backend.query_sessions(
            **common,
            limit=page_size,
            offset=page * page_size,
            order_by=order_by,
            descending=descending,
        ),
        total=backend.count_sessions(**common),
    )


def session_detail(
    backend: ReportStore, prices: PriceTable, session_id: str
) -> tuple[SessionReport, SessionRecord] | None:
    """A stored session's report, with its calls and agent spans for the timeline."""
    record = backend.get_session(session_id)
    if record is None:
        return None
    scores = backend.query_scores(ScoreFilter(session_id=session_id))
    return build_report(record.session, record.calls, record.spans, prices, scores), record


def experiments(backend: ReportStore, project: str | None) -> list[ExperimentVariant]:
    """Every experiment's variants with their sessions."""
    return backend.experiment_variants(project)


def experiment(
    backend: ReportStore, prices: PriceTable, name: str, filters: Filters
) -> ExperimentReport:
    """The report of one experiment over the sessions started in the filters' range."""
    return stored_experiment_report(
        backend, prices, name, filters.project, filters.since, filters.until
    )


def project_report(backend: ReportStore, prices: PriceTable, filters: Filters) -> ProjectReport:
    return build_project_report(
        backend,
        prices,
        filters.project,
        filters.since,
        filters.until,
        filters.model,
        filters.agent,
    )


def savings(backend: ReportStore, prices: PriceTable, filters: Filters) -> SavingsReport:
    """What the response cache and the router saved per UTC day, and what is left to save."""
    return build_savings(
        backend,
        prices,
        filters.project,
        filters.since,
        filters.until,
        filters.model,
        filters.agent,
    )


def budget_accounts(backend: ReportStore) -> list[StoredAccount]:
    """The project budget accounts the store holds (none in a store without a database)."""
    engine = getattr(backend, "engine", None)
    return [] if engine is None else stored_accounts(engine)


class GroupLatency(BaseModel):
    name: str
    calls: int
    avg_ms: float
    p95_ms: float


def latency_by(backend: ReportStore, filters: Filters, key: str) -> list[GroupLatency]:
    """Average and p95 latency per model, agent or provider ("model", "agent_name" or
    "provider_name")."""
    found = backend.quantiles(filters.where, "latency_ms", (0.95,), (key,))[key]  # type: ignore[index]
    return [
        GroupLatency(name=name or "(none)", calls=q.count, avg_ms=q.mean, p95_ms=q.values[0])
        for name, q in sorted(found.items(), key=lambda item: item[0] or "")
    ]


def errors_by(backend: ReportStore, filters: Filters, key: str) -> dict[str, int]:
    """Failed calls per model, agent or provider ("model", "agent_name" or "provider_name"),
    0 included."""
    rows = backend.aggregate_calls(filters.where, (key,))  # type: ignore[arg-type]
    return {row.group[key] or NONE_KEY: row.errors for row in rows}


ALERTS_LISTED = 500


class AlertsView(BaseModel):
    states: list[AlertEvent]
    """Each alert's newest event: its current state."""
    events: list[AlertEvent]
    """The events in the range, newest first (at most `ALERTS_LISTED`)."""


def alerts(backend: ReportStore, filters: Filters) -> AlertsView:
    """The alerts of the filters' project (and those on every project), their current states
    and the events fired in the range."""

    def concerned(event: AlertEvent) -> bool:
        return filters.project is None or event.project in (None, filters.project)

    events = backend.query_alert_events(since=filters.since, limit=ALERTS_LISTED)
    return AlertsView(
        states=[event for event in backend.latest_alert_events() if concerned(event)],
        events=[e for e in events if e.fired_at < filters.until and concerned(e)],
    )
