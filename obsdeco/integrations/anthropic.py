"""Anthropic's format (messages: plain, beta, streamed) and its SDK.

Anthropic's `input_tokens` excludes cached input, so `prompt_tokens` is
input_tokens + cache_read_input_tokens + cache_creation_input_tokens; `cached_tokens` is the
cache read part and `cache_creation_tokens` the cache write part. Thinking tokens are inside
`output_tokens`; `usage.output_tokens_details.thinking_tokens` (where the API reports it) is
`reasoning_tokens`, else None (unknown).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from obsdeco.integrations.facts import (
    ResponseFacts,
    StreamAccumulator,
    capturing,
    completion_json,
    field,
)
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.sdk import SDKSeam
from obsdeco.models import ModelProvider

MESSAGES = "messages"


class _Usage:
    """Anthropic usage, merged as stream events update it (later values win)."""

    __slots__ = ("cache_read", "cache_write", "input", "output", "thinking")

    def __init__(self) -> None:
        self.input: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None
        self.output: int | None = None
        self.thinking: int | None = None

    def update(self, usage: Any) -> None:
        if usage is None:
            return
        for attribute, name in (
            ("input", "input_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("cache_write", "cache_creation_input_tokens"),
            ("output", "output_tokens"),
        ):
            value = field(usage, name)
            if value is not None:
                setattr(self, attribute, value)
        thinking = field(field(usage, "output_tokens_details"), "thinking_tokens")
        if thinking is not None:
            self.thinking = thinking

    def apply(self, facts: ResponseFacts) -> None:
        if self.input is not None:
            facts.prompt_tokens = self.input + (self.cache_read or 0) + (self.cache_write or 0)
        facts.cached_tokens = self.cache_read
        facts.cache_creation_tokens = self.cache_write
        facts.completion_tokens = self.output
        facts.reasoning_tokens = self.thinking


def _message_facts(message: Any) -> ResponseFacts:
    facts = ResponseFacts(
        response_model=field(message, "model"),
        finish_reason=field(message, "stop_reason"),
        tool_call_count=sum(
            1 for block in field(message, "content") or [] if field(block, "type") == "tool_use"
        ),
    )
    usage = _Usage()
    usage.update(field(message, "usage"))
    usage.apply(facts)
    if capturing():
        facts.completion = lambda: _message_completion(field(message, "content") or [])
    return facts


def _message_completion(blocks: list[Any]) -> str | None:
    return completion_json(
        "".join(field(block, "text") or "" for block in blocks if field(block, "type") == "text"),
        [
            {
                "name": field(block, "name"),
                "arguments": json.dumps(field(block, "input"), ensure_ascii=False, default=str),
            }
            for block in blocks
            if field(block, "type") == "tool_use"
        ],
    )


class _MessageStream(StreamAccumulator):
    """message_start carries the model and input usage, message_delta the stop reason and the
    (cumulative) output usage; tool_use blocks start with content_block_start."""

    def __init__(self) -> None:
        super().__init__()
        self._usage = _Usage()
        self.facts.tool_call_count = 0
        self._text: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        if self.capture:
            self.facts.completion = self._completion

    def _completion(self) -> str | None:
        return completion_json("".join(self._text), list(self._calls.values()))

    def _keep_content(self, kind: str, event: Any) -> None:
        index = field(event, "index")
        if kind == "content_block_start":
            block = field(event, "content_block")
            if field(block, "type") == "tool_use":
                self._calls[index] = {"name": field(block, "name"), "arguments": ""}
            return
        delta = field(event, "delta")
        delta_type = field(delta, "type")
        if delta_type == "text_delta":
            self._text.append(field(delta, "text") or "")
        elif delta_type == "input_json_delta" and index in self._calls:
            self._calls[index]["arguments"] += field(delta, "partial_json") or ""

    def observe(self, event: Any) -> bool:
        # Runs once per event: a few field reads.
        kind = field(event, "type")
        if self.capture and kind in ("content_block_delta", "content_block_start"):
            self._keep_content(kind, event)
        if kind == "content_block_delta":
            return False
        if kind == "message_start":
            message = field(event, "message")
            self.facts.response_model = field(message, "model")
            self._usage.update(field(message, "usage"))
        elif kind == "message_delta":
            self.facts.finish_reason = field(field(event, "delta"), "stop_reason")
            self._usage.update(field(event, "usage"))
        elif kind == "content_block_start":
            if field(field(event, "content_block"), "type") == "tool_use":
                self.facts.tool_call_count = (self.facts.tool_call_count or 0) + 1
            return False
        else:
            return False
        self._usage.apply(self.facts)
        return False


class AnthropicFormat(ProviderFormat):
    """The Anthropic Messages API."""

    provider: ClassVar[ModelProvider] = ModelProvider.ANTHROPIC
    provider_name: ClassVar[str] = "anthropic"
    stream_end_markers: ClassVar[tuple[bytes, ...]] = (b"event: message_stop",)
    endpoints: ClassVar[Mapping[str, str]] = {"/v1/messages": MESSAGES}

    def response_facts(self, api: str, response: Any) -> ResponseFacts:
        return _message_facts(response)

    def stream_accumulator(self, api: str, hide_usage_chunk: bool) -> StreamAccumulator:
        return _MessageStream()


ANTHROPIC = AnthropicFormat()


class AnthropicSDK(SDKSeam):
    """The `anthropic` SDK."""

    module: ClassVar[str] = "anthropic"
    format: ClassVar[ProviderFormat] = ANTHROPIC

    def sdk_types(self) -> tuple[type, type, tuple[type, ...]]:
        import anthropic
        from anthropic import _response

        return anthropic.Stream, anthropic.AsyncStream, (_response.BaseAPIResponse,)
