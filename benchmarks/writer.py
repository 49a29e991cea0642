"""Writer-side benchmark: the time the store takes to commit batches of calls, alone on one
thread (no caller competing for the GIL), per call: wall time, and the thread's CPU time (steadier
on a shared machine; PostgreSQL's own work is not in it).

    python benchmarks/writer.py [--calls N] [--batch-size M] [--repeats R] [--skip-postgres]

Each batch holds `batch_size` calls of sessions of 50 calls, with their sessions' start and end
rows, as the writer hands them to the store (through the privacy rules of the default
settings). Every repeat writes into a fresh store; the figure is the median over repeats.
Prints a table and writes benchmarks/results/writer.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from common import environment, postgres_schema, write_results

import obsdeco
from obsdeco.models import LLMCall, ModelProvider, Session, Totals, utc_now
from obsdeco.privacy.store import open_store
from obsdeco.storage import SessionState, WriteBatch

CALLS_PER_SESSION = 50


def batches(calls: int, batch_size: int) -> list[WriteBatch]:
    """`calls` calls like those of `ingest.py`, in batches of `batch_size` with their sessions'
    rows."""
    made: list[WriteBatch] = []
    batch = WriteBatch()
    for _ in range(calls // CALLS_PER_SESSION):
        session = Session(project_name="bench", name="writer")
        batch.sessions.append(SessionState(session))
        for _ in range(CALLS_PER_SESSION):
            batch.calls.append(
                LLMCall(
                    session_id=session.id,
                    project_name="bench",
                    provider=ModelProvider.OPENAI,
                    model="gpt-4o",
                    prompt_tokens=500,
                    completion_tokens=200,
                    latency_ms=1500.0,
                    agent_name="Planner",
                    operation="plan",
                )
            )
            if len(batch.calls) == batch_size:
                made.append(batch)
                batch = WriteBatch()
        ended = session.model_copy(update={"ended_at": utc_now(), "status": "ok"})
        batch.sessions.append(SessionState(ended, Totals(calls=CALLS_PER_SESSION)))
    if len(batch):
        made.append(batch)
    return made


def write_all(url: str, calls: int, batch_size: int) -> tuple[float, float]:
    """Microseconds per call, wall and CPU, to write `calls` calls into a fresh store at `url`."""
    store = open_store(obsdeco.Settings(database_url=url))
    try:
        store.write(WriteBatch())  # creates the schema, outside the timing
        made = batches(calls, batch_size)
        start, cpu = time.perf_counter(), time.thread_time()
        for batch in made:
            store.write(batch)
        wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
        return wall / calls * 1e6, cpu / calls * 1e6
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=obsdeco.Settings().batch_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    results = {**environment(), "calls": args.calls, "batch_size": args.batch_size}
    timings: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgres": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/writer-{repeat}.db"
            timings["sqlite"].append(write_all(url, args.calls, args.batch_size))
        if not args.skip_postgres:
            with postgres_schema() as url:
                timings["postgres"].append(write_all(url, args.calls, args.batch_size))
    for store, found in timings.items():
        if not found:
            continue
        wall = statistics.median(run[0] for run in found)
        cpu = statistics.median(run[1] for run in found)
        results[store] = {
            "us_per_call": wall,
            "cpu_us_per_call": cpu,
            "calls_per_s": 1e6 / wall,
            "runs": found,
        }
        print(
            f"writer alone, {store}: {wall:.2f} us per call ({1e6 / wall:,.0f} calls/s), "
            f"CPU {cpu:.2f} us per call; runs (wall, CPU): "
            + ", ".join(f"({run[0]:.1f}, {run[1]:.1f})" for run in found)
        )
    write_results("writer", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
