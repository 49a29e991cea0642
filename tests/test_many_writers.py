"""Eight processes writing one PostgreSQL store, sharing request hashes and hours: every record
stored exactly once, every repeat count and rollup exact (no update of one writer lost to
another's), no deadlock, nothing dropped."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, count_rows, require_postgres

WRITER = textwrap.dedent(
    """
    import random, sys
    import obsdeco

    url, seed, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    obsdeco.configure(database_url=url, batch_size=250)
    shuffled = random.Random(seed)
    collector = obsdeco.MetricsCollector("fleet")
    session = collector.start_session(f"writer-{seed}")
    for _ in range(calls):
        collector.record_llm_call(
            session,
            provider="openai",
            model_name=shuffled.choice(["gpt-4o", "gpt-4o-mini", "o3-mini"]),
            agent_name=shuffled.choice(["Planner", "Researcher", "Writer", None]),
            latency_ms=shuffled.uniform(100, 900),
            prompt_tokens=10,
            completion_tokens=5,
            request_hash=f"{shuffled.randrange(60):032x}",
        )
    collector.end_session(session)
    assert obsdeco.flush(timeout=240)
    stats = obsdeco.stats()
    print(stats.dropped, stats.write_retries)
    """
)


@pytest.fixture
def database_of_its_own() -> Iterator[str]:
    """A PostgreSQL database for this test alone, so that its deadlock count is the test's."""
    require_postgres()
    name = f"obsdeco_fleet_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _deadlocks(url: str) -> int:
    """Deadlocks PostgreSQL has detected in this database since its statistics were reset."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sqlalchemy.text(
                    "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
                )
            ).scalar_one()
    finally:
        engine.dispose()


_HASHES_COUNTED = "SELECT request_hash, count(*) FROM llm_calls GROUP BY 1 ORDER BY 1"
_HASHES_STORED = "SELECT request_hash, calls FROM request_hashes ORDER BY 1"
_CALLS_GROUPED = (
    "SELECT model, coalesce(agent_name, ''), repeated, count(*), round(sum(latency_ms)) "
    "FROM llm_calls GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)
_ROLLED_UP = (
    "SELECT model, agent_name, repeated, sum(calls), round(sum(latency_ms)) "
    "FROM call_rollups GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)


def _rows(connection: sqlalchemy.Connection, sql: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in connection.execute(sqlalchemy.text(sql))]


def test_eight_processes_share_one_postgresql_store(database_of_its_own):
    postgres_url = database_of_its_own
    deadlocks_before = _deadlocks(postgres_url)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, postgres_url, str(seed), "3000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(8)
    ]
    outcomes = [writer.communicate(timeout=300) for writer in writers]

    for writer, (stdout, stderr) in zip(writers, outcomes, strict=True):
        assert writer.returncode == 0, stderr
        dropped, _retries = stdout.split()
        assert dropped == "0"
    assert _deadlocks(postgres_url) == deadlocks_before
    assert count_rows(postgres_url, "llm_calls") == 24_000
    assert count_rows(postgres_url, "sessions") == 8
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            counted = connection.execute(
                sqlalchemy.text("SELECT sum(calls), count(*) FROM request_hashes")
            ).one()
            rolled = connection.execute(sqlalchemy.text("SELECT sum(calls) FROM call_rollups"))
            repeated = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM llm_calls WHERE repeated")
            )
            assert tuple(counted) == (24_000, 60)
            assert rolled.scalar_one() == 24_000
            assert repeated.scalar_one() == 24_000 - 60
            assert _rows(connection, _HASHES_COUNTED) == _rows(connection, _HASHES_STORED)
            assert _rows(connection, _ROLLED_UP) == _rows(connection, _CALLS_GROUPED)
            sessions = connection.execute(sqlalchemy.text("SELECT call_count FROM sessions"))
            assert sessions.scalars().all() == [3000] * 8
    finally:
        engine.dispose()
