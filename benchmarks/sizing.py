"""Sizing benchmark: what one stored call costs on disk, and how many calls a second a writer
process and the PostgreSQL server commit per core.

    python benchmarks/sizing.py [--calls N] [--writer-calls M] [--processes 1,2,4,8]
        [--skip-postgres]

Bytes per call: N realistic calls (sessions of 20 with two agent spans each, spread over a
day, a sixth of them repeating a popular request) written through obsdeco's writer, without
and with captured content, on SQLite and PostgreSQL (a schema of its own); every table and
index measured afterwards (PostgreSQL: pg_table_size, TOAST included, and pg_indexes_size of
every partition, after VACUUM; SQLite: dbstat).

Rows per second: P processes (1, 2, 4, 8) each record M calls as fast as they can into one
PostgreSQL store and flush. Per process: its CPU time and its writer thread's; for the server:
the CPU time of the backends serving those processes (from /proc, so PostgreSQL must run on
this machine). Prints a table and writes benchmarks/results/sizing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy
from common import environment, postgres_schema, write_results
from sqlalchemy.engine import make_url

import obsdeco

TABLES = ("llm_calls", "call_rollups", "request_hashes", "sessions", "agent_spans")
CALLS_PER_SESSION = 20
MODELS = (("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"))
AGENTS = ("Planner", "Researcher", "Writer", "Critic")
SENTENCES = (
    "the customer asks about their order status and wants a refund for the damaged item",
    "please summarise the following document in three bullet points with citations",
    "you are a helpful assistant answer concisely using the context below",
)
WORDS = tuple(word for sentence in SENTENCES for word in sentence.split())
APPLICATION = "obsdeco-sizing"
"""The application_name of the writer processes' connections, to find their backends."""


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_calls(calls: int, content: bool, seed: int = 7) -> None:
    """Record `calls` realistic calls through obsdeco (configured already) and flush."""
    rng = random.Random(seed)
    collector = obsdeco.MetricsCollector("sizing")
    start = datetime.now(UTC) - timedelta(days=1)
    step = timedelta(days=1) / calls
    for first in range(0, calls, CALLS_PER_SESSION):
        session = collector.start_session("job")
        for index in range(first, min(first + CALLS_PER_SESSION, calls)):
            provider, model = rng.choice(MODELS)
            popular = rng.random() < 1 / 6
            details = {}
            if content:
                details = {
                    "prompt": json.dumps([{"role": "user", "content": _text(rng, 300)}]),
                    "completion": _text(rng, 80),
                }
            collector.record_llm_call(
                session,
                provider=provider,
                model_name=model,
                latency_ms=rng.lognormvariate(7, 0.6),
                prompt_tokens=rng.randint(1_100, 4_000),
                completion_tokens=rng.randint(20, 800),
                cached_tokens=rng.choice([0, 0, 0, 1_024]),
                agent_name=AGENTS[index % len(AGENTS)],
                operation="step",
                timestamp=start + step * index,
                request_hash=f"{rng.randrange(500) if popular else seed * 10**9 + index:032x}",
                **details,
            )
        began, ended = start + step * first, start + step * index
        middle = began + (ended - began) / 2
        collector.record_agent_span(
            session, agent_name="Planner", started_at=began, ended_at=middle
        )
        collector.record_agent_span(session, agent_name="Writer", started_at=middle, ended_at=ended)
        collector.end_session(session)
    assert obsdeco.flush(timeout=600), "flush timed out"


def _postgres_sizes(url: str) -> dict[str, dict[str, int]]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sqlalchemy.text(f"VACUUM ANALYZE {', '.join(TABLES)}"))
        sizes = {
            table: {
                part: int(size)  # PostgreSQL's sum() is numeric
                for part, size in connection.execute(
                    sqlalchemy.text(
                        "SELECT coalesce(sum(pg_table_size(relid)), 0) AS table, "
                        "coalesce(sum(pg_indexes_size(relid)), 0) AS indexes "
                        "FROM (SELECT CAST(:name AS regclass) AS relid UNION "
                        "SELECT relid FROM pg_partition_tree(CAST(:name AS regclass))) AS parts"
                    ),
                    {"name": table},
                )
                .one()
                ._mapping.items()
            }
            for table in TABLES
        }
    engine.dispose()
    return sizes


def _sqlite_sizes(path: str) -> dict[str, dict[str, int]]:
    connection = sqlite3.connect(path)
    try:
        owner = dict(connection.execute("SELECT name, tbl_name FROM sqlite_master"))
        sizes = {table: {"table": 0, "indexes": 0} for table in TABLES}
        for name, pages in connection.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            if table in sizes:
                sizes[table]["table" if name == table else "indexes"] += pages
        return sizes
    finally:
        connection.close()


def bytes_per_call(url: str, calls: int, content: bool) -> dict[str, object]:
    """Write `calls` calls to the empty store at `url`; each table's bytes per call."""
    obsdeco.configure(database_url=url, max_queue_size=2 * calls, capture_content=content)
    write_calls(calls, content)
    obsdeco.configure(database_url="sqlite://")
    if url.startswith("sqlite"):
        sizes = _sqlite_sizes(make_url(url).database or "")
    else:
        sizes = _postgres_sizes(url)
    per_call = {
        table: {part: size / calls for part, size in parts.items()}
        for table, parts in sizes.items()
    }
    total = sum(sum(parts.values()) for parts in sizes.values())
    return {"calls": calls, "content": content, "bytes_per_call": per_call, "total": total / calls}


WRITER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    sys.path.insert(0, sys.argv[4])
    import obsdeco
    from obsdeco.runtime import get_runtime
    from sizing import write_calls

    url, calls, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    obsdeco.configure(database_url=url, max_queue_size=2 * calls)
    get_runtime()
    print("ready", flush=True)
    sys.stdin.readline()
    started, cpu = time.perf_counter(), time.process_time()
    write_calls(calls, content=False, seed=seed)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    writer = next(t for t in threading.enumerate() if t.name == "obsdeco-writer")
    with open(f"/proc/self/task/{writer.native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    writer_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    stats = obsdeco.stats()
    print(json.dumps({"elapsed": elapsed, "cpu": cpu, "writer_cpu": writer_cpu,
                      "dropped": stats.dropped}), flush=True)
    sys.stdin.readline()
    """
)


def _backend_cpu_seconds(url: str) -> float:
    """CPU seconds the PostgreSQL backends of the writer processes have used so far."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        pids = connection.execute(
            sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": APPLICATION},
        ).scalars()
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    engine.dispose()
    return total / os.sysconf("SC_CLK_TCK")


def throughput(url: str, processes: int, calls: int) -> dict[str, object]:
    """`processes` processes each write `calls` calls to the store at `url` at once."""
    writer_url = (
        make_url(url)
        .update_query_dict({"application_name": APPLICATION})
        .render_as_string(hide_password=False)
    )
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                writer_url,
                str(calls),
                str(seed),
                str(Path(__file__).parent),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(processes)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
    server_before = _backend_cpu_seconds(url)
    started = time.perf_counter()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outcomes = [json.loads(worker.stdout.readline()) for worker in workers]  # type: ignore[union-attr]
    elapsed = time.perf_counter() - started
    server = _backend_cpu_seconds(url) - server_before
    for worker in workers:
        worker.communicate("exit\n", timeout=60)
        assert worker.returncode == 0
    rows = processes * calls
    writer_cpu = sum(outcome["writer_cpu"] for outcome in outcomes)
    return {
        "processes": processes,
        "calls": rows,
        "elapsed_s": elapsed,
        "calls_per_s": rows / elapsed,
        "process_cpu_s": sum(outcome["cpu"] for outcome in outcomes),
        "writer_thread_cpu_s": writer_cpu,
        "server_cpu_s": server,
        "calls_per_writer_core_s": rows / writer_cpu if writer_cpu else None,
        "calls_per_server_core_s": rows / server if server else None,
        "dropped": sum(outcome["dropped"] for outcome in outcomes),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--writer-calls", type=int, default=40_000)
    parser.add_argument("--processes", default="1,2,4,8")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {**environment(), "bytes": [], "throughput": []}
    for content in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            results["bytes"].append(  # type: ignore[attr-defined]
                {
                    "database": "sqlite",
                    **bytes_per_call(f"sqlite:///{folder}/s.db", args.calls, content),
                }
            )
        if not args.skip_postgres:
            with postgres_schema() as url:
                results["bytes"].append(  # type: ignore[attr-defined]
                    {"database": "postgresql", **bytes_per_call(url, args.calls, content)}
                )
    if not args.skip_postgres:
        for processes in (int(value) for value in args.processes.split(",")):
            with postgres_schema() as url:
                results["throughput"].append(  # type: ignore[attr-defined]
                    throughput(url, processes, args.writer_calls // processes)
                )
    _print(results)
    write_results("sizing", results)
    return 0


def _print(results: dict[str, object]) -> None:
    print(f"{'bytes per call':<28}" + "".join(f"{table:>15}" for table in TABLES) + f"{'total':>9}")
    for run in results["bytes"]:  # type: ignore[attr-defined]
        label = f"{run['database']}, {'with' if run['content'] else 'no'} content"
        cells = "".join(
            f"{part['table']:>8.0f}+{part['indexes']:<6.0f}"
            for part in run["bytes_per_call"].values()
        )
        print(f"{label:<28}{cells}{run['total']:>9.0f}")
    print("(table+indexes, TOAST included; rollups and request_hashes per call)")
    if results["throughput"]:
        print(
            f"\n{'processes':>9} {'calls':>8} {'calls/s':>9} {'writer cpu s':>13} "
            f"{'server cpu s':>13} {'calls/s/writer core':>20} {'calls/s/server core':>20}"
        )
    for run in results["throughput"]:  # type: ignore[attr-defined]
        print(
            f"{run['processes']:>9} {run['calls']:>8,} {run['calls_per_s']:>9,.0f} "
            f"{run['writer_thread_cpu_s']:>13.1f} {run['server_cpu_s']:>13.1f} "
            f"{run['calls_per_writer_core_s'] or 0:>20,.0f} "
            f"{run['calls_per_server_core_s'] or 0:>20,.0f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
