"""Retention: `retention_days` removes the calls, spans, sessions and scores older than the kept
UTC days on SQLite (in batches) and PostgreSQL (whole partitions), `rollup_retention_days`
keeps the rollups longer, and repeats count only the calls still stored."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import event

import obsdeco
from obsdeco.config import build_settings
from obsdeco.maintenance import start_retention
from obsdeco.models import AgentSpan, Score, Session, Totals
from obsdeco.runtime import get_runtime
from obsdeco.storage import CallFilter, SessionState, SQLAlchemyStorage, WriteBatch, retention
from obsdeco.storage.base import ScoreFilter
from obsdeco.storage.retention import RetentionPolicy
from tests.helpers import stored_call

NOW = datetime.now(UTC)
TODAY = NOW.date()


def _at(offset: int, hour: int = 12) -> datetime:
    return datetime.combine(TODAY + timedelta(days=offset), time(hour), UTC)


def _ended(session: Session, ended_at: datetime) -> SessionState:
    return SessionState(session.model_copy(update={"ended_at": ended_at}), Totals(calls=1))


@pytest.fixture
def store(database_url: str):
    backend = SQLAlchemyStorage(database_url)
    yield backend
    backend.close()


def test_retention_removes_exactly_what_is_older_than_the_kept_days(store):
    old = Session(project_name="shop", started_at=_at(-9))
    open_old = Session(project_name="shop", started_at=_at(-8))
    straddling = Session(project_name="shop", started_at=_at(-6))
    recent = Session(project_name="shop", started_at=_at(-1))
    calls = [
        stored_call(old, _at(-9)),
        stored_call(old, _at(-4, 23)),
        stored_call(straddling, _at(-3, 0)),
        stored_call(recent, _at(-1)),
        stored_call(recent, _at(0)),
    ]
    store.write(
        WriteBatch(
            sessions=[
                _ended(old, _at(-4, 23)),
                SessionState(open_old, None),
                _ended(straddling, _at(-2)),
                _ended(recent, _at(0)),
            ],
            calls=calls,
            spans=[
                AgentSpan(
                    session_id=session.id, agent_name="Planner", started_at=moment, ended_at=moment
                )
                for session, moment in ((old, _at(-9)), (straddling, _at(-3, 0)))
            ],
            scores=[
                Score(
                    target_id=session.id,
                    session_id=session.id,
                    project_name="shop",
                    name="helpful",
                    value=1.0,
                    created_at=moment,
                )
                for session, moment in ((old, _at(-5)), (recent, _at(-1)))
            ],
        )
    )

    result = store.apply_retention(RetentionPolicy(days=3, rollup_days=3), NOW)

    assert [call.id for call in store.query_calls(CallFilter())] == [c.id for c in calls[2:]]
    assert [summary.session.id for summary in store.query_sessions(descending=False)] == [
        straddling.id,
        recent.id,
    ]
    assert store.get_session(old.id) is None
    assert [span.started_at for span in store.get_session(straddling.id).spans] == [_at(-3, 0)]
    assert [score.session_id for score in store.query_scores(ScoreFilter())] == [recent.id]
    assert result.deleted["sessions"] == 2
    assert result.deleted["scores"] == 1
    everything = store.aggregate_calls(CallFilter(project="shop"))
    assert [(row.calls, row.prompt_tokens) for row in everything] == [(3, 300)]


def test_repeats_count_only_the_identical_calls_still_stored(store):
    session = Session(project_name="shop", started_at=_at(-10))
    same = {"request_hash": "ab" * 32}
    store.write(
        WriteBatch(
            calls=[stored_call(session, _at(-10), **same), stored_call(session, _at(-9), **same)]
        )
    )
    store.write(WriteBatch(calls=[stored_call(session, _at(-1), **same)]))
    assert store.most_repeated_requests("shop", 10) == [("ab" * 32, 3)]

    store.apply_retention(RetentionPolicy(days=2, rollup_days=2), NOW)

    assert store.most_repeated_requests("shop", 10) == []  # one identical call is left
    store.write(WriteBatch(calls=[stored_call(session, _at(0), **same)]))
    assert store.most_repeated_requests("shop", 10) == [("ab" * 32, 2)]
    repeated = store.query_calls(CallFilter(repeated=True))
    assert [call.timestamp for call in repeated] == [_at(-1), _at(0)]


def test_a_request_no_longer_stored_at_all_is_not_a_repeat_when_made_again(store):
    session = Session(project_name="shop", started_at=_at(-10))
    same = {"request_hash": "cd" * 32}
    store.write(WriteBatch(calls=[stored_call(session, _at(-10), **same)]))

    store.apply_retention(RetentionPolicy(days=2, rollup_days=2), NOW)
    store.write(WriteBatch(calls=[stored_call(session, _at(0), **same)]))

    assert store.query_calls(CallFilter(repeated=True)) == []
    assert store.most_repeated_requests("shop", 10) == []


def test_sqlite_deletes_old_calls_a_bounded_batch_per_statement(sqlite_url, monkeypatch):
    monkeypatch.setattr(retention, "BATCH_ROWS", 4)
    store = SQLAlchemyStorage(sqlite_url)
    session = Session(project_name="shop", started_at=_at(-20))
    old = [
        stored_call(session, _at(-20) + timedelta(minutes=n), request_hash="ef" * 32)
        for n in range(10)
    ]
    store.write(WriteBatch(calls=[*old, stored_call(session, _at(0), request_hash="ef" * 32)]))
    deletes: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _count(connection, cursor, statement, parameters, context, executemany):
        if statement.startswith("DELETE FROM llm_calls"):
            deletes.append(statement)

    result = store.apply_retention(RetentionPolicy(days=5, rollup_days=5), NOW)
    event.remove(store.engine, "before_cursor_execute", _count)

    assert len(deletes) == 3  # 4, 4 and the last 2
    assert result.deleted["llm_calls"] == 10
    assert [call.timestamp for call in store.query_calls(CallFilter())] == [_at(0)]
    assert store.most_repeated_requests("shop", 10) == []
    store.write(WriteBatch(calls=[stored_call(session, _at(0, 13), request_hash="ef" * 32)]))
    assert store.most_repeated_requests("shop", 10) == [("ef" * 32, 2)]
    store.close()


def test_rollups_outlive_the_calls_by_rollup_retention_days(store):
    session = Session(project_name="shop", started_at=_at(-30))
    store.write(WriteBatch(calls=[stored_call(session, _at(-offset)) for offset in (30, 12, 0)]))

    store.apply_retention(RetentionPolicy(days=7, rollup_days=20), NOW)

    assert [call.timestamp for call in store.query_calls(CallFilter())] == [_at(0)]
    month = store.aggregate_calls(CallFilter(project="shop", since=_at(-40, 0)))
    assert [row.calls for row in month] == [2]


def test_rebuilding_rollups_keeps_those_of_hours_whose_calls_retention_removed(store):
    session = Session(project_name="shop", started_at=_at(-12))
    store.write(WriteBatch(calls=[stored_call(session, _at(-offset)) for offset in (12, 0)]))
    store.apply_retention(RetentionPolicy(days=7, rollup_days=20), NOW)

    store.rebuild_rollups()

    month = store.aggregate_calls(CallFilter(project="shop", since=_at(-40, 0)))
    assert [(row.calls, row.prompt_tokens) for row in month] == [(2, 200)]


def test_configure_applies_retention_in_the_background_at_first_use(sqlite_url):
    obsdeco.configure(project="shop", database_url=sqlite_url)
    collector = obsdeco.MetricsCollector()
    session = collector.start_session("import")
    for offset in (-40, -1, 0):
        collector.record_llm_call(
            session, provider="openai", model_name="gpt-4o", latency_ms=1.0, timestamp=_at(offset)
        )
    collector.end_session(session)
    assert obsdeco.flush(timeout=30)

    obsdeco.configure(project="shop", database_url=sqlite_url, retention_days=30)
    runner = get_runtime().retention
    assert runner is not None
    assert runner.first_pass.wait(30)

    assert obsdeco.report("shop").totals.calls == 2
    stored = SQLAlchemyStorage(sqlite_url)
    assert [call.timestamp for call in stored.query_calls(CallFilter())] == [_at(-1), _at(0)]
    stored.close()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": 40_000}, "retention_days"),
        ({"rollup_retention_days": 30}, "rollup_retention_days needs retention_days"),
        (
            {"retention_days": 30, "rollup_retention_days": 7},
            "rollup_retention_days (7) must be at least retention_days (30)",
        ),
    ],
)
def test_bad_retention_settings_are_refused_naming_the_option(options, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        obsdeco.configure(**options)


def test_retention_comes_from_the_environment_and_rollups_follow_the_calls_by_default():
    settings = build_settings(environ={"OBSDECO_RETENTION_DAYS": "14"})
    assert (settings.retention_days, settings.rollup_retention_days) == (14, None)
    assert build_settings(environ={}).retention_days is None
    longer = build_settings(environ={"OBSDECO_ROLLUP_RETENTION_DAYS": "365"}, retention_days=30)
    assert longer.rollup_retention_days == 365


def test_a_day_is_a_utc_day_and_today_is_always_kept():
    policy = RetentionPolicy(days=1, rollup_days=3)
    late = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    assert policy.cutoff(late) == datetime(2026, 11, 30, tzinfo=UTC)
    assert policy.rollup_cutoff(late) == datetime(2026, 11, 28, tzinfo=UTC)
    east = late.astimezone(timezone(timedelta(hours=5)))  # already 2 December there
    assert policy.cutoff(east) == datetime(2026, 11, 30, tzinfo=UTC)


def test_a_store_that_cannot_remove_anything_keeps_everything_and_says_so(caplog):
    class KeepsEverything:
        def write(self, batch: WriteBatch) -> None: ...

    settings = build_settings(environ={}, retention_days=30)
    with caplog.at_level("WARNING", logger="obsdeco.maintenance"):
        assert start_retention(KeepsEverything(), settings) is None
    assert "cannot apply retention_days=30: the store KeepsEverything removes nothing" in (
        caplog.text
    )
    assert start_retention(KeepsEverything(), build_settings(environ={})) is None
