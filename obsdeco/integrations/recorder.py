"""`CallRecorder`: one observed LLM call, from its request to its `LLMCall` record.

A seam starts a recorder when a request leaves and finishes it once, when the answer (or the
error, or the end of the stream) is known. Finishing is cheap: it notes the end time and where
the facts are. Reading the facts, hashing the request and validating the record happen in
`materialize()`, off the caller's thread.

The context also carries which call is in flight (so that an SDK's retries are counted on it,
and the HTTP seam under an SDK seam does not record the same call again) and the attribution
of an explicit `wrap_*` call.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from obsdeco.collector import implicit_session, keep
from obsdeco.context import current_agent, current_session
from obsdeco.engine.budgets import Reservation, settle
from obsdeco.engine.cache import CachePlan
from obsdeco.engine.router import RuleState
from obsdeco.guard import fault, guarded, safely
from obsdeco.integrations.facts import FactsSource, ResponseFacts, capturing
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.identity import provider_name_for
from obsdeco.models import (
    MAX_CODE_LENGTH,
    MAX_COUNT,
    MAX_NAME_LENGTH,
    MAX_TOKENS,
    LLMCall,
    PendingCall,
    new_id,
    storable_text,
)

_MAX_ERROR_MESSAGE = 500
_HASH_IGNORED_KEYS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
_PROMPT_KEYS = (
    "system",
    "systemInstruction",
    "instructions",
    "messages",
    "input",
    "prompt",
    "contents",
)


# The HTTP status as the SDKs (status_code), google-genai (code), lm15 and aiohttp (status) keep it.
_STATUS_ATTRIBUTES = ("status_code", "code", "status")
# Transport failures as httpx, the SDKs and lm15 name them (a timeout is told apart first).
_CONNECTION_NAMES = ("Connect", "ProtocolError", "ReadError", "WriteError")
_MAX_CAUSES = 4

ErrorDetail = str | Callable[[], str | None] | None
"""The provider's message for a failed HTTP status, or a function reading it later."""


def classify_error(error: BaseException) -> str:
    """rate_limit, timeout, connection, auth, bad_request, server_error or other.

    An error that says nothing itself is classified by the errors it was raised from (lm15
    wraps every transport failure in one `TransportError`).
    """
    cause: BaseException | None = error
    for _ in range(_MAX_CAUSES):
        if cause is None:
            break
        kind = _error_kind(cause)
        if kind is not None:
            return kind
        cause = cause.__cause__
    return "other"


def _error_kind(error: BaseException) -> str | None:
    for attribute in _STATUS_ATTRIBUTES:
        status = getattr(error, attribute, None)
        if isinstance(status, int) and not isinstance(status, bool):
            return classify_status(status)
    name = type(error).__name__
    if "Timeout" in name:
        return "timeout"
    if any(part in name for part in _CONNECTION_NAMES):
        return "connection"
    return None


def classify_status(status: int) -> str:
    """The error type of an HTTP status of 400 or more."""
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "timeout"
    if status in (401, 403):
        return "auth"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "bad_request"
    return "other"


_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def request_hash(body: Mapping[str, Any]) -> str:
    """A stable hash of what was asked (stream flags and user tags left out)."""
    normalised = {key: value for key, value in body.items() if key not in _HASH_IGNORED_KEYS}
    text = _canonical_json.encode(normalised)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Attribution:
    """What an explicit `wrap_*` call says about itself, over what the context says."""

    project: str | None
    agent_name: str | None
    operation: str | None


_explicit: ContextVar[Attribution | None] = ContextVar("obsdeco_explicit_call", default=None)
_in_flight: ContextVar[CallRecorder | None] = ContextVar("obsdeco_call_in_flight", default=None)


def explicit_attribution() -> Attribution | None:
    """The attribution of the explicit `wrap_*` call running in this context, if any."""
    return _explicit.get()


def set_explicit(attribution: Attribution) -> Token[Attribution | None]:
    return _explicit.set(attribution)


def reset_explicit(token: Token[Attribution | None]) -> None:
    _explicit.reset(token)


def in_flight() -> CallRecorder | None:
    """The call a seam is recording in this context, if any (lower seams then stand aside)."""
    return _in_flight.get()


def set_in_flight(recorder: CallRecorder) -> Token[CallRecorder | None]:
    return _in_flight.set(recorder)


def reset_in_flight(token: Token[CallRecorder | None]) -> None:
    _in_flight.reset(token)


class sending:
    """The request of `recorder` being sent: it is the call in flight in this context (so lower
    seams stand aside and SDK retries count on it), and an exception that ends the send fails
    the call, then propagates unchanged. Works around `await` as well."""

    __slots__ = ("_recorder", "_token")

    def __init__(self, recorder: CallRecorder) -> None:
        self._recorder = recorder

    def __enter__(self) -> None:
        self._token = _in_flight.set(self._recorder)

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        _in_flight.reset(self._token)
        if error is not None:
            self._recorder.record(None, error)


@guarded()
def note_retry(response: Any) -> None:
    """Count an SDK retry against the call in flight in this context (if obsdeco observes it).

    `response` is the failed attempt's HTTP response (None for a timeout or connection error).
    """
    recorder = _in_flight.get()
    if recorder is not None:
        recorder.retries += 1
        if getattr(response, "status_code", None) == 429:
            recorder.rate_limited_retries += 1


_materializing = threading.Lock()
_finishing = threading.Lock()


class CallRecorder(PendingCall):
    """One LLM call being observed: started at construction, finished exactly once.

    Finishing only notes the end time and where the facts are (a response to read later, or
    a stream's accumulated facts) and hands the recorder to the collector. Reading the facts,
    hashing the request and validating the record happen in `materialize()`, off the caller's
    thread (on the writer thread, or when a report is built).
    """

    __slots__ = (
        "_call",
        "_key",
        "agent_name",
        "api",
        "body",
        "cache_hit",
        "cache_plan",
        "call_id",
        "ended",
        "error",
        "error_detail",
        "error_status",
        "facts_source",
        "first_token_at",
        "format",
        "hide_usage_chunk",
        "host",
        "model",
        "operation",
        "planned",
        "rate_limited_retries",
        "requested_model",
        "reservations",
        "retries",
        "route_applied",
        "route_rule",
        "routed_from",
        "session",
        "shadow_model",
        "started",
        "started_wall",
        "streamed",
    )

    def __init__(
        self,
        format: ProviderFormat,
        api: str,
        body: Mapping[str, Any],
        *,
        model: str | None = None,
        streamed: bool | None = None,
        host: str | None = None,
        attribution: Attribution | None = None,
        project: str | None = None,
    ) -> None:
        agent = current_agent()
        self.format = format
        self.api = api
        self.body: Mapping[str, Any] | None = body
        self.model = model if model is not None else body.get("model")
        self.streamed = bool(body.get("stream")) if streamed is None else streamed
        self.host = host
        if attribution is not None:
            project = attribution.project
        self.session = current_session() or implicit_session(project)
        explicit_agent = attribution.agent_name if attribution else None
        explicit_operation = attribution.operation if attribution else None
        self.agent_name = explicit_agent or (agent.name if agent else None)
        self.operation = explicit_operation or (agent.operation if agent else None)
        self.hide_usage_chunk = False
        self.retries = 0
        self.rate_limited_retries = 0
        self.first_token_at: float | None = None
        self.facts_source: FactsSource = None
        self.error: BaseException | None = None
        self.error_status: int | None = None
        self.error_detail: ErrorDetail = None
        self.ended = 0.0
        self.planned = False
        self.cache_hit: bool | None = None
        self.cache_plan: CachePlan | None = None
        self.requested_model: str | None = None
        self.routed_from: str | None = None
        self.shadow_model: str | None = None
        self.route_rule: RuleState | None = None
        self.reservations: list[Reservation] = []
        self.route_applied = False
        """Whether the seam that planned the call sent its request for the routed model."""
        self.call_id: str | None = None
        self._key: str | None = None
        self._call: LLMCall | None = None
        self.started_wall = time.time()
        self.started = time.perf_counter()

    @guarded()
    def record(
        self,
        facts: FactsSource,
        error: BaseException | None = None,
        *,
        error_status: int | None = None,
        error_detail: ErrorDetail = None,
        ended: float | None = None,
    ) -> None:
        """Finish the call (the first time only) and hand it to the collector.

        A failure is an exception (`error`) or, where no exception is raised (an HTTP client
        returning an error response), its HTTP status (`error_status`) with the provider's
        message (`error_detail`, read when the record is built). `ended` is when the call
        ended (`time.perf_counter()`), if not now.
        """
        with _finishing:  # two threads may finish one stream (one reads, one closes)
            if self.ended:
                return
            self.ended = time.perf_counter() if ended is None else ended
        self.facts_source = facts
        self.error = error
        self.error_status = error_status
        self.error_detail = error_detail
        keep(self.session, self)
        if self.reservations:
            settle(self.reservations, self.materialize())
        rule = self.route_rule
        if rule is not None and self.call_id is not None:
            rule.observe(self.call_id, error is None and error_status is None)

    def request_key(self) -> str | None:
        """The request's hash, computed once (the cache looks it up before the call)."""
        if self._key is None:
            self._key = _safe_hash(self.body, self.model)
        return self._key

    def materialize(self) -> LLMCall:
        """The `LLMCall` of this finished call, built once; never raises."""
        call = self._call
        if call is not None:
            return call
        with _materializing:
            if self._call is None:
                self._call = self._build()
                # release the request and response
                self.body = self.facts_source = self.error_detail = None
            return self._call

    def built(self) -> LLMCall | None:
        return self._call

    def _failure(self) -> tuple[str | None, str | None]:
        """(error_type, error_message) of the call; (None, None) when it succeeded."""
        if self.error is not None:
            return classify_error(self.error), str(self.error)[:_MAX_ERROR_MESSAGE]
        if self.error_status is not None:
            message = f"HTTP {self.error_status}"
            detail = _read_detail(self.error_detail)
            if detail:
                message = f"{message}: {detail}"
            return classify_status(self.error_status), message[:_MAX_ERROR_MESSAGE]
        return None, None

    def _build(self) -> LLMCall:
        facts = _read_facts(self.facts_source)
        provider_name = self.format.provider_name
        first_token = self.first_token_at
        error_type, error_message = self._failure()
        fields: dict[str, Any] = {
            "id": self.call_id or new_id(),
            "session_id": self.session.id,
            "project_name": self.session.project_name,
            "timestamp": datetime.fromtimestamp(self.started_wall, UTC),
            "provider": self.format.provider,
            "provider_name": safely(
                "provider_name_for", partial(provider_name_for, self.host, provider_name)
            )
            or provider_name,
            "model": _reported_text(self.model, MAX_NAME_LENGTH) or "unknown",
            "response_model": _reported_text(facts.response_model, MAX_NAME_LENGTH),
            "api": self.api,
            "agent_name": self.agent_name,
            "operation": self.operation,
            "prompt_tokens": _reported_count(facts.prompt_tokens, MAX_TOKENS),
            "completion_tokens": _reported_count(facts.completion_tokens, MAX_TOKENS),
            "cached_tokens": _reported_count(facts.cached_tokens, MAX_TOKENS),
            "cache_creation_tokens": _reported_count(facts.cache_creation_tokens, MAX_TOKENS),
            "reasoning_tokens": _reported_count(facts.reasoning_tokens, MAX_TOKENS),
            "latency_ms": (self.ended - self.started) * 1000.0,
            "time_to_first_token_ms": (
                None if first_token is None else (first_token - self.started) * 1000.0
            ),
            "streamed": self.streamed,
            "success": error_type is None,
            "error_type": error_type,
            "error_message": error_message,
            "finish_reason": _reported_text(facts.finish_reason, MAX_CODE_LENGTH),
            "tool_call_count": _reported_count(facts.tool_call_count, MAX_COUNT),
            "retries": self.retries,
            "rate_limited_retries": self.rate_limited_retries,
            "cost_usd": None,
            "request_hash": self.request_key(),
            "cache_hit": self.cache_hit,
            "requested_model": _reported_text(self.requested_model, MAX_NAME_LENGTH),
            "routed_from": self.routed_from,
            "shadow_model": self.shadow_model,
            "experiments": self.experiments,
            "metadata": {},
        }
        if capturing():
            fields["prompt"] = _prompt_of(self.body)
            fields["completion"] = _completion_of(facts)
        try:
            return LLMCall.model_validate(fields)
        except ValidationError:
            # Parts the provider reported beyond their totals: the totals are kept, the parts
            # become unknown. Anything still invalid is obsdeco's fault, stored as built.
            for part in ("cached_tokens", "cache_creation_tokens", "reasoning_tokens"):
                fields[part] = None
            try:
                return LLMCall.model_validate(fields)
            except ValidationError:
                fault("CallRecorder._build")
                return LLMCall.model_construct(**fields)


def _reported_count(value: Any, limit: int) -> int | None:
    """A count as the provider reported it, or None (unknown) when it is none a store holds:
    not a whole number (SDKs do not validate usage), negative, or beyond `limit`."""
    if type(value) is int:
        return value if 0 <= value <= limit else None
    if type(value) is float and value.is_integer() and 0 <= value <= limit:
        return int(value)
    return None


def _reported_text(value: Any, limit: int) -> str | None:
    """A name as the provider reported it, made storable: text, cut to `limit` characters."""
    if type(value) is str and value.isascii() and len(value) <= limit and "\x00" not in value:
        return value or None  # the common case, with nothing to clean
    if not isinstance(value, str):
        return None if value is None else _reported_text(str(value), limit)
    return storable_text(value)[:limit] or None


@guarded(default=ResponseFacts())
def _read_facts(source: FactsSource) -> ResponseFacts:
    if source is None:
        return ResponseFacts()
    if isinstance(source, ResponseFacts):
        return source
    return source()


@guarded()
def _read_detail(detail: ErrorDetail) -> str | None:
    return detail() if callable(detail) else detail


@guarded()
def _prompt_of(body: Mapping[str, Any] | None) -> str | None:
    """The request's content (system prompt, messages, input) as JSON."""
    if not body:
        return None
    content = {key: body[key] for key in _PROMPT_KEYS if body.get(key) is not None}
    return json.dumps(content, ensure_ascii=False, default=str) if content else None


@guarded()
def _completion_of(facts: ResponseFacts) -> str | None:
    return None if facts.completion is None else facts.completion()


@guarded()
def _safe_hash(body: Mapping[str, Any] | None, model: Any) -> str | None:
    """The request's hash; a model named in the URL (Gemini) counts as if in the body."""
    if body is None:
        return None
    if model is not None and "model" not in body:
        body = {**body, "model": model}
    return request_hash(body)
