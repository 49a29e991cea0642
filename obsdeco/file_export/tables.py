"""What can be exported: each table's columns and its rows, read from the store page by page.

Adding a table is adding a `Table` to `TABLES`: its columns (columns.py) and a function that
turns the store's pages into rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from obsdeco.analyzers import PriceTable
from obsdeco.analyzers.columns import CallColumns
from obsdeco.file_export.columns import (
    CALL_COLUMNS,
    SCORE_COLUMNS,
    SESSION_COLUMNS,
    SPAN_COLUMNS,
    Column,
)
from obsdeco.storage.base import CallFilter, ReportStore, ScoreFilter, SessionFilter

Row = tuple[Any, ...]
"""One value per column, in the table's column order; None where there is none."""


@dataclass(frozen=True, slots=True)
class ExportFilter:
    """The range and filters of an export (those of reports); None means no restriction."""

    project: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    agent: str | None = None
    session_id: str | None = None

    def calls(self) -> CallFilter:
        return CallFilter(**asdict(self))

    def scores(self) -> ScoreFilter:
        return ScoreFilter(**asdict(self))

    def sessions(self) -> SessionFilter:
        return SessionFilter(**asdict(self))


Pages = Callable[[ReportStore, ExportFilter, PriceTable, int], Iterator[list[Row]]]


@dataclass(frozen=True, slots=True)
class Table:
    what: str
    columns: tuple[Column, ...]
    pages: Pages
    """The rows matching a filter, a page of at most `batch_size` rows at a time."""


def _usd(values: list[float]) -> list[float | None]:
    return [None if math.isnan(value) else value for value in values]


_call_row = itemgetter(*(column.name for column in CALL_COLUMNS))


def _call_pages(
    backend: ReportStore, where: ExportFilter, prices: PriceTable, batch_size: int
) -> Iterator[list[Row]]:
    """Calls with `cost_usd` and `saved_usd` priced by `prices` (the stored rows have none)."""
    for calls in backend.iter_calls(where.calls(), batch_size):
        priced = prices.call_prices(CallColumns(calls))
        yield [
            _call_row(
                {
                    **call.__dict__,
                    "provider": call.provider.value,
                    "cost_usd": cost,
                    "saved_usd": saved,
                }
            )
            for call, cost, saved in zip(
                calls, _usd(priced.cost.tolist()), _usd(priced.saved.tolist()), strict=True
            )
        ]


def _session_pages(
    backend: ReportStore, where: ExportFilter, _prices: PriceTable, batch_size: int
) -> Iterator[list[Row]]:
    for summaries in backend.iter_sessions(where.sessions(), batch_size):
        rows = []
        for summary in summaries:
            session = summary.session
            ended = session.ended_at is not None
            totals: Row = (
                (
                    summary.calls,
                    summary.errors,
                    summary.prompt_tokens,
                    summary.completion_tokens,
                    summary.cached_tokens,
                    summary.reasoning_tokens,
                    summary.total_tokens,
                    summary.cost_usd,
                    summary.total_latency_ms,
                )
                if ended
                else (None,) * 9
            )
            rows.append(
                (
                    session.id,
                    session.project_name,
                    session.name,
                    session.parent_id,
                    session.started_at,
                    session.ended_at,
                    session.duration_ms,
                    session.status,
                    session.error_type,
                    session.error_message,
                    *totals,
                    session.experiments,
                    session.metadata,
                )
            )
        yield rows


def _span_pages(
    backend: ReportStore, where: ExportFilter, _prices: PriceTable, batch_size: int
) -> Iterator[list[Row]]:
    for found in backend.iter_spans(where.sessions(), batch_size):
        yield [
            (
                span.id,
                span.session_id,
                project_name,
                span.parent_id,
                span.agent_name,
                span.operation,
                span.started_at,
                span.ended_at,
                span.duration_ms,
                span.success,
                span.error_type,
            )
            for span, project_name in ((item.span, item.project_name) for item in found)
        ]


_score_row = itemgetter(*(column.name for column in SCORE_COLUMNS))


def _score_pages(
    backend: ReportStore, where: ExportFilter, _prices: PriceTable, batch_size: int
) -> Iterator[list[Row]]:
    for found in backend.iter_scores(where.scores(), batch_size):
        yield [_score_row(score.__dict__) for score in found]


TABLES: dict[str, Table] = {
    table.what: table
    for table in (
        Table("calls", CALL_COLUMNS, _call_pages),
        Table("sessions", SESSION_COLUMNS, _session_pages),
        Table("spans", SPAN_COLUMNS, _span_pages),
        Table("scores", SCORE_COLUMNS, _score_pages),
    )
}
"""Every exportable table by the name `export(what=...)` takes."""
