"""The SDK request seam, for SDKs generated like `openai` and `anthropic`.

Such an SDK sends every request through its base client's `request` method (sync and async):
every resource method, `with_raw_response`, `with_streaming_response`, the `beta` resources and
the streaming helpers, for clients created before patching too. `SDKSeam` observes that one
method; a subclass names the SDK's module, its `ProviderFormat` and its stream and raw-response
classes. Retries are counted where the SDK waits before one (`_sleep_for_retry`).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar

from obsdeco.engine.cache import replayed
from obsdeco.guard import fault, guarded
from obsdeco.integrations import engine, seam
from obsdeco.integrations.facts import FactsSource, ResponseFacts, field
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.identity import host_key
from obsdeco.integrations.libraries import library_of
from obsdeco.integrations.proxies import (
    ObservedAsyncResponse,
    ObservedAsyncStream,
    ObservedResponse,
    ObservedStream,
)
from obsdeco.integrations.recorder import (
    CallRecorder,
    explicit_attribution,
    note_retry,
    sending,
)

logger = logging.getLogger("obsdeco.patching")

_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
"""The header by which a Stainless SDK asks itself for a raw response (`with_raw_response`)."""


def _is_post(method: Any) -> bool:
    return method == "post" or (isinstance(method, str) and method.lower() == "post")


def _host_of(client: Any) -> str | None:
    """`host[:port]` of an SDK client's base URL."""
    url = getattr(client, "base_url", None)
    return host_key(getattr(url, "host", None), getattr(url, "port", None))


def _body_read(http_response: Any) -> bool:
    try:
        http_response.content  # noqa: B018 -- raises when the body has not been read
    except Exception:
        return False
    return True


def _options_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The options of `request(cast_to, options, ...)`, however they were passed."""
    return args[1] if len(args) >= 2 else kwargs.get("options")


def _with_options(
    args: tuple[Any, ...], kwargs: dict[str, Any], options: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The same arguments with other options, where they were."""
    if len(args) >= 2:
        return (args[0], options, *args[2:]), kwargs
    return args, {**kwargs, "options": options}


class SDKSeam:
    """Observes one SDK at its base client's `request`; subclasses describe the SDK."""

    module: ClassVar[str]
    """The SDK's top-level module, e.g. "openai"; its `_base_client` holds the seam."""
    format: ClassVar[ProviderFormat]

    def __init__(self) -> None:
        self._stream_type, self._async_stream_type, self._raw_types = self.sdk_types()
        self._unsent = self.unsent_types()

    def sdk_types(self) -> tuple[type, type, tuple[type, ...]]:
        """The SDK's sync stream class, async stream class, and raw response classes."""
        raise NotImplementedError

    def unsent_types(self) -> tuple[type, ...]:
        """The SDK's markers of arguments not given (`NotGiven`, `Omit`): the SDK keeps them in
        a request's options but leaves them out of the body it sends."""
        types = importlib.import_module(f"{self.module}._types")
        found = (getattr(types, name, None) for name in ("NotGiven", "Omit"))
        return tuple(marker for marker in found if isinstance(marker, type))

    def prepare(self, recorder: CallRecorder, options: Any) -> Any:
        """Adjust a streamed request before it is sent (by default: not at all)."""
        return options

    # --- the seam ---------------------------------------------------------------------------

    @guarded()
    def start(self, client: Any, options: Any) -> CallRecorder | None:
        """A recorder for an SDK request, or None when it is not an LLM call we know."""
        if not _is_post(getattr(options, "method", None)):
            return None
        body = getattr(options, "json_data", None)
        if not isinstance(body, Mapping):
            return None
        api = self.format.endpoint(str(getattr(options, "url", "")).split("?", 1)[0])
        if api is None:
            return None
        unsent = self._unsent
        if any(isinstance(value, unsent) for value in body.values()):
            body = {key: value for key, value in body.items() if not isinstance(value, unsent)}
        return CallRecorder(
            self.format, api, body, host=_host_of(client), attribution=explicit_attribution()
        )

    def request(
        self,
        wrapped: Callable[..., Any],
        client: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The sync SDK request, observed."""
        recorder = self.start(client, _options_of(args, kwargs))
        if recorder is None:
            return wrapped(*args, **kwargs)
        if recorder.streamed:
            args, kwargs = self._prepared(recorder, args, kwargs)
        if engine.engaged():
            args, kwargs = self._planned(recorder, args, kwargs)
            processing = self._cached(recorder, client, args, kwargs)
            if processing is not None:
                try:
                    result = client._process_response(**processing)
                except Exception:
                    fault(f"{type(self).__qualname__}.replay")
                else:
                    recorder.cache_hit = True
                    return self.observed(recorder, result)
            engine.reserve(recorder)
        else:
            recorder.planned = True
        with sending(recorder):
            result = wrapped(*args, **kwargs)
        return self.observed(recorder, result)

    async def async_request(
        self,
        wrapped: Callable[..., Any],
        client: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The async SDK request, observed."""
        recorder = self.start(client, _options_of(args, kwargs))
        if recorder is None:
            return await wrapped(*args, **kwargs)
        if recorder.streamed:
            args, kwargs = self._prepared(recorder, args, kwargs)
        if engine.engaged():
            args, kwargs = self._planned(recorder, args, kwargs)
            processing = self._cached(recorder, client, args, kwargs)
            if processing is not None:
                try:
                    result = await client._process_response(**processing)
                except Exception:
                    fault(f"{type(self).__qualname__}.replay")
                else:
                    recorder.cache_hit = True
                    return self.observed(recorder, result)
            engine.reserve(recorder)
        else:
            recorder.planned = True
        with sending(recorder):
            result = await wrapped(*args, **kwargs)
        return self.observed(recorder, result)

    def _planned(
        self, recorder: CallRecorder, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Plan the call (route, cache); a routed call's arguments ask for the routed model
        (the SDK builds every attempt's request from them). Unchanged on a fault."""
        engine.plan(recorder)
        if recorder.route_rule is None or recorder.format.model_in_path:
            return args, kwargs
        try:
            options = copy.copy(_options_of(args, kwargs))
            options.json_data = recorder.body
            recorder.route_applied = True
            return _with_options(args, kwargs, options)
        except Exception:
            fault(f"{type(self).__qualname__}.route")
            return args, kwargs

    @guarded()
    def _cached(
        self, recorder: CallRecorder, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        """On a hit, the arguments of the SDK's own `_process_response` for the stored answer
        (no request is built or sent), else None."""
        cache_plan = recorder.cache_plan
        if cache_plan is None:
            return None
        entry = cache_plan.lookup()
        if entry is None:
            return None
        options = copy.copy(_options_of(args, kwargs))  # the SDK may replace its headers
        cast_to = client._maybe_override_cast_to(args[0] if args else kwargs["cast_to"], options)
        headers = options.headers if isinstance(options.headers, Mapping) else {}
        raw = {name: value for name, value in headers.items() if name == _RAW_RESPONSE_HEADER}
        library = library_of(client._client)
        request = library.Request("POST", client._prepare_url(options.url), headers=raw)
        return {
            "cast_to": cast_to,
            "options": options,
            "response": replayed(entry, request, library.Response),
            "stream": kwargs.get("stream", False),
            "stream_cls": kwargs.get("stream_cls"),
        }

    def _prepared(
        self, recorder: CallRecorder, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The request's arguments with the options `prepare` made; unchanged on a fault."""
        try:
            options = _options_of(args, kwargs)
            prepared = self.prepare(recorder, options)
            return (args, kwargs) if prepared is options else _with_options(args, kwargs, prepared)
        except Exception:
            fault(f"{type(self).__qualname__}.prepare")
            return args, kwargs

    def observed(self, recorder: CallRecorder, result: Any) -> Any:
        """`result`, or the proxy that records its call; records a plain response now (and,
        after a fault in obsdeco, the call without its facts rather than not at all)."""
        wrapped = self._wrap_result(recorder, result)
        if wrapped is None:
            recorder.record(None)
            return result
        return wrapped

    @guarded()
    def _wrap_result(self, recorder: CallRecorder, result: Any) -> Any:
        api = recorder.api
        if isinstance(result, self._raw_types):
            return self._raw(recorder, result)
        if isinstance(result, self._stream_type):
            accumulator = self.format.stream_accumulator(api, recorder.hide_usage_chunk)
            return ObservedStream(result, recorder, accumulator)
        if isinstance(result, self._async_stream_type):
            accumulator = self.format.stream_accumulator(api, recorder.hide_usage_chunk)
            return ObservedAsyncStream(result, recorder, accumulator)
        recorder.record(partial(self.format.response_facts, api, result))
        return result

    def _body_facts(self, http_response: Any, recorder: CallRecorder) -> FactsSource:
        """Facts from a raw response whose (JSON) body has been read; none otherwise."""
        if not _body_read(http_response):
            return ResponseFacts()
        return partial(self.format.json_facts, recorder.api, http_response.content)

    def _raw(self, recorder: CallRecorder, response: Any) -> Any:
        """A raw response (`with_raw_response`, `with_streaming_response`).

        When its body is already read (not streamed), the call is recorded now from the JSON
        body; otherwise it is recorded when the user parses it (a parsed stream is observed
        like any other) or, failing that, when it is closed or dropped.
        """
        http_response = field(response, "http_response")
        body_facts = partial(self._body_facts, http_response)
        if not recorder.streamed and _body_read(http_response):
            recorder.record(body_facts(recorder))
            return response
        if inspect.iscoroutinefunction(getattr(response, "parse", None)):
            return ObservedAsyncResponse(response, recorder, self.observed, body_facts)
        return ObservedResponse(response, recorder, self.observed, body_facts)


def _wrappers(sdk: SDKSeam) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def sync_request(wrapped: Any, client: Any, args: Any, kwargs: Any) -> Any:
        if not seam.capture.implicit and explicit_attribution() is None:
            return wrapped(*args, **kwargs)
        return sdk.request(wrapped, client, args, kwargs)

    async def async_request(wrapped: Any, client: Any, args: Any, kwargs: Any) -> Any:
        if not seam.capture.implicit and explicit_attribution() is None:
            return await wrapped(*args, **kwargs)
        return await sdk.async_request(wrapped, client, args, kwargs)

    return sync_request, async_request


def _count_retry(wrapped: Any, _client: Any, args: Any, kwargs: Any) -> Any:
    note_retry(kwargs.get("response"))
    return wrapped(*args, **kwargs)


async def _count_async_retry(wrapped: Any, _client: Any, args: Any, kwargs: Any) -> Any:
    note_retry(kwargs.get("response"))
    return await wrapped(*args, **kwargs)


def install_sdk_seam(sdk_cls: type[SDKSeam]) -> bool:
    """Install one SDK's request seam (if the SDK is installed); True if it is in place."""
    module = sdk_cls.module
    sync_path = f"{module}._base_client.SyncAPIClient"
    async_path = f"{module}._base_client.AsyncAPIClient"
    sync_key, async_key = f"{sync_path}.request", f"{async_path}.request"
    if seam.installed(sync_key) and seam.installed(async_key):
        return True  # every explicit `wrap_*` call asks
    if importlib.util.find_spec(module) is None:
        return False
    with seam.lock:
        if seam.installed(sync_key) and seam.installed(async_key):
            return True
        try:
            base_client = importlib.import_module(f"{module}._base_client")
            sdk = sdk_cls()
        except Exception:
            logger.warning("obsdeco could not load the %s SDK; not patched", module, exc_info=True)
            return False
        sync_client = getattr(base_client, "SyncAPIClient", None)
        async_client = getattr(base_client, "AsyncAPIClient", None)
        sync_request, async_request = _wrappers(sdk)
        installed_sync = seam.install(sync_key, sync_client, "request", sync_request)
        installed_async = seam.install(async_key, async_client, "request", async_request)
        # Retries are counted where the SDK waits before one; without it, they go uncounted.
        seam.install(f"{sync_path}._sleep_for_retry", sync_client, "_sleep_for_retry", _count_retry)
        seam.install(
            f"{async_path}._sleep_for_retry", async_client, "_sleep_for_retry", _count_async_retry
        )
        return installed_sync or installed_async
