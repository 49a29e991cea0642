"""Export benchmark: 1,000,000 stored calls written as JSON Lines, CSV and Parquet.

    python benchmarks/export.py [--calls N] [--skip-postgres]

The store is filled with SQL (common.seed_store), then each format is exported by a fresh
child process, so that its peak memory is its own: the highest resident set size sampled
during the export less the size before it (obsdeco and pyarrow imported, the store open;
SQLite's page cache, up to 64 MB, counts in it). Prints a table and writes
benchmarks/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import environment, postgres_schema, seed_store, write_results

FORMATS = ("jsonl", "csv", "parquet")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


class PeakMemory:
    """The highest resident set size seen while the block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        self.peak = _rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def child(url: str, path: str) -> None:
    """Export every call of the store to `path`; print rows, seconds and the growth of the
    resident set over its size before the export, as JSON."""
    import pyarrow.parquet  # noqa: F401  (imported before the baseline, as a user's app has it)

    import obsdeco
    from obsdeco.runtime import get_runtime

    obsdeco.configure(database_url=url)
    get_runtime().backend.project_names()  # opens the store: schema checked, pool warm
    baseline = _rss_bytes()
    with PeakMemory() as memory:
        started = time.perf_counter()
        rows = obsdeco.export(path, "calls", project="bench")
        seconds = time.perf_counter() - started
    print(
        json.dumps({"rows": rows, "seconds": seconds, "peak_growth_bytes": memory.peak - baseline})
    )


def run_format(url: str, directory: Path, format: str) -> dict[str, float]:
    path = directory / f"calls.{format}"
    done = subprocess.run(
        [sys.executable, __file__, "--child", url, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    measured["rows_per_s"] = measured["rows"] / measured["seconds"]
    measured["file_mb"] = path.stat().st_size / 1e6
    path.unlink()
    return measured


def measure(store: str, url: str, calls: int, directory: Path, results: dict[str, object]) -> None:
    seeded, _ = seed_store(url, calls)
    results[f"{store}_seed_s"] = seeded
    for format in FORMATS:
        measured = run_format(url, directory, format)
        assert measured["rows"] == calls, measured
        results[f"{store}_{format}"] = measured
        print(
            f"{store:<11} {format:<8} {measured['rows']:>10,} "
            f"{measured['seconds']:>8.1f} {measured['rows_per_s']:>9,.0f} "
            f"{measured['peak_growth_bytes'] / 1e6:>8.1f} {measured['file_mb']:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("URL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results: dict[str, object] = {"environment": environment(), "calls": args.calls}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        print(f"{'store':<11} {'format':<8} {'rows':>10} {'seconds':>8} {'rows/s':>9} "
              f"{'peak MB':>8} {'file MB':>8}")  # fmt: skip
        sqlite_url = f"sqlite:///{directory / 'bench.db'}"
        measure("sqlite", sqlite_url, args.calls, directory, results)
        if not args.skip_postgres:
            with postgres_schema() as url:
                measure("postgresql", url, args.calls, directory, results)
    write_results("export", results)


if __name__ == "__main__":
    main()
