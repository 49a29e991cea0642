"""OTel import: a `SpanExporter` that turns other instrumentations' GenAI spans into obsdeco
calls and sessions.

Add it to your own `TracerProvider`; every LLM span (OpenInference `openinference.span.kind`
LLM or EMBEDDING, or a GenAI semantic-convention span: `gen_ai.operation.name` chat,
text_completion, embeddings, generate_content, or a `gen_ai.request.model`) becomes an
`LLMCall`, read from the conventions' attributes (current and legacy) and OpenInference's.

Sessions: one per trace, or per `gen_ai.conversation.id` (else OpenInference's `session.id`)
when a span of the trace carries one. Agents: `gen_ai.agent.name` on the call's span, else its
nearest `invoke_agent` (or OpenInference AGENT) ancestor, which is also recorded as an agent
span. A span is exported when it ends, so parents come after their children: a trace's calls
are recorded when its root span (no parent, or a remote one) arrives, or `max_wait_s` after
their first span when no root comes, and on `force_flush()` / `shutdown()`.

Spans obsdeco exported itself (scope "obsdeco") are left out, and imported sessions are not
exported again by obsdeco's own OTLP export.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter as _SdkSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import StatusCode

from obsdeco.collector import MetricsCollector, sessions_in_memory
from obsdeco.config import get_settings
from obsdeco.guard import fault
from obsdeco.integrations.facts import completion_json
from obsdeco.models import MAX_NAME_LENGTH, ModelProvider, Session, checked_name
from obsdeco.otlp import registry
from obsdeco.otlp.spans import SCOPE_NAME
from obsdeco.provider_names import otel_name
from obsdeco.runtime import pipeline
from obsdeco.storage import SessionState
from obsdeco.writer import SessionEnd

_MODEL_OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "generate_content"})
_LLM_KINDS = frozenset({"LLM", "EMBEDDING"})
_PROVIDER_ALIASES = {"mistralai": "mistral_ai", "xai": "x_ai", "vertexai": "gcp.vertex_ai"}
_PROVIDERS = {
    "openai": ModelProvider.OPENAI,
    "azure.openai": ModelProvider.OPENAI,
    "anthropic": ModelProvider.ANTHROPIC,
    "gcp.gemini": ModelProvider.GOOGLE,
    "gcp.vertex_ai": ModelProvider.GOOGLE,
    "gcp.gen_ai": ModelProvider.GOOGLE,
}
_SESSIONS_KEPT = 1_024
_PENDING_SPANS_BOUND = 20_000

Attributes = Mapping[str, Any]


def _first(attributes: Attributes, *keys: str) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _count(attributes: Attributes, *keys: str) -> int | None:
    value = _first(attributes, *keys)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:MAX_NAME_LENGTH] or None


def is_llm_span(attributes: Attributes) -> bool:
    """Whether a span is an LLM call, by OpenInference's or the GenAI conventions' attributes."""
    kind = attributes.get("openinference.span.kind")
    if kind is not None:
        return kind in _LLM_KINDS
    operation = attributes.get("gen_ai.operation.name")
    if operation is not None:
        return operation in _MODEL_OPERATIONS
    return "gen_ai.request.model" in attributes or "gen_ai.response.model" in attributes


def agent_name_of(span: ReadableSpan) -> str | None:
    """The agent a span stands for, if it is an agent invocation."""
    attributes = span.attributes or {}
    name = span.name or ""
    is_agent = (
        attributes.get("gen_ai.operation.name") == "invoke_agent"
        or attributes.get("openinference.span.kind") == "AGENT"
        or name.startswith("invoke_agent")
    )
    if not is_agent:
        return None
    found = _first(attributes, "gen_ai.agent.name", "agent.name", "agent_name")
    if found is None and name.startswith("invoke_agent "):
        found = name.removeprefix("invoke_agent ")
    return _text(found if found is not None else name)


@dataclass(slots=True)
class _Trace:
    first_seen: float
    parents: dict[int, int | None] = field(default_factory=dict)
    agents: dict[int, ReadableSpan] = field(default_factory=dict)
    llm: list[ReadableSpan] = field(default_factory=list)
    conversation: str | None = None
    root: ReadableSpan | None = None


def _provider(attributes: Attributes) -> tuple[ModelProvider, str]:
    raw = _first(attributes, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
    if raw is None:
        return ModelProvider.OTHER, "other"
    name = str(raw).strip().lower()[:64] or "other"
    name = otel_name(_PROVIDER_ALIASES.get(name, name))
    return _PROVIDERS.get(name, ModelProvider.OTHER), name


def _invocation_model(attributes: Attributes) -> str | None:
    raw = attributes.get("llm.invocation_parameters")
    if not isinstance(raw, str):
        return None
    try:
        parameters = json.loads(raw)
    except ValueError:
        return None
    return _text(parameters.get("model")) if isinstance(parameters, dict) else None


def _moment(nanoseconds: int | None) -> datetime:
    return datetime.fromtimestamp((nanoseconds or time.time_ns()) / 1e9, UTC)


def _derived_id(start_ns: int | None, *parts: int) -> str:
    """A 32-hex id: the start in ms (time-ordered like obsdeco's ids) and a hash of `parts`."""
    digest = hashlib.blake2b(b"".join(p.to_bytes(16) for p in parts), digest_size=10).hexdigest()
    return f"{((start_ns or 0) // 1_000_000) & (2**48 - 1):012x}{digest}"


def _error(span: ReadableSpan) -> tuple[str, str | None] | None:
    """The error type and message of a failed span, None if it did not fail."""
    if span.status.status_code is not StatusCode.ERROR:
        return None
    attributes = span.attributes or {}
    kind = attributes.get("error.type")
    message = span.status.description
    for event in span.events:
        if event.name == "exception":
            event_attributes = event.attributes or {}
            kind = kind or event_attributes.get("exception.type")
            message = message or event_attributes.get("exception.message")
    return _text(kind) or "error", None if message is None else str(message)


def _contents(attributes: Attributes) -> tuple[str | None, str | None]:
    """The prompt and completion a span carries (stored only with `capture_content`)."""
    prompt = _first(attributes, "gen_ai.input.messages", "input.value", "gen_ai.prompt")
    text = _first(
        attributes, "llm.output_messages.0.message.content", "gen_ai.completion.0.content"
    )
    if text is None:
        output = attributes.get("gen_ai.output.messages")
        if isinstance(output, str):
            try:
                messages = json.loads(output)
                text = "".join(
                    str(part.get("content", ""))
                    for message in messages
                    for part in message.get("parts", ())
                    if part.get("type") == "text"
                )
            except (ValueError, AttributeError, TypeError):
                text = output
        else:
            text = attributes.get("output.value")
    completion = completion_json(str(text), []) if text else None
    return (None if prompt is None else str(prompt)), completion


class SpanExporter(_SdkSpanExporter):
    """Records the GenAI spans of your `TracerProvider` as obsdeco calls and sessions:

        provider.add_span_processor(BatchSpanProcessor(obsdeco.otel.SpanExporter()))

    `project` is the obsdeco project of the sessions (default: the configured one);
    `max_wait_s` how long a trace's calls wait for its root span. Never fails an export: a
    fault is logged once and counted in `obsdeco.stats().internal_faults`.
    """

    def __init__(self, project: str | None = None, *, max_wait_s: float = 60.0) -> None:
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._project = None if project is None else checked_name(project, "project")
        self._collector = MetricsCollector(self._project)
        self._max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._traces: dict[int, _Trace] = {}
        self._pending = 0
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            with self._lock:
                self._take(spans)
        except Exception:
            fault("obsdeco.otel.SpanExporter.export")
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Record every call still waiting for its trace's root span."""
        try:
            with self._lock:
                for trace_id in list(self._traces):
                    self._record(trace_id)
        except Exception:
            fault("obsdeco.otel.SpanExporter.force_flush")
        return True

    def shutdown(self) -> None:
        self.force_flush()

    # --- reading spans -------------------------------------------------------------------------

    def _take(self, spans: Sequence[ReadableSpan]) -> None:
        now = time.monotonic()
        ended: list[int] = []
        for span in spans:
            context = span.context
            scope = span.instrumentation_scope
            if context is None or (scope is not None and scope.name == SCOPE_NAME):
                continue
            trace = self._traces.get(context.trace_id)
            if trace is None:
                trace = self._traces[context.trace_id] = _Trace(now)
            parent = span.parent
            local_parent = None if parent is None or parent.is_remote else parent.span_id
            trace.parents[context.span_id] = local_parent
            attributes = span.attributes or {}
            conversation = _first(attributes, "gen_ai.conversation.id", "session.id")
            if conversation is not None and trace.conversation is None:
                trace.conversation = str(conversation)
            if agent_name_of(span) is not None:
                trace.agents[context.span_id] = span
            elif is_llm_span(attributes):
                trace.llm.append(span)
                self._pending += 1
            if local_parent is None:
                trace.root = span
                ended.append(context.trace_id)
        for trace_id in ended:
            self._record(trace_id)
        for trace_id, trace in list(self._traces.items()):
            if now - trace.first_seen >= self._max_wait_s or self._pending > _PENDING_SPANS_BOUND:
                self._record(trace_id)

    def _agent_of(self, trace: _Trace, span: ReadableSpan) -> tuple[str | None, int | None]:
        """The call's agent name and the span id of its nearest agent ancestor."""
        own = _text((span.attributes or {}).get("gen_ai.agent.name"))
        seen: set[int] = set()
        parent = trace.parents.get(span.context.span_id) if span.context else None
        while parent is not None and parent not in seen:
            seen.add(parent)
            agent = trace.agents.get(parent)
            if agent is not None:
                return own or agent_name_of(agent), parent
            parent = trace.parents.get(parent)
        return own, None

    # --- recording -----------------------------------------------------------------------------

    def _record(self, trace_id: int) -> None:
        trace = self._traces.pop(trace_id)
        self._pending -= len(trace.llm)
        if not trace.llm and not trace.agents:
            return
        session = self._session_of(trace_id, trace)
        ended_at = session.ended_at
        # Open while its records go in, so that each is not followed by a new session row.
        session.ended_at = None
        ends = [ended_at] if ended_at is not None else []
        for span_id, agent in trace.agents.items():
            try:
                ends.append(self._record_agent(session, trace_id, trace, span_id, agent))
            except ValueError:
                fault("obsdeco.otel.SpanExporter: an agent span")
        for span in trace.llm:
            try:
                ends.append(self._record_call(session, trace_id, trace, span))
            except ValueError:  # pydantic's ValidationError included
                fault("obsdeco.otel.SpanExporter: an LLM span")
        if trace.root is not None:
            ends.append(_moment(trace.root.end_time))
            if trace.root.status.status_code is StatusCode.ERROR:
                session.status = "error"
                error = _error(trace.root)
                session.error_type = None if error is None else error[0]
        session.ended_at = max(ends) if ends else session.started_at
        self._close(session)

    def _session_of(self, trace_id: int, trace: _Trace) -> Session:
        if trace.conversation is not None:
            key = trace.conversation
            session_id = (
                key.lower()
                if len(key) == 32 and all(c in "0123456789abcdefABCDEF" for c in key)
                else hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
            )
            name, metadata = key[:MAX_NAME_LENGTH], {"otel.conversation_id": key}
        else:
            session_id = f"{trace_id:032x}"
            root = trace.root
            name = (root.name if root is not None else "")[:MAX_NAME_LENGTH] or "trace"
            metadata = {"otel.trace_id": session_id}
        starts = [span.start_time for span in (*trace.llm, *trace.agents.values())]
        if trace.root is not None:
            starts.append(trace.root.start_time)
        started_at = _moment(min((s for s in starts if s), default=None))
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions.move_to_end(session_id)
            if started_at < session.started_at:
                session.started_at = started_at
            return session
        settings = get_settings()
        rate = settings.sample_rate
        session = Session(
            id=session_id,
            project_name=self._project or settings.project,
            name=name,
            started_at=started_at,
            status="ok",
            metadata=metadata,
            sampled=rate >= 1.0 or random.random() < rate,
        )
        registry.note_imported(session_id)
        sessions_in_memory.start(session)
        if session.sampled:
            pipeline.submit(SessionState(session.model_copy()))
        else:
            pipeline.count_unsampled(sessions=1)
        self._sessions[session_id] = session
        while len(self._sessions) > _SESSIONS_KEPT:
            self._sessions.popitem(last=False)
        return session

    def _close(self, session: Session) -> None:
        live = sessions_in_memory.end(session.id) or sessions_in_memory.find(session.id)
        if session.sampled:
            calls = list(live.calls) if live is not None else []
            pipeline.submit(SessionEnd(session.model_copy(), calls))

    def _record_agent(
        self, session: Session, trace_id: int, trace: _Trace, span_id: int, span: ReadableSpan
    ) -> datetime:
        _, parent = self._agent_of(trace, span)
        ended_at = _moment(span.end_time)
        error = _error(span)
        self._collector.record_agent_span(
            session,
            agent_name=agent_name_of(span) or "agent",
            started_at=_moment(span.start_time),
            ended_at=ended_at,
            parent_id=None if parent is None else _derived_id(0, trace_id, parent),
            success=error is None,
            error_type=None if error is None else error[0],
            span_id=_derived_id(0, trace_id, span_id),
        )
        return ended_at

    def _record_call(
        self, session: Session, trace_id: int, trace: _Trace, span: ReadableSpan
    ) -> datetime:
        attributes = span.attributes or {}
        provider, provider_name = _provider(attributes)
        response_model = _text(_first(attributes, "gen_ai.response.model", "llm.model_name"))
        model = (
            _text(attributes.get("gen_ai.request.model"))
            or _invocation_model(attributes)
            or response_model
            or "unknown"
        )
        prompt = _count(
            attributes,
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
        )
        completion = _count(
            attributes,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        )
        cached = _count(
            attributes,
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "llm.token_count.prompt_details.cache_read",
        )
        written = _count(
            attributes,
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
            "llm.token_count.prompt_details.cache_write",
        )
        reasoning = _count(
            attributes,
            "gen_ai.usage.reasoning.output_tokens",
            "llm.token_count.completion_details.reasoning",
        )
        if prompt is not None and (cached or 0) + (written or 0) > prompt:
            # An input count that leaves the cache out (older Anthropic instrumentations).
            prompt += (cached or 0) + (written or 0)
        if completion is not None and (reasoning or 0) > completion:
            reasoning = None
        agent, _ = self._agent_of(trace, span)
        error = _error(span)
        first_chunk = _first(attributes, "gen_ai.response.time_to_first_chunk")
        finish = attributes.get("gen_ai.response.finish_reasons")
        details: dict[str, Any] = {
            "id": _derived_id(span.start_time, trace_id, span.context.span_id),  # type: ignore[union-attr]
            "timestamp": _moment(span.start_time),
            "provider_name": provider_name,
            "response_model": response_model,
            "api": "embeddings"
            if attributes.get("gen_ai.operation.name") == "embeddings"
            else None,
            "agent_name": agent,
            "cached_tokens": cached,
            "cache_creation_tokens": written,
            "reasoning_tokens": reasoning,
            "time_to_first_token_ms": (
                None if not isinstance(first_chunk, int | float) else float(first_chunk) * 1000
            ),
            "finish_reason": _text(finish[0]) if finish else None,
            "success": error is None,
            "error_type": None if error is None else error[0],
            "error_message": None if error is None else error[1],
            "metadata": {
                "otel.trace_id": f"{trace_id:032x}",
                "otel.span_id": f"{span.context.span_id:016x}",  # type: ignore[union-attr]
            },
        }
        if get_settings().capture_content:
            details["prompt"], details["completion"] = _contents(attributes)
        latency_ms = max(0, (span.end_time or 0) - (span.start_time or 0)) / 1e6
        self._collector.record_llm_call(
            session,
            provider=provider,
            model_name=model,
            latency_ms=latency_ms,
            prompt_tokens=prompt,
            completion_tokens=completion,
            **details,
        )
        return _moment(span.end_time)
