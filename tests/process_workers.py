"""Work run in child processes by the process-end tests (importable under spawn and forkserver)."""

from __future__ import annotations

import obsdeco

CALLS_PER_TASK = 500


def configure(database_url: str) -> None:
    obsdeco.configure(database_url=database_url, project="workers")


def record_calls(database_url: str, calls: int = CALLS_PER_TASK) -> int:
    """Record `calls` calls in one session of their own; returns how many were recorded."""
    configure(database_url)
    collector = obsdeco.MetricsCollector("workers")
    session = collector.start_session("task")
    for _ in range(calls):
        collector.record_llm_call(
            session, provider="openai", model_name="gpt-4o-mini", latency_ms=1.0, prompt_tokens=3
        )
    collector.end_session(session)
    return calls
