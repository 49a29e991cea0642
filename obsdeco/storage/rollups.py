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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, select, update
from sqlalchemy.exc import DBAPIError

from obsdeco.models import LLMCall
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
"""What a rollup needs of a call, in the order `accumulate` reads it."""

_call_facts = attrgetter(*FACT_COLUMNS[:-1])


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


def accumulate(into: dict[RollupKey, _Sums], facts: Iterable[Sequence[Any]]) -> None:
    """Add calls, as tuples in `FACT_COLUMNS` order, to the rollups they belong to."""
    for (
        project,
        timestamp,
        provider,
        provider_name,
        model,
        response_model,
        agent,
        operation,
        success,
        error_type,
        prompt,
        completion,
        cached,
        written,
        reasoning,
        latency,
        first_token,
        retries,
        rate_limited_retries,
        cache_hit,
        routed_from,
        shadow_model,
        repeated,
    ) in facts:
        tokens_known = prompt is not None and completion is not None
        key = (
            project,
            _epoch_hour(timestamp),
            provider,
            provider_name,
            response_model or model,
            model,
            agent or "",
            operation or "",
            bool(success),
            error_type or "",
            tokens_known,
            (prompt or 0) >= LONG_PROMPT_TOKENS,
            bool(repeated),
            CACHE_HIT_TEXT[None if cache_hit is None else bool(cache_hit)],
            routed_from or "",
            shadow_model or "",
        )
        sums = into.get(key)
        if sums is None:
            sums = into[key] = _Sums()
        sums.calls += 1
        sums.prompt_tokens += prompt or 0
        sums.completion_tokens += completion or 0
        sums.cached_tokens += cached or 0
        sums.cache_creation_tokens += written or 0
        sums.reasoning_tokens += reasoning or 0
        sums.latency_ms += latency
        sums.largest_prompt_tokens = max(sums.largest_prompt_tokens, prompt or 0)
        sums.retries += retries
        sums.rate_limited_retries += rate_limited_retries
        if rate_limited_retries or (not success and error_type == "rate_limit"):
            sums.rate_limited_calls += 1
        bucket = histogram.bucket_of(latency)
        sums.latency_buckets[bucket] = sums.latency_buckets.get(bucket, 0) + 1
        if first_token is not None:
            sums.first_token_calls += 1
            sums.first_token_ms += first_token
            bucket = histogram.bucket_of(first_token)
            sums.first_token_buckets[bucket] = sums.first_token_buckets.get(bucket, 0) + 1


def call_facts(calls: Sequence[LLMCall], repeated: Sequence[bool]) -> Iterable[tuple[Any, ...]]:
    for call, is_repeat in zip(calls, repeated, strict=True):
        values = _call_facts(call)
        yield (*values[:2], call.provider.value, *values[3:], is_repeat)


_UPSERT_COUNTS = (
    "INSERT INTO request_hashes (project_name, request_hash, calls) {rows} "
    "ON CONFLICT (project_name, request_hash) "
    "DO UPDATE SET calls = request_hashes.calls + excluded.calls "
    "RETURNING project_name, request_hash, calls"
)


def _counted_before(
    connection: Connection, counted: dict[tuple[str, str], int]
) -> list[tuple[str, str, int]]:
    """Add the counts to `request_hashes`; the stored (project, request, calls) after it.

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


def mark_repeats(connection: Connection, calls: Sequence[LLMCall]) -> list[bool]:
    """Count the batch's successful requests in `request_hashes`; a call is a repeat when an
    identical successful call was stored before it (in an earlier batch or earlier in this one).
    """
    counted = Counter(
        (call.project_name, call.request_hash)
        for call in calls
        if call.success and call.request_hash
    )
    if not counted:
        return [False] * len(calls)
    seen = {
        (project, request)
        for project, request, stored in _counted_before(connection, counted)
        if stored > counted[(project, request)]
    }
    flags = []
    for call in calls:
        key = (call.project_name, call.request_hash)
        if not (call.success and call.request_hash):
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
        upsert_insert(connection, call_rollups).on_conflict_do_nothing(),
        [_stored_key(key) | empty for key in sorted(sums, key=_sort_key)],
    )
    projects = sorted({key[0] for key in sums})
    hours = sorted({datetime.fromtimestamp(key[1] * 3600, UTC) for key in sums})
    key_columns = [call_rollups.c[name] for name in _KEY_COLUMNS]
    stored = connection.execute(
        select(call_rollups)
        .where(call_rollups.c.project_name.in_(projects), call_rollups.c.hour.in_(hours))
        .order_by(*key_columns)
        .with_for_update()
    ).all()
    for row in stored:
        key = (row.project_name, _epoch_hour(row.hour), *row[2 : len(_KEY_COLUMNS)])
        if key in sums:
            sums[key].merge_row(row)
    match = and_(*(column == bindparam(f"key_{column.name}") for column in key_columns))
    changes = {
        name: bindparam(name)
        for name in (
            *_SUMMED,
            "largest_prompt_tokens",
            "latency_histogram",
            "first_token_histogram",
        )
    }
    connection.execute(
        update(call_rollups).where(match).values(changes),
        [
            {f"key_{name}": value for name, value in _stored_key(key).items()} | total.values()
            for key, total in sums.items()
        ],
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
    get their provider's default one first."""
    fill_provider_names(connection)
    connection.execute(delete(call_rollups))
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
    accumulate(sums, facts)
    rows = [_stored_key(key) | total.values() for key, total in sums.items()]
    for start in range(0, len(rows), 5_000):
        connection.execute(call_rollups.insert(), rows[start : start + 5_000])
