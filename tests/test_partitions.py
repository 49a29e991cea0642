"""PostgreSQL day partitions: created ahead and on demand, pruned to a query's range, dropped by
retention, and an unpartitioned store converted with every row kept (on a real PostgreSQL)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, date, datetime, time, timedelta

import pytest
import sqlalchemy
from sqlalchemy import event

import obsdeco
from obsdeco.models import AgentSpan, Session
from obsdeco.storage import (
    CallFilter,
    SessionState,
    SQLAlchemyStorage,
    WriteBatch,
    retention,
    schema_setup,
)
from obsdeco.storage.bulk_writes import write_batch
from obsdeco.storage.partitions import (
    DAYS_AHEAD,
    create_days,
    existing_days,
    is_partitioned,
    partition_existing,
    partition_name,
    unpartition_existing,
)
from obsdeco.storage.retention import RetentionPolicy, RetentionResult
from tests.helpers import stored_call

TODAY = datetime.now(UTC).date()


def _at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), UTC)


def _day(offset: int) -> date:
    return TODAY + timedelta(days=offset)


def _span(session: Session, moment: datetime) -> AgentSpan:
    return AgentSpan(
        session_id=session.id,
        agent_name="Planner",
        started_at=moment,
        ended_at=moment + timedelta(seconds=2),
    )


@pytest.fixture
def store(postgres_url: str):
    backend = SQLAlchemyStorage(postgres_url)
    backend.write(WriteBatch())  # the schema, and the partitions ahead
    yield backend
    backend.close()


def _days(store: SQLAlchemyStorage, table: str) -> set[date]:
    with store.engine.connect() as connection:
        return existing_days(connection, table)


def _tables_in_schema(store: SQLAlchemyStorage, prefix: str) -> set[str]:
    with store.engine.connect() as connection:
        return set(
            connection.execute(
                sqlalchemy.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename LIKE :prefix"
                ),
                {"prefix": f"{prefix}%"},
            ).scalars()
        )


def test_a_new_store_has_a_partition_for_today_and_each_day_ahead_in_its_own_schema(store):
    ahead = {_day(offset) for offset in range(DAYS_AHEAD + 1)}

    assert _days(store, "llm_calls") == _days(store, "agent_spans") == ahead
    assert _tables_in_schema(store, "llm_calls_p") == {f"llm_calls_p{day:%Y%m%d}" for day in ahead}
    with store.engine.connect() as connection:
        assert is_partitioned(connection, "llm_calls")
        assert is_partitioned(connection, "agent_spans")
        assert not is_partitioned(connection, "sessions")


def test_a_one_day_range_reads_the_one_partition_of_that_day(store):
    session = Session(project_name="shop", started_at=_at(_day(-2)))
    store.write(
        WriteBatch(calls=[stored_call(session, _at(_day(offset))) for offset in (-2, -1, 0, 1)])
    )
    executed: list[tuple[str, object]] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _capture(connection, cursor, statement, parameters, context, executemany):
        if "FROM llm_calls" in statement:
            executed.append((statement, parameters))

    since = _at(_day(-1), 0)
    found = store.query_calls(CallFilter(project="shop", since=since, until=since + timedelta(1)))
    event.remove(store.engine, "before_cursor_execute", _capture)

    assert [call.timestamp for call in found] == [_at(_day(-1))]
    (statement, parameters), *_ = executed
    with store.engine.connect() as connection:
        plan = "\n".join(
            row[0] for row in connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        )
    assert set(re.findall(r"\bon (llm_calls_p\d{8})\b", plan)) == {f"llm_calls_p{_day(-1):%Y%m%d}"}


def test_calls_and_spans_long_past_or_far_ahead_are_stored_in_partitions_made_for_them(
    postgres_url,
):
    obsdeco.configure(project="backfill", database_url=postgres_url)
    dropped_before = obsdeco.stats().dropped
    collector = obsdeco.MetricsCollector()
    session = collector.start_session("import")
    moments = [_at(_day(-400), 3), _at(_day(-1), 23), _at(_day(90), 6)]
    for moment in moments:
        collector.record_llm_call(
            session, provider="openai", model_name="gpt-4o", latency_ms=5.0, timestamp=moment
        )
        collector.record_agent_span(
            session, agent_name="Importer", started_at=moment, ended_at=moment + timedelta(1)
        )
    collector.end_session(session)
    assert obsdeco.flush(timeout=30)

    assert obsdeco.stats().dropped == dropped_before
    assert [call.timestamp for call in obsdeco.get_calls(session.id)] == moments
    backend = SQLAlchemyStorage(postgres_url)
    try:
        for table in ("llm_calls", "agent_spans"):
            assert {_day(-400), _day(-1), _day(90)} <= _days(backend, table)
        assert len(backend.get_session(session.id).spans) == 3
    finally:
        backend.close()


def test_a_partition_dropped_by_another_process_is_made_again_for_a_late_call(store, postgres_url):
    session = Session(project_name="shop", started_at=_at(_day(-30)))
    store.write(WriteBatch(calls=[stored_call(session, _at(_day(-30), 1))]))
    other = SQLAlchemyStorage(postgres_url)
    try:
        other.apply_retention(RetentionPolicy(days=10, rollup_days=10), datetime.now(UTC))
    finally:
        other.close()
    assert _day(-30) not in _days(store, "llm_calls")

    store.write(WriteBatch(calls=[stored_call(session, _at(_day(-30), 2))]))  # it knew the day

    assert [call.timestamp for call in store.query_calls(CallFilter())] == [_at(_day(-30), 2)]


def test_stores_creating_the_same_new_days_at_once_each_store_all_their_calls(postgres_url):
    stores = [SQLAlchemyStorage(postgres_url) for _ in range(4)]
    session = Session(project_name="shop", started_at=_at(_day(-60)))
    failures: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def write(store: SQLAlchemyStorage) -> None:
        start.wait()
        try:
            store.write(
                WriteBatch(
                    calls=[stored_call(session, _at(_day(-60 - offset))) for offset in range(5)]
                )
            )
        except Exception as error:  # reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert failures == []
        assert len(stores[0].query_calls(CallFilter())) == 20
        assert {_day(-60 - offset) for offset in range(5)} <= _days(stores[0], "llm_calls")
    finally:
        for store in stores:
            store.close()


def test_retention_drops_exactly_the_partitions_before_the_kept_days_and_reports_stay_exact(
    store, postgres_url
):
    session = Session(project_name="shop", started_at=_at(_day(-10)))
    calls = [
        stored_call(session, _at(_day(-offset), hour), prompt_tokens=offset * 100 + hour)
        for offset in range(11)
        for hour in (1, 13)
    ]
    store.write(
        WriteBatch(calls=calls, spans=[_span(session, _at(_day(-offset))) for offset in range(11)])
    )
    assert {_day(-offset) for offset in range(11)} <= _days(store, "llm_calls")

    result = store.apply_retention(RetentionPolicy(days=3, rollup_days=3), datetime.now(UTC))

    gone = [_day(-offset) for offset in range(10, 3, -1)]
    assert sorted(result.dropped_partitions) == sorted(
        f"{table}_p{day:%Y%m%d}" for table in ("llm_calls", "agent_spans") for day in gone
    )
    kept = {_day(offset) for offset in range(-3, DAYS_AHEAD + 1)}
    assert _days(store, "llm_calls") == _days(store, "agent_spans") == kept
    obsdeco.configure(database_url=postgres_url)
    since = _at(_day(-3), 0)
    report = obsdeco.report("shop", since=since, until=_at(_day(1), 0))
    assert report.totals.calls == 8
    assert report.totals.prompt_tokens == sum(offset * 200 + 14 for offset in range(4))
    everything = obsdeco.report("shop")
    assert (everything.totals.calls, everything.totals.prompt_tokens) == (
        report.totals.calls,
        report.totals.prompt_tokens,
    )


def test_rollups_kept_longer_than_the_calls_still_answer_reports_of_the_dropped_days(
    store, postgres_url
):
    session = Session(project_name="shop", started_at=_at(_day(-20)))
    store.write(
        WriteBatch(calls=[stored_call(session, _at(_day(-offset))) for offset in (20, 10, 0)])
    )

    store.apply_retention(RetentionPolicy(days=5, rollup_days=15), datetime.now(UTC))

    assert [call.timestamp for call in store.query_calls(CallFilter())] == [_at(_day(0))]
    obsdeco.configure(database_url=postgres_url)
    assert obsdeco.report("shop", since=_at(_day(-30), 0)).totals.calls == 2  # day -10 and today
    assert obsdeco.report("shop", since=_at(_day(-12), 0), until=_at(_day(-9), 0)).totals.calls == 1


def _old_store(url: str, batch: WriteBatch) -> None:
    """A store laid out as before partitioning, holding `batch`: today's schema, then taken down
    to the revision before partitions."""
    backend = SQLAlchemyStorage(url)
    backend.write(batch)
    schema_setup.downgrade_schema(backend.engine, "0004")
    with backend.engine.begin() as connection:
        assert not is_partitioned(connection, "llm_calls")
    backend.close()


def test_an_unpartitioned_store_is_partitioned_when_opened_with_every_row_kept(postgres_url):
    session = Session(project_name="shop", started_at=_at(_day(-50)))
    calls = [stored_call(session, _at(_day(-offset), 5)) for offset in (50, 49, 3, 0)]
    spans = [_span(session, _at(_day(-50))), _span(session, _at(_day(0)))]
    _old_store(
        postgres_url,
        WriteBatch(sessions=[SessionState(session, None)], calls=calls, spans=spans),
    )

    store = SQLAlchemyStorage(postgres_url)
    try:
        stored = store.query_calls(CallFilter())
        assert [call.id for call in stored] == [call.id for call in calls]
        assert [call.timestamp for call in stored] == [call.timestamp for call in calls]
        assert len(store.get_session(session.id).spans) == 2
        with store.engine.connect() as connection:
            assert is_partitioned(connection, "llm_calls")
            assert is_partitioned(connection, "agent_spans")
            assert (
                connection.execute(
                    sqlalchemy.text("SELECT to_regclass('llm_calls_unpartitioned')")
                ).scalar()
                is None
            )
        assert {_day(-50), _day(-49), _day(-3), _day(0)} <= _days(store, "llm_calls")
        assert {_day(-50), _day(0)} <= _days(store, "agent_spans")
    finally:
        store.close()


def test_partitioning_and_unpartitioning_are_each_the_others_inverse_and_idempotent(store):
    session = Session(project_name="shop", started_at=_at(_day(-5)))
    calls = [stored_call(session, _at(_day(-offset))) for offset in (5, 1)]
    store.write(WriteBatch(calls=calls, spans=[_span(session, _at(_day(-5)))]))

    with store.engine.begin() as connection:
        unpartition_existing(connection)
        unpartition_existing(connection)
    with store.engine.connect() as connection:
        assert not is_partitioned(connection, "llm_calls")
        key = connection.execute(
            sqlalchemy.text(
                "SELECT array_agg(attname::text) FROM pg_index JOIN pg_attribute "
                "ON attrelid = indrelid AND attnum = ANY(indkey) "
                "WHERE indrelid = 'llm_calls'::regclass AND indisprimary"
            )
        ).scalar()
        assert key == ["id"]
        assert _tables_in_schema(store, "llm_calls_p") == set()
    with store.engine.begin() as connection:
        partition_existing(connection)
        partition_existing(connection)

    assert [call.id for call in store.query_calls(CallFilter())] == [call.id for call in calls]
    assert {_day(-5), _day(-1)} <= _days(store, "llm_calls")


def test_a_bulk_import_by_sql_goes_into_the_partitions_create_days_makes(store, postgres_url):
    with store.engine.begin() as connection:
        create_days(connection, _day(-40), _day(-38))
        for offset in (-40, -39, -38):
            connection.execute(
                sqlalchemy.text(
                    "INSERT INTO llm_calls (id, session_id, project_name, timestamp, provider, "
                    "model, latency_ms, streamed, success, retries, rate_limited_retries, "
                    "metadata, prompt_tokens, completion_tokens) VALUES (:id, 's', 'bulk', :at, "
                    "'openai', 'gpt-4o', 5.0, false, true, 0, 0, '{}', 7, 1)"
                ),
                {"id": f"{-offset:032x}", "at": _at(_day(offset))},
            )
    store.rebuild_rollups()

    obsdeco.configure(database_url=postgres_url)
    imported = obsdeco.report("bulk", since=_at(_day(-41), 0))
    assert (imported.totals.calls, imported.totals.prompt_tokens) == (3, 21)
    assert {_day(-40), _day(-39), _day(-38)} <= _days(store, "agent_spans")


@pytest.mark.parametrize(
    ("moment", "partition"),
    [
        (datetime(999, 1, 1, 4, tzinfo=UTC), "llm_calls_p09990101"),
        (datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "llm_calls_p99991231"),
    ],
)
def test_calls_at_the_ends_of_the_calendar_are_stored_and_their_partition_found_again(
    store, postgres_url, moment, partition
):
    session = Session(project_name="shop", started_at=moment)
    store.write(WriteBatch(calls=[stored_call(session, moment)]))
    reopened = SQLAlchemyStorage(postgres_url)  # knows no partition until it reads them
    try:
        reopened.write(WriteBatch(calls=[stored_call(session, moment + timedelta(seconds=1))]))
        assert len(reopened.query_calls(CallFilter(session_id=session.id))) == 2
        assert partition in _tables_in_schema(reopened, "llm_calls_p")
        assert moment.date() in _days(reopened, "llm_calls")
    finally:
        reopened.close()


def test_retention_waits_for_a_writer_adding_to_a_partition_it_drops(store):
    """A call written into an old day while retention drops that day is not left counted in
    the repeat counts (else the next identical call would be marked a repeat)."""
    session = Session(project_name="shop", started_at=_at(_day(-30)))
    store.write(WriteBatch(calls=[stored_call(session, _at(_day(-30)), request_hash="aa" * 32)]))
    late = WriteBatch(calls=[stored_call(session, _at(_day(-30), 13), request_hash="aa" * 32)])
    writer = store.engine.connect()
    transaction = writer.begin()
    write_batch(writer, late)  # not committed yet
    passes: list[RetentionResult] = []
    dropping = threading.Thread(
        target=lambda: passes.append(
            retention.apply(store.engine, RetentionPolicy(days=7, rollup_days=7), _at(_day(0)))
        )
    )
    dropping.start()
    with store.engine.connect() as watcher:
        waiting = sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'LOCK TABLE%'"
        )
        while dropping.is_alive() and not watcher.execute(waiting).scalar():
            watcher.rollback()
    transaction.commit()
    writer.close()
    dropping.join()

    assert passes[0].dropped_partitions == [partition_name("llm_calls", _day(-30))]
    with store.engine.connect() as connection:
        counted = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM request_hashes")
        ).scalar()
    assert counted == 0
    fresh = stored_call(Session(project_name="shop"), _at(_day(0)), request_hash="aa" * 32)
    store.write(WriteBatch(calls=[fresh]))
    assert store.query_calls(CallFilter(repeated=True)) == []
