"""dspy's default engine: its vendored lm15 client, observed at lm15's own request methods.

dspy (3.4 and later) sends a native call through `dspy._vendor.lm15`, which has an HTTP/1.1
stack of its own, so neither the SDK seams nor an HTTP library seam sees it. Every lm15 provider
adapter sends a request through one of two methods of its base class, whose async mirror has
the same two: `_send` (an answer read whole) and `_stream_raw` (server-sent events, which lm15
parses with `parse_sse` / `aparse_sse`). This seam observes those four methods and the two
parsers where the adapters call them: a POST to an endpoint that a known provider format names
(OpenAI-compatible, Anthropic) is recorded with that format's readers, fed the JSON body or
each event's JSON. The request's JSON is read when it leaves (for its model); the answer's,
and its events', when the record is built, off the caller's thread.

The event parser is reached from inside lm15's stream, so the first step of a stream (which
sends the request, checks the status and starts the parser) runs with its call in flight: the
parser finds the call to feed there, and no lower seam records the request again.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import wrapt

from obsdeco.guard import guarded
from obsdeco.integrations import seam
from obsdeco.integrations.facts import ResponseFacts, feed_events
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.formats import endpoint_of
from obsdeco.integrations.identity import host_key
from obsdeco.integrations.proxies import record_later
from obsdeco.integrations.recorder import (
    CallRecorder,
    in_flight,
    reset_in_flight,
    sending,
    set_in_flight,
)

logger = logging.getLogger("obsdeco.patching")

_PROVIDERS = "dspy._vendor.lm15.providers"


# --- one observed request -------------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    """A streamed call and the data of the events lm15's parser has read so far."""

    recorder: CallRecorder
    events: list[str] = field(default_factory=list)

    @guarded()
    def feed(self, event: Any) -> None:
        if self.recorder.first_token_at is None:
            self.recorder.first_token_at = time.perf_counter()
        data = getattr(event, "data", None)
        if isinstance(data, str):
            self.events.append(data)

    def finish(self, error: BaseException | None = None) -> None:
        self.recorder.record(self.facts(), error)

    def facts(self) -> Callable[[], ResponseFacts]:
        recorder = self.recorder
        return partial(_stream_facts, recorder.format, recorder.api, self.events)


_opening: ContextVar[_Stream | None] = ContextVar("obsdeco_dspy_stream_opening", default=None)


@guarded()
def _start(request: Any, *, streamed: bool) -> CallRecorder | None:
    """A recorder for an lm15 transport request, or None when it is not an LLM call we know
    (or obsdeco is not capturing, or a seam above records it already)."""
    if not seam.capture.implicit or in_flight() is not None:
        return None
    if str(getattr(request, "method", "")).upper() != "POST":
        return None
    url = urlsplit(str(getattr(request, "url", "")))
    found = endpoint_of(url.path)
    if found is None:
        return None
    format, api = found
    body = json.loads(getattr(request, "body", b"") or b"null")
    if not isinstance(body, Mapping):
        return None
    return CallRecorder(
        format,
        api,
        body,
        model=format.request_model(api, url.path, body),
        streamed=streamed,
        host=host_key(url.hostname, url.port),
    )


def _stream_facts(format: ProviderFormat, api: str, events: list[str]) -> ResponseFacts:
    accumulator = format.stream_accumulator(api, False)
    feed_events(accumulator, events)
    return accumulator.facts


@guarded()
def _record_answer(recorder: CallRecorder, response: Any) -> None:
    """Record a plain answer: an lm15 `HttpResponse`, its body read whole."""
    status = getattr(response, "status", None)
    body = getattr(response, "body", b"")
    if isinstance(status, int) and status >= 400:
        detail = partial(recorder.format.json_error_message, body)
        recorder.record(None, error_status=status, error_detail=detail)
        return
    recorder.record(partial(recorder.format.json_facts, recorder.api, body))


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str) -> Any:
    return args[position] if len(args) > position else kwargs.get(name)


# --- _send: an answer read whole ------------------------------------------------------------


def _send(wrapped: Any, _adapter: Any, args: Any, kwargs: Any) -> Any:
    recorder = _start(_request_of(args, kwargs, 0, "request"), streamed=False)
    if recorder is None:
        return wrapped(*args, **kwargs)
    with sending(recorder):
        response = wrapped(*args, **kwargs)
    _record_answer(recorder, response)
    return response


async def _async_send(wrapped: Any, _adapter: Any, args: Any, kwargs: Any) -> Any:
    recorder = _start(_request_of(args, kwargs, 0, "request"), streamed=False)
    if recorder is None:
        return await wrapped(*args, **kwargs)
    with sending(recorder):
        response = await wrapped(*args, **kwargs)
    _record_answer(recorder, response)
    return response


# --- _stream_raw: server-sent events --------------------------------------------------------


@contextlib.contextmanager
def _opened(stream: _Stream) -> Iterator[None]:
    """The call in flight (and its events' parser fed) while a stream's first step runs."""
    opening = _opening.set(stream)
    flight = set_in_flight(stream.recorder)
    try:
        yield
    finally:
        reset_in_flight(flight)
        _opening.reset(opening)


class _ObservedEvents(wrapt.ObjectProxy):  # type: ignore[misc]
    """The events lm15 makes of one streamed answer, unchanged; its call is recorded once:
    when they are exhausted, error, are closed, or are dropped."""

    def __init__(self, events: Iterator[Any], stream: _Stream) -> None:
        super().__init__(events)
        self._self_stream = stream
        self._self_opened = False

    def __iter__(self) -> _ObservedEvents:
        return self

    def __next__(self) -> Any:
        stream = self._self_stream
        try:
            if self._self_opened:
                return self.__wrapped__.__next__()
            self._self_opened = True
            with _opened(stream):
                return self.__wrapped__.__next__()
        except StopIteration:
            stream.finish()
            raise
        except BaseException as error:
            stream.finish(error)
            raise

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            if self._self_opened:
                self._self_stream.finish()

    def __del__(self) -> None:
        if self._self_opened:
            record_later(self._self_stream.recorder, self._self_stream.facts())


class _ObservedAsyncEvents(wrapt.ObjectProxy):  # type: ignore[misc]
    """The async twin of `_ObservedEvents`."""

    def __init__(self, events: AsyncIterator[Any], stream: _Stream) -> None:
        super().__init__(events)
        self._self_stream = stream
        self._self_opened = False

    def __aiter__(self) -> _ObservedAsyncEvents:
        return self

    async def __anext__(self) -> Any:
        stream = self._self_stream
        try:
            if self._self_opened:
                return await self.__wrapped__.__anext__()
            self._self_opened = True
            with _opened(stream):
                return await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            stream.finish()
            raise
        except BaseException as error:
            stream.finish(error)
            raise

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            if self._self_opened:
                self._self_stream.finish()

    def __del__(self) -> None:
        if self._self_opened:
            record_later(self._self_stream.recorder, self._self_stream.facts())


@guarded()
def _start_stream(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Stream | None:
    # `_stream_raw(request, req=None)`: without `req` (lm15's own paths always pass it) the
    # transport request is built inside, out of sight.
    recorder = _start(_request_of(args, kwargs, 1, "req"), streamed=True)
    return None if recorder is None else _Stream(recorder)


def _stream_raw(wrapped: Any, _adapter: Any, args: Any, kwargs: Any) -> Any:
    events = wrapped(*args, **kwargs)
    stream = _start_stream(args, kwargs)
    return events if stream is None else _ObservedEvents(events, stream)


def _async_stream_raw(wrapped: Any, _adapter: Any, args: Any, kwargs: Any) -> Any:
    events = wrapped(*args, **kwargs)
    stream = _start_stream(args, kwargs)
    return events if stream is None else _ObservedAsyncEvents(events, stream)


# --- parse_sse / aparse_sse: each event's data, as lm15 reads it -----------------------------


def _fed(events: Iterator[Any], stream: _Stream) -> Iterator[Any]:
    for event in events:
        stream.feed(event)
        yield event


async def _async_fed(events: AsyncIterator[Any], stream: _Stream) -> AsyncIterator[Any]:
    async for event in events:
        stream.feed(event)
        yield event


def _parse_sse(wrapped: Any, _module: Any, args: Any, kwargs: Any) -> Any:
    stream = _opening.get()
    events = wrapped(*args, **kwargs)
    return events if stream is None else _fed(events, stream)


def _aparse_sse(wrapped: Any, _module: Any, args: Any, kwargs: Any) -> Any:
    stream = _opening.get()
    events = wrapped(*args, **kwargs)
    return events if stream is None else _async_fed(events, stream)


# --- installing -----------------------------------------------------------------------------

_Wrapper = Callable[[Any, Any, Any, Any], Any | Awaitable[Any]]


def install_dspy_seam() -> bool:
    """Observe dspy's lm15 engine (if dspy is installed); True if its request seam is in place.

    Each target is installed under its own guard: one that a dspy release renamed or removed
    is skipped and logged, the others still work.
    """
    if importlib.util.find_spec("dspy") is None:
        return False
    try:
        base = importlib.import_module(f"{_PROVIDERS}.base")
        async_base = importlib.import_module(f"{_PROVIDERS}.async_base")
    except Exception:
        logger.warning("obsdeco could not load dspy's lm15 client; not patched", exc_info=True)
        return False
    sync_lm = getattr(base, "BaseProviderLM", None)
    async_lm = getattr(async_base, "AsyncBaseProviderLM", None)
    requests: tuple[tuple[str, Any, str, _Wrapper], ...] = (
        (f"{_PROVIDERS}.base.BaseProviderLM._send", sync_lm, "_send", _send),
        (f"{_PROVIDERS}.base.BaseProviderLM._stream_raw", sync_lm, "_stream_raw", _stream_raw),
        (
            f"{_PROVIDERS}.async_base.AsyncBaseProviderLM._send",
            async_lm,
            "_send",
            _async_send,
        ),
        (
            f"{_PROVIDERS}.async_base.AsyncBaseProviderLM._stream_raw",
            async_lm,
            "_stream_raw",
            _async_stream_raw,
        ),
    )
    with seam.lock:
        installed = [
            seam.install(key, owner, name, wrapper) for key, owner, name, wrapper in requests
        ]
        # Without its parser's patch a stream is still recorded, with unknown tokens.
        seam.install(f"{_PROVIDERS}.base.parse_sse", base, "parse_sse", _parse_sse)
        seam.install(f"{_PROVIDERS}.async_base.aparse_sse", async_base, "aparse_sse", _aparse_sse)
    return any(installed)
