"""Report benchmark: one session of 10,000 calls, a project of 1,000,000 stored calls on
SQLite and one of 10,000,000 on PostgreSQL.

    python benchmarks/report.py [--calls N] [--postgres-calls M] [--days D]
        [--session-calls K] [--skip-postgres]

The SQLite store is filled with SQL (a recursive CTE), its hourly rollups then built in one pass
(`rebuild_rollups()`, what obsdeco's writer does batch by batch). The PostgreSQL store is
filled by `large_store`: calls of four projects over D days with their sessions, agent spans,
repeats and rollups all computed by PostgreSQL (checked first, on a small store, against
`rebuild_rollups()`), in a schema of its own dropped afterwards. The PostgreSQL report is timed
cold (the first, on a new connection pool) and warm (median of 5), and one warm report is timed
storage call by storage call. Prints a table and writes benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import large_store
from common import AGENTS, MODELS, environment, postgres_schema, seed_store, write_results

import obsdeco
from obsdeco.analyzers import PriceTable, build_report
from obsdeco.analyzers.project import build_project_report
from obsdeco.models import LLMCall, ModelProvider, Session
from obsdeco.runtime import get_runtime


def _median_s(action: object, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def session_report(calls: int) -> dict[str, float]:
    """Build the report of one in-memory session of `calls` calls."""
    rng = random.Random(7)
    session = Session(project_name="bench", name="big")
    records = []
    for _ in range(calls):
        provider, model = rng.choice(MODELS)
        records.append(
            LLMCall(
                session_id=session.id,
                project_name="bench",
                provider=ModelProvider(provider),
                model=model,
                agent_name=rng.choice(AGENTS),
                operation=rng.choice(["plan", "search", "draft"]),
                prompt_tokens=rng.randint(100, 5_000),
                cached_tokens=rng.choice([0, 0, 64]),
                completion_tokens=rng.randint(10, 800),
                latency_ms=rng.uniform(200, 8_000),
                success=rng.random() > 0.02,
                request_hash=f"{rng.randint(0, calls):032x}",
            )
        )
    prices = PriceTable()
    build_report(session, records, [], prices)
    return {
        "calls": calls,
        "median_ms": _median_s(lambda: build_report(session, records, [], prices), 20) * 1e3,
    }


def sqlite_project_report(url: str, rows: int) -> dict[str, float]:
    """Seed `rows` calls of project 'bench' and time obsdeco.report('bench')."""
    seeded, rolled_up = seed_store(url, rows)
    obsdeco.configure(database_url=url)
    report = obsdeco.report("bench")
    assert report.totals.calls == rows, report.totals.calls
    median = _median_s(lambda: obsdeco.report("bench"), 3)
    return {
        "rows": rows,
        "seed_s": seeded,
        "rollups_s": rolled_up,
        "median_s": median,
        "cost_usd": report.cost.total_usd,
        "percentiles_exact": report.latency.percentiles_exact,
    }


class _TimedBackend:
    """A storage backend whose method calls are timed: seconds and calls per method name."""

    def __init__(self, backend: object) -> None:
        self._backend = backend
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._backend, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        return timed


def _breakdown(project: str) -> dict[str, dict[str, float]]:
    """One report of `project`, timed by storage method (the rest is the report's Python)."""
    runtime = get_runtime()
    backend = _TimedBackend(runtime.backend)
    started = time.perf_counter()
    build_project_report(backend, runtime.prices, project)  # type: ignore[arg-type]
    total = time.perf_counter() - started
    parts = {
        name: {"seconds": seconds, "calls": backend.calls[name]}
        for name, seconds in sorted(backend.seconds.items(), key=lambda item: -item[1])
    }
    parts["report's own Python"] = {"seconds": total - sum(backend.seconds.values()), "calls": 1}
    parts["total"] = {"seconds": total, "calls": 1}
    return parts


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def postgres_project_report(rows: int, days: float, repeats: int = 5) -> dict[str, object]:
    """Seed `rows` calls of project 'bench' (and a tenth as many of three others) over `days`
    days, and time obsdeco.report('bench') cold, warm, and by storage call."""
    with postgres_schema() as url:
        large_store.check_against_rebuild(url)
    with postgres_schema() as url:
        seeded = large_store.seed(url, rows, days)
        obsdeco.configure(database_url=url)
        cold = _timed(lambda: obsdeco.report(large_store.PROJECT))
        report = obsdeco.report(large_store.PROJECT)
        assert report.totals.calls == seeded.project_calls, report.totals.calls
        warm = [_timed(lambda: obsdeco.report(large_store.PROJECT)) for _ in range(repeats)]
        everything = _timed(lambda: obsdeco.report())
        breakdown = _breakdown(large_store.PROJECT)
        obsdeco.configure(database_url="sqlite://")
    return {
        "rows": seeded.project_calls,
        "stored_calls": seeded.calls,
        "days": days,
        "sessions": seeded.sessions,
        "agent_spans": seeded.spans,
        "rollup_rows": seeded.rollup_rows,
        "seed_s": seeded.seconds,
        "cold_s": cold,
        "warm_s": warm,
        "median_s": statistics.median(warm),
        "every_project_s": everything,
        "breakdown": breakdown,
        "cost_usd": report.cost.total_usd,
        "percentiles_exact": report.latency.percentiles_exact,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--postgres-calls", type=int, default=10_000_000)
    parser.add_argument("--days", type=float, default=90.0)
    parser.add_argument("--session-calls", type=int, default=10_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    results: dict[str, object] = {
        **environment(),
        "session": session_report(args.session_calls),
    }
    with tempfile.TemporaryDirectory() as folder:
        results["project_sqlite"] = sqlite_project_report(
            f"sqlite:///{folder}/report.db", args.calls
        )
        obsdeco.configure(database_url=f"sqlite:///{folder}/empty.db")
    if not args.skip_postgres:
        results["project_postgres"] = postgres_project_report(args.postgres_calls, args.days)

    session = results["session"]
    print(
        f"session report, {session['calls']:,} calls in memory: "
        f"{session['median_ms']:.1f} ms (median)"
    )
    run = results["project_sqlite"]
    print(
        f"project report, {run['rows']:,} stored calls, sqlite: {run['median_s']:.2f} s "
        f"(median of 3; seeded in {run['seed_s']:.1f} s, rollups built in {run['rollups_s']:.1f} s)"
    )
    if "project_postgres" in results:
        _print_postgres(results["project_postgres"])  # type: ignore[arg-type]
    write_results("report", results)
    return 0


def _print_postgres(run: dict[str, Any]) -> None:
    print(
        f"project report, {run['rows']:,} of {run['stored_calls']:,} stored calls over "
        f"{run['days']:g} days ({run['sessions']:,} sessions, {run['agent_spans']:,} agent "
        f"spans, {run['rollup_rows']:,} rollup rows), postgresql: cold {run['cold_s']:.2f} s, "
        f"warm {run['median_s']:.2f} s (median of {len(run['warm_s'])}); every project "
        f"{run['every_project_s']:.2f} s; seeded in {sum(run['seed_s'].values()):.0f} s"
    )
    print(f"\n{'where a warm report spends its time':<40} {'s':>7} {'calls':>6}")
    for name, part in run["breakdown"].items():
        print(f"{name:<40} {part['seconds']:>7.3f} {part['calls']:>6}")


if __name__ == "__main__":
    raise SystemExit(main())
