"""Partitions benchmark: PostgreSQL day partitions against the plain tables of earlier releases.

    python benchmarks/partitions.py [--days N] [--limit M] [--ingest-calls K] [--rounds R]

For each layout, in a throwaway schema: the writer's throughput (`SQLAlchemyStorage.write` of
batches of 2,000 calls, today's; the layouts alternated, R rounds), the first M calls of one
day by `query_calls` in a store seeded with a call a second for N days, and removing all but the
last 3 days (partitioned: a retention pass; plain: the one DELETE an unpartitioned table would
need, without the request counts a pass also keeps). The plain layout is made with
`unpartition_existing` (what a downgrade does) and written as an earlier release wrote it: the
conversion at open and the partitions of each batch are skipped (`_earlier_release`). Prints a
table and writes benchmarks/results/partitions.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from common import environment, postgres_schema, seed_store, write_results

from obsdeco.models import LLMCall, ModelProvider, Session
from obsdeco.storage import CallFilter, SQLAlchemyStorage, WriteBatch
from obsdeco.storage.partitions import unpartition_existing
from obsdeco.storage.retention import RetentionPolicy

BATCH = 2_000


def _batches(count: int) -> list[WriteBatch]:
    session = Session(project_name="bench")
    now = datetime.now(UTC)
    calls = [
        LLMCall(
            session_id=session.id,
            project_name="bench",
            timestamp=now + timedelta(microseconds=index),
            provider=ModelProvider.OPENAI,
            model="gpt-4o",
            prompt_tokens=500,
            completion_tokens=200,
            latency_ms=1_500.0,
            agent_name="Planner",
            operation="plan",
        )
        for index in range(count)
    ]
    return [WriteBatch(calls=calls[start : start + BATCH]) for start in range(0, count, BATCH)]


def _store(url: str, partitioned: bool) -> SQLAlchemyStorage:
    store = SQLAlchemyStorage(url)
    store.write(WriteBatch())
    if not partitioned:
        with store.engine.begin() as connection:
            unpartition_existing(connection)
        store.close()
        store = _earlier_release(url)
    return store


def _earlier_release(url: str) -> SQLAlchemyStorage:
    """A backend writing a plain store as releases before partitioning did."""
    store = SQLAlchemyStorage(url)
    store._schema_ready = True  # no conversion at open
    store._partitions = None  # no partitions made for a batch
    return store


def ingest(partitioned: bool, calls: int) -> float:
    """Calls per second written by `SQLAlchemyStorage.write`, batches of 2,000."""
    with postgres_schema() as url:
        store = _store(url, partitioned)
        batches = _batches(calls)
        started = time.perf_counter()
        for batch in batches:
            store.write(batch)
        elapsed = time.perf_counter() - started
        store.close()
    return calls / elapsed


def store_of_days(partitioned: bool, days: int, limit: int) -> dict[str, float]:
    """A one-day query and a retention pass in a store of `days` days of seeded calls."""
    with postgres_schema() as url:
        seed_store(url, days * 86_400)  # one call a second, `days` days back
        store = SQLAlchemyStorage(url)
        store.write(WriteBatch())  # the partitions ahead, the seeded store converted if plain
        if not partitioned:
            with store.engine.begin() as connection:
                unpartition_existing(connection)
            store.close()
            store = _earlier_release(url)
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since = day - timedelta(days=days // 2)
        one_day = CallFilter(project="bench", since=since, until=since + timedelta(days=1))
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            found = len(store.query_calls(one_day, limit=limit))
            timings.append(time.perf_counter() - started)
        before = _stored(store)
        started = time.perf_counter()
        if partitioned:
            store.apply_retention(RetentionPolicy(days=3, rollup_days=3), datetime.now(UTC))
        else:
            with store.engine.begin() as connection:
                connection.exec_driver_sql(
                    "DELETE FROM llm_calls WHERE timestamp < %(cutoff)s",
                    {"cutoff": day - timedelta(days=3)},
                )
        retention_s = time.perf_counter() - started
        removed = before - _stored(store)
        store.close()
    return {
        "one_day_query_ms": statistics.median(timings) * 1e3,
        "one_day_rows": found,
        "retention_s": retention_s,
        "removed_calls": removed,
    }


def _stored(store: SQLAlchemyStorage) -> int:
    with store.engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT count(*) FROM llm_calls").scalar_one())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--limit", type=int, default=1_000)
    parser.add_argument("--ingest-calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    layouts = {"plain": False, "partitioned": True}
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name, partitioned in layouts.items():
            rates[name].append(ingest(partitioned, args.ingest_calls))
    results: dict[str, object] = {**environment(), "days": args.days}
    for name, partitioned in layouts.items():
        results[name] = {
            "ingest_calls_per_s": statistics.median(rates[name]),
            "ingest_runs": rates[name],
            **store_of_days(partitioned, args.days, args.limit),
        }
    print(
        f"| layout | ingest calls/s (median of {args.rounds}) | one-day query | "
        "removing the days before the last 3 |"
    )
    print("|---|---|---|---|")
    for name in ("plain", "partitioned"):
        run = results[name]
        assert isinstance(run, dict)
        print(
            f"| {name} | {run['ingest_calls_per_s']:,.0f} | {run['one_day_query_ms']:.1f} ms "
            f"({run['one_day_rows']:,} rows) | {run['retention_s']:.2f} s "
            f"({run['removed_calls']:,} calls) |"
        )
    write_results("partitions", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
