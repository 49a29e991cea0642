"""Hourly rollups of calls, kept by the writer in each batch's transaction.

A rollup row sums one hour of one project's calls that share every dimension a project report
groups by, with histograms of their latency and time to first token (see `histogram`). Reports
over long ranges read these rows instead of every call; `SQLAlchemyStorage` reads the raw calls
only for the partial hours at the edges of a range.

Repeats are told at write time: `request_hashes` counts the successful calls per identical
request, and a call is `repeated` when an identical successful call was stored before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from operator import floordiv, sub
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Executable, and_, bindparam, delete, func, select, update
from sqlalchemy.exc import DBAPIError

from obsdeco.provider_names import default_provider_name
from obsdeco.storage import histogram
from obsdeco.storage.base import LONG_PROMPT_TOKENS, REPORT_GROUPS
from obsdeco.storage.schema import call_rollups, llm_calls, request_hashes
from obsdeco.storage.sql_functions import upsert_insert

RollupKey = tuple[Any, ...]
"""(project, hour counted from the epoch, *REPORT_GROUPS) of one rollup row."""

OPTIONAL_TEXT: frozenset[str] = frozenset(
    {"agent_name", "operation", "error_type", "routed_from", "shadow_model"}
)
"""Dimensions stored as '' when the call has none (a primary key cannot hold NULL)."""

CACHE_HIT_TEXT: dict[bool | None, str] = {True: "hit", False: "miss", None: ""}
"""How the `cache_hit` dimension is stored (a primary key cannot hold NULL)."""
CACHE_HIT_OF_TEXT: dict[str, bool | None] = {text: hit for hit, text in CACHE_HIT_TEXT.items()}

EXACT_PERCENTILES_UP_TO = 50_000
"""Up to this many calls, percentiles are computed from the calls themselves."""

_KEY_COLUMNS = ("project_name", "hour", *REPORT_GROUPS)

FACT_COLUMNS = (
    "project_name",
    "timestamp",
    "provider",
    "provider_name",
    "model",
    "response_model",
    "agent_name",
    "operation",
    "success",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "latency_ms",
    "time_to_first_token_ms",
    "retries",
    "rate_limited_retries",
    "cache_hit",
    "routed_from",
    "shadow_model",
    "repeated",
)
"""What a rollup needs of a call (`accumulate` takes them column-wise, by these names)."""


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _epoch_hour(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def _stored_key(key: RollupKey) -> dict[str, Any]:
    """A rollup key (its hour counted from the epoch) as the row's key columns."""
    values = dict(zip(_KEY_COLUMNS, key, strict=True))
    values["hour"] = datetime.fromtimestamp(key[1] * 3600, UTC)
    return values


def _sort_key(key: RollupKey) -> tuple[str, ...]:
    """One order for rollup keys (None sorts first), the same in every writer."""
    return tuple("" if value is None else f"~{value}" for value in key)


@dataclass(slots=True)
class _Sums:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    latency_ms: float = 0.0
    largest_prompt_tokens: int = 0
    retries: int = 0
    rate_limited_retries: int = 0
    rate_limited_calls: int = 0
    first_token_calls: int = 0
    first_token_ms: float = 0.0
    latency_buckets: dict[int, int] = field(default_factory=dict)
    first_token_buckets: dict[int, int] = field(default_factory=dict)

    def merge_row(self, row: Any) -> None:
        """Add a stored rollup row's sums and histograms."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(row, name))
        self.largest_prompt_tokens = max(self.largest_prompt_tokens, row.largest_prompt_tokens)
        histogram.merge_into(self.latency_buckets, row.latency_histogram)
        histogram.merge_into(self.first_token_buckets, row.first_token_histogram)

    def values(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in (*_SUMMED, "largest_prompt_tokens")}
        values["latency_histogram"] = histogram.encode(self.latency_buckets)
        values["first_token_histogram"] = histogram.encode(self.first_token_buckets)
        return values


_SUMMED = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "latency_ms",
    "retries",
    "rate_limited_retries",
    "rate_limited_calls",
    "first_token_calls",
    "first_token_ms",
)


Facts = Mapping[str, Sequence[Any]]
"""Calls column-wise: for each name of `FACT_COLUMNS`, the calls' values in one order."""


def accumulate(into: dict[RollupKey, _Sums], facts: Facts) -> None:
    """Add calls to the rollups they belong to, in one vectorised aggregation: the calls are
    grouped by rollup key once, then each sum is added per group in the calls' order (so that
    float sums come out as adding the calls one by one would make them)."""
    size = len(facts["latency_ms"])
    if not size:
        return
    prompt, prompt_missing = _counts(facts["prompt_tokens"], size)
    completion, completion_missing = _counts(facts["completion_tokens"], size)
    hours = (epoch_microseconds(facts["timestamp"]) // _MICROSECONDS_PER_HOUR).tolist()
    tokens_known = ~(prompt_missing | completion_missing)
    dimensions = [
        facts["project_name"],
        hours,
        facts["provider"],
        facts["provider_name"],
        facts["response_model"],
        facts["model"],
        facts["agent_name"],
        facts["operation"],
        facts["success"],
        facts["error_type"],
        tokens_known.tolist(),
        (prompt >= LONG_PROMPT_TOKENS).tolist(),
        facts["repeated"],
        facts["cache_hit"],
        facts["routed_from"],
        facts["shadow_model"],
    ]
    # Calls are told apart by the dimensions that vary in this batch (few do, mostly).
    varying = [index for index, values in enumerate(dimensions) if _varies(values)]
    shared = [values[0] for values in dimensions]
    rows = list(zip(*(dimensions[index] for index in varying), strict=True)) if varying else [()]
    position = {values: place for place, values in enumerate(dict.fromkeys(rows))}
    keys: dict[RollupKey, int] = {}
    group_of = []
    for values in position:
        raw = list(shared)
        for index, value in zip(varying, values, strict=True):
            raw[index] = value
        group_of.append(keys.setdefault(_rollup_key(raw), len(keys)))
    if varying:
        places = np.fromiter(map(position.__getitem__, rows), np.intp, size)
        groups = np.array(group_of, np.intp)[places]
    else:
        groups = np.zeros(size, np.intp)
    found = [into.get(key) for key in keys]
    sums = [_Sums() if known is None else known for known in found]

    def add(name: str, values: npt.NDArray[Any], where: npt.NDArray[np.intp] = groups) -> None:
        totals = np.array([getattr(total, name) for total in sums], dtype=values.dtype)
        np.add.at(totals, where, values)
        for total, value in zip(sums, totals.tolist(), strict=True):
            setattr(total, name, value)

    add("calls", np.ones(size, np.int64))
    add("prompt_tokens", prompt)
    add("completion_tokens", completion)
    for name in ("cached_tokens", "cache_creation_tokens", "reasoning_tokens"):
        add(name, _counts(facts[name], size)[0])
    add("latency_ms", latency := np.array(facts["latency_ms"], np.float64))
    largest = np.array([total.largest_prompt_tokens for total in sums], np.int64)
    np.maximum.at(largest, groups, prompt)
    retries = np.array(facts["retries"], np.int64)
    add("retries", retries)
    limited_retries = np.array(facts["rate_limited_retries"], np.int64)
    add("rate_limited_retries", limited_retries)
    failed_on_rate_limit = np.array([not key[8] and key[9] == "rate_limit" for key in keys])
    limited = (limited_retries > 0) | failed_on_rate_limit[groups]
    add("rate_limited_calls", np.ones(int(limited.sum()), np.int64), groups[limited])
    first_token = np.array(facts["time_to_first_token_ms"], np.float64)  # None: NaN
    timed = ~np.isnan(first_token)
    add("first_token_calls", np.ones(int(timed.sum()), np.int64), groups[timed])
    add("first_token_ms", first_token[timed], groups[timed])
    latency_counts = histogram.bucket_counts(groups, histogram.buckets_of(latency), len(keys))
    first_token_counts = histogram.bucket_counts(
        groups[timed], histogram.buckets_of(first_token[timed]), len(keys)
    )
    for key, total, largest_prompt, latencies, first_tokens in zip(
        keys, sums, largest.tolist(), latency_counts, first_token_counts, strict=True
    ):
        total.largest_prompt_tokens = largest_prompt
        histogram.add_counts(total.latency_buckets, latencies.items())
        histogram.add_counts(total.first_token_buckets, first_tokens.items())
        into[key] = total


def epoch_microseconds(moments: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """Exact microseconds since the epoch of timezone-aware moments."""
    since_epoch = map(floordiv, map(sub, moments, repeat(_EPOCH)), repeat(_MICROSECOND))
    return np.fromiter(since_epoch, np.int64, len(moments))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MICROSECONDS_PER_HOUR = 3_600_000_000


def _varies(values: Sequence[Any]) -> bool:
    return values.count(values[0]) != len(values)


def _counts(
    values: Sequence[int | None], size: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Token counts as int64 (None as 0), and where they were None."""
    if None not in values:
        return np.fromiter(values, np.int64, size), np.zeros(size, np.bool_)
    missing = np.array([value is None for value in values], np.bool_)
    return np.array([value or 0 for value in values], np.int64), missing


def _rollup_key(raw: Sequence[Any]) -> RollupKey:
    """The rollup key of calls sharing these values (`accumulate`'s order of them)."""
    (
        project,
        hour,
        provider,
        provider_name,
        response_model,
        model,
        agent,
        operation,
        success,
        error_type,
        tokens_known,
        long_prompt,
        repeated,
        cache_hit,
        routed_from,
        shadow_model,
    ) = raw
    return (
        project,
        hour,
        provider,
        provider_name,
        response_model or model,
        model,
        agent or "",
        operation or "",
        bool(success),
        error_type or "",
        tokens_known,
        long_prompt,
        bool(repeated),
        CACHE_HIT_TEXT[None if cache_hit is None else bool(cache_hit)],
        routed_from or "",
        shadow_model or "",
    )


_UPSERT_COUNTS = (
    "INSERT INTO request_hashes (project_name, request_hash, calls) {rows} "
    "ON CONFLICT (project_name, request_hash) "
    "DO UPDATE SET calls = request_hashes.calls + excluded.calls "
    "RETURNING project_name, request_hash, calls"
)


def add_request_counts(
    connection: Connection, counted: dict[tuple[str, str], int]
) -> list[tuple[str, str, int]]:
    """Add the counts (negative to take calls off) to `request_hashes`; the stored
    (project, request, calls) after it.

    Straight through the driver: this runs for every batch, and one statement per chunk of
    rows costs a fraction of SQLAlchemy's executemany with RETURNING. Rows go in key order, so
    that writers of several processes lock shared rows in the same order (never a deadlock);
    the driver's errors are raised as SQLAlchemy's, which the writer knows how to retry.
    """
    items = sorted(counted.items())
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if connection.dialect.name == "postgresql":
            keys, calls = zip(*items, strict=True)
            projects, requests = zip(*keys, strict=True)
            cursor.execute(
                _UPSERT_COUNTS.format(
                    rows="SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[]) ORDER BY 1, 2"
                ),
                (list(projects), list(requests), list(calls)),
            )
            return cursor.fetchall()
        stored = []
        for start in range(0, len(items), 10_000):
            chunk = items[start : start + 10_000]
            values = [
                value for (project, request), calls in chunk for value in (project, request, calls)
            ]
            cursor.execute(
                _UPSERT_COUNTS.format(rows="VALUES " + ", ".join(["(?, ?, ?)"] * len(chunk))),
                values,
            )
            stored += cursor.fetchall()
        return stored
    except connection.dialect.loaded_dbapi.Error as error:
        raise DBAPIError.instance(
            _UPSERT_COUNTS, None, error, connection.dialect.loaded_dbapi.Error
        ) from error
    finally:
        cursor.close()


def mark_repeats(
    connection: Connection,
    projects: Sequence[str],
    requests: Sequence[str | None],
    successes: Sequence[bool],
) -> list[bool]:
    """Count a batch's successful requests (its calls column-wise) in `request_hashes`; a call
    is a repeat when an identical successful call was stored before it (in an earlier batch or
    earlier in this one)."""
    size = len(projects)
    if requests.count(None) == size:
        return [False] * size
    keys = [
        (project, request) if success and request else None
        for project, request, success in zip(projects, requests, successes, strict=True)
    ]
    counted = Counter(key for key in keys if key is not None)
    if not counted:
        return [False] * size
    seen = {
        (project, request)
        for project, request, stored in add_request_counts(connection, counted)
        if stored > counted[(project, request)]
    }
    flags = []
    for key in keys:
        if key is None:
            flags.append(False)
            continue
        flags.append(key in seen)
        seen.add(key)
    return flags


def add(connection: Connection, sums: dict[RollupKey, _Sums]) -> None:
    """Merge a batch's rollups into the stored ones.

    The rows are first made to exist (an insert that skips existing keys), then locked and
    updated, so that writers of several processes adding to the same new hour never collide.
    """
    if not sums:
        return
    empty = _Sums().values()
    connection.execute(
        _create_missing(connection.dialect.name),
        [_stored_key(key) | empty for key in sorted(sums, key=_sort_key)],
    )
    projects = sorted({key[0] for key in sums})
    hours = sorted({datetime.fromtimestamp(key[1] * 3600, UTC) for key in sums})
    stored = connection.execute(_LOCK_HOURS, {"projects": projects, "hours": hours}).all()
    for row in stored:
        key = (row.project_name, _epoch_hour(row.hour), *row[2 : len(_KEY_COLUMNS)])
        if key in sums:
            sums[key].merge_row(row)
    connection.execute(
        _UPDATE_SUMS,
        [
            {f"key_{name}": value for name, value in _stored_key(key).items()} | total.values()
            for key, total in sums.items()
        ],
    )


@lru_cache(maxsize=4)
def _create_missing(dialect: str) -> Executable:
    """The dialect's INSERT of rollup rows that skips the keys already stored (built once)."""
    return upsert_insert(dialect, call_rollups).on_conflict_do_nothing()


_KEYS = [call_rollups.c[name] for name in _KEY_COLUMNS]
_LOCK_HOURS = (
    select(call_rollups)
    .where(
        call_rollups.c.project_name.in_(bindparam("projects", expanding=True)),
        call_rollups.c.hour.in_(bindparam("hours", expanding=True)),
    )
    .order_by(*_KEYS)
    .with_for_update()
)
"""The stored rollups of some projects' hours, locked for the batch's update."""
_UPDATE_SUMS = (
    update(call_rollups)
    .where(and_(*(column == bindparam(f"key_{column.name}") for column in _KEYS)))
    .values(
        {
            name: bindparam(name)
            for name in (
                *_SUMMED,
                "largest_prompt_tokens",
                "latency_histogram",
                "first_token_histogram",
            )
        }
    )
)


def fill_provider_names(connection: Connection) -> None:
    """Give calls stored without a provider name (by an earlier obsdeco, or imported) the
    default name of their provider."""
    missing = llm_calls.c.provider_name.is_(None)
    providers = connection.execute(select(llm_calls.c.provider).where(missing).distinct())
    for provider in providers.scalars().all():
        connection.execute(
            update(llm_calls)
            .where(missing, llm_calls.c.provider == provider)
            .values(provider_name=default_provider_name(provider))
        )


def rebuild(connection: Connection) -> None:
    """Recompute repeats and rollups from the stored calls (after an upgrade, or after calls
    were inserted by other means than obsdeco's writer); calls stored without a provider name
    get their provider's default one first. Rollups of hours before the oldest stored call
    are kept: retention may have removed their calls and kept them."""
    fill_provider_names(connection)
    oldest = connection.execute(select(func.min(llm_calls.c.timestamp))).scalar()
    if oldest is not None:
        connection.execute(delete(call_rollups).where(call_rollups.c.hour >= hour_of(oldest)))
    connection.execute(delete(request_hashes))
    identical = (llm_calls.c.project_name, llm_calls.c.request_hash)
    counted = llm_calls.c.success.is_(True) & llm_calls.c.request_hash.is_not(None)
    ranked = (
        select(
            llm_calls.c.id,
            func.row_number()
            .over(partition_by=identical, order_by=(llm_calls.c.timestamp, llm_calls.c.id))
            .label("rank"),
        )
        .where(counted)
        .subquery()
    )
    repeats = select(ranked.c.id).where(ranked.c.rank > 1)
    connection.execute(
        update(llm_calls).where(llm_calls.c.repeated.is_(True)).values(repeated=False)
    )
    connection.execute(update(llm_calls).where(llm_calls.c.id.in_(repeats)).values(repeated=True))
    connection.execute(
        request_hashes.insert().from_select(
            ["project_name", "request_hash", "calls"],
            select(*identical, func.count()).where(counted).group_by(*identical),
        )
    )
    sums: dict[RollupKey, _Sums] = {}
    facts = connection.execute(
        select(*(llm_calls.c[name] for name in FACT_COLUMNS)).execution_options(yield_per=50_000)
    )
    for rows in facts.partitions():
        accumulate(sums, dict(zip(FACT_COLUMNS, zip(*rows, strict=True), strict=True)))
    rows = [_stored_key(key) | total.values() for key, total in sums.items()]
    for start in range(0, len(rows), 5_000):
        connection.execute(call_rollups.insert(), rows[start : start + 5_000])
