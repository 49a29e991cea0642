"""Dashboard benchmark: each page's load, cold cache, over 1,000,000 stored calls.

    python benchmarks/dashboard.py [--calls N] [--skip-postgres]

Seeds the store as benchmarks/report.py does (calls spread one a second over the last 11.6
days, then their rollups), adds one session per 20 calls, and times streamlit's AppTest running
each page from a cold cache with the 30-day range, which holds every call. Prints a table and
writes benchmarks/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import POSTGRES_URL, environment, seed_store, write_results
from streamlit.testing.v1 import AppTest

import obsdeco

APP = str(Path(__file__).parents[1] / "dashboard" / "app.py")
PAGES = ("Overview", "Sessions", "Models & agents")


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
    seeded = sum(seed_store(url, rows, sessions=True))
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
    results = environment()
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
    write_results("dashboard", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
