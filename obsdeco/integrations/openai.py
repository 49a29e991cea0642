"""OpenAI's format (chat completions, legacy completions, responses, embeddings) and its SDK.

Every OpenAI-compatible API (Groq, DeepSeek, OpenRouter, Together, Azure, vLLM, ...) speaks this
format, so the HTTP seam reads them with these readers too. Usage is read the OpenTelemetry
GenAI way: `prompt_tokens` is the prompt/input count as is (it already includes cached tokens);
cache reads come from `*_tokens_details.cached_tokens`, cache writes from
`*_tokens_details.cache_write_tokens`, reasoning from `*_tokens_details.reasoning_tokens`. A
detail the response does not carry stays None (unknown).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from obsdeco.config import get_settings
from obsdeco.integrations.facts import (
    ResponseFacts,
    StreamAccumulator,
    capturing,
    completion_json,
    field,
)
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.recorder import CallRecorder
from obsdeco.integrations.sdk import SDKSeam
from obsdeco.models import ModelProvider

_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
"""Set by `with_raw_response` / `with_streaming_response` (openai._constants)."""

CHAT = "chat.completions"
COMPLETIONS = "completions"
RESPONSES = "responses"
EMBEDDINGS = "embeddings"


def _usage_reader(input_name: str, output_name: str) -> Callable[[ResponseFacts, Any], None]:
    """Reads a usage object whose counts are `<input_name>` and `<output_name>`, with their
    `*_details` (chat completions say prompt/completion, the Responses API input/output)."""

    def read(facts: ResponseFacts, usage: Any) -> None:
        if usage is None:
            return
        facts.prompt_tokens = field(usage, input_name)
        facts.completion_tokens = field(usage, output_name)
        input_details = field(usage, f"{input_name}_details")
        facts.cached_tokens = field(input_details, "cached_tokens")
        facts.cache_creation_tokens = field(input_details, "cache_write_tokens")
        facts.reasoning_tokens = field(field(usage, f"{output_name}_details"), "reasoning_tokens")

    return read


_chat_usage = _usage_reader("prompt_tokens", "completion_tokens")
_responses_usage = _usage_reader("input_tokens", "output_tokens")


def _chat_facts(response: Any) -> ResponseFacts:
    facts = ResponseFacts(response_model=field(response, "model"))
    _chat_usage(facts, field(response, "usage"))
    choices = field(response, "choices") or []
    if choices:
        facts.finish_reason = field(choices[0], "finish_reason")
    facts.tool_call_count = sum(
        len(field(field(choice, "message"), "tool_calls") or []) for choice in choices
    )
    if capturing():
        facts.completion = lambda: _chat_completion(choices)
    return facts


def _chat_completion(choices: list[Any]) -> str | None:
    messages = [field(choice, "message") for choice in choices]
    return completion_json(
        "\n\n".join(field(message, "content") or "" for message in messages),
        [
            {
                "name": field(field(call, "function"), "name"),
                "arguments": field(field(call, "function"), "arguments"),
            }
            for message in messages
            for call in field(message, "tool_calls") or []
        ],
    )


def _completions_facts(response: Any) -> ResponseFacts:
    """A legacy completion: `choices[].text`, usage as chat completions."""
    facts = ResponseFacts(response_model=field(response, "model"), tool_call_count=0)
    _chat_usage(facts, field(response, "usage"))
    choices = field(response, "choices") or []
    if choices:
        facts.finish_reason = field(choices[0], "finish_reason")
    if capturing():
        text = "\n\n".join(field(choice, "text") or "" for choice in choices)
        facts.completion = lambda: completion_json(text, [])
    return facts


def _responses_completion(output: list[Any]) -> str | None:
    text = []
    calls = []
    for item in output:
        if field(item, "type") == "message":
            text += [field(part, "text") or "" for part in field(item, "content") or []]
        elif field(item, "type") == "function_call":
            calls.append({"name": field(item, "name"), "arguments": field(item, "arguments")})
    return completion_json("".join(text), calls)


def _responses_facts(response: Any) -> ResponseFacts:
    facts = ResponseFacts(response_model=field(response, "model"))
    _responses_usage(facts, field(response, "usage"))
    incomplete = field(response, "incomplete_details")
    facts.finish_reason = field(incomplete, "reason") or field(response, "status")
    output = field(response, "output") or []
    facts.tool_call_count = sum(1 for item in output if str(field(item, "type")).endswith("_call"))
    if capturing():
        facts.completion = lambda: _responses_completion(output)
    return facts


def _embeddings_facts(response: Any) -> ResponseFacts:
    usage = field(response, "usage")
    return ResponseFacts(
        response_model=field(response, "model"),
        prompt_tokens=field(usage, "prompt_tokens"),
        completion_tokens=0 if usage is not None else None,
    )


class _ChatStream(StreamAccumulator):
    """Chunks of a chat (or legacy) completion stream; usage arrives only with include_usage."""

    def __init__(self, hide_usage_chunk: bool) -> None:
        super().__init__()
        self._hide_usage_chunk = hide_usage_chunk
        self._tool_calls: set[tuple[int, int]] = set()
        self.facts.tool_call_count = 0
        self._text: dict[int, list[str]] = {}
        self._calls: dict[tuple[int, int], dict[str, str]] = {}
        if self.capture:
            self.facts.completion = self._completion

    def _completion(self) -> str | None:
        """The choices' texts one after the other, as a non-streamed completion shows them."""
        text = "\n\n".join("".join(self._text[index]) for index in sorted(self._text))
        return completion_json(text, list(self._calls.values()))

    def _keep_content(self, choice: Any, delta: Any) -> None:
        index = field(choice, "index") or 0
        content = field(delta, "content") if delta is not None else field(choice, "text")
        if content:
            self._text.setdefault(index, []).append(content)
        for tool_call in field(delta, "tool_calls") or []:
            kept = self._calls.setdefault(
                (index, field(tool_call, "index") or 0), {"name": "", "arguments": ""}
            )
            function = field(tool_call, "function")
            if function is not None:
                kept["name"] += field(function, "name") or ""
                kept["arguments"] += field(function, "arguments") or ""

    def observe(self, event: Any) -> bool:
        # Runs once per chunk: a few field reads, nothing else.
        facts = self.facts
        if facts.response_model is None:
            facts.response_model = field(event, "model")
        choices = field(event, "choices")
        if choices:
            for choice in choices:
                reason = field(choice, "finish_reason")
                if reason is not None:
                    facts.finish_reason = reason
                delta = field(choice, "delta")
                if self.capture:
                    self._keep_content(choice, delta)
                tool_calls = field(delta, "tool_calls")
                if tool_calls:
                    index = field(choice, "index")
                    for tool_call in tool_calls:
                        self._tool_calls.add((index, field(tool_call, "index")))
                    facts.tool_call_count = len(self._tool_calls)
        usage = field(event, "usage")
        if usage is not None:
            _chat_usage(facts, usage)
            return self._hide_usage_chunk and not choices
        return False


class _ResponsesStream(StreamAccumulator):
    """Events of a Responses API stream; the final response event carries the usage."""

    def observe(self, event: Any) -> bool:
        response = field(event, "response")
        if response is not None:
            model = field(response, "model")
            if field(response, "usage") is not None:
                self.facts = _responses_facts(response)
            elif model:
                self.facts.response_model = model
        return False


class OpenAIFormat(ProviderFormat):
    """The OpenAI API and every API compatible with it."""

    provider: ClassVar[ModelProvider] = ModelProvider.OPENAI
    provider_name: ClassVar[str] = "openai"
    stream_end_markers: ClassVar[tuple[bytes, ...]] = (
        b"data: [DONE]",
        b"event: response.completed",
    )
    endpoints: ClassVar[Mapping[str, str]] = {
        "/chat/completions": CHAT,
        "/completions": COMPLETIONS,
        "/responses": RESPONSES,
        "/embeddings": EMBEDDINGS,
    }
    _facts: ClassVar[Mapping[str, Callable[[Any], ResponseFacts]]] = {
        CHAT: _chat_facts,
        COMPLETIONS: _completions_facts,
        RESPONSES: _responses_facts,
        EMBEDDINGS: _embeddings_facts,
    }

    def response_facts(self, api: str, response: Any) -> ResponseFacts:
        return self._facts[api](response)

    def stream_accumulator(self, api: str, hide_usage_chunk: bool) -> StreamAccumulator:
        if api == RESPONSES:
            return _ResponsesStream()
        return _ChatStream(hide_usage_chunk)


OPENAI = OpenAIFormat()


class OpenAISDK(SDKSeam):
    """The `openai` SDK."""

    module: ClassVar[str] = "openai"
    format: ClassVar[ProviderFormat] = OPENAI

    def sdk_types(self) -> tuple[type, type, tuple[type, ...]]:
        import openai
        from openai import _legacy_response, _response

        raw = (_legacy_response.LegacyAPIResponse, _response.BaseAPIResponse)
        return openai.Stream, openai.AsyncStream, raw

    def prepare(self, recorder: CallRecorder, options: Any) -> Any:
        """With `request_stream_usage`, ask a chat stream for its usage (and hide that chunk)."""
        if recorder.api not in (CHAT, COMPLETIONS) or not recorder.streamed:
            return options
        if _RAW_RESPONSE_HEADER in (getattr(options, "headers", None) or {}):
            return options  # a raw stream's chunks reach the user unparsed: none can be hidden
        body = recorder.body or {}
        stream_options = body.get("stream_options") or {}
        if stream_options.get("include_usage") or not get_settings().request_stream_usage:
            return options
        body = {**body, "stream_options": {**stream_options, "include_usage": True}}
        recorder.hide_usage_chunk = True
        return options.model_copy(update={"json_data": body})
