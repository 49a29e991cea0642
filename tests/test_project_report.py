"""Project reports aggregated by the store agree with session reports of the same calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import obsdeco


def _record(collector: obsdeco.MetricsCollector, session: obsdeco.Session, **fields) -> None:
    values = {"provider": "openai", "model_name": "gpt-4o", "latency_ms": 100.0}
    values.update(fields)
    collector.record_llm_call(session, **values)


@pytest.fixture
def recorded(configured: str) -> obsdeco.SessionReport:
    """One session with every pattern a report looks at, in project 'shop'."""
    collector = obsdeco.MetricsCollector("shop")
    session = collector.start_session("mixed")
    for index in range(5):
        _record(
            collector,
            session,
            prompt_tokens=3_000,
            cached_tokens=0,
            completion_tokens=50,
            latency_ms=900.0 + index,
            agent_name="Writer",
            operation="draft",
            request_hash="same-request",
            streamed=True,
            time_to_first_token_ms=100.0 + 10 * index,
        )
    for index in range(4):
        _record(
            collector,
            session,
            provider="anthropic",
            model_name="claude-sonnet-4-5",
            prompt_tokens=200,
            completion_tokens=50,
            latency_ms=300.0 + 7 * index,
            agent_name="Planner",
            success=index > 1,
            error_type=None if index > 1 else "rate_limit",
        )
    _record(
        collector,
        session,
        provider="other",
        model_name="in-house",
        prompt_tokens=10,
        completion_tokens=1,
    )
    _record(collector, session, model_name="gpt-4o-mini", latency_ms=40.0)  # tokens unknown
    collector.end_session(session)
    other = obsdeco.MetricsCollector("blog")
    blog = other.start_session()
    _record(other, blog, prompt_tokens=1_000_000, completion_tokens=1)
    other.end_session(blog)
    return collector.get_report(session)


def test_project_report_equals_the_session_report_of_the_same_calls(recorded):
    project = obsdeco.report("shop")
    session = recorded

    assert project.sessions == 1
    assert project.totals.model_dump(exclude={"duration_ms"}) == pytest.approx(
        session.totals.model_dump(exclude={"duration_ms"})
    )
    assert project.cost.by_model == pytest.approx(session.cost.by_model)
    assert project.cost.by_agent == pytest.approx(session.cost.by_agent)
    assert project.cost.by_operation == pytest.approx(session.cost.by_operation)
    assert project.cost.unpriced_models == session.cost.unpriced_models == ["in-house"]
    assert project.cost.unpriced_calls == session.cost.unpriced_calls == 2
    assert project.tokens.by_model == session.tokens.by_model
    assert project.quality == session.quality
    for name in ("p50_ms", "p95_ms", "p99_ms", "avg_ms", "total_ms"):
        assert getattr(project.latency, name) == pytest.approx(getattr(session.latency, name))
    assert project.latency.time_to_first_token == session.latency.time_to_first_token
    assert project.latency.bottlenecks == session.latency.bottlenecks
    assert (
        [s.kind for s in project.suggestions]
        == [s.kind for s in session.suggestions]
        == [
            "cheaper_model",
            "response_cache",
            "prompt_caching",
            "latency_bottleneck",
            "latency_bottleneck",
            "rate_limits",
        ]
    )
    savings = [s.estimated_savings_usd for s in project.suggestions[:3]]
    assert savings == pytest.approx([s.estimated_savings_usd for s in session.suggestions[:3]])


def test_time_range_and_all_projects(recorded):
    later = datetime.now(UTC) + timedelta(hours=1)

    everything = obsdeco.report()
    nothing = obsdeco.report("shop", since=later)

    assert everything.totals.calls == recorded.totals.calls + 1
    # blog: 1,000,000 x $2.50/M + 1 x $10/M
    assert everything.cost.total_usd == pytest.approx(recorded.cost.total_usd + 2.50001)
    assert nothing.totals.calls == 0
    assert nothing.latency.p50_ms is None
    assert nothing.suggestions == []
    assert "obsdeco project report: shop" in str(nothing)


def test_naive_times_are_refused(configured):
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        obsdeco.report("shop", since=datetime(2026, 1, 1))
