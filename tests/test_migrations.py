"""Alembic migrations: stores written by earlier releases (tests/data/stores) upgraded on SQLite
and PostgreSQL with every record and report number intact, revisions that build exactly the
schema obsdeco defines, downgrades back to each release's layout, `obsdeco db`, and several
processes opening one new or old store at once."""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import make_url

import obsdeco
from obsdeco import cli
from obsdeco.runtime import get_runtime
from obsdeco.storage import SQLAlchemyStorage, schema_setup
from obsdeco.storage.migrations import revisions, state
from obsdeco.storage.schema import metadata
from tests.conftest import postgres_schema

STORES = Path(__file__).parent / "data" / "stores"
RELEASES = ("ac4868d", "c7b7835", "0e18ecf")
"""Before the hourly rollups; rollups without provider names (32-bit tokens on PostgreSQL);
the previous release. What each holds: tests/data/stores/README.md."""
RELEASE_REVISION = {"ac4868d": "0001", "c7b7835": "0002", "0e18ecf": "0003"}
PROJECT = "upgrade-fixture"
HEAD = "0006"


def _engine(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(url)


def load_release(release: str, url: str) -> None:
    """Put the store `release` wrote into the empty database at `url`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        shutil.copyfile(STORES / f"sqlite-{release}.db", parsed.database)
        return
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql((STORES / f"postgresql-{release}.sql").read_text())
    finally:
        engine.dispose()


DAY_PARTITION = re.compile(r"(llm_calls|agent_spans)_p\d{8}(_.*)?")
"""A day partition (PostgreSQL), or one of its indexes, which the schema does not list."""


def schema_differences(url: str) -> list[Any]:
    """What differs between the store's tables and `obsdeco.storage.schema` (the version table
    and day partitions aside; on SQLite, INTEGER and BIGINT are the same 64-bit integer)."""

    def compare_type(_context, _inspected, _column, inspected_type, metadata_type) -> bool | None:
        integers = (sqlalchemy.Integer, sqlalchemy.BigInteger)
        if _context.dialect.name == "sqlite" and isinstance(inspected_type, integers):
            return not isinstance(metadata_type.dialect_impl(_context.dialect), integers)
        return None

    engine = _engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": compare_type,
                    "include_name": lambda name, _kind, _parents: (
                        name != revisions.VERSION_TABLE and not DAY_PARTITION.fullmatch(name or "")
                    ),
                },
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def layout(url: str) -> dict[str, Any]:
    """Each table's columns (name, type, nullable), primary key and indexes (on SQLite, INTEGER
    and BIGINT are one type)."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            inspector = sqlalchemy.inspect(connection)

            def type_name(column: dict[str, Any]) -> str:
                name = type(column["type"]).__name__
                return "INTEGER" if engine.dialect.name == "sqlite" and name == "BIGINT" else name

            return {
                table: (
                    [
                        (c["name"], type_name(c), c["nullable"])
                        for c in inspector.get_columns(table)
                    ],
                    inspector.get_pk_constraint(table)["constrained_columns"],
                    sorted(
                        (index["name"], tuple(index["column_names"]))
                        for index in inspector.get_indexes(table)
                    ),
                )
                for table in sorted(inspector.get_table_names())
                if table != revisions.VERSION_TABLE
            }
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = _engine(url)
    try:
        return schema_setup.schema_revision(engine)
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> Any:
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text(sql)).scalar_one()
    finally:
        engine.dispose()


def assert_fixture_report(report: obsdeco.ProjectReport) -> None:
    """The numbers of what write_store.py records, as every release must report them."""
    assert report.sessions == 2
    totals = report.totals
    assert (totals.calls, totals.errors, totals.calls_with_unknown_tokens) == (6, 1, 1)
    assert (totals.prompt_tokens, totals.completion_tokens, totals.total_tokens) == (
        6_000,
        1_100,
        7_100,
    )
    assert totals.latency_ms == 2_750.0
    assert report.latency.p50_ms == 350.0
    assert report.latency.time_to_first_token.avg_ms == 300.0
    assert [(row.agent_name, row.wall_ms) for row in report.latency.agent_time] == [
        ("Planner", 1_800_000.0)
    ]
    assert report.quality.errors_by_type == {"RateLimitError": 1}
    assert (report.quality.retries, report.quality.rate_limited_retries) == (2, 2)
    assert {name: counts.calls for name, counts in report.tokens.by_provider.items()} == {
        "openai": 5,
        "anthropic": 1,
    }
    assert {name: counts.calls for name, counts in report.tokens.by_model.items()} == {
        "gpt-4o": 2,
        "gpt-4o-mini": 3,
        "claude-3-5-sonnet-20241022": 1,
    }


@pytest.fixture
def fresh_report(tmp_path) -> obsdeco.ProjectReport:
    """The report of the same records written by this obsdeco into a new store."""
    runpy.run_path(str(STORES / "write_store.py"))["main"](f"sqlite:///{tmp_path}/fresh.db")
    report = obsdeco.report(PROJECT)
    obsdeco.configure(database_url=f"sqlite:///{tmp_path}/default.db")
    return report


@pytest.mark.parametrize("release", RELEASES)
def test_a_store_of_an_earlier_release_is_upgraded_when_opened(database_url, release, fresh_report):
    load_release(release, database_url)
    assert revision_of(database_url) is None

    obsdeco.configure(database_url=database_url)
    report = obsdeco.report(PROJECT)

    assert revision_of(database_url) == HEAD
    assert schema_differences(database_url) == []
    assert_fixture_report(report)
    assert report.model_dump() == fresh_report.model_dump()
    backend = get_runtime().backend
    assert backend.most_repeated_requests(PROJECT, 5) == [("a" * 32, 3)]
    assert scalar(database_url, "SELECT count(*) FROM llm_calls WHERE repeated") == 2
    assert scalar(database_url, "SELECT sum(calls) FROM call_rollups") == 6
    assert scalar(database_url, "SELECT count(*) FROM llm_calls WHERE provider_name IS NULL") == 0


@pytest.mark.parametrize("release", RELEASES)
def test_an_upgraded_store_takes_what_only_the_current_release_records(database_url, release):
    load_release(release, database_url)
    obsdeco.configure(database_url=database_url)
    collector = obsdeco.MetricsCollector(PROJECT)
    session = collector.start_session("after the upgrade")
    obsdeco.experiment("prompt", {"a": 1, "b": 2}, session=session)
    collector.record_llm_call(
        session,
        provider="openai",
        model_name="gpt-4o-mini",
        latency_ms=100.0,
        prompt_tokens=3_000_000_000,
        completion_tokens=10,
        cache_hit=True,
        requested_model="gpt-4o",
        routed_from="gpt-4o",
    )
    obsdeco.score(session, "helpful", 0.75)
    collector.end_session(session)
    obsdeco.flush()

    report = obsdeco.report(PROJECT)
    assert (report.totals.calls, report.totals.prompt_tokens) == (7, 3_000_006_000)
    assert (report.cache.hits, report.routing.routed_calls) == (1, 1)
    assert [score.value for score in obsdeco.get_scores(session.id)] == [0.75]
    assert [(found.name, found.sessions) for found in obsdeco.list_experiments(PROJECT)] == [
        ("prompt", 1)
    ]
    assert scalar(database_url, "SELECT sum(calls) FROM call_rollups") == 7


def test_a_new_store_is_created_at_the_newest_revision(database_url):
    obsdeco.configure(database_url=database_url)
    obsdeco.flush()
    collector = obsdeco.MetricsCollector("new")
    collector.end_session(collector.start_session())
    obsdeco.flush()

    assert revision_of(database_url) == HEAD
    assert schema_differences(database_url) == []


def test_the_head_obsdeco_checks_stores_against_is_the_newest_revision_script():
    assert state.HEAD == revisions.head() == HEAD


def test_opening_a_current_store_loads_no_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'current.db'}"
    SQLAlchemyStorage(url).count_sessions()
    opened = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from obsdeco.storage import SQLAlchemyStorage; "
            f"SQLAlchemyStorage({url!r}).count_sessions(); print('alembic' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert opened.stdout == "False\n"


def test_every_revision_from_an_empty_database_builds_the_schema_obsdeco_defines(database_url):
    engine = _engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(revisions.config(connection), "head")
    finally:
        engine.dispose()

    assert revision_of(database_url) == HEAD
    assert schema_differences(database_url) == []


@pytest.fixture
def upgraded(database_url) -> str:
    """The previous release's store, upgraded."""
    load_release("0e18ecf", database_url)
    engine = _engine(database_url)
    try:
        change = schema_setup.prepare_schema(engine)
        assert change == schema_setup.SchemaChange(None, HEAD, "upgraded")
    finally:
        engine.dispose()
    return database_url


@contextmanager
def another_database(like: str, tmp_path: Path) -> Iterator[str]:
    if make_url(like).get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path}/another.db"
        return
    with postgres_schema() as url:
        yield url


@pytest.mark.parametrize("release", RELEASES[::-1])
def test_a_downgrade_restores_the_layout_of_each_release(upgraded, tmp_path, release):
    with another_database(upgraded, tmp_path) as written:
        load_release(release, written)
        layout_written = layout(written)
    engine = _engine(upgraded)
    try:
        change = schema_setup.downgrade_schema(engine, RELEASE_REVISION[release])
    finally:
        engine.dispose()

    assert change == schema_setup.SchemaChange(HEAD, RELEASE_REVISION[release], "downgraded")
    assert revision_of(upgraded) == RELEASE_REVISION[release]
    assert layout(upgraded) == layout_written
    assert scalar(upgraded, "SELECT count(*) FROM llm_calls") == 6
    assert scalar(upgraded, "SELECT sum(prompt_tokens) FROM llm_calls") == 6_000


@pytest.mark.parametrize("below", ["0001", "0002", "0003"])
def test_a_downgraded_store_is_upgraded_again_with_its_rollups_rebuilt(upgraded, below):
    engine = _engine(upgraded)
    try:
        schema_setup.downgrade_schema(engine, below)
    finally:
        engine.dispose()

    obsdeco.configure(database_url=upgraded)
    report = obsdeco.report(PROJECT)

    assert revision_of(upgraded) == HEAD
    assert schema_differences(upgraded) == []
    assert_fixture_report(report)
    assert scalar(upgraded, "SELECT sum(calls) FROM call_rollups") == 6


def test_the_first_release_has_nothing_to_downgrade_to(upgraded):
    engine = _engine(upgraded)
    try:
        schema_setup.downgrade_schema(engine, "0001")
        with pytest.raises(NotImplementedError, match="0001 is the first release's store"):
            schema_setup.downgrade_schema(engine, "base")
        with pytest.raises(CommandError):
            schema_setup.downgrade_schema(engine, "0003")
    finally:
        engine.dispose()
    assert revision_of(upgraded) == "0001"
    assert scalar(upgraded, "SELECT count(*) FROM llm_calls") == 6


def test_a_store_upgraded_by_a_newer_obsdeco_is_refused_by_name(database_url):
    engine = _engine(database_url)
    try:
        schema_setup.prepare_schema(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"UPDATE {revisions.VERSION_TABLE} SET version_num = '0099'")
        with pytest.raises(
            schema_setup.UnknownStoreError,
            match="the store is at revision '0099', which this obsdeco \\(newest revision "
            "0006\\) does not know: it was upgraded by a newer obsdeco",
        ):
            schema_setup.prepare_schema(engine)
    finally:
        engine.dispose()
    assert revision_of(database_url) == "0099"


def test_a_store_older_than_the_first_release_is_refused_by_name(sqlite_url):
    engine = _engine(sqlite_url)
    try:
        with engine.begin() as connection:
            for table in ("sessions", "agent_spans"):
                connection.exec_driver_sql(f"CREATE TABLE {table} (id VARCHAR(32))")
            connection.exec_driver_sql("CREATE TABLE llm_calls (id VARCHAR(32), api TEXT)")
        with pytest.raises(
            schema_setup.UnknownStoreError,
            match="llm_calls has no rate_limited_retries, retries: written by an obsdeco older",
        ):
            schema_setup.prepare_schema(engine)
    finally:
        engine.dispose()
    assert revision_of(sqlite_url) is None


def db(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`obsdeco db ARGS` as the command line runs it: (exit status, stdout, stderr)."""
    status = cli.main(["db", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_db_current_and_upgrade_on_the_command_line(database_url, capsys):
    load_release("ac4868d", database_url)

    before = db(capsys, "current", "--database-url", database_url)
    upgraded = db(capsys, "upgrade", "--database-url", database_url)
    again = db(capsys, "upgrade", "--database-url", database_url)
    after = db(capsys, "current", "--database-url", database_url)

    assert before == (
        0,
        f"none: written by an obsdeco without migrations; obsdeco db upgrade brings it to {HEAD}\n",
        "",
    )
    assert upgraded == (0, f"upgraded from an obsdeco without migrations to {HEAD}\n", "")
    assert again == (0, f"already at {HEAD} (head)\n", "")
    assert after == (0, f"{HEAD} (head)\n", "")
    assert scalar(database_url, "SELECT sum(calls) FROM call_rollups") == 6


def test_db_downgrade_on_the_command_line(upgraded, capsys):
    down = db(capsys, "downgrade", "0002", "--database-url", upgraded)
    unknown = db(capsys, "downgrade", "0042", "--database-url", upgraded)
    current = db(capsys, "current", "--database-url", upgraded)

    assert down == (0, f"downgraded from {HEAD} to 0002\n", "")
    assert unknown[:2] == (2, "")
    assert unknown[2].startswith("obsdeco db downgrade: ")
    assert "'0042'" in unknown[2]
    assert current == (0, "0002\n", "")


def test_db_upgrade_creates_a_new_store_and_db_current_reads_without_creating(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    current = db(capsys, "current", "--database-url", str(missing))
    created = db(capsys, "upgrade", "--database-url", str(tmp_path / "new.db"))

    assert current == (
        1,
        "",
        f"obsdeco db: no obsdeco database at {missing} (nothing recorded there yet?)\n",
    )
    assert not missing.exists()
    assert created == (0, f"created the store at {HEAD}\n", "")
    assert revision_of(f"sqlite:///{tmp_path}/new.db") == HEAD


OPENER = textwrap.dedent(
    """
    import sys
    import obsdeco

    url, name = sys.argv[1], sys.argv[2]
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    sys.stdin.readline()
    obsdeco.configure(database_url=url)
    collector = obsdeco.MetricsCollector("fleet")
    session = collector.start_session(name)
    for index in range(50):
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o-mini",
            latency_ms=100.0 + index,
            prompt_tokens=10,
            completion_tokens=5,
        )
    collector.end_session(session)
    assert obsdeco.flush(timeout=120)
    print(obsdeco.stats().dropped)
    """
)
OPENERS = 4


def open_at_once(url: str) -> None:
    """OPENERS processes, each let go once all are ready, open the store and write 50 calls."""
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, url, f"opener-{index}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(OPENERS)
    ]
    for opener in openers:
        assert opener.stdout.readline() == "ready\n"
    for opener in openers:
        opener.stdin.write("go\n")
        opener.stdin.flush()
    for opener in openers:
        out, err = opener.communicate(timeout=180)
        assert (opener.returncode, out, err) == (0, "0\n", "")


@pytest.mark.parametrize("release", [None, "ac4868d"])
def test_several_processes_open_one_new_or_old_store_at_once(database_url, release):
    if release is not None:
        load_release(release, database_url)

    open_at_once(database_url)

    stored = 6 if release is not None else 0
    assert revision_of(database_url) == HEAD
    assert scalar(database_url, "SELECT count(*) FROM llm_calls") == stored + OPENERS * 50
    assert scalar(database_url, "SELECT sum(calls) FROM call_rollups") == stored + OPENERS * 50
    assert scalar(database_url, "SELECT count(*) FROM sessions") == (2 if release else 0) + 4
    assert schema_differences(database_url) == []
