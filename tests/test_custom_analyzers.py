"""register_analyzer: a user's analyzer adds a section to every session report."""

from __future__ import annotations

import logging

import pytest
from pydantic import BaseModel

import obsdeco


class SlowCalls(BaseModel):
    ids: list[str]
    total_cost_usd: float


@pytest.fixture
def session_with_calls(configured):
    collector = obsdeco.MetricsCollector("custom")
    session = collector.start_session("custom")
    for latency in (500, 12_000, 15_000):
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o",
            prompt_tokens=1_000,
            completion_tokens=100,
            latency_ms=latency,
        )
    collector.end_session(session)
    yield collector, session
    obsdeco.unregister_analyzer("slow_calls")
    obsdeco.unregister_analyzer("broken")


def test_a_registered_analyzer_appears_in_every_format(session_with_calls):
    collector, session = session_with_calls

    def slow_calls(calls, report):
        slow = [call for call in calls if call.latency_ms > 10_000]
        return SlowCalls(ids=[c.id for c in slow], total_cost_usd=sum(c.cost_usd for c in slow))

    obsdeco.register_analyzer("slow_calls", slow_calls)
    report = collector.get_report(session)

    calls = obsdeco.get_calls(session.id)
    assert report.custom["slow_calls"]["ids"] == [calls[1].id, calls[2].id]
    # gpt-4o: 2 x (1,000 x $2.50/M + 100 x $10/M) = $0.007
    assert report.custom["slow_calls"]["total_cost_usd"] == pytest.approx(0.007)
    assert "Custom analyzers" in str(report)
    assert "slow_calls" in report.to_markdown()
    assert report.model_dump(mode="json")["custom"]["slow_calls"]["ids"][0] == calls[1].id


def test_a_failing_analyzer_is_left_out_and_logged(session_with_calls, caplog):
    collector, session = session_with_calls

    def broken(calls, report):
        raise ZeroDivisionError("oops")

    obsdeco.register_analyzer("broken", broken)
    with caplog.at_level(logging.ERROR, logger="obsdeco"):
        report = collector.get_report(session)

    assert "broken" not in report.custom
    assert report.totals.calls == 3
    assert "custom analyzer 'broken' failed" in caplog.text


def test_bad_registrations_are_refused():
    with pytest.raises(ValueError, match="non-empty string"):
        obsdeco.register_analyzer("", lambda calls, report: None)
    with pytest.raises(TypeError, match="must be callable"):
        obsdeco.register_analyzer("x", "not a function")
