"""The HTTP transport seam: LLM calls that reach `httpx` / `httpx2` without an SDK seam.

litellm, smolagents' `LiteLLMModel` and hand-written clients post to the provider APIs with
their own httpx clients. The seam replaces `Client.send` and `AsyncClient.send` of both
libraries (every request of a client goes through `send`: `post`, `request`, `stream`,
retries) with a plain function calling the original. A POST whose path ends like a known
endpoint (`formats.endpoint_of`) and whose JSON body has that format's shape is recorded with
the same readers as the SDK seams; anything else is passed on after one test of its method
and path. A request made while a seam already records a call in this context (the SDK seam
above, whose SDK sends through httpx) is passed on too, so a call is recorded once.

The response is what the library returns, unchanged. A body read by `send` (the default) is
parsed when the record is built; a streamed one (`send(..., stream=True)`) is observed as the
caller reads it: `response.stream` is replaced with a proxy that passes every chunk on as it
is and feeds a copy (its Content-Encoding undone) to an SSE decoder and the format's stream
accumulator, or keeps it for a JSON body. The call is recorded once: when the body is read to
its end, fails, is closed, or is dropped.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any, Protocol

import wrapt

from obsdeco.engine.cache import STREAM_TAIL as _TAIL
from obsdeco.engine.cache import CachePlan, replayed
from obsdeco.guard import fault, safely
from obsdeco.integrations import engine, seam
from obsdeco.integrations.facts import FactsSource, ResponseFacts, StreamAccumulator, feed_events
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.formats import ENDINGS, endpoint_of
from obsdeco.integrations.identity import host_key
from obsdeco.integrations.libraries import LIBRARIES
from obsdeco.integrations.proxies import record_later
from obsdeco.integrations.recorder import (
    CallRecorder,
    ErrorDetail,
    in_flight,
    sending,
)
from obsdeco.integrations.sse import SSEDecoder

logger = logging.getLogger("obsdeco.patching")


_DONE = "[DONE]"


# --- requests -------------------------------------------------------------------------------


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if type(value) is dict else None


def _start(request: Any) -> CallRecorder | None:
    """A recorder for a POST `request` to a known LLM endpoint, or None to pass it on.

    Runs for every POST to a known path ending while no seam above records the call.
    """
    try:
        url = request.url
        path = url.path
        found = endpoint_of(path)
        if found is None:
            return None
        format, api = found
        try:
            content = request.content
        except Exception:  # a streamed request body (not read): no JSON to tell a call by
            return None
        body = _json_object(content)
        if body is None or not format.recognises(api, path, body):
            return None
        return CallRecorder(
            format,
            api,
            body,
            model=format.request_model(api, path, body),
            streamed=format.request_streamed(api, path, body),
            host=host_key(url.host, url.port),
        )
    except Exception:
        fault("http._start")
        return None


# --- responses ------------------------------------------------------------------------------


def _is_sse(headers: Any) -> bool:
    return "text/event-stream" in headers.get("content-type", "")


def _content_facts(format: ProviderFormat, api: str, content: Callable[[], bytes]) -> ResponseFacts:
    """Facts of a JSON body kept as it streamed by (read when the record is built)."""
    return format.json_facts(api, content())


def _sse_facts(format: ProviderFormat, api: str, content: bytes) -> ResponseFacts:
    """Facts of a whole SSE body (a stream the client read at once)."""
    accumulator = format.stream_accumulator(api, False)
    decoder = SSEDecoder()
    feed_events(accumulator, decoder.feed(content))
    feed_events(accumulator, decoder.finish())
    return accumulator.facts


def _error_detail(format: ProviderFormat, content: Callable[[], bytes]) -> str | None:
    return format.json_error_message(content())


def _body_read(response: Any) -> bool:
    try:
        response.content  # noqa: B018 -- raises when the body has not been read
    except Exception:
        return False
    return True


class _Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def _decompressor(encoding: str) -> _Decompressor | None:
    """What undoes a Content-Encoding on obsdeco's copy (None: none to undo); LookupError
    for an encoding obsdeco cannot undo."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    if encoding == "zstd":
        try:
            import zstandard  # httpx offers zstd only when zstandard is installed
        except ImportError:
            raise LookupError(encoding) from None
        return zstandard.ZstdDecompressor().decompressobj()  # type: ignore[no-any-return]
    raise LookupError(encoding)


class _Kept:
    """A copy of a streamed answer's raw bytes for the response cache, stored once its last
    event has arrived (litellm, for one, drops a stream there without closing it) or the body
    has been read to its end; a body dropped, failed or closed half read is not stored."""

    __slots__ = ("_chunks", "_done", "_headers", "_plain", "_plan", "_status", "_tail")

    def __init__(self, plan: CachePlan, status: int, headers: Any) -> None:
        self._plan = plan
        self._status = status
        self._headers = headers
        self._plain = headers.get("content-encoding", "identity") == "identity"
        self._chunks: list[bytes] = []
        self._tail = b""
        self._done = False

    def feed(self, raw: bytes) -> None:
        if self._done:
            return
        self._chunks.append(raw)
        if self._plain and raw:
            tail = (self._tail + raw)[-_TAIL:]
            self._tail = tail
            if self._plan.stream_finished(tail):
                self.finish()

    def finish(self, error: BaseException | None = None, *, whole: bool = False) -> None:
        if self._done:
            return
        self._done = True
        if error is None:
            raw = b"".join(self._chunks)
            keep = partial(self._plan.keep_streamed, self._status, self._headers, raw, whole)
            safely("http._Kept.finish", keep)
        self._chunks = []

    def finish_later(self) -> None:
        self._done = True


class _BodyReader:
    """Reads obsdeco's copy of a streamed response body as the caller reads the body, and
    finishes the call once."""

    __slots__ = (
        "_accumulator",
        "_chunks",
        "_decompressor",
        "_events",
        "_kept",
        "_reading",
        "_status",
        "recorder",
    )

    def __init__(
        self, recorder: CallRecorder, status: int, headers: Any, kept: _Kept | None = None
    ) -> None:
        self.recorder = recorder
        self._kept = kept
        self._status = status
        self._reading = True
        self._chunks: list[bytes] = []
        self._events: SSEDecoder | None = None
        self._accumulator: StreamAccumulator | None = None
        if status < 400 and _is_sse(headers):
            self._events = SSEDecoder()
            self._accumulator = recorder.format.stream_accumulator(recorder.api, False)
        try:
            self._decompressor = _decompressor(headers.get("content-encoding", ""))
        except LookupError:
            self._decompressor = None
            self._reading = False  # recorded all the same, without what the body says

    def feed(self, raw: bytes) -> None:
        """Read a copy of one chunk of the body as it passes; never raises."""
        recorder = self.recorder
        if recorder.first_token_at is None:
            recorder.first_token_at = time.perf_counter()
        if self._kept is not None:
            self._kept.feed(raw)
        if not self._reading:
            return
        try:
            self._read(raw if self._decompressor is None else self._decompressor.decompress(raw))
        except Exception:
            self._reading = False  # the rest of the body is passed on, not read
            fault("http._BodyReader.feed")

    def _read(self, data: bytes) -> None:
        if self._accumulator is None:
            if data:
                self._chunks.append(data)
        elif self._events is not None:
            feed_events(self._accumulator, self._events.feed(data))

    def _flush(self) -> None:
        if not self._reading:
            return
        self._reading = False
        try:
            if self._decompressor is not None:
                self._read(self._decompressor.flush())
            if self._events is not None and self._accumulator is not None:
                feed_events(self._accumulator, self._events.finish())
        except Exception:
            fault("http._BodyReader.flush")

    def _content(self) -> bytes:
        return b"".join(self._chunks)

    def _outcome(self) -> tuple[FactsSource, int | None, ErrorDetail]:
        """(facts, error status, error detail) from what was read so far."""
        recorder = self.recorder
        if self._status >= 400:
            return None, self._status, partial(_error_detail, recorder.format, self._content)
        if self._accumulator is not None:
            return self._accumulator.facts, None, None
        if not self._chunks:
            return None, None, None
        return partial(_content_facts, recorder.format, recorder.api, self._content), None, None

    def finish(self, error: BaseException | None = None, *, whole: bool = False) -> None:
        """Record the call now (once): the body was read to its end (`whole`), failed, or was
        closed."""
        if self._kept is not None:
            self._kept.finish(error, whole=whole)
        try:
            if self.recorder.ended:
                return
            self._flush()
            facts, status, detail = self._outcome()
            self.recorder.record(facts, error, error_status=status, error_detail=detail)
        except Exception:
            fault("http._BodyReader.finish")

    def finish_later(self) -> None:
        """Record the call from the writer thread: the body was dropped unread or half read."""
        try:
            if not self.recorder.ended:
                facts, status, detail = self._outcome()
                record_later(self.recorder, facts, error_status=status, error_detail=detail)
        except Exception:
            fault("http._BodyReader.finish_later")


class _Chunks:
    """The chunks of a sync byte stream, each read by obsdeco on its way to the caller.

    An iterator object rather than a generator, so that a body left half read has nothing
    to close when it is garbage collected: the stream's proxy records it from the writer
    thread then.
    """

    __slots__ = ("_chunks", "_reader")

    def __init__(self, chunks: Iterator[bytes], reader: _BodyReader) -> None:
        self._chunks = chunks
        self._reader = reader

    def __iter__(self) -> _Chunks:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._reader.finish(whole=True)
            raise
        except BaseException as error:
            self._reader.finish(error)
            raise
        self._reader.feed(chunk)
        return chunk


class ObservedByteStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """A sync response byte stream whose chunks obsdeco reads as they pass; everything else
    (its type for `isinstance`, `elapsed`, ...) is the library's own."""

    def __init__(self, stream: Any, reader: _BodyReader) -> None:
        super().__init__(stream)
        self._self_reader = reader

    def __iter__(self) -> Iterator[bytes]:
        return _Chunks(iter(self.__wrapped__), self._self_reader)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_reader.finish()

    def __del__(self) -> None:
        self._self_reader.finish_later()


class ObservedAsyncByteStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """The async twin of `ObservedByteStream`."""

    def __init__(self, stream: Any, reader: _BodyReader) -> None:
        super().__init__(stream)
        self._self_reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # An async generator, as the library's own stream is: its client closes it when the
        # body is left half read (an async generator is closed in its loop, not by the
        # garbage collector), and closing it closes the library's.
        reader = self._self_reader
        chunks = self.__wrapped__.__aiter__()
        try:
            async for chunk in chunks:
                reader.feed(chunk)
                yield chunk
        except GeneratorExit:
            reader.finish()
            raise
        except BaseException as error:
            reader.finish(error)
            raise
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        reader.finish(whole=True)

    async def aclose(self) -> None:
        try:
            await self.__wrapped__.aclose()
        finally:
            self._self_reader.finish()

    def __del__(self) -> None:
        self._self_reader.finish_later()


def _observe(
    recorder: CallRecorder, response: Any, asynchronous: bool, plan: CachePlan | None = None
) -> None:
    """Record a response's call now (its body read) or as its body is read, keeping its answer
    for the cache when there is a `plan`; never raises."""
    try:
        status = response.status_code
        headers = response.headers
        format = recorder.format
        if not _body_read(response):
            kept = None if plan is None else _Kept(plan, status, headers)
            reader = _BodyReader(recorder, status, headers, kept)
            stream_type = ObservedAsyncByteStream if asynchronous else ObservedByteStream
            response.stream = stream_type(response.stream, reader)
            return
        if plan is not None:
            safely("http.keep_read", partial(plan.keep_read, response))
        content = response.content
        if status >= 400:
            detail = partial(_error_detail, format, lambda: content)
            recorder.record(None, error_status=status, error_detail=detail)
        elif _is_sse(headers):
            recorder.record(partial(_sse_facts, format, recorder.api, content))
        else:
            recorder.record(partial(format.json_facts, recorder.api, content))
    except Exception:
        fault("http._observe")
        recorder.record(None)


# --- the seam -------------------------------------------------------------------------------

_capture = seam.capture


def _keep(plan: CachePlan, response: Any, asynchronous: bool) -> None:
    """Keep the answer to a call a seam above records, for the cache; never raises."""
    try:
        if _body_read(response):
            plan.keep_read(response)
            return
        kept = _Kept(plan, response.status_code, response.headers)
        stream_type = ObservedAsyncByteStream if asynchronous else ObservedByteStream
        response.stream = stream_type(response.stream, kept)
    except Exception:
        fault("http._keep")


def _prepared(recorder: CallRecorder, request: Any) -> tuple[Any, CachePlan | None, bool]:
    """The request as the engine sends it (routed or not), the call's cache plan, and whether
    this seam looks the call up (the seam above has not)."""
    looks_up = not recorder.planned
    if looks_up and not engine.engaged():
        recorder.planned = True
        return request, None, False
    cache_plan = engine.plan(recorder) if looks_up else recorder.cache_plan
    if recorder.route_rule is not None and not recorder.route_applied:
        request = engine.routed_request(recorder, request) or request
    return request, cache_plan, looks_up


def _replayed(
    recorder: CallRecorder, cache_plan: CachePlan, request: Any, response_type: type
) -> Any:
    """The stored answer as the library's response (the call is then a hit), or None."""
    entry = safely("http.lookup", cache_plan.lookup)
    if entry is None:
        return None
    response = safely("http.replayed", partial(replayed, entry, request, response_type))
    if response is not None:
        recorder.cache_hit = True
    return response


def _observed_send(
    send: Callable[..., Any],
    response_type: type,
    client: Any,
    request: Any,
    kwargs: dict[str, Any],
) -> Any:
    above = in_flight()
    recorder = above if above is not None else _start(request)
    if recorder is None:
        return send(client, request, **kwargs)
    request, plan, looks_up = _prepared(recorder, request)
    if plan is not None and looks_up:
        response = _replayed(recorder, plan, request, response_type)
        if response is not None:
            if above is None:
                _observe(recorder, response, asynchronous=False)
            return response
    if looks_up:
        engine.reserve(recorder)
    if above is not None:
        response = send(client, request, **kwargs)
        if plan is not None:
            _keep(plan, response, asynchronous=False)
        return response
    with sending(recorder):
        response = send(client, request, **kwargs)
    _observe(recorder, response, asynchronous=False, plan=plan)
    return response


async def _observed_async_send(
    send: Callable[..., Any],
    response_type: type,
    client: Any,
    request: Any,
    kwargs: dict[str, Any],
) -> Any:
    above = in_flight()
    recorder = above if above is not None else _start(request)
    if recorder is None:
        return await send(client, request, **kwargs)
    request, plan, looks_up = _prepared(recorder, request)
    if plan is not None and looks_up:
        response = _replayed(recorder, plan, request, response_type)
        if response is not None:
            if above is None:
                _observe(recorder, response, asynchronous=True)
            return response
    if looks_up:
        engine.reserve(recorder)
    if above is not None:
        response = await send(client, request, **kwargs)
        if plan is not None:
            _keep(plan, response, asynchronous=True)
        return response
    with sending(recorder):
        response = await send(client, request, **kwargs)
    _observe(recorder, response, asynchronous=True, plan=plan)
    return response


# `send` is replaced by a plain function rather than wrapped with wrapt: every request of
# every client passes here, and for all but LLM calls this is the whole cost.


def _candidate(request: Any) -> bool:
    """Whether a request may be an LLM call: a POST, while capture is on (or a seam above
    records it: an explicit `wrap_*` client), to a path with a known ending. The one test
    every request takes."""
    try:
        return (
            request.method == "POST"
            and (_capture.implicit or in_flight() is not None)
            and request.url.path.endswith(ENDINGS)
        )
    except Exception:  # not a request: the library says so itself
        return False


def _sync_seam(send: Callable[..., Any], response_type: type) -> Callable[..., Any]:
    def observed_send(self: Any, request: Any, **kwargs: Any) -> Any:
        if not _candidate(request):
            return send(self, request, **kwargs)
        return _observed_send(send, response_type, self, request, kwargs)

    return observed_send


def _async_seam(send: Callable[..., Any], response_type: type) -> Callable[..., Any]:
    async def observed_send(self: Any, request: Any, **kwargs: Any) -> Any:
        if not _candidate(request):
            return await send(self, request, **kwargs)
        return await _observed_async_send(send, response_type, self, request, kwargs)

    return observed_send


def install_http_seam() -> bool:
    """Wrap `send` of every installed library's `Client` and `AsyncClient` (each under its own
    guard); True if at least one is in place."""
    installed = False
    seen: set[int] = set()
    with seam.lock:
        for name in LIBRARIES:
            if importlib.util.find_spec(name) is None:
                continue
            try:
                module = importlib.import_module(name)
            except Exception:
                logger.warning("obsdeco could not load %s; not patched", name, exc_info=True)
                continue
            # `httpx2.alias_httpx()` makes `httpx` the same module: patch its classes once.
            for client_name, make in (("Client", _sync_seam), ("AsyncClient", _async_seam)):
                client = getattr(module, client_name, None)
                if id(client) in seen:
                    continue
                seen.add(id(client))
                key = f"{name}.{client_name}.send"
                response_type = module.Response
                installed = (
                    seam.replace(key, client, "send", partial(make, response_type=response_type))
                    or installed
                )
    return installed
