"""Google Gemini's format (generateContent, streamGenerateContent), read from its JSON.

The readers read the API's own JSON (camelCase), as the google-genai seam and the HTTP seam
both see it. Usage is normalised the OpenTelemetry GenAI way: `prompt_tokens` is
`promptTokenCount` (cached content included), `cached_tokens` is `cachedContentTokenCount`,
`completion_tokens` is `candidatesTokenCount + thoughtsTokenCount` and `reasoning_tokens` is
`thoughtsTokenCount`. The API leaves a zero count out of its JSON, so a completion with only
one of the two parts counts that part; a count the answer does not carry at all stays None.
A stream repeats `usageMetadata` on its chunks, cumulatively: the last one counts.
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
from obsdeco.models import ModelProvider

GENERATE_CONTENT = "generate_content"

_STREAM_ENDING = ":streamGenerateContent"


def _apply_usage(facts: ResponseFacts, usage: Any) -> None:
    """Set the token counts from one `usageMetadata` object (absent: all unknown)."""
    facts.prompt_tokens = field(usage, "promptTokenCount")
    facts.cached_tokens = field(usage, "cachedContentTokenCount")
    candidates = field(usage, "candidatesTokenCount")
    thoughts = field(usage, "thoughtsTokenCount")
    facts.reasoning_tokens = thoughts
    if candidates is None and thoughts is None:
        facts.completion_tokens = None
    else:
        facts.completion_tokens = (candidates or 0) + (thoughts or 0)


def _parts(candidate: Any) -> list[Any]:
    return field(field(candidate, "content"), "parts") or []


def _stored_call(call: Any) -> dict[str, str]:
    """A `functionCall` part's call in the stored form: {"name", "arguments" (JSON)}."""
    return {
        "name": field(call, "name"),
        "arguments": json.dumps(field(call, "args") or {}, ensure_ascii=False, default=str),
    }


def _answer_text(part: Any) -> str:
    """A part's answer text; thought summaries (`"thought": true`) are not the answer."""
    if field(part, "thought"):
        return ""
    return field(part, "text") or ""


def _block_reason(response: Any) -> str | None:
    """Why a prompt was refused (`promptFeedback.blockReason`, e.g. SAFETY): no candidates."""
    return field(field(response, "promptFeedback"), "blockReason")


def _content_facts(response: Any) -> ResponseFacts:
    facts = ResponseFacts(response_model=field(response, "modelVersion"))
    _apply_usage(facts, field(response, "usageMetadata"))
    candidates = field(response, "candidates") or []
    if candidates:
        facts.finish_reason = field(candidates[0], "finishReason")
    else:
        facts.finish_reason = _block_reason(response)
    facts.tool_call_count = sum(
        1
        for candidate in candidates
        for part in _parts(candidate)
        if field(part, "functionCall") is not None
    )
    if capturing():
        facts.completion = lambda: _content_completion(candidates)
    return facts


def _content_completion(candidates: list[Any]) -> str | None:
    calls = [
        _stored_call(call)
        for candidate in candidates
        for part in _parts(candidate)
        if (call := field(part, "functionCall")) is not None
    ]
    text = "\n\n".join(
        "".join(_answer_text(part) for part in _parts(candidate)) for candidate in candidates
    )
    return completion_json(text, calls)


class _ContentStream(StreamAccumulator):
    """Chunks of a streamGenerateContent stream, each a whole GenerateContentResponse: the
    latest `usageMetadata` replaces the one before; function calls arrive whole, one part
    each; the last candidate chunk carries the finish reason."""

    def __init__(self) -> None:
        super().__init__()
        self.facts.tool_call_count = 0
        self._text: dict[int, list[str]] = {}
        self._calls: list[Any] = []
        if self.capture:
            self.facts.completion = self._completion

    def _completion(self) -> str | None:
        text = "\n\n".join("".join(self._text[index]) for index in sorted(self._text))
        return completion_json(text, [_stored_call(call) for call in self._calls])

    def observe(self, event: Any) -> bool:
        # Runs once per chunk: a few field reads.
        facts = self.facts
        model = field(event, "modelVersion")
        if model:
            facts.response_model = model
        usage = field(event, "usageMetadata")
        if usage is not None:
            _apply_usage(facts, usage)
        blocked = _block_reason(event)
        if blocked is not None:
            facts.finish_reason = blocked
        for candidate in field(event, "candidates") or ():
            reason = field(candidate, "finishReason")
            if reason is not None:
                facts.finish_reason = reason
            for part in _parts(candidate):
                call = field(part, "functionCall")
                if call is not None:
                    facts.tool_call_count = (facts.tool_call_count or 0) + 1
                    if self.capture:
                        self._calls.append(call)
                elif self.capture:
                    index = field(candidate, "index") or 0
                    self._text.setdefault(index, []).append(_answer_text(part))
        return False


class GeminiFormat(ProviderFormat):
    """The Gemini API (Google AI Studio, and Vertex AI's publisher models), any API version."""

    model_in_path: ClassVar[bool] = True
    provider: ClassVar[ModelProvider] = ModelProvider.GOOGLE
    provider_name: ClassVar[str] = "gcp.gemini"
    endpoints: ClassVar[Mapping[str, str]] = {
        _STREAM_ENDING: GENERATE_CONTENT,
        ":generateContent": GENERATE_CONTENT,
    }

    def request_model(self, api: str, path: str, body: Mapping[str, Any]) -> str | None:
        """The model in the path as the user names it: `gemini-2.5-flash` for
        `.../models/gemini-2.5-flash:generateContent` (any prefix: API version, Vertex AI's
        project, location and publisher), `tunedModels/x` or `endpoints/1` for those."""
        resource = path.split("?", 1)[0].rsplit(":", 1)[0].strip("/").split("/")
        if len(resource) < 2:
            return resource[0] or None
        collection, name = resource[-2:]
        return name if collection == "models" else f"{collection}/{name}"

    def with_model(
        self, path: str, body: Mapping[str, Any], model: str
    ) -> tuple[str, dict[str, Any]] | None:
        """Gemini names the model in the path: `.../models/{model}:{method}`."""
        resource, colon, method = path.rpartition(":")
        prefix, slash, current = resource.rpartition("/")
        if not (colon and slash and (prefix.endswith("/models") or prefix == "models")):
            return None
        if current != self.request_model("", path, body):
            return None
        return f"{prefix}/{model}:{method}", dict(body)

    def request_streamed(self, api: str, path: str, body: Mapping[str, Any]) -> bool:
        """Gemini says stream in the path (`:streamGenerateContent`), not in the body."""
        return path.split("?", 1)[0].endswith(_STREAM_ENDING)

    def response_facts(self, api: str, response: Any) -> ResponseFacts:
        return _content_facts(response)

    def stream_accumulator(self, api: str, hide_usage_chunk: bool) -> StreamAccumulator:
        return _ContentStream()


GEMINI = GeminiFormat()
