"""Record the fixture store's sessions, calls and span through whichever obsdeco is importable.

Run by `generate.py` with PYTHONPATH at a checkout of an earlier release, so the store is
written by that release's own code: `python write_store.py DATABASE_URL`. Only API every
release has is used (configure, MetricsCollector, flush); what is recorded is listed in
README.md beside the numbers the tests expect from it.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import obsdeco

PROJECT = "upgrade-fixture"
REPEATED_HASH = "a" * 32


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 11, 20, hour, minute, tzinfo=UTC)


def main(url: str) -> None:
    obsdeco.configure(project=PROJECT, database_url=url)
    collector = obsdeco.MetricsCollector(PROJECT)
    alpha = collector.start_session("alpha", {"user": "u1"})
    collector.record_llm_call(
        alpha,
        provider="openai",
        model_name="gpt-4o",
        latency_ms=400.0,
        prompt_tokens=1000,
        completion_tokens=200,
        agent_name="Planner",
        request_hash=REPEATED_HASH,
        timestamp=at(10, 5),
    )
    collector.record_llm_call(
        alpha,
        provider="openai",
        model_name="gpt-4o",
        latency_ms=600.0,
        prompt_tokens=1000,
        completion_tokens=200,
        agent_name="Planner",
        request_hash=REPEATED_HASH,
        timestamp=at(10, 20),
    )
    collector.record_llm_call(
        alpha,
        provider="anthropic",
        model_name="claude-3-5-sonnet-20241022",
        latency_ms=1200.0,
        prompt_tokens=3000,
        completion_tokens=500,
        agent_name="Writer",
        streamed=True,
        time_to_first_token_ms=300.0,
        request_hash="c" * 32,
        timestamp=at(11, 10),
    )
    collector.record_llm_call(
        alpha,
        provider="openai",
        model_name="gpt-4o-mini",
        latency_ms=50.0,
        success=False,
        error_type="RateLimitError",
        error_message="rate limited",
        retries=2,
        rate_limited_retries=2,
        request_hash="d" * 32,
        timestamp=at(11, 30),
    )
    collector.record_agent_span(
        alpha, agent_name="Planner", started_at=at(10, 0), ended_at=at(10, 30)
    )
    collector.end_session(alpha)
    beta = collector.start_session("beta")
    for minute, latency, request_hash in ((45, 200.0, "b" * 32), (50, 300.0, REPEATED_HASH)):
        collector.record_llm_call(
            beta,
            provider="openai",
            model_name="gpt-4o-mini",
            latency_ms=latency,
            prompt_tokens=500,
            completion_tokens=100,
            agent_name="Researcher",
            request_hash=request_hash,
            timestamp=at(11, minute),
        )
    collector.end_session(beta)
    if not obsdeco.flush(timeout=60):
        raise SystemExit("the fixture store was not written in time")


if __name__ == "__main__":
    main(sys.argv[1])
