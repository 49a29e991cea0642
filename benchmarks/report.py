"""Report benchmark: one session of 10,000 calls, and a project of 1,000,000 stored calls.

    python benchmarks/report.py [--calls N] [--session-calls M] [--skip-postgres]

The project store is filled with SQL (generate_series / a recursive CTE), not through obsdeco,
so that seeding a million rows takes seconds; its hourly rollups are then built in one pass
(`rebuild_rollups()`, what obsdeco's writer does batch by batch). Prints a table and writes
benchmarks/results/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy

import obsdeco
from obsdeco.analyzers import PriceTable, build_report
from obsdeco.models import LLMCall, ModelProvider, Session
from obsdeco.storage import SQLAlchemyStorage
from obsdeco.storage.schema import metadata

POSTGRES_URL = os.environ.get(
    "OBSDECO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
]
AGENTS = ["Planner", "Researcher", "Writer", "Critic"]


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


def _seed_sql(dialect: str, rows: int) -> str:
    cases = " ".join(f"WHEN {index} THEN '{value}'" for index, (_, value) in enumerate(MODELS))
    providers = " ".join(f"WHEN {index} THEN '{value}'" for index, (value, _) in enumerate(MODELS))
    agents = " ".join(f"WHEN {index} THEN '{value}'" for index, value in enumerate(AGENTS))
    if dialect == "postgresql":
        source = f"generate_series(1::bigint, {rows}::bigint) AS g(n)"
        timestamp = "now() - (n || ' seconds')::interval"
        hexid = "lpad(to_hex(n), 32, '0')"
        repeated_hash = f"lpad(to_hex(n % {rows * 4 // 5}), 32, '0')"
        session = "lpad(to_hex(n / 20), 32, '0')"
        boolean_true, boolean_false = "true", "false"
    else:
        source = (
            f"(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows}) "
            "SELECT n FROM g)"
        )
        timestamp = "strftime('%Y-%m-%d %H:%M:%f000', 'now', '-' || n || ' seconds')"
        hexid = "printf('%032x', n)"
        repeated_hash = f"printf('%032x', n % {rows * 4 // 5})"
        session = "printf('%032x', n / 20)"
        boolean_true, boolean_false = "1", "0"
    return f"""
        INSERT INTO llm_calls (id, session_id, project_name, timestamp, provider, model,
            agent_name, operation, prompt_tokens, completion_tokens, cached_tokens,
            cache_creation_tokens, reasoning_tokens, latency_ms, time_to_first_token_ms,
            streamed, success, error_type, retries, rate_limited_retries, request_hash, metadata)
        SELECT {hexid}, {session}, 'bench', {timestamp},
            CASE n % 4 {providers} END, CASE n % 4 {cases} END,
            CASE (n / 4) % 4 {agents} END, CASE (n / 16) % 3 WHEN 0 THEN 'plan'
                WHEN 1 THEN 'search' ELSE 'draft' END,
            100 + (n * 37) % 4900, 10 + (n * 13) % 790, (n % 3) * 32, 0, NULL,
            200.0 + (n * 7919) % 7800, CASE WHEN n % 5 = 0 THEN 50.0 + n % 400 END,
            {boolean_false}, CASE WHEN n % 50 = 0 THEN {boolean_false} ELSE {boolean_true} END,
            CASE WHEN n % 50 = 0 THEN 'rate_limit' END, CASE WHEN n % 40 = 0 THEN 1 ELSE 0 END,
            CASE WHEN n % 40 = 0 THEN 1 ELSE 0 END, {repeated_hash}, '{{}}'
        FROM {source}
    """


def project_report(url: str, rows: int) -> dict[str, float]:
    """Seed `rows` calls of project 'bench' and time obsdeco.report('bench')."""
    engine = sqlalchemy.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(_seed_sql(engine.dialect.name, rows)))
        if engine.dialect.name == "postgresql":
            connection.execute(sqlalchemy.text("ANALYZE llm_calls"))
    seeded = time.perf_counter() - started
    engine.dispose()
    started = time.perf_counter()
    storage = SQLAlchemyStorage(url)
    storage.rebuild_rollups()
    storage.close()
    rolled_up = time.perf_counter() - started
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
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
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
    out = Path(__file__).parent / "results" / "report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
