"""`ProviderFormat`: one provider's wire format, read the same way by every seam.

A format names its endpoints (request paths, matched by their end, so any base URL or API
version works) and reads that provider's requests, responses and stream events. The SDK seams
hand it SDK objects, the HTTP seam parsed JSON; its readers use `facts.field` for both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from obsdeco.integrations.facts import ResponseFacts, StreamAccumulator, field, observe_event
from obsdeco.models import ModelProvider


class ProviderFormat:
    """What obsdeco knows of one provider's API; subclasses set the class attributes and
    implement `response_facts` and `stream_accumulator`."""

    provider: ClassVar[ModelProvider]
    provider_name: ClassVar[str]
    """The OpenTelemetry name of the provider, unless the request's host names another."""
    endpoints: ClassVar[Mapping[str, str]]
    model_in_path: ClassVar[bool] = False
    """The request names its model in the URL path (Gemini), not in the body."""
    stream_end_markers: ClassVar[tuple[bytes, ...]] = ()
    """Bytes an SSE stream of this format sends last: an SDK that stops reading there (and
    closes the body before its end) has still received the whole answer."""
    """Request path ending -> API name, longest endings first."""

    def endpoint(self, path: str) -> str | None:
        """The API a request path calls, or None when it is no endpoint of this format."""
        for ending, api in self.endpoints.items():
            if path.endswith(ending):
                return api
        return None

    def request_model(self, api: str, path: str, body: Mapping[str, Any]) -> str | None:
        """The model a request asks for."""
        model = body.get("model")
        return model if isinstance(model, str) else None

    def stream_finished(self, tail: bytes) -> bool:
        """Whether the last bytes of a stream (uncompressed) end the answer: its last event,
        whole (up to the blank line that ends an event)."""
        return tail.endswith((b"\n\n", b"\r\n\r\n")) and any(
            marker in tail for marker in self.stream_end_markers
        )

    def with_model(
        self, path: str, body: Mapping[str, Any], model: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The (path, body) of the same request for another model (for the router); None when
        the request does not name its model where this format expects it."""
        if not isinstance(body.get("model"), str):
            return None
        return path, {**body, "model": model}

    def recognises(self, api: str, path: str, body: Mapping[str, Any]) -> bool:
        """Whether a JSON request body to one of this format's endpoints has the format's
        shape (for the HTTP seam, which sees any request to any server): by default, it names
        its model."""
        return self.request_model(api, path, body) is not None

    def json_error_message(self, raw: bytes | str) -> str | None:
        """The provider's message in the raw JSON body of an error response, if it has one."""
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return self.error_message(body)

    def error_message(self, body: Any) -> str | None:
        """The provider's message in the JSON body of an error response: by default,
        `error.message` (OpenAI, Anthropic and Gemini all answer so)."""
        message = field(field(body, "error"), "message")
        return message if isinstance(message, str) else None

    def request_streamed(self, api: str, path: str, body: Mapping[str, Any]) -> bool:
        """Whether a request asks for a stream."""
        return bool(body.get("stream"))

    def json_facts(self, api: str, raw: bytes | str) -> ResponseFacts:
        """Facts of a JSON body: one response, or a stream sent as a JSON array of its events
        (Gemini's `:streamGenerateContent` without `alt=sse`); none for a body that is no JSON."""
        try:
            body = json.loads(raw)
        except ValueError:
            return ResponseFacts()
        if type(body) is list:
            accumulator = self.stream_accumulator(api, False)
            for event in body:
                observe_event(accumulator, event)
            return accumulator.facts
        return self.response_facts(api, body) if type(body) is dict else ResponseFacts()

    def response_facts(self, api: str, response: Any) -> ResponseFacts:
        """Facts from a response: an SDK object or its JSON body."""
        raise NotImplementedError

    def stream_accumulator(self, api: str, hide_usage_chunk: bool) -> StreamAccumulator:
        """A fresh accumulator for a stream of `api`'s events (SDK objects or JSON)."""
        raise NotImplementedError
