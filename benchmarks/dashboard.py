"""Dashboard benchmark: each page's load, cold cache, over 1,000,000 stored calls.

    python benchmarks/dashboard.py [--calls N] [--skip-postgres]

Seeds the store as benchmarks/report.py does (calls spread one a second over the last 11.6
days, then their rollups), adds one session per 20 calls, and times streamlit's AppTest running
each page from a cold cache with the 30-day range, which holds every call. Prints a table and
writes benchmarks/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy
from streamlit.testing.v1 import AppTest

import obsdeco
from obsdeco.storage import SQLAlchemyStorage
from obsdeco.storage.schema import metadata

sys.path.insert(0, str(Path(__file__).parent))
from report import POSTGRES_URL, _seed_sql

APP = str(Path(__file__).parents[1] / "dashboard" / "app.py")
PAGES = ("Overview", "Sessions", "Models & agents")

_SESSIONS_SQL = """
    INSERT INTO sessions (id, project_name, name, started_at, ended_at, status, metadata,
        call_count, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
        total_tokens, total_latency_ms, error_count)
    SELECT session_id, 'bench', 'job', min(timestamp), max(timestamp), 'ok', '{}', count(*),
        sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), 0,
        sum(prompt_tokens + completion_tokens), sum(latency_ms), count(*) - count(error_type)
    FROM llm_calls GROUP BY session_id
"""


def seed(url: str, rows: int) -> float:
    engine = sqlalchemy.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(_seed_sql(engine.dialect.name, rows)))
        connection.execute(sqlalchemy.text(_SESSIONS_SQL))
        if engine.dialect.name == "postgresql":
            connection.execute(sqlalchemy.text("ANALYZE"))
    engine.dispose()
    storage = SQLAlchemyStorage(url)
    storage.rebuild_rollups()
    storage.close()
    return time.perf_counter() - started


def load(page: str) -> float:
    """One cold load of `page` (a new AppTest and an empty data cache)."""
    import streamlit as st

    st.cache_data.clear()
    app = AppTest.from_file(APP, default_timeout=120)
    app.query_params.update({"project": "bench", "range": "30d", "page": page})
    started = time.perf_counter()
    app.run()
    elapsed = time.perf_counter() - started
    if app.exception:
        raise RuntimeError(app.exception[0].message)
    return elapsed


def pages(url: str, rows: int, repeats: int) -> dict[str, object]:
    seeded = seed(url, rows)
    obsdeco.configure(database_url=url)
    load(PAGES[0])  # imports and the engine's first connection
    return {
        "rows": rows,
        "seed_s": seeded,
        **{page: statistics.median(load(page) for _ in range(repeats)) for page in PAGES},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = pages(f"sqlite:///{folder}/dashboard.db", args.calls, args.repeats)
        if not args.skip_postgres:
            results["postgres"] = pages(POSTGRES_URL, args.calls, args.repeats)
        obsdeco.configure(database_url=f"sqlite:///{folder}/empty.db")
    print(f"{'page, cold cache, median of ' + str(args.repeats):<34} sqlite   postgres")
    for page in PAGES:
        cells = [
            f"{results[store][page]:6.2f} s" if store in results else "     -"  # type: ignore[index]
            for store in ("sqlite", "postgres")
        ]
        print(f"{page:<34} {cells[0]}  {cells[1]}")
    out = Path(__file__).parent / "results" / "dashboard.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
