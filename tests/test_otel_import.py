"""OTel import: other instrumentations' spans become obsdeco calls and sessions, through
`obsdeco.otel.SpanExporter` in a real OpenTelemetry `TracerProvider`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import openai
import pytest
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

import obsdeco
import obsdeco.otel
from obsdeco.collector import load_session
from obsdeco.models import LLMCall
from obsdeco.otlp.spans import CallCost, SpanFactory
from obsdeco.testing import Reply
from tests.otlp_receiver import OtlpReceiver

MS = 1_000_000
T0 = 1_767_225_600 * 1_000_000_000
"""2026-01-01T00:00:00Z in nanoseconds."""


@pytest.fixture
def tracing(sqlite_url: str) -> Iterator[tuple[TracerProvider, obsdeco.otel.SpanExporter]]:
    obsdeco.configure(project="imported", database_url=sqlite_url)
    exporter = obsdeco.otel.SpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def instrumented(sqlite_url: str, provider) -> Iterator[tuple[TracerProvider, openai.OpenAI]]:
    """The OpenInference OpenAI instrumentor on the real SDK, spans batched into obsdeco."""
    obsdeco.configure(project="imported", database_url=sqlite_url)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(obsdeco.otel.SpanExporter()))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    client = openai.OpenAI(base_url=provider.openai_base_url, api_key="sk-test", max_retries=0)
    try:
        yield tracer_provider, client
    finally:
        instrumentor.uninstrument()
        _drop_restored_requests()
        client.close()
        tracer_provider.shutdown()


_OWN_REQUEST = {cls: "request" in vars(cls) for cls in (openai.OpenAI, openai.AsyncOpenAI)}


def _drop_restored_requests() -> None:
    """OpenInference's `uninstrument()` puts back `request` on the client classes themselves,
    where it had been inherited: the SDK seam on the base class would never be reached again
    by later tests. What they inherited is inherited again."""
    for cls, own in _OWN_REQUEST.items():
        if not own and "request" in vars(cls):
            delattr(cls, "request")


def test_openinference_openai_spans_become_a_session(instrumented, provider) -> None:
    tracer_provider, client = instrumented
    tracer = tracer_provider.get_tracer("app")
    provider.enqueue(
        Reply.default(
            model="gpt-4o-2024-08-06",
            input_tokens=120,
            output_tokens=30,
            usage={"prompt_tokens_details": {"cached_tokens": 20}},
        ),
        Reply.error(500, message="upstream broke"),
    )
    with tracer.start_as_current_span("handle-ticket") as root:
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Planner"}
        with tracer.start_as_current_span("invoke_agent Planner", attributes=attributes):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Plan a refund."}]
            )
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Again."}]
            )
    assert tracer_provider.force_flush()
    session_id = f"{root.get_span_context().trace_id:032x}"
    obsdeco.flush()

    ok, failed = obsdeco.get_calls(session_id)
    assert (ok.model, ok.response_model, ok.provider, ok.provider_name) == (
        "gpt-4o",
        "gpt-4o-2024-08-06",
        obsdeco.ModelProvider.OPENAI,
        "openai",
    )
    assert (ok.prompt_tokens, ok.completion_tokens, ok.cached_tokens) == (120, 30, 20)
    assert ok.agent_name == "Planner"
    assert ok.success
    assert ok.cost_usd == pytest.approx((100 * 2.5 + 20 * 1.25 + 30 * 10) / 1e6)
    assert (failed.success, failed.error_type, failed.agent_name) == (
        False,
        "openai.InternalServerError",
        None,
    )
    assert failed.prompt_tokens is None
    assert failed.completion_tokens is None

    report = obsdeco.get_report(session_id)
    assert (report.session.name, report.session.project_name) == ("handle-ticket", "imported")
    assert report.session.started_at.timestamp() == pytest.approx(root.start_time / 1e9)
    assert report.session.ended_at.timestamp() == pytest.approx(root.end_time / 1e9)
    assert (report.totals.calls, report.totals.prompt_tokens, report.totals.completion_tokens) == (
        2,
        120,
        30,
    )
    assert report.quality.success_rate == 0.5
    assert list(report.cost.by_agent) == ["(none)", "Planner"]


def test_openinference_call_latency_is_the_span_duration(instrumented, provider) -> None:
    tracer_provider, client = instrumented
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("one") as root:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert tracer_provider.force_flush()
    obsdeco.flush()
    (call,) = obsdeco.get_calls(f"{root.get_span_context().trace_id:032x}")
    assert call.latency_ms > 0
    assert call.timestamp.timestamp() >= root.start_time / 1e9 - 1e-6
    assert call.metadata["otel.trace_id"] == f"{root.get_span_context().trace_id:032x}"


def span_at(tracer, name, start_ms, end_ms, attributes, *, error=None, kind=SpanKind.CLIENT):
    span = tracer.start_span(name, kind=kind, attributes=attributes, start_time=T0 + start_ms * MS)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
    return span


def test_genai_semconv_spans(tracing) -> None:
    provider, _ = tracing
    tracer = provider.get_tracer("pydantic-ai")
    root = span_at(tracer, "agent run", 0, 1000, {}, kind=SpanKind.INTERNAL)
    root_context = trace_context(root)
    agent = tracer.start_span(
        "invoke_agent Writer",
        context=root_context,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Writer"},
        start_time=T0 + 10 * MS,
    )
    agent_context = trace_context(agent)
    chat = tracer.start_span(
        "chat claude-sonnet-4-5",
        context=agent_context,
        kind=SpanKind.CLIENT,
        start_time=T0 + 20 * MS,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            # An instrumentation that counts the cache apart from the input.
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.output_tokens": 40,
            "gen_ai.usage.reasoning.output_tokens": 10,
            "gen_ai.response.time_to_first_chunk": 0.25,
            "gen_ai.response.finish_reasons": ("end_turn",),
        },
    )
    chat.end(end_time=T0 + 520 * MS)
    legacy = tracer.start_span(
        "openai.chat",
        context=agent_context,
        start_time=T0 + 600 * MS,
        attributes={
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 7,
            "gen_ai.usage.completion_tokens": 3,
            "gen_ai.agent.name": "Checker",
        },
    )
    legacy.set_attribute("error.type", "RateLimitError")
    legacy.set_status(Status(StatusCode.ERROR, "rate limited"))
    legacy.end(end_time=T0 + 700 * MS)
    tool = tracer.start_span(
        "execute_tool search",
        context=agent_context,
        attributes={"gen_ai.operation.name": "execute_tool"},
    )
    tool.end()
    agent.end(end_time=T0 + 900 * MS)
    session_id = f"{root.get_span_context().trace_id:032x}"
    obsdeco.flush()
    with pytest.raises(LookupError):
        obsdeco.get_report(session_id)  # nothing before the root span ends
    root.end(end_time=T0 + 1000 * MS)
    obsdeco.flush()

    claude, gpt = obsdeco.get_calls(session_id)
    assert (claude.model, claude.response_model, claude.provider_name) == (
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "anthropic",
    )
    assert (
        claude.prompt_tokens,
        claude.cached_tokens,
        claude.completion_tokens,
        claude.reasoning_tokens,
    ) == (150, 100, 40, 10)
    assert (claude.latency_ms, claude.time_to_first_token_ms, claude.finish_reason) == (
        500.0,
        250.0,
        "end_turn",
    )
    assert claude.agent_name == "Writer"
    assert claude.cache_creation_tokens is None
    assert (gpt.prompt_tokens, gpt.completion_tokens, gpt.latency_ms) == (7, 3, 100.0)
    assert (gpt.success, gpt.error_type, gpt.error_message, gpt.agent_name) == (
        False,
        "RateLimitError",
        "rate limited",
        "Checker",
    )
    report = obsdeco.get_report(session_id)
    assert report.session.duration_ms == 1000.0
    assert report.session.name == "agent run"
    assert report.totals.calls == 2
    (agent_span,) = load_session(session_id).spans
    assert (agent_span.agent_name, agent_span.duration_ms) == ("Writer", 890.0)


def trace_context(span):
    return trace.set_span_in_context(span)


def test_conversation_id_groups_traces_into_one_session(tracing) -> None:
    provider, _exporter = tracing
    tracer = provider.get_tracer("agents-sdk")
    for turn in range(2):
        span = span_at(
            tracer,
            "chat gpt-4o-mini",
            turn * 1000,
            0,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 10 + turn,
                "gen_ai.usage.output_tokens": 5,
                "gen_ai.conversation.id": "conv-42",
            },
        )
        span.end(end_time=T0 + (turn * 1000 + 200) * MS)
    obsdeco.flush()
    sessions = {call.session_id for call in obsdeco.get_calls(session_of("conv-42"))}
    assert len(sessions) == 1
    report = obsdeco.get_report(session_of("conv-42"))
    assert (report.totals.calls, report.totals.prompt_tokens) == (2, 21)
    assert report.session.duration_ms == 1200.0
    assert report.session.metadata == {"otel.conversation_id": "conv-42"}


def session_of(conversation: str) -> str:
    return hashlib.blake2b(conversation.encode(), digest_size=16).hexdigest()


def test_openinference_attributes_without_a_root(sqlite_url) -> None:
    obsdeco.configure(database_url=sqlite_url)
    exporter = obsdeco.otel.SpanExporter(project="oi", max_wait_s=0)
    provider = TracerProvider(resource=Resource.create({}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("openinference.instrumentation.langchain")
    parent = tracer.start_span("RunnableSequence", start_time=T0)
    span = tracer.start_span(
        "ChatAnthropic",
        context=trace_context(parent),
        start_time=T0,
        attributes={
            "openinference.span.kind": "LLM",
            "llm.provider": "anthropic",
            "llm.model_name": "claude-haiku-4-5",
            "llm.token_count.prompt": 30,
            "llm.token_count.completion": 9,
            "llm.token_count.prompt_details.cache_read": 10,
            "llm.token_count.prompt_details.cache_write": 5,
        },
    )
    span.end(end_time=T0 + 40 * MS)
    obsdeco.flush()
    (call,) = obsdeco.get_calls(f"{span.get_span_context().trace_id:032x}")
    assert (call.model, call.provider, call.project_name) == (
        "claude-haiku-4-5",
        obsdeco.ModelProvider.ANTHROPIC,
        "oi",
    )
    assert (call.prompt_tokens, call.cached_tokens, call.cache_creation_tokens) == (30, 10, 5)
    assert (call.completion_tokens, call.reasoning_tokens, call.latency_ms) == (9, None, 40.0)
    provider.shutdown()


def test_spans_obsdeco_exported_do_not_loop_back(sqlite_url) -> None:
    obsdeco.configure(database_url=sqlite_url)
    exporter = obsdeco.otel.SpanExporter(max_wait_s=0)
    factory = SpanFactory(Resource.create({}), capture_content=False)
    call = LLMCall(
        session_id="a" * 32,
        project_name="p",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=1,
        completion_tokens=1,
        latency_ms=5,
    )
    exporter.export([factory.call_span(call, CallCost(), int("a" * 32, 16), None)])
    obsdeco.flush()
    with pytest.raises(LookupError):
        obsdeco.get_report("a" * 32)


def test_imported_sessions_are_not_exported_again(sqlite_url, tmp_path) -> None:
    with OtlpReceiver() as receiver:
        obsdeco.configure(database_url=sqlite_url, otlp_endpoint=receiver.endpoint)
        exporter = obsdeco.otel.SpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("app")
        span = span_at(
            tracer,
            "chat gpt-4o",
            0,
            0,
            {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
        )
        span.end(end_time=T0 + 10 * MS)
        assert obsdeco.otel.flush_export(timeout=30)
        assert len(obsdeco.get_calls(f"{span.get_span_context().trace_id:032x}")) == 1
        assert receiver.spans == []
        obsdeco.configure(database_url=f"sqlite:///{tmp_path}/after.db")
        provider.shutdown()


def test_exporter_never_fails_an_export(tracing) -> None:
    _, exporter = tracing
    before = obsdeco.stats().internal_faults
    assert exporter.export([object()]).name == "SUCCESS"  # type: ignore[list-item]
    assert obsdeco.stats().internal_faults == before + 1


def test_bad_max_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="max_wait_s"):
        obsdeco.otel.SpanExporter(max_wait_s=-1)
