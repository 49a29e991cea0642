"""What every provider integration shares: timing, error classification, record building, and
the observed stream and raw-response proxies.

A provider integration (see `openai.py`, `anthropic.py`) only says which endpoints it knows and
how to read facts (model, usage, finish reason, tool calls) out of that provider's responses and
stream events. Everything else lives here, once, and is used both by the patches that
`patch_all()` installs and by the explicit `wrap_*` methods.

Do no harm: every piece of obsdeco code that runs inside a user's SDK call goes through
`guarded`, so an obsdeco fault is logged (once per place) and swallowed; only the SDK's own
results and exceptions ever reach the user.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial, wraps
from typing import Any, ClassVar, ParamSpec, TypeVar

import wrapt
from pydantic import ValidationError

from obsdeco.collector import MetricsCollector, implicit_session, keep
from obsdeco.config import get_settings
from obsdeco.context import current_agent, current_session
from obsdeco.models import LLMCall, ModelProvider, PendingCall, new_id
from obsdeco.runtime import pipeline

logger = logging.getLogger("obsdeco.integrations")

P = ParamSpec("P")
R = TypeVar("R")

_MAX_ERROR_MESSAGE = 500
_HASH_IGNORED_KEYS = frozenset({"stream", "stream_options", "user", "metadata", "store"})

_logged_faults: set[str] = set()


def _log_fault_once(place: str) -> None:
    """Log the exception being handled, the first time one happens at `place`."""
    if place not in _logged_faults:
        _logged_faults.add(place)
        logger.exception("obsdeco fault in %s (ignored; your call is unaffected)", place)


def guarded(default: Any = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run obsdeco code so that a fault in it is logged once per function and never raised."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except Exception:
                _log_fault_once(function.__qualname__)
                return default  # type: ignore[no-any-return]

        return run

    return decorate


def field(obj: Any, name: str) -> Any:
    """`obj.name` for SDK objects, `obj[name]` for parsed JSON; None when absent."""
    if type(obj) is dict:
        return obj.get(name)
    return getattr(obj, name, None)


def classify_error(error: BaseException) -> str:
    """rate_limit, timeout, connection, auth, bad_request, server_error or other."""
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
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
    name = type(error).__name__
    if "Timeout" in name:
        return "timeout"
    if "Connection" in name or "RemoteProtocol" in name:
        return "connection"
    return "other"


_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def request_hash(body: Mapping[str, Any]) -> str:
    """A stable hash of what was asked (stream flags and user tags left out)."""
    normalised = {key: value for key, value in body.items() if key not in _HASH_IGNORED_KEYS}
    text = _canonical_json.encode(normalised)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(slots=True)
class ResponseFacts:
    """What a response (or a stream, once seen) says about the call. None means not reported."""

    response_model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    tool_call_count: int | None = None
    completion: Callable[[], str | None] | None = None
    """Builds the answer's text and tool calls as JSON; set only with capture_content."""


def completion_json(text: str, tool_calls: list[dict[str, str]]) -> str | None:
    """The stored form of an answer: {"text", "tool_calls": [{"name", "arguments"}]}."""
    if not text and not tool_calls:
        return None
    return json.dumps({"text": text, "tool_calls": tool_calls}, ensure_ascii=False)


def capturing() -> bool:
    return get_settings().capture_content


class StreamAccumulator:
    """Collects facts from stream events; `observe` returns True for an event to hide.

    With capture_content, `capture` is True and the accumulator also gathers the answer's text
    and tool calls, which `facts.completion` turns into JSON when the record is built.
    """

    def __init__(self) -> None:
        self.facts = ResponseFacts()
        self.capture = capturing()

    def observe(self, event: Any) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Attribution:
    """What an explicit `wrap_*` call says about itself, over what the context says."""

    project: str | None
    agent_name: str | None
    operation: str | None


_explicit: ContextVar[Attribution | None] = ContextVar("obsdeco_explicit_call", default=None)

_in_flight: ContextVar[CallRecorder | None] = ContextVar("obsdeco_call_in_flight", default=None)


def note_retry(response: Any) -> None:
    """Count an SDK retry against the call in flight in this context (if obsdeco observes it).

    `response` is the failed attempt's HTTP response (None for a timeout or connection error).
    """
    recorder = _in_flight.get()
    if recorder is not None:
        recorder.retries += 1
        if getattr(response, "status_code", None) == 429:
            recorder.rate_limited_retries += 1


FactsSource = ResponseFacts | Callable[[], ResponseFacts] | None

_materializing = threading.Lock()


class CallRecorder(PendingCall):
    """One LLM call being observed: started at construction, finished exactly once.

    Finishing only notes the end time and where the facts are (a response to read later, or
    a stream's accumulated facts) and hands the recorder to the collector. Reading the facts,
    hashing the request and validating the record happen in `materialize()`, off the caller's
    thread (on the writer thread, or when a report is built).
    """

    __slots__ = (
        "_call",
        "agent_name",
        "api",
        "body",
        "ended",
        "error",
        "facts_source",
        "first_token_at",
        "hide_usage_chunk",
        "operation",
        "provider",
        "rate_limited_retries",
        "retries",
        "session",
        "started",
        "started_wall",
        "streamed",
    )

    def __init__(
        self,
        provider: ModelProvider,
        api: str,
        body: Mapping[str, Any],
        *,
        project: str | None = None,
        agent_name: str | None = None,
        operation: str | None = None,
    ) -> None:
        agent = current_agent()
        self.provider = provider
        self.api = api
        self.body: Mapping[str, Any] | None = body
        self.streamed = bool(body.get("stream"))
        self.session = current_session() or implicit_session(project)
        self.agent_name = agent_name or (agent.name if agent else None)
        self.operation = operation or (agent.operation if agent else None)
        self.hide_usage_chunk = False
        self.retries = 0
        self.rate_limited_retries = 0
        self.first_token_at: float | None = None
        self.facts_source: FactsSource = None
        self.error: BaseException | None = None
        self.ended = 0.0
        self._call: LLMCall | None = None
        self.started_wall = time.time()
        self.started = time.perf_counter()

    @guarded()
    def record(self, facts: FactsSource, error: BaseException | None = None) -> None:
        """Finish the call (the first time only) and hand it to the collector."""
        if self.ended:
            return
        self.ended = time.perf_counter()
        self.facts_source = facts
        self.error = error
        keep(self.session, self)

    def materialize(self) -> LLMCall:
        """The `LLMCall` of this finished call, built once; never raises."""
        call = self._call
        if call is not None:
            return call
        with _materializing:
            if self._call is None:
                self._call = self._build()
                self.body = self.facts_source = None  # release the request and response
            return self._call

    def _build(self) -> LLMCall:
        source, error, first_token = self.facts_source, self.error, self.first_token_at
        facts = _read_facts(source)
        fields = {
            "id": new_id(),
            "session_id": self.session.id,
            "project_name": self.session.project_name,
            "timestamp": datetime.fromtimestamp(self.started_wall, UTC),
            "provider": self.provider,
            "model": str((self.body or {}).get("model") or "unknown"),
            "response_model": facts.response_model,
            "api": self.api,
            "agent_name": self.agent_name,
            "operation": self.operation,
            "prompt_tokens": facts.prompt_tokens,
            "completion_tokens": facts.completion_tokens,
            "cached_tokens": facts.cached_tokens,
            "cache_creation_tokens": facts.cache_creation_tokens,
            "reasoning_tokens": facts.reasoning_tokens,
            "latency_ms": (self.ended - self.started) * 1000.0,
            "time_to_first_token_ms": (
                None if first_token is None else (first_token - self.started) * 1000.0
            ),
            "streamed": self.streamed,
            "success": error is None,
            "error_type": None if error is None else classify_error(error),
            "error_message": None if error is None else str(error)[:_MAX_ERROR_MESSAGE],
            "finish_reason": facts.finish_reason,
            "tool_call_count": facts.tool_call_count,
            "retries": self.retries,
            "rate_limited_retries": self.rate_limited_retries,
            "cost_usd": None,
            "request_hash": _safe_hash(self.body),
            "metadata": {},
        }
        if capturing():
            fields["prompt"] = _prompt_of(self.body)
            fields["completion"] = _completion_of(facts)
        try:
            return LLMCall.model_validate(fields)
        except ValidationError:
            return LLMCall.model_construct(**fields)  # odd SDK data is stored as reported


@guarded(default=ResponseFacts())
def _read_facts(source: FactsSource) -> ResponseFacts:
    if source is None:
        return ResponseFacts()
    if isinstance(source, ResponseFacts):
        return source
    return source()


_PROMPT_KEYS = ("system", "instructions", "messages", "input", "prompt")


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
def _safe_hash(body: Mapping[str, Any] | None) -> str | None:
    return None if body is None else request_hash(body)


def _record_later(recorder: CallRecorder, facts: FactsSource) -> None:
    """For a stream or response dropped without being closed: record from the writer thread,
    not from the garbage collector (which may run while this thread holds a lock obsdeco
    needs). Nothing to do if the call was already recorded."""
    if not recorder.ended:
        pipeline.defer(lambda: recorder.record(facts))


def _observe_event(accumulator: StreamAccumulator, event: Any) -> bool:
    """Feed one stream event to its accumulator; True to hide it. Never raises: a fault is
    logged once and the stream is passed on as is."""
    try:
        return accumulator.observe(event)
    except Exception:
        _log_fault_once("StreamAccumulator.observe")
        return False


class ObservedStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """A sync SDK stream that records its call once: exhausted, errored, closed or dropped.

    Everything else (attributes, `response`, context manager, helpers) is the SDK's own.
    """

    def __init__(self, stream: Any, recorder: CallRecorder, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_recorder = recorder
        self._self_accumulator = accumulator

    def __iter__(self) -> ObservedStream:
        return self

    def __next__(self) -> Any:
        recorder = self._self_recorder
        try:
            while True:
                event = self.__wrapped__.__next__()
                if recorder.first_token_at is None:
                    recorder.first_token_at = time.perf_counter()
                if not _observe_event(self._self_accumulator, event):
                    return event
        except StopIteration:
            recorder.record(self._self_accumulator.facts)
            raise
        except BaseException as error:
            recorder.record(self._self_accumulator.facts, error)
            raise

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    def __enter__(self) -> ObservedStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    def __del__(self) -> None:
        _record_later(self._self_recorder, self._self_accumulator.facts)


class ObservedAsyncStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """The async twin of `ObservedStream`."""

    def __init__(self, stream: Any, recorder: CallRecorder, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_recorder = recorder
        self._self_accumulator = accumulator

    def __aiter__(self) -> ObservedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        recorder = self._self_recorder
        try:
            while True:
                event = await self.__wrapped__.__anext__()
                if recorder.first_token_at is None:
                    recorder.first_token_at = time.perf_counter()
                if not _observe_event(self._self_accumulator, event):
                    return event
        except StopAsyncIteration:
            recorder.record(self._self_accumulator.facts)
            raise
        except BaseException as error:
            recorder.record(self._self_accumulator.facts, error)
            raise

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    async def __aenter__(self) -> ObservedAsyncStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    def __del__(self) -> None:
        _record_later(self._self_recorder, self._self_accumulator.facts)


class ProviderIntegration:
    """The shared seam logic; subclasses describe one provider's SDK.

    Subclasses set `provider` and `endpoints` (request path to API name) and implement
    `sdk_types`, `response_facts` and `stream_accumulator`.
    """

    provider: ClassVar[ModelProvider]
    endpoints: ClassVar[Mapping[str, str]]

    def __init__(self, collector: MetricsCollector | None = None) -> None:
        self.collector = collector
        self._stream_type, self._async_stream_type, self._raw_types = self.sdk_types()

    # --- what a provider module supplies ----------------------------------------------------

    def response_facts(self, api: str, response: Any) -> ResponseFacts:
        """Facts from a parsed response object or its JSON body."""
        raise NotImplementedError

    def stream_accumulator(self, api: str, recorder: CallRecorder) -> StreamAccumulator:
        raise NotImplementedError

    def body_facts(self, api: str, http_response: Any) -> ResponseFacts:
        """Facts from a raw response whose (JSON) body has been read; empty otherwise."""
        if not _body_read(http_response):
            return ResponseFacts()
        return self.response_facts(api, http_response.json())

    def sdk_types(self) -> tuple[type, type, tuple[type, ...]]:
        """The SDK's sync stream class, async stream class, and raw response classes."""
        raise NotImplementedError

    def is_stream(self, result: Any) -> bool:
        return isinstance(result, self._stream_type)

    def is_async_stream(self, result: Any) -> bool:
        return isinstance(result, self._async_stream_type)

    def is_raw_response(self, result: Any) -> bool:
        return isinstance(result, self._raw_types)

    def prepare(self, recorder: CallRecorder, options: Any) -> Any:
        """Adjust a streamed request before it is sent (by default: not at all)."""
        return options

    # --- the seam ---------------------------------------------------------------------------

    @guarded()
    def start(self, options: Any) -> CallRecorder | None:
        """A recorder for an SDK request, or None when it is not an LLM call we know."""
        method = getattr(options, "method", None)
        if method != "post" and not (isinstance(method, str) and method.lower() == "post"):
            return None
        url = getattr(options, "url", None)
        api = self.endpoints.get(url) or self.endpoints.get(str(url).split("?", 1)[0])
        body = getattr(options, "json_data", None)
        if api is None or not (type(body) is dict or isinstance(body, Mapping)):
            return None
        explicit = _explicit.get()
        if explicit is None:
            project = self.collector.project_name if self.collector is not None else None
            return CallRecorder(self.provider, api, body, project=project)
        return CallRecorder(
            self.provider,
            api,
            body,
            project=explicit.project,
            agent_name=explicit.agent_name,
            operation=explicit.operation,
        )

    def request(
        self, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The sync SDK request, observed."""
        cast_to, options, rest = _split_request_args(args, kwargs)
        recorder = self.start(options)
        if recorder is None:
            return wrapped(*args, **kwargs)
        if recorder.streamed:
            options = self._prepared(recorder, options)
        token = _in_flight.set(recorder)
        try:
            result = wrapped(cast_to, options, *rest, **kwargs)
        except BaseException as error:
            recorder.record(None, error)
            raise
        finally:
            _in_flight.reset(token)
        return self._observed(recorder, result)

    async def async_request(
        self, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The async SDK request, observed."""
        cast_to, options, rest = _split_request_args(args, kwargs)
        recorder = self.start(options)
        if recorder is None:
            return await wrapped(*args, **kwargs)
        if recorder.streamed:
            options = self._prepared(recorder, options)
        token = _in_flight.set(recorder)
        try:
            result = await wrapped(cast_to, options, *rest, **kwargs)
        except BaseException as error:
            recorder.record(None, error)
            raise
        finally:
            _in_flight.reset(token)
        return self._observed(recorder, result)

    def _prepared(self, recorder: CallRecorder, options: Any) -> Any:
        try:
            return self.prepare(recorder, options)
        except Exception:
            _log_fault_once(f"{type(self).__name__}.prepare")
            return options

    @guarded()
    def _wrap_result(self, recorder: CallRecorder, result: Any) -> Any:
        if self.is_raw_response(result):
            return self._raw(recorder, result)
        if self.is_stream(result):
            return ObservedStream(result, recorder, self.stream_accumulator(recorder.api, recorder))
        if self.is_async_stream(result):
            accumulator = self.stream_accumulator(recorder.api, recorder)
            return ObservedAsyncStream(result, recorder, accumulator)
        recorder.record(partial(self.response_facts, recorder.api, result))
        return result

    def _observed(self, recorder: CallRecorder, result: Any) -> Any:
        wrapped = self._wrap_result(recorder, result)
        return result if wrapped is None else wrapped

    def _raw(self, recorder: CallRecorder, response: Any) -> Any:
        """A raw response (`with_raw_response`, `with_streaming_response`).

        When its body is already read (not streamed), the call is recorded now from the JSON
        body; otherwise it is recorded when the user parses it (a parsed stream is observed
        like any other) or, failing that, when it is closed or dropped.
        """
        http_response = field(response, "http_response")
        streamed_body = recorder.streamed or not _body_read(http_response)
        if not streamed_body:
            recorder.record(partial(self.body_facts, recorder.api, http_response))
            return response
        if _is_coroutine_function(getattr(response, "parse", None)):
            return ObservedAsyncResponse(response, recorder, self)
        return ObservedResponse(response, recorder, self)


def _split_request_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Any, tuple[Any, ...]]:
    """(cast_to, options, remaining positional) of `request(cast_to, options, ...)`."""
    if len(args) >= 2:
        return args[0], args[1], args[2:]
    cast_to = args[0] if args else kwargs.pop("cast_to")
    return cast_to, kwargs.pop("options"), ()


def _body_read(http_response: Any) -> bool:
    try:
        http_response.content  # noqa: B018 -- raises when the body has not been read
    except Exception:
        return False
    return True


def _is_coroutine_function(function: Any) -> bool:
    return inspect.iscoroutinefunction(function)


class _ObservedResponseBase(wrapt.ObjectProxy):  # type: ignore[misc]
    """A raw SDK response whose parsed result is observed; recorded once in any case: when
    parsed, else when closed or dropped, with what the body or the parsed stream showed."""

    def __init__(
        self, response: Any, recorder: CallRecorder, integration: ProviderIntegration
    ) -> None:
        super().__init__(response)
        self._self_recorder = recorder
        self._self_integration = integration
        self._self_stream: StreamAccumulator | None = None

    def _self_observe(self, parsed: Any) -> Any:
        observed = self._self_integration._observed(self._self_recorder, parsed)
        if isinstance(observed, ObservedStream | ObservedAsyncStream):
            self._self_stream = observed._self_accumulator
        return observed

    def _self_facts(self) -> FactsSource:
        if self._self_stream is not None:
            return self._self_stream.facts
        http_response = field(self.__wrapped__, "http_response")
        return partial(self._self_integration.body_facts, self._self_recorder.api, http_response)

    def __del__(self) -> None:
        if self._self_stream is None:  # a parsed stream records the call itself
            _record_later(self._self_recorder, self._self_facts())


class ObservedResponse(_ObservedResponseBase):
    """A sync raw response (`with_raw_response`, `with_streaming_response`)."""

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(self.__wrapped__.parse(*args, **kwargs))

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_facts())


class ObservedAsyncResponse(_ObservedResponseBase):
    """The async twin of `ObservedResponse`."""

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(await self.__wrapped__.parse(*args, **kwargs))

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_facts())


def explicit_call(
    integration: ProviderIntegration,
    method: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    agent_name: str | None,
    operation: str | None,
) -> Any:
    """Call an SDK method so that it is recorded once, by the same seam code as the patches,
    with this attribution (the seam is installed on first use if `patch_all()` was not called;
    until then it only observes explicit calls)."""
    from obsdeco.integrations.patching import ensure_seam

    ensure_seam(type(integration))
    project = integration.collector.project_name if integration.collector else None
    attribution = Attribution(project, agent_name, operation)
    token = _explicit.set(attribution)
    try:
        result = method(**kwargs)
    finally:
        _explicit.reset(token)
    if inspect.isawaitable(result):
        return _awaited_with(attribution, result)
    return result


async def _awaited_with(attribution: Attribution, awaitable: Awaitable[Any]) -> Any:
    token = _explicit.set(attribution)
    try:
        return await awaitable
    finally:
        _explicit.reset(token)


def explicit_attribution() -> Attribution | None:
    """The attribution of the explicit `wrap_*` call running in this context, if any."""
    return _explicit.get()
