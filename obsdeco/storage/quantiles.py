"""Latency quantiles: exact from the calls (PostgreSQL's percentile_cont, numpy on SQLite),
or estimated from the rollups' histograms over many calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, LargeBinary, Select, func, literal, select

from obsdeco.storage import rollups
from obsdeco.storage.base import CallFilter, GroupKey, Quantiles
from obsdeco.storage.histogram import Histogram
from obsdeco.storage.rollup_reads import Hours, hours_where, make_room_to_hash, rolled_up_parts
from obsdeco.storage.schema import call_rollups, llm_calls
from obsdeco.storage.where import calls_where, group_column, group_value, rollup_value

Column = Literal["latency_ms", "time_to_first_token_ms"]
_Found = dict[Any, tuple[int, float, Histogram]]
"""Per group: the count, the sum and the histogram of a column."""


def call_quantiles(
    connection: Connection,
    where: CallFilter,
    column: Column,
    quantiles: Sequence[float],
    groupings: Sequence[GroupKey | None],
) -> dict[GroupKey | None, dict[str | None, Quantiles]]:
    """`StorageBackend.quantiles`: estimated from histograms when the rollups answer for more
    than `rollups.EXACT_PERCENTILES_UP_TO` calls, exact otherwise."""
    rollup_keys = tuple(key for key in groupings if key is not None)
    parts = rolled_up_parts(where, rollup_keys)
    if parts is not None:
        make_room_to_hash(connection)
        histograms = _histograms(connection, where, column, groupings, *parts)
        if sum(count for count, _, _ in histograms[groupings[0]].values()) > (
            rollups.EXACT_PERCENTILES_UP_TO
        ):
            return {
                grouping: _estimated(found, quantiles) for grouping, found in histograms.items()
            }
    return {
        grouping: _exact_quantiles(connection, where, column, quantiles, grouping)
        for grouping in groupings
    }


def _histograms(
    connection: Connection,
    where: CallFilter,
    column: Column,
    groupings: Sequence[GroupKey | None],
    hours: Hours,
    edges: list[CallFilter],
) -> dict[GroupKey | None, _Found]:
    """Per grouping and group: the count, the sum and the histogram of `column`."""
    rolled = call_rollups.c
    if column == "latency_ms":
        count, total, encoded = rolled.calls, rolled.latency_ms, rolled.latency_histogram
    else:
        count, total = rolled.first_token_calls, rolled.first_token_ms
        encoded = rolled.first_token_histogram
    keys = [key for key in groupings if key is not None]
    combined: dict[tuple[Any, ...], tuple[int, float, Histogram]] = {}

    def add(names: tuple[Any, ...], calls: int, summed: float, values: Any) -> None:
        known = combined.get(names) or (0, 0.0, Histogram())
        if isinstance(values, bytes):
            known[2].add_encoded(values)
        else:
            known[2].add_values(values)
        combined[names] = (known[0] + calls, known[1] + summed, known[2])

    statement = hours_where(
        select(*(rolled[key] for key in keys), count, total, encoded).where(count > 0),
        where,
        hours,
    )
    if connection.dialect.name == "postgresql":
        statement = _merged_by_group(statement)
    for row in connection.execute(statement):
        add(tuple(row[:-3]), int(row[-3]), row[-2], row[-1])
    values = llm_calls.c[column]
    for edge in edges:
        grouped: dict[tuple[Any, ...], list[float]] = {}
        statement = calls_where(
            select(*(rollup_value(key) for key in keys), values).where(values.is_not(None)),
            edge,
        )
        for row in connection.execute(statement):
            grouped.setdefault(tuple(row[:-1]), []).append(row[-1])
        for names, edge_values in grouped.items():
            add(names, len(edge_values), sum(edge_values), edge_values)
    found: dict[GroupKey | None, _Found] = {}
    for grouping in groupings:
        merged = found[grouping] = {}
        for names, (calls, summed, histogram) in combined.items():
            name = None if grouping is None else group_value(grouping, names[keys.index(grouping)])
            known = merged.get(name) or (0, 0.0, Histogram())
            known[2].merge(histogram)
            merged[name] = (known[0] + calls, known[1] + summed, known[2])
    return found


def _merged_by_group(statement: Select[Any]) -> Select[Any]:
    """The rollup rows of `statement` summed per group in SQL, their histograms concatenated
    (which merges them: a histogram's entries add up whatever their order), so that a row per
    group reaches Python rather than a row per hour and dimension."""
    rows = statement.subquery()
    *names, count, total, encoded = rows.c
    return (
        select(
            *names,
            func.sum(count),
            func.sum(total),
            func.string_agg(encoded, literal(b"", LargeBinary)),
        )
        .group_by(*names)
        .having(func.count() > 0)
    )


def _estimated(histograms: _Found, quantiles: Sequence[float]) -> dict[str | None, Quantiles]:
    estimated = {}
    for name, (count, total, found) in histograms.items():
        if count:
            estimated[name] = Quantiles(
                count, total / count, found.percentiles(quantiles), exact=False
            )
    return estimated


def _exact_quantiles(
    connection: Connection,
    where: CallFilter,
    column: Column,
    quantiles: Sequence[float],
    group_by: GroupKey | None = None,
) -> dict[str | None, Quantiles]:
    values = llm_calls.c[column]
    keys = [] if group_by is None else [group_column(group_by).label("group_key")]
    if connection.dialect.name == "postgresql":
        statement = calls_where(
            select(
                *keys,
                func.count(values).label("count"),
                func.avg(values).label("mean"),
                *(
                    func.percentile_cont(q).within_group(values).label(f"q{index}")
                    for index, q in enumerate(quantiles)
                ),
            ).where(values.is_not(None)),
            where,
        )
        if keys:
            statement = statement.group_by(*keys)
        return {
            (row.group_key if keys else None): Quantiles(
                row.count,
                float(row.mean),
                [float(getattr(row, f"q{index}")) for index in range(len(quantiles))],
            )
            for row in connection.execute(statement).all()
            if row.count
        }
    # SQLite has no percentile aggregate: read the one column and let numpy compute.
    statement = calls_where(select(*keys, values).where(values.is_not(None)), where)
    grouped: dict[str | None, list[float]] = {}
    for row in connection.execute(statement).all():
        grouped.setdefault(row[0] if keys else None, []).append(row[-1])
    percents = [q * 100 for q in quantiles]
    return {
        key: Quantiles(len(found), float(np.mean(found)), np.percentile(found, percents).tolist())
        for key, found in grouped.items()
    }
