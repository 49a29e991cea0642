"""The store's queries the dashboard relies on: filters by model and agent, sums per hour, and
sessions searched, ordered and narrowed to a model or agent, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import obsdeco
from obsdeco.storage import CallFilter, open_backend

BASE = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(configured: str):
    collector = obsdeco.MetricsCollector("shop")
    plans = collector.start_session("Plan_100%")
    for minute, model in ((5, "gpt-4o"), (50, "gpt-4o-mini"), (70, "gpt-4o")):
        collector.record_llm_call(
            plans,
            provider="openai",
            model_name=model,
            latency_ms=100.0 * minute,
            prompt_tokens=minute,
            completion_tokens=1,
            agent_name="Planner",
            timestamp=BASE + timedelta(minutes=minute),
        )
    collector.end_session(plans)
    writes = collector.start_session("write")
    collector.record_llm_call(
        writes,
        provider="anthropic",
        model_name="claude-haiku-4-5",
        latency_ms=10.0,
        prompt_tokens=7,
        completion_tokens=1,
        agent_name="Writer",
        timestamp=BASE + timedelta(minutes=130),
    )
    collector.end_session(writes)
    obsdeco.MetricsCollector("blog").end_session(obsdeco.MetricsCollector("blog").start_session())
    obsdeco.flush()
    backend = open_backend(configured)
    yield backend
    backend.close()


def test_sums_per_hour_over_whole_and_partial_hours(store):
    where = CallFilter(project="shop", since=BASE + timedelta(minutes=30))

    rows = store.aggregate_calls(where, ("hour",))

    assert [(row.group["hour"], row.calls, row.prompt_tokens) for row in rows] == [
        (BASE, 1, 50),
        (BASE + timedelta(hours=1), 1, 70),
        (BASE + timedelta(hours=2), 1, 7),
    ]
    latency = store.quantiles(where, "latency_ms", (0.5,), ("hour",))["hour"]
    assert {hour: found.values[0] for hour, found in latency.items()} == {
        BASE: 5_000.0,
        BASE + timedelta(hours=1): 7_000.0,
        BASE + timedelta(hours=2): 10.0,
    }


def test_calls_narrowed_to_a_model_or_an_agent(store):
    gpt = store.aggregate_calls(CallFilter(project="shop", model="gpt-4o"))
    writer = store.aggregate_calls(CallFilter(agent="Writer", since=BASE + timedelta(hours=2)))

    assert (gpt[0].calls, gpt[0].prompt_tokens) == (2, 75)
    assert (writer[0].calls, writer[0].prompt_tokens) == (1, 7)
    assert store.query_calls(CallFilter(model="gpt-4o-mini"))[0].prompt_tokens == 50


def test_sessions_searched_ordered_and_narrowed(store):
    def names(**query) -> list[str | None]:
        return [row.session.name for row in store.query_sessions(project="shop", **query)]

    assert names(search="plan_100%") == ["Plan_100%"]
    assert names(search="an_1") == ["Plan_100%"]
    assert names(search="_") == ["Plan_100%"]  # "_" and "%" match themselves, not any character
    assert names(order_by="call_count", descending=False) == ["write", "Plan_100%"]
    assert names(model="claude-haiku-4-5") == ["write"]
    assert names(agent="Planner") == ["Plan_100%"]
    assert store.count_sessions(project="shop", agent="Planner") == 1
    assert store.count_sessions(search="nothing") == 0
    assert store.project_names() == ["blog", "shop"]
    with pytest.raises(ValueError, match="cannot order sessions by 'id; drop'"):
        store.query_sessions(order_by="id; drop")
