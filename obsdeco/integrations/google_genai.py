"""The google-genai SDK seam: every Gemini call, whichever HTTP library the SDK sends it with.

Every model call of the SDK (`models.generate_content`, `generate_content_stream`, their
`client.aio` twins, chats' `send_message` and `send_message_stream`, automatic function
calling's round trips) goes through its `BaseApiClient`'s `request`, `request_streamed`,
`async_request` and `async_request_streamed`, with the API's path and JSON body, above the
HTTP library (httpx, httpx2, or aiohttp for async) and above the SDK's retries. Those four
methods are observed. They answer with the API's own JSON (a body, or one body per chunk), so
the Gemini format's readers read it as the HTTP seam does. While a call is recorded here it is
the call in flight, so the HTTP seam below stands aside. With `HttpRetryOptions` the SDK
retries inside those methods, one `_request_once` per attempt: the attempts after a failed one
are counted as the call's retries.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from obsdeco.guard import guarded, safely
from obsdeco.integrations import seam
from obsdeco.integrations.facts import ResponseFacts, StreamAccumulator
from obsdeco.integrations.gemini import GEMINI
from obsdeco.integrations.identity import host_key
from obsdeco.integrations.proxies import ObservedAsyncStream, ObservedStream
from obsdeco.integrations.recorder import (
    CallRecorder,
    explicit_attribution,
    in_flight,
    reset_in_flight,
    sending,
    set_in_flight,
)

logger = logging.getLogger("obsdeco.patching")

_MODULE = "google.genai._api_client"
_CLIENT = f"{_MODULE}.BaseApiClient"


def _host_of(client: Any) -> str | None:
    """`host[:port]` of the client's base URL."""
    base_url = getattr(getattr(client, "_http_options", None), "base_url", None)
    if not isinstance(base_url, str):
        return None
    parts = urlsplit(base_url)
    return host_key(parts.hostname, parts.port)


def _request_parts(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(http_method, path, request_dict) of `request(http_method, path, request_dict, ...)`."""
    names = ("http_method", "path", "request_dict")
    method, path, body = (
        args[index] if index < len(args) else kwargs.get(name) for index, name in enumerate(names)
    )
    return method, path, body


@guarded()
def _start(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallRecorder | None:
    """A recorder for a model call, or None when the request is none we know."""
    method, path, body = _request_parts(args, kwargs)
    if not isinstance(method, str) or method.lower() != "post" or not isinstance(path, str):
        return None
    if not isinstance(body, Mapping):
        return None
    api = GEMINI.endpoint(path.split("?", 1)[0])
    if api is None:
        return None
    model = GEMINI.request_model(api, path, body)
    return CallRecorder(
        GEMINI,
        api,
        body,
        model=model,
        streamed=GEMINI.request_streamed(api, path, body),
        host=_host_of(client),
        attribution=explicit_attribution(),
    )


def _body_facts(api: str, response: Any) -> ResponseFacts:
    """Facts from an `SdkHttpResponse` (its body is the API's JSON, a string)."""
    return GEMINI.json_facts(api, getattr(response, "body", None) or "{}")


class _Chunks(StreamAccumulator):
    """Feeds the Gemini stream reader the JSON of each `SdkHttpResponse` chunk."""

    def __init__(self, api: str) -> None:
        super().__init__()
        self._reader = GEMINI.stream_accumulator(api, hide_usage_chunk=False)
        self.facts = self._reader.facts

    def observe(self, event: Any) -> bool:
        body = getattr(event, "body", None)
        if body:
            self._reader.observe(json.loads(body))
        return False


class _ObservedChunks(ObservedStream):
    """The generator of `request_streamed`, observed. It sends its request when first
    advanced, so each step runs with its call in flight (the HTTP seam then stands aside)."""

    def __next__(self) -> Any:
        token = set_in_flight(self._self_recorder)
        try:
            return super().__next__()
        finally:
            reset_in_flight(token)


def _observing() -> bool:
    return seam.capture.implicit or explicit_attribution() is not None


def _request(wrapped: Callable[..., Any], client: Any, args: Any, kwargs: Any) -> Any:
    recorder = _start(client, args, kwargs) if _observing() else None
    if recorder is None:
        return wrapped(*args, **kwargs)
    with sending(recorder):
        response = wrapped(*args, **kwargs)
    recorder.record(partial(_body_facts, recorder.api, response))
    return response


async def _async_request(wrapped: Callable[..., Any], client: Any, args: Any, kwargs: Any) -> Any:
    recorder = _start(client, args, kwargs) if _observing() else None
    if recorder is None:
        return await wrapped(*args, **kwargs)
    with sending(recorder):
        response = await wrapped(*args, **kwargs)
    recorder.record(partial(_body_facts, recorder.api, response))
    return response


def _observed(recorder: CallRecorder, chunks: Any, stream_type: type) -> Any:
    """The SDK's chunk generator in an observing proxy (unobserved if that fails)."""
    observed = safely(
        "google_genai._observed", lambda: stream_type(chunks, recorder, _Chunks(recorder.api))
    )
    return chunks if observed is None else observed


def _request_streamed(wrapped: Callable[..., Any], client: Any, args: Any, kwargs: Any) -> Any:
    recorder = _start(client, args, kwargs) if _observing() else None
    if recorder is None:
        return wrapped(*args, **kwargs)
    try:
        chunks = wrapped(*args, **kwargs)  # a generator: it sends when first advanced
    except BaseException as error:
        recorder.record(None, error)
        raise
    return _observed(recorder, chunks, _ObservedChunks)


async def _async_request_streamed(
    wrapped: Callable[..., Any], client: Any, args: Any, kwargs: Any
) -> Any:
    recorder = _start(client, args, kwargs) if _observing() else None
    if recorder is None:
        return await wrapped(*args, **kwargs)
    with sending(recorder):
        chunks = await wrapped(*args, **kwargs)  # the request is sent; chunks are read later
    return _observed(recorder, chunks, ObservedAsyncStream)


_failed_attempt: ContextVar[tuple[CallRecorder, Any] | None] = ContextVar(
    "obsdeco_genai_failed_attempt", default=None
)
"""The call whose last attempt failed in this context, and that failure's HTTP status."""


@guarded()
def _count_retry() -> None:
    """An attempt begins: if the call in flight had a failed one, this one is a retry."""
    recorder = in_flight()
    failed = _failed_attempt.get()
    if recorder is None or failed is None or failed[0] is not recorder:
        return
    recorder.retries += 1
    if failed[1] == 429:
        recorder.rate_limited_retries += 1


@guarded()
def _note_failed_attempt(error: BaseException) -> None:
    recorder = in_flight()
    if recorder is not None:
        _failed_attempt.set((recorder, getattr(error, "code", None)))


def _attempt(wrapped: Callable[..., Any], _client: Any, args: Any, kwargs: Any) -> Any:
    _count_retry()
    try:
        return wrapped(*args, **kwargs)
    except BaseException as error:
        _note_failed_attempt(error)
        raise


async def _async_attempt(wrapped: Callable[..., Any], _client: Any, args: Any, kwargs: Any) -> Any:
    _count_retry()
    try:
        return await wrapped(*args, **kwargs)
    except BaseException as error:
        _note_failed_attempt(error)
        raise


_CALLS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("request", _request),
    ("request_streamed", _request_streamed),
    ("async_request", _async_request),
    ("async_request_streamed", _async_request_streamed),
)
_ATTEMPTS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("_request_once", _attempt),
    ("_async_request_once", _async_attempt),
)


def install_google_genai() -> bool:
    """Observe the google-genai SDK (if installed); True if any of its seams is in place."""
    try:
        if importlib.util.find_spec("google.genai") is None:
            return False
    except ImportError:  # no `google` package at all
        return False
    with seam.lock:
        try:
            client = importlib.import_module(_MODULE).BaseApiClient
        except Exception:
            logger.warning("obsdeco could not load google-genai; not patched", exc_info=True)
            return False
        installed = [
            seam.install(f"{_CLIENT}.{name}", client, name, wrapper) for name, wrapper in _CALLS
        ]
        # Retries are counted where the SDK makes each attempt; without these, uncounted.
        for name, wrapper in _ATTEMPTS:
            seam.install(f"{_CLIENT}.{name}", client, name, wrapper)
        return any(installed)
