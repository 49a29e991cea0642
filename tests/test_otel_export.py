"""OTLP export: what a real OTLP/HTTP receiver decodes (with opentelemetry-proto) of sessions,
agents and calls recorded through the real OpenAI and Anthropic SDKs."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anthropic
import openai
import pytest

import obsdeco
import obsdeco.otel
from obsdeco import LLMCall
from obsdeco.analyzers import PriceTable
from obsdeco.config import build_settings
from obsdeco.otlp.exporter import OtlpExport
from obsdeco.otlp.registry import ExportCounters, wait_exports_closed
from obsdeco.runtime import get_runtime
from obsdeco.storage import WriteBatch
from obsdeco.testing import ProviderServer, Reply
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CLIENT, INTERNAL = 3, 1
STATUS_ERROR = 2


def ns(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def finish_exports(tmp_path) -> None:
    """Replace the settings, so that the export of the test finishes (its last metrics sent)."""
    obsdeco.configure(database_url=f"sqlite:///{tmp_path}/after.db")
    get_runtime()
    assert wait_exports_closed(30)


@pytest.fixture(autouse=True)
def _exports_finished(tmp_path) -> Iterator[None]:
    yield
    finish_exports(tmp_path)


@pytest.fixture
def receiver(tmp_path) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server
        finish_exports(tmp_path)


@pytest.fixture
def exporting(receiver: OtlpReceiver, sqlite_url: str, patched: list[str]) -> OtlpReceiver:
    obsdeco.configure(project="otel", database_url=sqlite_url, otlp_endpoint=receiver.endpoint)
    return receiver


def run_demo(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic, provider: ProviderServer
) -> str:
    """A session: Planner (gpt-4o) calls Researcher (claude, cached input) inside it."""
    provider.enqueue(
        Reply.default(model="gpt-4o-2024-08-06", input_tokens=100, output_tokens=50),
        path="/v1/chat/completions",
    )
    provider.enqueue(
        Reply.default(
            model="claude-haiku-4-5-20251001",
            input_tokens=10,
            output_tokens=5,
            usage={"cache_read_input_tokens": 4, "cache_creation_input_tokens": 2},
        ),
        path="/v1/messages",
    )

    @obsdeco.observe_agent(name="Researcher")
    def research() -> str:
        reply = anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "Why?"}]
        )
        return reply.content[0].text

    @obsdeco.observe_agent(name="Planner", operation="plan")
    def plan() -> str:
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Plan a refund."}]
        )
        return research()

    @obsdeco.observe_session(name="ticket")
    def handle() -> str:
        plan()
        return obsdeco.current_session().id

    return handle()


def by_name(receiver: OtlpReceiver) -> dict[str, ReceivedSpan]:
    names = [span.name for span in receiver.spans]
    assert len(names) == len(set(names)), names
    return {span.name: span for span in receiver.spans}


def test_session_agents_and_calls_become_one_trace(
    exporting: OtlpReceiver, openai_client, anthropic_client, provider
) -> None:
    session_id = run_demo(openai_client, anthropic_client, provider)
    assert obsdeco.otel.flush_export(timeout=30)
    spans = by_name(exporting)
    assert sorted(spans) == [
        "chat claude-haiku-4-5",
        "chat gpt-4o",
        "invoke_agent Planner",
        "invoke_agent Researcher",
        "session ticket",
    ]
    session, planner, researcher = (
        spans["session ticket"],
        spans["invoke_agent Planner"],
        spans["invoke_agent Researcher"],
    )
    gpt, claude = spans["chat gpt-4o"], spans["chat claude-haiku-4-5"]
    assert {span.trace_id for span in spans.values()} == {session_id}
    assert session.parent_span_id == ""
    assert planner.parent_span_id == session.span_id
    assert researcher.parent_span_id == planner.span_id
    assert gpt.parent_span_id == planner.span_id
    assert claude.parent_span_id == researcher.span_id
    assert (gpt.kind, claude.kind, planner.kind, session.kind) == (
        CLIENT,
        CLIENT,
        INTERNAL,
        INTERNAL,
    )
    assert {span.scope for span in spans.values()} == {"obsdeco"}
    assert session.resource["service.name"] == "otel"

    calls = {call.model: call for call in obsdeco.get_calls(session_id)}
    stored = obsdeco.get_report(session_id)
    for span, call in ((gpt, calls["gpt-4o"]), (claude, calls["claude-haiku-4-5"])):
        assert span.start_ns == ns(call.timestamp)
        assert span.end_ns == ns(call.timestamp + timedelta(milliseconds=call.latency_ms))
    assert session.start_ns == ns(stored.session.started_at)
    assert session.end_ns == ns(stored.session.ended_at)

    gpt_call = calls["gpt-4o"]
    assert gpt.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.conversation.id": session_id,
        "gen_ai.agent.name": "Planner",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 50,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.cost.amount": gpt_call.cost_usd,
        "session.id": session_id,
        "openinference.span.kind": "LLM",
        "llm.provider": "openai",
        "llm.model_name": "gpt-4o-2024-08-06",
        "llm.token_count.prompt": 100,
        "llm.token_count.completion": 50,
        "llm.token_count.total": 150,
        "llm.token_count.prompt_details.cache_read": 0,
        "llm.token_count.completion_details.reasoning": 0,
        "llm.cost.total": gpt_call.cost_usd,
        "llm.cost.prompt": pytest.approx(100 * 2.5 / 1e6, rel=1e-12),
        "llm.cost.completion": pytest.approx(50 * 10 / 1e6, rel=1e-12),
        "obsdeco.call.id": gpt_call.id,
        "obsdeco.project": "otel",
        "obsdeco.operation": "plan",
        "obsdeco.streamed": False,
        "obsdeco.retries": 0,
    }
    assert gpt_call.cost_usd == pytest.approx(0.00075, rel=1e-12)
    # OpenAI reports no cache writes: absent, never 0.
    assert "gen_ai.usage.cache_creation.input_tokens" not in gpt.attributes

    claude_call = calls["claude-haiku-4-5"]
    assert (claude_call.prompt_tokens, claude_call.cached_tokens) == (16, 4)
    assert {key: claude.attributes.get(key) for key in claude.attributes if "usage" in key} == {
        "gen_ai.usage.input_tokens": 16,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "gen_ai.usage.cache_creation.input_tokens": 2,
        "gen_ai.usage.cost.amount": claude_call.cost_usd,
    }
    # claude-haiku-4-5: $1 input, $0.10 cache read, $1.25 cache write, $5 output per 1M.
    assert claude_call.cost_usd == pytest.approx((10 * 1 + 4 * 0.1 + 2 * 1.25 + 5 * 5) / 1e6)
    assert claude.attributes["gen_ai.provider.name"] == "anthropic"
    assert claude.attributes["gen_ai.agent.name"] == "Researcher"
    assert session.attributes["obsdeco.session.cost_usd"] == pytest.approx(
        gpt_call.cost_usd + claude_call.cost_usd, rel=1e-12
    )
    assert researcher.attributes == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "Researcher",
        "gen_ai.conversation.id": session_id,
        "openinference.span.kind": "AGENT",
        "session.id": session_id,
    }
    assert not any("input" in key and "value" in key for key in gpt.attributes)
    assert obsdeco.stats().export_failed == 0


def test_metrics_are_received(exporting: OtlpReceiver, openai_client, anthropic_client, provider):
    session_id = run_demo(openai_client, anthropic_client, provider)
    assert obsdeco.otel.flush_export(timeout=30)
    calls = {call.model: call for call in obsdeco.get_calls(session_id)}
    gpt = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
    }
    points = {
        (
            point.metric,
            point.attributes.get("gen_ai.token.type"),
            point.attributes.get("gen_ai.request.model"),
        ): point
        for point in exporting.points
    }
    tokens_in = points["gen_ai.client.token.usage", "input", "gpt-4o"]
    assert (tokens_in.unit, tokens_in.count, tokens_in.total) == ("{token}", 1, 100)
    assert tokens_in.attributes == {**gpt, "gen_ai.token.type": "input"}
    assert points["gen_ai.client.token.usage", "output", "claude-haiku-4-5"].total == 5
    assert points["gen_ai.client.token.usage", "input", "claude-haiku-4-5"].total == 16
    duration = points["gen_ai.client.operation.duration", None, "gpt-4o"]
    assert (duration.unit, duration.count, duration.attributes) == ("s", 1, gpt)
    assert duration.total == pytest.approx(calls["gpt-4o"].latency_ms / 1000)
    cost = points["obsdeco.cost", None, "gpt-4o"]
    assert (cost.unit, cost.total) == ("USD", pytest.approx(calls["gpt-4o"].cost_usd))


def test_content_only_with_capture_content(
    receiver: OtlpReceiver, sqlite_url, patched, openai_client, provider
) -> None:
    obsdeco.configure(
        database_url=sqlite_url, otlp_endpoint=receiver.endpoint, capture_content=True
    )
    provider.enqueue(Reply.default(text="Refunds take 5 days."))

    @obsdeco.observe_session
    def ask() -> None:
        openai_client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How long do refunds take?"},
            ],
        )

    ask()
    assert obsdeco.otel.flush_export(timeout=30)
    (span,) = receiver.named("chat gpt-4o")
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "How long do refunds take?"}]},
    ]
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Refunds take 5 days."}],
            "finish_reason": "stop",
        }
    ]
    assert span.attributes["output.value"] == "Refunds take 5 days."
    assert json.loads(span.attributes["input.value"])["messages"][1]["content"] == (
        "How long do refunds take?"
    )


def test_failed_call_is_an_error_span(exporting: OtlpReceiver, openai_client, provider) -> None:
    provider.enqueue(Reply.error(500, message="upstream broke"))

    @obsdeco.observe_session(name="failing")
    def fail() -> str:
        with pytest.raises(openai.InternalServerError):
            openai_client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        return obsdeco.current_session().id

    session_id = fail()
    assert obsdeco.otel.flush_export(timeout=30)
    (call,) = obsdeco.get_calls(session_id)
    (span,) = exporting.named("chat gpt-4o")
    assert span.status_code == STATUS_ERROR
    assert "upstream broke" in span.status_message
    assert span.attributes["error.type"] == call.error_type
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "llm.cost.total"):
        assert key not in span.attributes
    error_points = [p for p in exporting.points if p.attributes.get("error.type")]
    assert [(p.metric, p.count) for p in error_points] == [("gen_ai.client.operation.duration", 1)]


def test_session_that_raises_is_an_error_span(exporting: OtlpReceiver) -> None:
    @obsdeco.observe_session(name="boom")
    def boom() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        boom()
    assert obsdeco.otel.flush_export(timeout=30)
    (span,) = exporting.named("session boom")
    assert (span.status_code, span.attributes["error.type"]) == (STATUS_ERROR, "KeyError")


def test_call_outside_any_session_is_a_trace_of_its_own(
    exporting: OtlpReceiver, openai_client, provider
) -> None:
    openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert obsdeco.otel.flush_export(timeout=30)
    (span,) = exporting.spans
    assert (span.name, span.parent_span_id, span.trace_id) == (
        "chat gpt-4o-mini",
        "",
        span.attributes["obsdeco.call.id"],
    )
    implicit = span.attributes["gen_ai.conversation.id"]
    assert [call.model for call in obsdeco.get_calls(implicit)] == ["gpt-4o-mini"]


def test_stream_read_after_its_session_ended_follows_in_the_same_trace(
    exporting: OtlpReceiver, openai_client, provider
) -> None:
    @obsdeco.observe_session(name="early")
    def start() -> tuple[str, openai.Stream]:
        stream = openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return obsdeco.current_session().id, stream

    session_id, stream = start()
    assert obsdeco.otel.flush_export(timeout=30)
    assert [span.name for span in exporting.spans] == ["session early"]
    for _ in stream:
        pass
    assert obsdeco.otel.flush_export(timeout=30)
    session, call = exporting.spans
    assert (call.name, call.trace_id, call.parent_span_id) == (
        "chat gpt-4o",
        session_id,
        session.span_id,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_endpoint_costs_the_application_nothing(
    sqlite_url, patched, openai_client, anthropic_client, provider
) -> None:
    obsdeco.configure(
        database_url=sqlite_url,
        otlp_endpoint=f"http://127.0.0.1:{closed_port()}",
        otlp_timeout_s=0.2,
    )
    before = obsdeco.stats()
    session_id = run_demo(openai_client, anthropic_client, provider)
    assert obsdeco.otel.flush_export(timeout=30)
    after = obsdeco.stats()
    assert len(obsdeco.get_calls(session_id)) == 2
    assert after.export_failed - before.export_failed == 5
    assert after.export_metrics_failed - before.export_metrics_failed == 1
    assert after.exported_spans == before.exported_spans
    assert after.dropped == 0


def test_refused_export_is_counted(exporting: OtlpReceiver, openai_client, provider) -> None:
    exporting.status = 400
    before = obsdeco.stats().export_failed

    @obsdeco.observe_session
    def ask() -> None:
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )

    ask()
    assert obsdeco.otel.flush_export(timeout=30)
    assert obsdeco.stats().export_failed - before == 2
    assert exporting.spans == []


def test_headers_are_sent(receiver: OtlpReceiver, sqlite_url) -> None:
    obsdeco.configure(
        database_url=sqlite_url,
        otlp_endpoint=receiver.endpoint,
        otlp_headers={"Authorization": "Bearer abc"},
    )
    collector = obsdeco.MetricsCollector()
    session = collector.start_session("explicit")
    collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", prompt_tokens=3, latency_ms=12.5
    )
    collector.end_session(session)
    assert obsdeco.otel.flush_export(timeout=30)
    assert {path for path, _ in receiver.requests} == {"/v1/traces", "/v1/metrics"}
    assert all(headers["authorization"] == "Bearer abc" for _, headers in receiver.requests)
    (span,) = receiver.named("chat gpt-4o")
    assert span.end_ns - span.start_ns == 12_500_000
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    # Output tokens were not reported: absent, and so is the cost and the total.
    for key in ("gen_ai.usage.output_tokens", "llm.token_count.total", "llm.cost.total"):
        assert key not in span.attributes


def test_environment_variables() -> None:
    settings = build_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, x-team=ops",
        }
    )
    assert settings.otlp_endpoint == "http://collector:4318"
    assert settings.otlp_headers == {"api-key": "s=cret", "x-team": "ops"}
    mine = build_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OBSDECO_OTLP_ENDPOINT": "https://obsdeco-collector:4318",
        }
    )
    assert mine.otlp_endpoint == "https://obsdeco-collector:4318"
    assert build_settings({}).otlp_endpoint is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"otlp_endpoint": "collector:4318"}, "must be an http:// or https:// URL"),
        ({"otlp_timeout_s": 0}, "otlp_timeout_s"),
    ],
)
def test_bad_export_options_are_refused_at_configure(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        obsdeco.configure(**options)


def test_bad_header_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_HEADERS"):
        build_settings({"OTEL_EXPORTER_OTLP_HEADERS": "no-equals-sign"})


def test_records_stay_the_same(exporting: OtlpReceiver, openai_client, provider) -> None:
    """Exporting changes nothing of what is stored or returned."""

    @obsdeco.observe_session(return_report=True)
    def ask() -> str:
        reply = openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        return reply.choices[0].message.content or ""

    text, report = ask()
    assert text.startswith("Hello!")
    assert report.totals.calls == 1
    assert isinstance(obsdeco.get_calls(report.session.id)[0], LLMCall)


def test_records_beyond_the_bound_are_dropped_and_counted(receiver: OtlpReceiver) -> None:
    counters = ExportCounters()
    settings = build_settings({}, otlp_endpoint=receiver.endpoint, max_queue_size=2)
    export = OtlpExport(settings, PriceTable(), counters)
    calls = [
        LLMCall(
            session_id="b" * 32, project_name="p", provider="openai", model="gpt-4o", latency_ms=1
        )
        for _ in range(3)
    ]
    export.committed(WriteBatch(calls=calls[:2]))
    export.committed(WriteBatch(calls=calls[2:]))
    assert export.flush(30)
    export.closed()
    assert export.wait_closed(30)
    # The two held calls of the session that never ended are sent at the end.
    assert (counters.export_dropped, counters.exported_spans) == (1, 2)
    assert [span.parent_span_id for span in receiver.spans] == ["", ""]
