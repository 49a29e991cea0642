"""Ingest benchmark: caller-side cost of recording, sustained throughput, memory at the queue bound.

    python benchmarks/ingest.py [--calls N] [--skip-postgres]

PostgreSQL runs use a throwaway schema of OBSDECO_TEST_POSTGRES_URL's database (default: the
local `test` database), one per step.

Prints a table and writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable

from common import environment, postgres_schema, write_results

import obsdeco
from obsdeco.runtime import get_runtime

UNREACHABLE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/unreachable"


def _record(collector: obsdeco.MetricsCollector, session: obsdeco.Session) -> None:
    collector.record_llm_call(
        session,
        provider=obsdeco.ModelProvider.OPENAI,
        model_name="gpt-4o",
        prompt_tokens=500,
        completion_tokens=200,
        latency_ms=1500.0,
        agent_name="Planner",
        operation="plan",
    )


def _percentiles(timings_ns: list[int]) -> dict[str, float]:
    timings_ns.sort()
    return {
        "median_us": statistics.median(timings_ns) / 1000,
        "p90_us": timings_ns[int(len(timings_ns) * 0.9)] / 1000,
        "p99_us": timings_ns[int(len(timings_ns) * 0.99)] / 1000,
    }


def caller_cost(url: str, calls: int, burst: int) -> dict[str, object]:
    """Time on the caller's thread per recorded call (validate, attribute, enqueue).

    Paced: bursts of `burst` calls, each followed by a flush (not timed), so that the writer
    commits concurrently with recording as it does under real load. Tight loop: one thread
    records as fast as it can while the writer competes for the GIL all along.
    """
    obsdeco.configure(database_url=url, max_queue_size=calls + 10)
    collector = obsdeco.MetricsCollector("bench")
    session = collector.start_session("caller-cost")
    for _ in range(1_000):
        _record(collector, session)
    obsdeco.flush()
    clock = time.perf_counter_ns
    paced: list[int] = []
    while len(paced) < calls:
        for _ in range(burst):
            start = clock()
            _record(collector, session)
            paced.append(clock() - start)
        obsdeco.flush()
    tight: list[int] = []
    for _ in range(calls):
        start = clock()
        _record(collector, session)
        tight.append(clock() - start)
    collector.end_session(session)
    obsdeco.flush()
    return {
        "calls": calls,
        "burst": burst,
        "paced": _percentiles(paced),
        "tight": _percentiles(tight),
    }


def burst(url: str, calls: int, calls_per_session: int) -> dict[str, float]:
    """Record `calls` as fast as one thread can (in sessions of `calls_per_session`), into a
    queue big enough to hold them all, and wait until every record is committed."""
    obsdeco.configure(database_url=url, max_queue_size=2 * calls)
    get_runtime()
    before = obsdeco.stats()
    collector = obsdeco.MetricsCollector("bench")
    start = time.perf_counter()
    for _ in range(calls // calls_per_session):
        session = collector.start_session("burst")
        for _ in range(calls_per_session):
            _record(collector, session)
        collector.end_session(session)
    enqueued = time.perf_counter() - start
    assert obsdeco.flush(timeout=600), "flush timed out"
    elapsed = time.perf_counter() - start
    after = obsdeco.stats()
    return {
        "calls": calls,
        "calls_per_session": calls_per_session,
        "enqueue_s": enqueued,
        "committed_s": elapsed,
        "calls_per_s": calls / elapsed,
        "dropped": after.dropped - before.dropped,
    }


def paced(url: str, rate: float, seconds: float, calls_per_session: int) -> dict[str, float]:
    """Record at `rate` calls/s for `seconds` with the default queue bound, the producer
    sleeping between sessions as a real service waits on its LLM calls; kept up means no
    record dropped and the backlog gone within a second of the producer stopping."""
    obsdeco.configure(database_url=url)
    get_runtime()
    before = obsdeco.stats()
    collector = obsdeco.MetricsCollector("bench")
    produced, peak_pending = 0, 0
    start = time.perf_counter()
    while (now := time.perf_counter() - start) < seconds:
        if produced >= now * rate:
            time.sleep(0.0005)
            continue
        session = collector.start_session("paced")
        for _ in range(calls_per_session):
            _record(collector, session)
        collector.end_session(session)
        produced += calls_per_session
        if produced % (100 * calls_per_session) == 0:
            peak_pending = max(peak_pending, obsdeco.stats().pending)
    producing = time.perf_counter() - start
    drain_start = time.perf_counter()
    assert obsdeco.flush(timeout=600), "flush timed out"
    drain = time.perf_counter() - drain_start
    dropped = obsdeco.stats().dropped - before.dropped
    return {
        "target_per_s": rate,
        "calls": produced,
        "calls_per_s": (produced - dropped) / (producing + drain),
        "peak_pending": peak_pending,
        "drain_s": drain,
        "dropped": dropped,
        "kept_up": dropped == 0 and drain < 1.0,
    }


def sustained(
    fresh_url: Callable[[], str], rates: list[float], calls_per_session: int
) -> dict[str, object]:
    """The highest of `rates` kept up, each step measured on a fresh, empty database."""
    steps = [paced(fresh_url(), rate, 4.0, calls_per_session) for rate in rates]
    kept_up = [step for step in steps if step["kept_up"]]
    best = max(kept_up, key=lambda step: step["calls_per_s"]) if kept_up else None
    return {"steps": steps, "sustained_calls_per_s": best["calls_per_s"] if best else 0.0}


def memory_at_bound(bound: int) -> dict[str, float]:
    """Fill the queue to its bound while the database is unreachable; measure what it holds."""
    obsdeco.configure(database_url=UNREACHABLE_URL, max_queue_size=bound)
    get_runtime()
    collector = obsdeco.MetricsCollector("bench")
    session = collector.start_session("memory")
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    for _ in range(bound):
        _record(collector, session)
    # The in-memory session also keeps its calls (for the in-process report); end it so that
    # only the writer's queue holds them, as it does for sessions that have ended.
    collector.end_session(session)
    from obsdeco.collector import sessions_in_memory

    sessions_in_memory._recent.clear()
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pending = obsdeco.stats().pending
    before = obsdeco.stats().dropped_queue_full
    _record(collector, collector.start_session("overflow"))
    dropped_extra = obsdeco.stats().dropped_queue_full - before
    return {
        "bound": bound,
        "pending": pending,
        "bytes": held - base,
        "bytes_per_record": (held - base) / max(pending, 1),
        "dropped_past_bound": dropped_extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--caller-calls", type=int, default=50_000)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--calls-per-session", type=int, default=50)
    parser.add_argument(
        "--rates", default="30000,40000,50000,60000,70000", help="paced rates to try, calls/s"
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    results = environment()
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite:///{folder}/bench.db"
        results["caller_cost_sqlite"] = caller_cost(sqlite_url, args.caller_calls, args.burst)
        rates = [float(rate) for rate in args.rates.split(",")]
        steps = itertools.count()
        results["sustained_sqlite"] = sustained(
            lambda: f"sqlite:///{folder}/sustained-{next(steps)}.db", rates, args.calls_per_session
        )
        results["burst_sqlite"] = burst(
            f"sqlite:///{folder}/burst.db", args.calls, args.calls_per_session
        )
        if not args.skip_postgres:
            with contextlib.ExitStack() as schemas:

                def fresh_postgres() -> str:
                    obsdeco.configure(database_url=sqlite_url)
                    obsdeco.flush()
                    return schemas.enter_context(postgres_schema())

                results["sustained_postgres"] = sustained(
                    fresh_postgres, rates, args.calls_per_session
                )
                results["burst_postgres"] = burst(
                    fresh_postgres(), args.calls, args.calls_per_session
                )
                obsdeco.configure(database_url=sqlite_url)
        results["memory_at_default_bound"] = memory_at_bound(obsdeco.Settings().max_queue_size)
        obsdeco.configure(database_url=sqlite_url)

    caller = results["caller_cost_sqlite"]
    rows = []
    for mode in ("paced", "tight"):
        timing = caller[mode]
        rows.append(
            (
                f"record one call, caller thread, {mode}",
                f"median {timing['median_us']:.2f} us, p90 {timing['p90_us']:.2f} us, "
                f"p99 {timing['p99_us']:.2f} us",
            )
        )
    for store in ("sqlite", "postgres"):
        if f"sustained_{store}" not in results:
            continue
        steady = results[f"sustained_{store}"]
        for step in steady["steps"]:
            rows.append(
                (
                    f"  {store} paced at {step['target_per_s']:,.0f}/s",
                    f"{step['calls_per_s']:,.0f} calls/s committed, peak backlog "
                    f"{step['peak_pending']:,}, drained in {step['drain_s']:.2f} s, "
                    f"dropped {step['dropped']:,}" + ("" if step["kept_up"] else "  (not kept up)"),
                )
            )
        rows.append(
            (f"sustained ingest, {store}", f"{steady['sustained_calls_per_s']:,.0f} calls/s")
        )
        run = results[f"burst_{store}"]
        rows.append(
            (
                f"burst of {run['calls']:,} calls, {store}",
                f"{run['calls_per_s']:,.0f} calls/s enqueue to committed "
                f"({run['committed_s']:.2f} s, dropped {run['dropped']})",
            )
        )
    memory = results["memory_at_default_bound"]
    rows.append(
        (
            f"memory at queue bound ({memory['bound']:,} records)",
            f"{memory['bytes'] / 2**20:.1f} MiB ({memory['bytes_per_record']:.0f} B/record)",
        )
    )
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")

    write_results("ingest", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
