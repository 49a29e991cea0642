"""OpenTelemetry spans of obsdeco's records: a session span, `invoke_agent {agent}` spans and one
CLIENT span per LLM call, with the GenAI semantic-convention attributes and OpenInference's.

Ids are derived from the records' ids, so a record always becomes the same span: the trace id is
the session id's 128 bits, span ids are hashes of the record ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from obsdeco._version import __version__
from obsdeco.models import AgentSpan, LLMCall, Session
from obsdeco.otlp.content import content_attributes
from obsdeco.storage import SessionState

SCOPE_NAME = "obsdeco"
"""The instrumentation scope of every span obsdeco exports (the import leaves them out)."""

_SCOPE = InstrumentationScope(SCOPE_NAME, __version__)

_OPERATIONS = {
    "chat.completions": "chat",
    "responses": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "generate_content": "generate_content",
}
"""`LLMCall.api` -> `gen_ai.operation.name`; an API not listed is a chat."""

_ERROR_MESSAGE_CHARS = 500

Attributes = dict[str, AttributeValue]


def operation_name(call: LLMCall) -> str:
    """The call's `gen_ai.operation.name`."""
    return _OPERATIONS.get(call.api or "", "chat")


def trace_id_of(key: str) -> int:
    """The trace id of a session (or of a call without one): its id when that is 32 hex digits,
    else a hash of it."""
    if len(key) == 32:
        try:
            value = int(key, 16)
        except ValueError:
            value = 0
        if value:
            return value
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest()) or 1


def span_id_of(kind: str, record_id: str) -> int:
    """A span id derived from a record's kind and id."""
    digest = hashlib.blake2b(f"{kind}:{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) or 1


def nanoseconds(moment: datetime) -> int:
    """Nanoseconds since the Unix epoch (what OTLP carries)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def call_end(call: LLMCall) -> datetime:
    return call.timestamp + timedelta(milliseconds=call.latency_ms)


@dataclass(frozen=True, slots=True)
class CallCost:
    """A call's cost in USD and its input and output parts; None where it is unknown."""

    total: float | None = None
    prompt: float | None = None
    completion: float | None = None


@dataclass(frozen=True, slots=True)
class SpanFactory:
    """Builds the spans of one exporter (its resource and content setting)."""

    resource: Resource
    capture_content: bool

    def _span(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int | None,
        start: datetime,
        end: datetime,
        attributes: Attributes,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        error: str | None = None,
    ) -> ReadableSpan:
        flags = TraceFlags(TraceFlags.SAMPLED)
        return ReadableSpan(
            name=name,
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags),
            parent=(
                None
                if parent_id is None
                else SpanContext(trace_id, parent_id, is_remote=False, trace_flags=flags)
            ),
            resource=self.resource,
            attributes=attributes,
            kind=kind,
            status=Status(StatusCode.UNSET) if error is None else Status(StatusCode.ERROR, error),
            start_time=nanoseconds(start),
            end_time=nanoseconds(max(start, end)),
            instrumentation_scope=_SCOPE,
        )

    def session_span(
        self, state: SessionState, trace_id: int, parent_id: int | None, end: datetime
    ) -> ReadableSpan:
        """The span of a session, ending at `end` when the session has not ended."""
        session = state.session
        attributes: Attributes = {
            "openinference.span.kind": "CHAIN",
            "session.id": session.id,
            "gen_ai.conversation.id": session.id,
            "obsdeco.project": session.project_name,
            "obsdeco.session.id": session.id,
            "obsdeco.session.status": session.status,
        }
        if session.name is not None:
            attributes["obsdeco.session.name"] = session.name
        totals = state.totals
        if totals is not None:
            attributes["obsdeco.session.calls"] = totals.calls
            attributes["obsdeco.session.errors"] = totals.errors
            if totals.cost_usd is not None:
                attributes["obsdeco.session.cost_usd"] = totals.cost_usd
        error = None
        if session.status == "error":
            attributes["error.type"] = session.error_type or "_OTHER"
            error = _short(session.error_message) or session.error_type or "error"
        return self._span(
            f"session {session.name}" if session.name else "session",
            trace_id,
            session_span_id(session),
            parent_id,
            session.started_at,
            session.ended_at or end,
            attributes,
            error=error,
        )

    def agent_span(self, span: AgentSpan, trace_id: int, parent_id: int | None) -> ReadableSpan:
        """The `invoke_agent {agent}` span of an agent invocation."""
        attributes: Attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": span.agent_name,
            "gen_ai.conversation.id": span.session_id,
            "openinference.span.kind": "AGENT",
            "session.id": span.session_id,
        }
        if span.operation is not None:
            attributes["obsdeco.operation"] = span.operation
        error = None
        if not span.success:
            attributes["error.type"] = span.error_type or "_OTHER"
            error = span.error_type or "error"
        return self._span(
            f"invoke_agent {span.agent_name}",
            trace_id,
            span_id_of("agent", span.id),
            parent_id,
            span.started_at,
            span.ended_at,
            attributes,
            error=error,
        )

    def call_span(
        self, call: LLMCall, cost: CallCost, trace_id: int, parent_id: int | None
    ) -> ReadableSpan:
        """The CLIENT span `{operation} {model}` of an LLM call."""
        operation = operation_name(call)
        attributes = call_attributes(call, cost, operation)
        if self.capture_content:
            attributes.update(content_attributes(call))
        error = None
        if not call.success:
            attributes["error.type"] = call.error_type or "_OTHER"
            error = _short(call.error_message) or call.error_type or "error"
        return self._span(
            f"{operation} {call.model}",
            trace_id,
            span_id_of("call", call.id),
            parent_id,
            call.timestamp,
            call_end(call),
            attributes,
            kind=SpanKind.CLIENT,
            error=error,
        )


def session_span_id(session: Session) -> int:
    return span_id_of("session", session.id)


def call_attributes(call: LLMCall, cost: CallCost, operation: str) -> Attributes:
    """The GenAI and OpenInference attributes of a call; a count not reported is absent."""
    attributes: Attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": call.provider_name,
        "gen_ai.request.model": call.model,
        "gen_ai.conversation.id": call.session_id,
        "session.id": call.session_id,
        "openinference.span.kind": "EMBEDDING" if operation == "embeddings" else "LLM",
        "llm.provider": call.provider_name,
        "llm.model_name": call.model_key,
        "obsdeco.call.id": call.id,
        "obsdeco.project": call.project_name,
        "obsdeco.streamed": call.streamed,
        "obsdeco.retries": call.retries,
    }
    optional: dict[str, AttributeValue | None] = {
        "gen_ai.response.model": call.response_model,
        "gen_ai.agent.name": call.agent_name,
        "obsdeco.operation": call.operation,
        "gen_ai.usage.input_tokens": call.prompt_tokens,
        "gen_ai.usage.output_tokens": call.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": call.cached_tokens,
        "gen_ai.usage.cache_creation.input_tokens": call.cache_creation_tokens,
        "gen_ai.usage.reasoning.output_tokens": call.reasoning_tokens,
        "gen_ai.response.time_to_first_chunk": (
            None if call.time_to_first_token_ms is None else call.time_to_first_token_ms / 1000
        ),
        "gen_ai.response.finish_reasons": (
            None if call.finish_reason is None else (call.finish_reason,)
        ),
        "llm.token_count.prompt": call.prompt_tokens,
        "llm.token_count.completion": call.completion_tokens,
        "llm.token_count.total": (
            None
            if call.prompt_tokens is None or call.completion_tokens is None
            else call.prompt_tokens + call.completion_tokens
        ),
        "llm.token_count.prompt_details.cache_read": call.cached_tokens,
        "llm.token_count.prompt_details.cache_write": call.cache_creation_tokens,
        "llm.token_count.completion_details.reasoning": call.reasoning_tokens,
        "gen_ai.usage.cost.amount": cost.total,
        "llm.cost.total": cost.total,
        "llm.cost.prompt": cost.prompt,
        "llm.cost.completion": cost.completion,
        "obsdeco.cache_hit": call.cache_hit,
        "obsdeco.requested_model": call.requested_model,
        "obsdeco.routed_from": call.routed_from,
    }
    attributes.update({key: value for key, value in optional.items() if value is not None})
    return attributes


def _short(message: str | None) -> str | None:
    return None if message is None else message[:_ERROR_MESSAGE_CHARS]
