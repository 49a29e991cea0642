"""The explicit API of API.md section 3: MetricsCollector and Observatory."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from pydantic import ValidationError

import obsdeco
from obsdeco import MetricsCollector, ModelProvider, Observatory
from tests.conftest import count_rows


def test_collector_session_round_trip_with_exact_numbers(configured):
    collector = MetricsCollector(project_name="my-project")
    session = collector.start_session("checkout", metadata={"ticket": 42})
    collector.record_llm_call(
        session,
        provider=ModelProvider.OPENAI,
        model_name="gpt-4o",
        prompt_tokens=500,
        completion_tokens=200,
        latency_ms=1500,
        agent_name="Planner",
        operation="plan",
    )
    collector.record_llm_call(
        session,
        provider="anthropic",
        model_name="claude-sonnet-4-5",
        prompt_tokens=1_000,
        cached_tokens=800,
        completion_tokens=100,
        latency_ms=900,
        agent_name="Writer",
        operation="draft",
    )
    collector.end_session(session)

    in_process = collector.get_report(session)
    obsdeco.flush()
    from obsdeco.collector import sessions_in_memory

    sessions_in_memory.clear()
    from_storage = obsdeco.get_report(session.id)

    for report in (in_process, from_storage):
        assert report.session.status == "ok"
        assert report.session.metadata == {"ticket": 42}
        assert report.totals.calls == 2
        assert report.totals.prompt_tokens == 1_500
        assert report.totals.completion_tokens == 300
        assert report.totals.cached_tokens == 800
        assert report.totals.total_tokens == 1_800
        # gpt-4o: 500 x $2.50/M + 200 x $10/M = $0.00325
        # claude-sonnet-4-5: 200 x $3/M + 800 cached x $0.30/M + 100 x $15/M = $0.00234
        assert report.cost.by_model == pytest.approx(
            {"gpt-4o": 0.00325, "claude-sonnet-4-5": 0.00234}
        )
        assert report.cost.total_usd == pytest.approx(0.00559)
        assert report.cost.by_agent == pytest.approx({"Planner": 0.00325, "Writer": 0.00234})
        assert report.latency.p50_ms == 1200.0
        assert report.latency.p95_ms == float(np.percentile([1500, 900], 95))
        assert report.quality.success_rate == 1.0


def test_session_row_gets_its_aggregates_at_end(configured):
    collector = MetricsCollector("agg")
    session = collector.start_session("agg")
    for latency in (100, 200, 300):
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o-mini",
            prompt_tokens=1_000,
            completion_tokens=100,
            latency_ms=latency,
        )
    collector.record_llm_call(
        session,
        provider="openai",
        model_name="gpt-4o-mini",
        latency_ms=50,
        success=False,
        error_type="rate_limit",
    )
    collector.end_session(session)
    obsdeco.flush()

    from obsdeco.runtime import get_runtime

    [summary] = get_runtime().backend.query_sessions(project="agg")
    assert summary.calls == 4
    assert summary.errors == 1
    assert summary.prompt_tokens == 3_000
    assert summary.completion_tokens == 300
    # gpt-4o-mini: 3,000 x $0.15/M + 300 x $0.60/M = $0.00063
    assert summary.cost_usd == pytest.approx(0.00063)
    assert summary.total_latency_ms == 650.0
    assert summary.session.ended_at is not None


def test_get_calls_are_oldest_first_and_priced(configured):
    collector = MetricsCollector("calls")
    session = collector.start_session()
    for tokens in (10, 20, 30):
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o",
            prompt_tokens=tokens * 1_000,
            completion_tokens=0,
            latency_ms=1,
        )
    collector.record_llm_call(
        session, provider="other", model_name="my-local-llama", prompt_tokens=5, latency_ms=1
    )
    collector.end_session(session)

    calls = obsdeco.get_calls(session.id)

    assert [call.prompt_tokens for call in calls] == [10_000, 20_000, 30_000, 5]
    assert [call.cost_usd for call in calls[:3]] == pytest.approx([0.025, 0.05, 0.075])
    assert calls[3].cost_usd is None


def test_unknown_model_is_listed_as_unpriced_never_guessed(configured):
    collector = MetricsCollector("unpriced")
    session = collector.start_session()
    collector.record_llm_call(
        session,
        provider="other",
        model_name="in-house-model-v3",
        prompt_tokens=100,
        completion_tokens=10,
        latency_ms=5,
    )
    collector.end_session(session)

    report = collector.get_report(session)

    assert report.cost.unpriced_models == ["in-house-model-v3"]
    assert report.cost.total_usd == 0.0
    assert report.cost.by_model == {"in-house-model-v3": 0.0}


def test_empty_session_gives_a_valid_report(configured):
    collector = MetricsCollector("empty")
    session = collector.start_session()
    collector.end_session(session)

    report = collector.get_report(session)

    assert report.totals.calls == 0
    assert report.latency.p50_ms is None
    assert report.quality.success_rate == 1.0
    assert "calls" in str(report)
    assert report.to_markdown().startswith("# obsdeco session report")
    assert report.model_dump(mode="json")["totals"]["calls"] == 0


def test_observatory_explicit_sessions(configured):
    obs = Observatory(project_name="my-project")
    session = obs.start_session("operation")
    obs.record_call(
        provider=ModelProvider.OPENAI,
        model_name="gpt-4",
        prompt_tokens=500,
        completion_tokens=200,
        latency_ms=1500,
    )
    obs.end_session(session)

    report = obs.get_report(session)
    assert report.session.name == "operation"
    assert report.totals.calls == 1
    # gpt-4: 500 x $30/M + 200 x $60/M = $0.027
    assert report.cost.total_usd == pytest.approx(0.027)


def test_track_makes_the_session_current_and_ends_it(configured):
    obs = Observatory(project_name="tracked")
    assert obsdeco.current_session() is None

    with obs.track("operation", metadata={"user": "u1"}) as session:
        assert obsdeco.current_session() is session
        obs.record_call(provider="openai", model_name="gpt-4o", latency_ms=10, prompt_tokens=1)

    assert obsdeco.current_session() is None
    assert session.status == "ok"
    assert obs.get_report(session).totals.calls == 1


def test_track_ends_with_error_status_and_reraises_the_same_exception(configured):
    obs = Observatory(project_name="tracked")
    failure = KeyError("missing order")

    def handle() -> None:
        with obs.track("failing") as session:
            sessions.append(session)
            obs.record_call(provider="openai", model_name="gpt-4o", latency_ms=10)
            raise failure

    sessions = []
    with pytest.raises(KeyError) as raised:
        handle()
    [session] = sessions

    assert raised.value is failure
    assert raised.traceback[-1].name == "handle"
    assert session.status == "error"
    assert session.error_type == "KeyError"
    obsdeco.flush()
    record = obsdeco.get_report(session.id)
    assert record.session.status == "error"


def test_record_call_without_any_open_session_is_a_clear_error(configured):
    with pytest.raises(RuntimeError, match="no open session"):
        Observatory("x").record_call(provider="openai", model_name="gpt-4o", latency_ms=1)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"completion_tokens": -5}, "completion_tokens"),
        ({"cached_tokens": -1}, "cached_tokens"),
        ({"latency_ms": "slow"}, "latency_ms"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"provider": "cohere-ish"}, "provider"),
        ({"model_name": ""}, "model_name"),
        ({"prompt_tokens": 10, "cached_tokens": 20}, "cached_tokens"),
        ({"completion_tokens": 10, "reasoning_tokens": 11}, "reasoning_tokens"),
        ({"temperature": 0.2}, "temperature"),
    ],
)
def test_invalid_input_names_the_field_and_records_nothing(configured, bad, field):
    collector = MetricsCollector("validation")
    session = collector.start_session()
    call = {"provider": "openai", "model_name": "gpt-4o", "latency_ms": 10.0, **bad}

    with pytest.raises((ValidationError, ValueError)) as error:
        collector.record_llm_call(session, **call)

    assert field in str(error.value)
    collector.end_session(session)
    obsdeco.flush()
    assert collector.get_report(session).totals.calls == 0
    assert count_rows(configured, "llm_calls") == 0


def test_unsampled_sessions_are_reported_in_process_but_never_stored(configured):
    obsdeco.configure(project="test", database_url=configured, sample_rate=0.0)
    before = obsdeco.stats()
    collector = MetricsCollector("sampled")
    session = collector.start_session()
    collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", prompt_tokens=1_000, latency_ms=3
    )
    collector.end_session(session)

    report = collector.get_report(session)
    assert session.sampled is False
    assert report.totals.calls == 1
    assert report.totals.prompt_tokens == 1_000

    obsdeco.flush()
    stats = obsdeco.stats()
    assert stats.unsampled_sessions - before.unsampled_sessions == 1
    assert stats.unsampled_records - before.unsampled_records == 1
    assert count_rows(configured, "llm_calls") == 0
    assert count_rows(configured, "sessions") == 0


def test_sampling_is_decided_once_per_session(configured):
    obsdeco.configure(project="test", database_url=configured, sample_rate=0.5)
    before = obsdeco.stats()
    collector = MetricsCollector("half")
    sessions = [collector.start_session() for _ in range(200)]
    for session in sessions:
        for _ in range(3):
            collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)
        collector.end_session(session)
    obsdeco.flush()

    kept = sum(session.sampled for session in sessions)
    assert 0 < kept < 200
    assert count_rows(configured, "sessions") == kept
    assert count_rows(configured, "llm_calls") == 3 * kept
    assert obsdeco.stats().unsampled_records - before.unsampled_records == 3 * (200 - kept)


def test_unknown_session_report_is_a_lookup_error(configured):
    with pytest.raises(LookupError, match="no session with id 'nope'"):
        obsdeco.get_report("nope")


def test_version_is_exposed():
    assert obsdeco.__version__
    assert sys.modules["obsdeco"].__all__


def test_ended_sessions_stay_in_memory_within_a_call_budget(configured, monkeypatch):
    monkeypatch.setattr("obsdeco.collector._RECENT_CALLS", 5)
    obsdeco.configure(project="test", database_url=configured, sample_rate=0.0)
    collector = MetricsCollector("budget")
    sessions = []
    for _ in range(3):
        session = collector.start_session()
        for _ in range(3):
            collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)
        collector.end_session(session)
        sessions.append(session)

    # 9 calls over a budget of 5: the oldest sessions go (unsampled, so not in storage either)
    with pytest.raises(LookupError):
        collector.get_report(sessions[0])
    assert collector.get_report(sessions[2]).totals.calls == 3
