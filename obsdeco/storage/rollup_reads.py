"""The rollup planner: which part of a call range the hourly rollups answer (its whole hours)
and which the calls themselves (the partial hours at its edges), and the sums over both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, func, or_, select, text

from obsdeco.storage import rollups
from obsdeco.storage.base import REPORT_GROUPS, CallAggregate, CallFilter, GroupKey
from obsdeco.storage.schema import call_rollups, llm_calls
from obsdeco.storage.where import calls_where, group_column, group_value

_SUMMED = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "latency_ms",
    "retries",
    "rate_limited_retries",
)

_AGGREGATE_SUMS = (
    "calls",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "total_latency_ms",
    "retries",
    "rate_limited_retries",
    "rate_limited_calls",
)


REPORT_WORK_MEM = "32MB"
"""What PostgreSQL may use for each hash or sort of a query over the rollups. With its default
(4MB), a project's few thousand groups of a dozen sums each exceed what the planner thinks it
can hash in memory, and it sorts the project's rollups on disk instead (five times slower over
a million rollup rows)."""


def make_room_to_hash(connection: Connection) -> None:
    """On PostgreSQL, let the rest of the connection's transaction use `REPORT_WORK_MEM`."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))


@dataclass(frozen=True, slots=True)
class Hours:
    """Whole hours [first, end) of a range, read from the rollups; None is unbounded."""

    first: datetime | None
    end: datetime | None


def rolled_up_parts(
    where: CallFilter, group_by: Sequence[GroupKey]
) -> tuple[Hours, list[CallFilter]] | None:
    """The whole hours the rollups answer for `where` and the partial hours at its edges, read
    from the calls; None when the rollups cannot answer (a session, or a key they do not keep).
    """
    if where.session_id is not None or where.repeated is not None or where.experiment is not None:
        return None
    if not set(group_by) <= {*REPORT_GROUPS, "hour"}:
        return None
    first = None if where.since is None else _hour_at_or_after(where.since)
    end = None if where.until is None else rollups.hour_of(where.until)
    if first is not None and end is not None and first >= end:
        return None
    edges = []
    if where.since is not None and first is not None and where.since < first:
        edges.append(replace(where, until=first))
    if where.until is not None and end is not None and end < where.until:
        edges.append(replace(where, since=end))
    return Hours(first, end), edges


def hours_where(statement: Select[Any], where: CallFilter, hours: Hours) -> Select[Any]:
    """`statement` over rollup rows restricted to `where`'s project, model and agent in `hours`."""
    if where.project is not None:
        statement = statement.where(call_rollups.c.project_name == where.project)
    if where.model is not None:
        statement = statement.where(call_rollups.c.model == where.model)
    if where.agent is not None:
        statement = statement.where(call_rollups.c.agent_name == where.agent)
    if hours.first is not None:
        statement = statement.where(call_rollups.c.hour >= hours.first)
    if hours.end is not None:
        statement = statement.where(call_rollups.c.hour < hours.end)
    return statement


def aggregate_calls(
    connection: Connection, where: CallFilter, group_by: Sequence[GroupKey]
) -> list[CallAggregate]:
    """Sums per group over the calls `where` selects: from the rollups where they answer,
    the calls themselves elsewhere."""
    parts = rolled_up_parts(where, group_by)
    if parts is None:
        return _aggregate_raw(connection, where, group_by)
    hours, edges = parts
    make_room_to_hash(connection)
    found = _aggregate_rollups(connection, where, hours, group_by)
    for edge in edges:
        found += _aggregate_raw(connection, edge, group_by)
    return _merged(found, group_by)


def _hour_at_or_after(moment: datetime) -> datetime:
    hour = rollups.hour_of(moment)
    return hour if hour == moment else hour + timedelta(hours=1)


def _aggregate_raw(
    connection: Connection, where: CallFilter, group_by: Sequence[GroupKey]
) -> list[CallAggregate]:
    keys = [group_column(key).label(key) for key in group_by]
    calls = llm_calls.c
    rate_limited = or_(
        and_(calls.success.is_(False), calls.error_type == "rate_limit"),
        calls.rate_limited_retries > 0,
    )
    statement = calls_where(
        select(
            *keys,
            func.count().label("calls"),
            func.count().filter(calls.success.is_(False)).label("errors"),
            *(func.coalesce(func.sum(calls[name]), 0).label(name) for name in _SUMMED),
            func.max(calls.prompt_tokens).label("largest_prompt"),
            func.count().filter(rate_limited).label("rate_limited_calls"),
        ),
        where,
    )
    if keys:
        statement = statement.group_by(*keys).order_by(*keys)
    return _aggregates(connection, statement, group_by)


def _aggregate_rollups(
    connection: Connection, where: CallFilter, hours: Hours, group_by: Sequence[GroupKey]
) -> list[CallAggregate]:
    keys = [call_rollups.c[key].label(key) for key in group_by]
    rolled = call_rollups.c
    statement = hours_where(
        select(
            *keys,
            func.sum(rolled.calls).label("calls"),
            func.coalesce(func.sum(rolled.calls).filter(rolled.success.is_(False)), 0).label(
                "errors"
            ),
            *(func.sum(rolled[name]).label(name) for name in _SUMMED),
            func.max(rolled.largest_prompt_tokens).label("largest_prompt"),
            func.sum(rolled.rate_limited_calls).label("rate_limited_calls"),
        ),
        where,
        hours,
    )
    if keys:
        statement = statement.group_by(*keys)
    return _aggregates(connection, statement, group_by)


def _aggregates(
    connection: Connection, statement: Select[Any], group_by: Sequence[GroupKey]
) -> list[CallAggregate]:
    rows = connection.execute(statement).all()
    return [
        CallAggregate(
            group={key: group_value(key, getattr(row, key)) for key in group_by},
            calls=int(row.calls),
            errors=int(row.errors),
            prompt_tokens=int(row.prompt_tokens),
            completion_tokens=int(row.completion_tokens),
            cached_tokens=int(row.cached_tokens),
            cache_creation_tokens=int(row.cache_creation_tokens),
            reasoning_tokens=int(row.reasoning_tokens),
            total_latency_ms=float(row.latency_ms),
            largest_prompt_tokens=int(row.largest_prompt or 0),
            retries=int(row.retries),
            rate_limited_retries=int(row.rate_limited_retries),
            rate_limited_calls=int(row.rate_limited_calls),
        )
        for row in rows
        if row.calls
    ]


def _merged(found: list[CallAggregate], group_by: Sequence[GroupKey]) -> list[CallAggregate]:
    """One aggregate per group from the rollups' and the edges' aggregates of it."""
    merged: dict[tuple[Any, ...], CallAggregate] = {}
    for row in found:
        key = tuple(row.group[name] for name in group_by)
        known = merged.get(key)
        if known is None:
            merged[key] = row
            continue
        merged[key] = replace(
            known,
            **{name: getattr(known, name) + getattr(row, name) for name in _AGGREGATE_SUMS},
            largest_prompt_tokens=max(known.largest_prompt_tokens, row.largest_prompt_tokens),
        )
    return [merged[key] for key in sorted(merged, key=_none_first)]


def _none_first(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((value is not None, value) for value in key)
