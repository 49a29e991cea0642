"""Report benchmark: one session of 10,000 calls, and a project of 1,000,000 stored calls.

    python benchmarks/report.py [--calls N] [--session-calls M] [--skip-postgres]

The project store is filled with SQL (generate_series / a recursive CTE), not through obsdeco,
so that seeding a million rows takes seconds; its hourly rollups are then built in one pass
(`rebuild_rollups()`, what obsdeco's writer does batch by batch). Prints a table and writes
benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

from common import AGENTS, MODELS, POSTGRES_URL, environment, seed_store, write_results

import obsdeco
from obsdeco.analyzers import PriceTable, build_report
from obsdeco.models import LLMCall, ModelProvider, Session
from obsdeco.storage import SQLAlchemyStorage


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


def project_report(url: str, rows: int) -> dict[str, float]:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--session-calls", type=int, default=10_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    results: dict[str, object] = {
        **environment(),
        "session": session_report(args.session_calls),
    }
    with tempfile.TemporaryDirectory() as folder:
        results["project_sqlite"] = project_report(f"sqlite:///{folder}/report.db", args.calls)
        if not args.skip_postgres:
            results["project_postgres"] = project_report(POSTGRES_URL, args.calls)
            SQLAlchemyStorage(POSTGRES_URL).engine.dispose()
        obsdeco.configure(database_url=f"sqlite:///{folder}/empty.db")

    session = results["session"]
    print(
        f"session report, {session['calls']:,} calls in memory: "
        f"{session['median_ms']:.1f} ms (median)"
    )
    for name in ("project_sqlite", "project_postgres"):
        if name in results:
            run = results[name]
            print(
                f"project report, {run['rows']:,} stored calls, {name.split('_')[1]}: "
                f"{run['median_s']:.2f} s (median of 3; seeded in {run['seed_s']:.1f} s, "
                f"rollups built in {run['rollups_s']:.1f} s)"
            )
    write_results("report", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
