"""The storage interface round trip, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy

import obsdeco
from obsdeco.models import AgentSpan, LLMCall, ModelProvider, Session, Totals
from obsdeco.storage import CallFilter, SessionState, SQLAlchemyStorage, WriteBatch
from obsdeco.storage.migrations.state import VERSION_TABLE

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _session(project: str = "shop", minutes: int = 0, **fields) -> Session:
    fields.setdefault("started_at", T0 + timedelta(minutes=minutes))
    return Session(project_name=project, **fields)


def _call(session: Session, seconds: float, **fields) -> LLMCall:
    values = {
        "session_id": session.id,
        "project_name": session.project_name,
        "timestamp": session.started_at + timedelta(seconds=seconds),
        "provider": ModelProvider.OPENAI,
        "model": "gpt-4o",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "latency_ms": 250.0,
    }
    values.update(fields)
    return LLMCall(**values)


@pytest.fixture
def storage(database_url: str):
    backend = SQLAlchemyStorage(database_url)
    yield backend
    backend.close()


def test_round_trip_keeps_every_field(storage):
    session = _session(name="checkout", metadata={"customer": "c-1", "tags": ["a", "b"]})
    calls = [
        _call(
            session,
            1,
            response_model="gpt-4o-2024-08-06",
            agent_name="Planner",
            operation="plan",
            cached_tokens=40,
            cache_creation_tokens=10,
            reasoning_tokens=5,
            time_to_first_token_ms=80.5,
            streamed=True,
            finish_reason="stop",
            tool_call_count=2,
            request_hash="ab" * 32,
            metadata={"attempt": 1},
        ),
        _call(
            session,
            2,
            provider=ModelProvider.ANTHROPIC,
            model="claude-sonnet-4-5",
            prompt_tokens=None,
            completion_tokens=None,
            success=False,
            error_type="rate_limit",
            error_message="429 Too Many Requests",
        ),
    ]
    span = AgentSpan(
        session_id=session.id,
        agent_name="Planner",
        operation="plan",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=3),
    )
    storage.write(WriteBatch(sessions=[SessionState(session)], calls=calls, spans=[span]))

    record = storage.get_session(session.id)

    assert record.session == session
    assert record.calls == calls
    assert record.spans == [span]
    assert record.calls[0].timestamp.tzinfo is not None
    assert record.calls[1].prompt_tokens is None


def test_a_large_batch_of_calls_with_different_missing_fields_round_trips(storage):
    """Rows are inserted in groups by which columns they leave NULL, in statements of a few
    sizes: every call comes back whole, whatever its group and its place in the batch."""
    session = _session()
    variants = [
        {},
        {"prompt_tokens": None, "completion_tokens": None, "success": False, "error_type": "x"},
        {"cache_hit": True, "time_to_first_token_ms": 12.5, "streamed": True},
        {"cache_hit": False, "experiments": {"prompt": "b"}, "metadata": {"n": 1}},
        {"response_model": "gpt-4o-2024-08-06", "tool_call_count": 0, "retries": 2},
    ]
    calls = [
        _call(session, index / 1000, **variants[index % len(variants)]) for index in range(1_703)
    ]
    storage.write(WriteBatch(sessions=[SessionState(session)], calls=calls))

    record = storage.get_session(session.id)

    assert len(record.calls) == 1_703
    assert record.calls == calls


def test_session_end_stores_aggregates_and_status(storage):
    session = _session()
    storage.write(WriteBatch(sessions=[SessionState(session.model_copy())]))
    session.ended_at = T0 + timedelta(seconds=5)
    session.status = "error"
    session.error_type = "ValueError"
    totals = Totals(
        calls=3,
        errors=1,
        prompt_tokens=300,
        completion_tokens=60,
        cached_tokens=10,
        reasoning_tokens=0,
        total_tokens=360,
        cost_usd=0.0125,
        latency_ms=750.0,
        duration_ms=5000.0,
    )
    storage.write(WriteBatch(sessions=[SessionState(session.model_copy(), totals)]))

    [summary] = storage.query_sessions(project="shop")

    assert summary.session == session
    assert (summary.calls, summary.errors, summary.total_tokens) == (3, 1, 360)
    assert summary.cost_usd == pytest.approx(0.0125)
    assert summary.total_latency_ms == 750.0


def test_non_utc_times_are_stored_as_the_same_instant(storage):
    paris = timezone(timedelta(hours=1))
    session = _session(started_at=datetime(2026, 3, 1, 13, 0, tzinfo=paris))
    storage.write(WriteBatch(sessions=[SessionState(session)], calls=[_call(session, 0)]))

    record = storage.get_session(session.id)

    assert record.session.started_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert record.calls[0].timestamp == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_sessions_filtered_by_project_and_time_newest_first_paginated(storage):
    shop = [_session("shop", minutes=m) for m in range(5)]
    other = _session("other", minutes=2)
    storage.write(WriteBatch(sessions=[SessionState(s) for s in [*shop, other]]))

    newest_first = [s.session.id for s in storage.query_sessions(project="shop")]
    assert newest_first == [s.id for s in reversed(shop)]

    page = storage.query_sessions(project="shop", limit=2, offset=2)
    assert [s.session.id for s in page] == [shop[2].id, shop[1].id]

    window = storage.query_sessions(
        since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)
    )
    assert {s.session.id for s in window} == {shop[1].id, shop[2].id, other.id}


def test_calls_filtered_by_project_session_and_time_oldest_first(storage):
    shop, other = _session("shop"), _session("other")
    shop_calls = [_call(shop, seconds) for seconds in (3, 1, 2)]
    other_call = _call(other, 1)
    storage.write(WriteBatch(calls=[*shop_calls, other_call]))

    assert storage.query_calls(CallFilter(project="shop")) == sorted(
        shop_calls, key=lambda call: call.timestamp
    )
    assert storage.query_calls(CallFilter(session_id=other.id)) == [other_call]
    in_window = storage.query_calls(
        CallFilter(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=3))
    )
    assert in_window == [shop_calls[2]]
    assert storage.query_calls(CallFilter(project="shop"), limit=1, offset=1) == [shop_calls[2]]


def test_aggregates_are_computed_by_the_store(storage):
    session = _session()
    storage.write(
        WriteBatch(
            calls=[
                _call(session, 1, prompt_tokens=100, completion_tokens=10, latency_ms=100.0),
                _call(session, 2, prompt_tokens=200, completion_tokens=20, latency_ms=300.0),
                _call(
                    session,
                    3,
                    model="claude-haiku-4-5",
                    provider=ModelProvider.ANTHROPIC,
                    prompt_tokens=None,
                    completion_tokens=None,
                    success=False,
                    latency_ms=50.0,
                ),
                _call(session, 4, response_model="gpt-4o-2024-08-06", cached_tokens=60),
            ]
        )
    )

    [total] = storage.aggregate_calls(CallFilter(project="shop"))
    assert (total.calls, total.errors) == (4, 1)
    assert (total.prompt_tokens, total.completion_tokens, total.cached_tokens) == (400, 50, 60)
    assert total.total_latency_ms == 700.0

    by_model = {
        row.group["model"]: row.calls
        for row in storage.aggregate_calls(CallFilter(), group_by=["model"])
    }
    assert by_model == {"claude-haiku-4-5": 1, "gpt-4o": 2, "gpt-4o-2024-08-06": 1}


def test_unknown_session_is_none(storage):
    assert storage.get_session("does-not-exist") is None


def test_a_postgresql_store_with_32_bit_token_columns_is_widened_when_opened(postgres_url):
    engine = sqlalchemy.create_engine(postgres_url)
    SQLAlchemyStorage(postgres_url).write(WriteBatch())  # today's schema, then made old:
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE {VERSION_TABLE}"))
        for table in ("llm_calls", "sessions"):
            for column in ("prompt_tokens", "completion_tokens", "cached_tokens"):
                connection.execute(
                    sqlalchemy.text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE INTEGER")
                )

    obsdeco.configure(database_url=postgres_url)
    dropped_before = obsdeco.stats().dropped
    collector = obsdeco.MetricsCollector("big")
    session = collector.start_session("long-context")
    collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", latency_ms=1.0, prompt_tokens=3 * 2**30
    )
    collector.end_session(session)
    assert obsdeco.flush(timeout=30)

    assert obsdeco.stats().dropped == dropped_before
    with engine.connect() as connection:
        kinds = connection.execute(
            sqlalchemy.text(
                "SELECT table_name, data_type FROM information_schema.columns "
                "WHERE column_name = 'prompt_tokens' AND table_schema = current_schema()"
            )
        ).all()
        stored = connection.execute(sqlalchemy.text("SELECT prompt_tokens FROM sessions")).all()
    engine.dispose()
    assert dict(kinds)["llm_calls"] == dict(kinds)["sessions"] == "bigint"
    assert stored == [(3 * 2**30,)]
    assert obsdeco.get_report(session.id).totals.prompt_tokens == 3 * 2**30
