"""Store open benchmark: the time to open a new store and make it ready, in one run.

    python benchmarks/store_open.py [--stores N] [--skip-postgres]

Each of N new stores (a new SQLite file; a new PostgreSQL schema, made outside the timing) is
opened as a program's first use of obsdeco opens it: `SQLAlchemyStorage(url)` and its first
query, which creates the schema. Also timed: reopening a store that is ready (what every
further process pays). Medians of N. Prints a table and writes
benchmarks/results/store_open.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import environment, postgres_schema, write_results

from obsdeco.storage import SQLAlchemyStorage


def opened_ms(url: str) -> float:
    start = time.perf_counter()
    storage = SQLAlchemyStorage(url)
    storage.project_names()
    elapsed = time.perf_counter() - start
    storage.close()
    return elapsed * 1000


def median_ms(stores: int, new_url: Callable[[int], str], reopen: bool) -> float:
    timings = []
    for index in range(stores):
        url = new_url(index)
        if reopen:
            opened_ms(url)
        timings.append(opened_ms(url))
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", type=int, default=40)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"environment": environment(), "stores": args.stores}
    opened_ms(f"sqlite:///{tempfile.mkdtemp()}/warm.db")  # imports and first-use caches
    with tempfile.TemporaryDirectory() as directory:
        results["sqlite_new_ms"] = median_ms(
            args.stores, lambda index: f"sqlite:///{Path(directory)}/new-{index}.db", False
        )
        results["sqlite_ready_ms"] = median_ms(
            args.stores, lambda index: f"sqlite:///{Path(directory)}/ready-{index}.db", True
        )
    if not args.skip_postgres:
        for name, reopen in (("postgresql_new_ms", False), ("postgresql_ready_ms", True)):
            timings = []
            for _ in range(args.stores):
                with postgres_schema() as url:
                    if reopen:
                        opened_ms(url)
                    timings.append(opened_ms(url))
            results[name] = statistics.median(timings)
    print(f"{'store':<28}{'median ms':>10}")
    for key, label in (
        ("sqlite_new_ms", "SQLite, new"),
        ("sqlite_ready_ms", "SQLite, ready"),
        ("postgresql_new_ms", "PostgreSQL, new"),
        ("postgresql_ready_ms", "PostgreSQL, ready"),
    ):
        if key in results:
            print(f"{label:<28}{results[key]:>10.2f}")
    write_results("store_open", results)


if __name__ == "__main__":
    main()
