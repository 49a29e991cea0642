"""Anthropic: messages (plain, beta, streamed, and the `messages.stream()` helpers).

Anthropic's `input_tokens` excludes cached input, so `prompt_tokens` is
input_tokens + cache_read_input_tokens + cache_creation_input_tokens; `cached_tokens` is the
cache read part and `cache_creation_tokens` the cache write part. Thinking tokens are inside
`output_tokens` and not reported apart, so `reasoning_tokens` stays None (unknown).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from obsdeco.integrations.base import (
    CallRecorder,
    ProviderIntegration,
    ResponseFacts,
    StreamAccumulator,
    capturing,
    completion_json,
    explicit_call,
    field,
)
from obsdeco.models import ModelProvider

MESSAGES = "messages"


class _Usage:
    """Anthropic usage, merged as stream events update it (later values win)."""

    __slots__ = ("cache_read", "cache_write", "input", "output")

    def __init__(self) -> None:
        self.input: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None
        self.output: int | None = None

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

    def apply(self, facts: ResponseFacts) -> None:
        if self.input is not None:
            facts.prompt_tokens = self.input + (self.cache_read or 0) + (self.cache_write or 0)
        facts.cached_tokens = self.cache_read
        facts.cache_creation_tokens = self.cache_write
        facts.completion_tokens = self.output


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
        if kind == "content_block_start":
            block = getattr(event, "content_block", None)
            if getattr(block, "type", None) == "tool_use":
                self._calls[event.index] = {"name": block.name, "arguments": ""}
            return
        delta = getattr(event, "delta", None)
        delta_type = getattr(delta, "type", None)
        if delta_type == "text_delta":
            self._text.append(delta.text)
        elif delta_type == "input_json_delta" and event.index in self._calls:
            self._calls[event.index]["arguments"] += delta.partial_json

    def observe(self, event: Any) -> bool:
        # Runs once per event: plain getattr on the SDK's event objects.
        kind = getattr(event, "type", None)
        if self.capture and kind in ("content_block_delta", "content_block_start"):
            self._keep_content(kind, event)
        if kind == "content_block_delta":
            return False
        if kind == "message_start":
            message = getattr(event, "message", None)
            self.facts.response_model = getattr(message, "model", None)
            self._usage.update(getattr(message, "usage", None))
        elif kind == "message_delta":
            self.facts.finish_reason = getattr(getattr(event, "delta", None), "stop_reason", None)
            self._usage.update(getattr(event, "usage", None))
        elif kind == "content_block_start":
            block = getattr(event, "content_block", None)
            if getattr(block, "type", None) == "tool_use":
                self.facts.tool_call_count = (self.facts.tool_call_count or 0) + 1
            return False
        else:
            return False
        self._usage.apply(self.facts)
        return False


class AnthropicIntegration(ProviderIntegration):
    """Observes the Anthropic SDK at its base client's `request` seam."""

    provider: ClassVar[ModelProvider] = ModelProvider.ANTHROPIC
    endpoints: ClassVar[Mapping[str, str]] = {"/v1/messages": MESSAGES}

    def sdk_types(self) -> tuple[type, type, tuple[type, ...]]:
        import anthropic
        from anthropic import _response

        return anthropic.Stream, anthropic.AsyncStream, (_response.BaseAPIResponse,)

    def response_facts(self, api: str, response: Any) -> ResponseFacts:
        return _message_facts(response)

    def stream_accumulator(self, api: str, recorder: CallRecorder) -> StreamAccumulator:
        return _MessageStream()

    def wrap_message(
        self,
        client: Any,
        *,
        model: str,
        messages: list[Any],
        max_tokens: int,
        agent_name: str | None = None,
        operation: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """`client.messages.create(model=..., messages=..., max_tokens=..., **kwargs)`, recorded.

        Same records as `patch_all()` would make, attributed to `agent_name` / `operation`.
        """
        return explicit_call(
            self,
            client.messages.create,
            {"model": model, "messages": messages, "max_tokens": max_tokens, **kwargs},
            agent_name=agent_name,
            operation=operation,
        )
