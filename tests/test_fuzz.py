"""Fuzzing the API boundary: whatever `record_llm_call` and `configure()` accept, every backend
stores and every report reads; whatever no backend can store is refused at the call, with an
error naming the field."""

from __future__ import annotations

import math

import pytest
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import obsdeco

TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=190, max_size=210),
    st.sampled_from(["gpt-4o", "a\x00b", "x\ud800y", "", " ", "model\x00", "é" * 201]),
)
TOKENS = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=10**6),
    st.sampled_from([2**31 - 1, 2**31, 2**53, 10**12, 10**12 + 1, 2**63 - 1, 2**63, -(2**63)]),
)
MILLISECONDS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e12, 1e13, 1e284, 1e300]),
)
CALL = st.fixed_dictionaries(
    {
        "model_name": TEXT,
        "latency_ms": MILLISECONDS,
        "prompt_tokens": TOKENS,
        "completion_tokens": TOKENS,
    },
    optional={
        "cached_tokens": TOKENS,
        "reasoning_tokens": TOKENS,
        "agent_name": st.one_of(st.none(), TEXT),
        "operation": st.one_of(st.none(), TEXT),
        "time_to_first_token_ms": st.one_of(st.none(), MILLISECONDS),
        "retries": st.integers(min_value=-1, max_value=2**32),
        "tool_call_count": st.one_of(st.none(), st.integers(min_value=-1, max_value=2**32)),
        "finish_reason": st.one_of(st.none(), TEXT),
        "error_message": st.one_of(st.none(), st.text(max_size=50)),
    },
)

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _stored_calls(url: str, session_id: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sqlalchemy.text("SELECT count(*) FROM llm_calls WHERE session_id = :id"),
                {"id": session_id},
            ).scalar_one()
    finally:
        engine.dispose()


@FUZZ
@given(calls=st.lists(CALL, max_size=40))
def test_every_accepted_call_is_stored_and_reported(configured, calls):
    collector = obsdeco.MetricsCollector("fuzz")
    session = collector.start_session("fuzz")
    rejected_before = obsdeco.stats().dropped_rejected
    accepted = []
    refusals = []
    for call in calls:
        try:
            accepted.append(collector.record_llm_call(session, provider="openai", **call))
        except ValidationError as error:
            refusals.append(error.errors()[0]["loc"])
    collector.end_session(session)
    assert all(refusals)  # each refusal names its field
    assert obsdeco.flush(timeout=60)

    assert obsdeco.stats().dropped_rejected == rejected_before
    assert _stored_calls(configured, session.id) == len(accepted)
    stored = obsdeco.get_calls(session.id)
    assert [call.id for call in stored] == [call.id for call in accepted]
    report = obsdeco.get_report(session.id)
    assert report.totals.calls == len(accepted)
    assert report.totals.prompt_tokens == sum(call.prompt_tokens or 0 for call in accepted)
    str(report)
    report.to_markdown()
    project = obsdeco.report("fuzz")
    assert project.totals.calls >= len(accepted)


def test_what_no_backend_stores_is_refused_by_field():
    collector = obsdeco.MetricsCollector("fuzz")
    session = collector.start_session("bounds")
    refused = {
        "prompt_tokens": {"prompt_tokens": 2**63},
        "latency_ms": {"latency_ms": 1e284},
        "model_name": {"model_name": "gpt\x00"},
        "agent_name": {"agent_name": "x" * 201},
        "operation": {"operation": "op\ud800"},
        "retries": {"retries": 2**31},
    }
    for field, values in refused.items():
        arguments = {"model_name": "gpt-4o", "latency_ms": 1.0, **values}
        with pytest.raises(ValidationError) as raised:
            collector.record_llm_call(session, provider="openai", **arguments)
        assert raised.value.errors()[0]["loc"][0] == field

    call = collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", latency_ms=1.0, id="a" * 32
    )
    with pytest.raises(ValueError, match="already recorded"):
        collector.record_llm_call(
            session, provider="openai", model_name="gpt-4o", latency_ms=1.0, id=call.id
        )


SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "project": TEXT,
        "sample_rate": st.floats(allow_nan=True, allow_infinity=True),
        "max_queue_size": st.integers(min_value=-1, max_value=10**6),
        "batch_size": st.integers(min_value=-1, max_value=10**5),
        "flush_at_exit_timeout_s": st.floats(allow_nan=True, allow_infinity=True),
        "content_max_chars": st.integers(min_value=-1, max_value=10**6),
        "capture_content": st.booleans(),
    },
)


@FUZZ
@given(options=SETTINGS)
def test_every_accepted_configuration_records_and_stores(sqlite_url, options):
    try:
        accepted = obsdeco.configure(database_url=sqlite_url, **options)
    except ValueError as error:
        refusal = str(error)
    else:
        refusal = None
    if refusal is not None:
        assert refusal.startswith("invalid obsdeco configuration: ")
        return
    assert math.isfinite(accepted.flush_at_exit_timeout_s)
    rejected_before = obsdeco.stats().dropped_rejected
    collector = obsdeco.MetricsCollector()
    session = collector.start_session("configured")
    collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1.0)
    collector.end_session(session)
    assert obsdeco.flush(timeout=60)
    assert obsdeco.stats().dropped_rejected == rejected_before
    assert obsdeco.get_report(session.id).totals.calls == 1
