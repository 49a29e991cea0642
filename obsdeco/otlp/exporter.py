"""OTLP/HTTP export of what the writer stored, through the OpenTelemetry SDK's exporters.

The writer hands each committed batch to `OtlpExport.committed`, which only queues it; the
exporter's own thread turns records into spans and metrics and sends them. A session's spans
are sent when the session ends (its agent spans are only known then, and calls are parented
by them); a call or agent span stored after its session was sent follows on its own. Calls
made outside any session (the implicit per-day session) are sent at once, each as the root of
a trace of its own. Metrics are recorded as calls are committed and sent periodically by the
SDK's reader. What the endpoint refuses or cannot take is counted, never retried beyond the
SDK exporter's own retries, never raised.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from obsdeco._version import __version__
from obsdeco.analyzers import PriceTable, price_calls
from obsdeco.config import Settings
from obsdeco.models import AgentSpan, LLMCall, implicit_session_id, utc_now
from obsdeco.otlp import registry
from obsdeco.otlp.registry import ExportCounters
from obsdeco.otlp.spans import (
    CallCost,
    SpanFactory,
    call_end,
    operation_name,
    session_span_id,
    span_id_of,
    trace_id_of,
)
from obsdeco.storage import SessionState, WriteBatch

logger = logging.getLogger("obsdeco.otlp")

_SPANS_PER_REQUEST = 512
_SENT_SESSIONS_KEPT = 4_096
"""Sessions already sent whose agent spans are kept, to parent calls stored after them."""

_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
"""The bucket boundaries the GenAI conventions advise for their two histograms."""


class _CountedMetricExporter(OTLPMetricExporter):
    """The OTLP metric exporter, its failures counted."""

    def __init__(self, counters: ExportCounters, **options: Any) -> None:
        super().__init__(**options)
        self._obsdeco_counters = counters

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        result = super().export(metrics_data, timeout_millis, **kwargs)
        if result is not MetricExportResult.SUCCESS:
            self._obsdeco_counters.add("export_metrics_failed", 1)
        return result


@dataclass(slots=True)
class _Held:
    """A session not yet sent, and its records stored so far."""

    state: SessionState | None = None
    trace_id: int = 0
    calls: list[tuple[LLMCall, CallCost]] = field(default_factory=list)
    spans: list[AgentSpan] = field(default_factory=list)


@dataclass(slots=True)
class _Sent:
    trace_id: int
    span_id: int
    agents: list[AgentSpan]


class _Marker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def otlp_resource(settings: Settings) -> Resource:
    """`service.name` is OTEL_SERVICE_NAME, else the project; OTEL_RESOURCE_ATTRIBUTES apply."""
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": settings.project}
    return Resource.create(attributes)


class OtlpExport:
    """The OTLP export of one runtime's writer (a `CommitListener`)."""

    def __init__(
        self,
        settings: Settings,
        prices: PriceTable,
        counters: ExportCounters,
        *,
        span_exporter: SpanExporter | None = None,
        metric_exporter: MetricExporter | None = None,
    ) -> None:
        endpoint = settings.otlp_endpoint or ""
        self.endpoint = endpoint
        self._prices = prices
        self._counters = counters
        self._bound = settings.max_queue_size
        resource = otlp_resource(settings)
        self._factory = SpanFactory(resource, settings.capture_content)
        options: dict[str, Any] = {
            "headers": dict(settings.otlp_headers),
            "timeout": settings.otlp_timeout_s,
        }
        self._span_exporter = span_exporter or OTLPSpanExporter(
            endpoint=f"{endpoint}/v1/traces", **options
        )
        reader = PeriodicExportingMetricReader(
            metric_exporter
            or _CountedMetricExporter(counters, endpoint=f"{endpoint}/v1/metrics", **options)
        )
        self._meters = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
        meter = self._meters.get_meter("obsdeco", __version__)
        self._token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._cost = meter.create_counter(
            "obsdeco.cost", unit="USD", description="What the LLM calls cost, at list prices"
        )
        self._queue: deque[WriteBatch | _Marker] = deque()
        self._waiting = 0
        """Calls and agent spans queued or held in unsent sessions (bounded)."""
        self._count_lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self._implicit: set[str] = set()
        """The implicit sessions (one per project and day): their records are sent at once."""
        self._outgoing: list[ReadableSpan] = []
        self._failure_logged = False
        self._wakeup = threading.Event()
        self._closing = False
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="obsdeco-otlp", daemon=True)
        self._thread.start()

    # --- the writer's side (must be quick) ----------------------------------------------------

    def committed(self, batch: WriteBatch) -> None:
        """Queue a committed batch; dropped and counted when too much is waiting."""
        size = len(batch.calls) + len(batch.spans)
        with self._count_lock:
            refused = self._closing or self._waiting + size > self._bound
            if not refused:
                self._waiting += size
        if refused:
            if size:
                self._counters.add("export_dropped", size)
            return
        self._queue.append(batch)
        self._wakeup.set()

    def closed(self) -> None:
        self._closing = True
        self._wakeup.set()

    def flush(self, timeout: float | None) -> bool:
        if self._finished.is_set():
            return True
        marker = _Marker()
        self._queue.append(marker)
        self._wakeup.set()
        return marker.done.wait(timeout)

    def wait_closed(self, timeout: float | None) -> bool:
        return self._finished.wait(timeout)

    # --- the exporter thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    item = self._queue.popleft()
                    if isinstance(item, _Marker):
                        self._send()
                        self._meters.force_flush()
                        item.done.set()
                    else:
                        self._take(item)
                        if len(self._outgoing) >= _SPANS_PER_REQUEST:
                            self._send()
                self._send()
                if self._closing and not self._queue:
                    break
            self._send_unended()
        except Exception:
            logger.exception("obsdeco's OTLP exporter stopped")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for part in (self._meters.shutdown, self._span_exporter.shutdown):
            try:
                part()
            except Exception:
                logger.exception("obsdeco's OTLP exporter did not shut down cleanly")
        registry.forget(self)
        self._finished.set()
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Marker):
                item.done.set()

    def _take(self, batch: WriteBatch) -> None:
        imported = registry.is_imported
        calls = [call for call in batch.calls if not imported(call.session_id)]
        spans = [span for span in batch.spans if not imported(span.session_id)]
        self._done(len(batch.calls) - len(calls) + len(batch.spans) - len(spans))
        for state in batch.sessions:
            if not imported(state.session.id):
                self._note_session(state)
        for call, cost in zip(calls, self._costs(calls), strict=True):
            self._measure(call, cost)
            self._place_call(call, cost)
        for span in spans:
            self._place_span(span)
        for state in batch.sessions:
            if state.session.ended_at is not None:
                self._send_session(state.session.id)

    def _done(self, records: int) -> None:
        """`records` are no longer waiting (sent, or not to be sent)."""
        with self._count_lock:
            self._waiting -= records

    def _note_session(self, state: SessionState) -> None:
        session = state.session
        if session.id in self._sent or session.id in self._implicit:
            return
        if session.id == implicit_session_id(session.project_name, session.started_at.date()):
            self._implicit.add(session.id)
            return
        held = self._held.get(session.id)
        if held is None:
            held = self._held[session.id] = _Held()
        held.state = state
        held.trace_id = self._trace_of(session.id, session.parent_id)

    def _trace_of(self, session_id: str, parent_id: str | None) -> int:
        """A session nested in another belongs to its parent's trace."""
        if parent_id is not None:
            sent, held = self._sent.get(parent_id), self._held.get(parent_id)
            if sent is not None:
                return sent.trace_id
            if held is not None and held.trace_id:
                return held.trace_id
        return trace_id_of(session_id)

    def _costs(self, calls: Sequence[LLMCall]) -> list[CallCost]:
        if not calls:
            return []
        priced = price_calls(calls, self._prices)
        inputs = price_calls(
            [
                c.model_copy(update={"completion_tokens": 0, "reasoning_tokens": None})
                for c in calls
            ],
            self._prices,
        )
        costs = []
        for whole, prompt_part in zip(priced, inputs, strict=True):
            total, prompt = whole.cost_usd, prompt_part.cost_usd
            if total is None or prompt is None:
                costs.append(CallCost(total))
            else:
                costs.append(CallCost(total, prompt, total - prompt))
        return costs

    def _measure(self, call: LLMCall, cost: CallCost) -> None:
        attributes: dict[str, str] = {
            "gen_ai.operation.name": operation_name(call),
            "gen_ai.provider.name": call.provider_name,
            "gen_ai.request.model": call.model,
        }
        if call.response_model is not None:
            attributes["gen_ai.response.model"] = call.response_model
        for kind, tokens in (("input", call.prompt_tokens), ("output", call.completion_tokens)):
            if tokens is not None:
                self._token_usage.record(tokens, {**attributes, "gen_ai.token.type": kind})
        if cost.total is not None:
            self._cost.add(cost.total, attributes)
        if not call.success:
            attributes["error.type"] = call.error_type or "_OTHER"
        self._duration.record(call.latency_ms / 1000, attributes)

    def _place_call(self, call: LLMCall, cost: CallCost) -> None:
        sent = self._sent.get(call.session_id)
        if sent is not None:
            parent = _innermost_agent(call, sent.agents)
            parent_id = sent.span_id if parent is None else span_id_of("agent", parent.id)
            self._outgoing.append(self._factory.call_span(call, cost, sent.trace_id, parent_id))
            self._done(1)
        elif call.session_id in self._implicit:
            trace_id = trace_id_of(call.id)
            self._outgoing.append(self._factory.call_span(call, cost, trace_id, None))
            self._done(1)
        else:
            self._held_of(call.session_id).calls.append((call, cost))

    def _place_span(self, span: AgentSpan) -> None:
        sent = self._sent.get(span.session_id)
        if sent is not None:
            sent.agents.append(span)
            parent_id = (
                sent.span_id if span.parent_id is None else span_id_of("agent", span.parent_id)
            )
            self._outgoing.append(self._factory.agent_span(span, sent.trace_id, parent_id))
            self._done(1)
        elif span.session_id in self._implicit:
            self._outgoing.append(self._factory.agent_span(span, trace_id_of(span.id), None))
            self._done(1)
        else:
            self._held_of(span.session_id).spans.append(span)

    def _held_of(self, session_id: str) -> _Held:
        held = self._held.get(session_id)
        if held is None:
            held = self._held[session_id] = _Held(trace_id=trace_id_of(session_id))
        return held

    def _send_session(self, session_id: str, end: datetime | None = None) -> None:
        """Queue the spans of a session that ended (or, at the end, of one still open)."""
        held = self._held.pop(session_id, None)
        if held is None:
            return
        self._done(len(held.calls) + len(held.spans))
        state = held.state
        trace_id = held.trace_id or trace_id_of(session_id)
        session_span: int | None = None
        if state is not None:
            session = state.session
            parent = None if session.parent_id is None else span_id_of("session", session.parent_id)
            last = max(
                [call_end(call) for call, _ in held.calls]
                + [span.ended_at for span in held.spans]
                + [session.started_at],
            )
            self._outgoing.append(self._factory.session_span(state, trace_id, parent, end or last))
            session_span = session_span_id(session)
            self._sent[session_id] = _Sent(trace_id, session_span, list(held.spans))
            while len(self._sent) > _SENT_SESSIONS_KEPT:
                self._sent.popitem(last=False)
        factory = self._factory
        for span in held.spans:
            parent_id = (
                session_span if span.parent_id is None else span_id_of("agent", span.parent_id)
            )
            self._outgoing.append(factory.agent_span(span, trace_id, parent_id))
        for call, cost in held.calls:
            agent = _innermost_agent(call, held.spans)
            parent_id = session_span if agent is None else span_id_of("agent", agent.id)
            self._outgoing.append(factory.call_span(call, cost, trace_id, parent_id))

    def _send_unended(self) -> None:
        """At the end: sessions still open are sent as they are, ending now."""
        now = utc_now()
        for session_id in list(self._held):
            self._send_session(session_id, now)
        self._send()

    def _send(self) -> None:
        while self._outgoing:
            chunk = self._outgoing[:_SPANS_PER_REQUEST]
            del self._outgoing[:_SPANS_PER_REQUEST]
            try:
                result = self._span_exporter.export(chunk)
            except Exception as exc:
                result = SpanExportResult.FAILURE
                self._counters.last_error = f"{type(exc).__name__}: {exc}"
            if result is SpanExportResult.SUCCESS:
                self._counters.add("exported_spans", len(chunk))
                continue
            self._counters.add("export_failed", len(chunk))
            if not self._failure_logged:
                self._failure_logged = True
                logger.warning(
                    "obsdeco could not export %d spans to %s; failures are counted in "
                    "obsdeco.stats().export_failed, not logged again",
                    len(chunk),
                    self.endpoint,
                )


def _innermost_agent(call: LLMCall, agents: Sequence[AgentSpan]) -> AgentSpan | None:
    """The latest-started agent span of the call's agent that was running when it started."""
    if call.agent_name is None:
        return None
    best: AgentSpan | None = None
    for agent in agents:
        if (
            agent.agent_name == call.agent_name
            and agent.started_at <= call.timestamp <= agent.ended_at
            and (best is None or agent.started_at >= best.started_at)
        ):
            best = agent
    return best
