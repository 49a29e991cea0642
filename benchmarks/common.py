"""What the benchmarks share: where PostgreSQL is, the machine they ran on, the results file,
and a store of generated calls filled with SQL."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import make_url

from obsdeco.storage import SQLAlchemyStorage, partitions
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


def environment() -> dict[str, object]:
    """The Python version and the machine, recorded with every result."""
    return {
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def timed_without_inner(
    seam_call: Callable[[Callable[..., Any]], Any], wrapped: Callable[..., Any], own: list[float]
) -> Any:
    """`seam_call(inner)`, `inner` being `wrapped` timed apart: appends to `own` the seconds the
    seam itself spent (the whole call less `wrapped`'s), and returns the seam's result."""
    inner = [0.0]

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return wrapped(*args, **kwargs)
        finally:
            inner[0] = time.perf_counter() - start

    start = time.perf_counter()
    result = seam_call(timed)
    own.append(time.perf_counter() - start - inner[0])
    return result


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL on a schema of its own, dropped afterwards (other benchmarks and tests
    may use the database)."""
    schema = f"obsdeco_bench_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def write_results(name: str, results: dict[str, object]) -> None:
    """Write benchmarks/results/<name>.json and say where."""
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")


def _calls_sql(dialect: str, rows: int) -> str:
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


_SESSIONS_SQL = """
    INSERT INTO sessions (id, project_name, name, started_at, ended_at, status, metadata,
        call_count, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
        total_tokens, total_latency_ms, error_count)
    SELECT session_id, 'bench', 'job', min(timestamp), max(timestamp), 'ok', '{}', count(*),
        sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), 0,
        sum(prompt_tokens + completion_tokens), sum(latency_ms), count(*) - count(error_type)
    FROM llm_calls GROUP BY session_id
"""


def seed_store(url: str, rows: int, sessions: bool = False) -> tuple[float, float]:
    """Fill a fresh store with `rows` calls of project 'bench', one a second back from now
    (and, with `sessions`, one session per 20 calls), then build their rollups as obsdeco's
    writer would have. Returns the seconds spent seeding and building the rollups."""
    engine = sqlalchemy.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            now = datetime.now(UTC)
            first = (now - timedelta(seconds=rows + 3_600)).date()
            partitions.create_days(connection, first, now.date())
        connection.execute(sqlalchemy.text(_calls_sql(engine.dialect.name, rows)))
        if sessions:
            connection.execute(sqlalchemy.text(_SESSIONS_SQL))
        if engine.dialect.name == "postgresql":
            connection.execute(sqlalchemy.text("ANALYZE"))
    seeded = time.perf_counter() - started
    engine.dispose()
    started = time.perf_counter()
    storage = SQLAlchemyStorage(url)
    storage.rebuild_rollups()
    storage.close()
    return seeded, time.perf_counter() - started
