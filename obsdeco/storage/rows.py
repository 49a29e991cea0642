"""Records from stored rows: calls, sessions, spans, scores and alert events as the store
reads them back (trusted values, so built without validation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from obsdeco.alerts.events import AlertEvent
from obsdeco.models import AgentSpan, LLMCall, ModelProvider, Score, Session, SessionSummary
from obsdeco.provider_names import default_provider_name
from obsdeco.storage.schema import agent_spans

SESSION_FIELDS = (
    "id",
    "project_name",
    "name",
    "parent_id",
    "started_at",
    "ended_at",
    "status",
    "error_type",
    "error_message",
    "metadata",
    "experiments",
)
"""The `sessions` columns a `Session` is made of."""

SPAN_FIELDS = tuple(column.name for column in agent_spans.columns)


def call_from_row(row: Any) -> LLMCall:
    return call_from_values(row._asdict())


def calls_from_rows(rows: Sequence[Any]) -> list[LLMCall]:
    """`call_from_row` of each row, the column names looked up once for all."""
    if not rows:
        return []
    names = rows[0]._fields
    return [call_from_values(dict(zip(names, row, strict=True))) for row in rows]


def call_from_values(values: dict[str, Any]) -> LLMCall:
    """The call of an `llm_calls` row's values (consumed)."""
    del values["repeated"]
    values["provider"] = ModelProvider(values["provider"])
    if values["provider_name"] is None:  # imported without one, rollups not yet rebuilt
        values["provider_name"] = default_provider_name(values["provider"])
    if values["experiments"] is None:  # none assigned, or stored by an earlier obsdeco
        values["experiments"] = {}
    return LLMCall.model_construct(**values)


def session_from_row(row: Any) -> Session:
    values = {name: getattr(row, name) for name in SESSION_FIELDS}
    if values["experiments"] is None:  # stored by an earlier obsdeco
        values["experiments"] = {}
    return Session.model_construct(**values)


def summary_from_row(row: Any) -> SessionSummary:
    return SessionSummary(
        session=session_from_row(row),
        calls=row.call_count,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_tokens=row.cached_tokens,
        reasoning_tokens=row.reasoning_tokens,
        total_tokens=row.total_tokens,
        cost_usd=row.cost_usd,
        total_latency_ms=row.total_latency_ms,
        errors=row.error_count,
    )


def span_from_row(row: Any) -> AgentSpan:
    return AgentSpan.model_construct(**{name: getattr(row, name) for name in SPAN_FIELDS})


def score_from_row(row: Any) -> Score:
    return Score.model_construct(**row._asdict())


def alert_event_row(event: AlertEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "alert_name": event.alert,
        "metric": event.metric,
        "state": event.state,
        "value": event.value,
        "threshold": event.threshold,
        "direction": event.direction,
        "time_window": event.window,
        "project_name": event.project,
        "budget_name": event.budget,
        "fired_at": event.fired_at,
    }


def alert_event_from_row(row: Any) -> AlertEvent:
    return AlertEvent(
        id=row.id,
        alert=row.alert_name,
        metric=row.metric,
        state=row.state,
        value=row.value,
        threshold=row.threshold,
        direction=row.direction,
        window=row.time_window,
        project=row.project_name,
        budget=row.budget_name,
        fired_at=row.fired_at,
    )
