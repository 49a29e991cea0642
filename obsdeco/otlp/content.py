"""A call's captured prompt and completion as span attributes (only with `capture_content`).

The GenAI conventions' `gen_ai.input.messages`, `gen_ai.system_instructions` and
`gen_ai.output.messages` (JSON of role and parts), and OpenInference's `input.value` /
`output.value`. What is exported is what is stored: scrubbed and cut to `content_max_chars`;
a prompt that is no longer JSON after the cut is sent as one text part.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.util.types import AttributeValue

from obsdeco.models import LLMCall

_SYSTEM_KEYS = ("system", "systemInstruction", "instructions")
_MESSAGE_KEYS = ("messages", "contents", "input", "prompt")


def content_attributes(call: LLMCall) -> dict[str, AttributeValue]:
    """The content attributes of a call; none for what was not captured."""
    attributes: dict[str, AttributeValue] = {}
    if call.prompt is not None:
        attributes["input.value"] = call.prompt
        attributes["input.mime_type"] = "application/json"
        system, messages = _input_messages(call.prompt)
        if system:
            attributes["gen_ai.system_instructions"] = _dumps(system)
        attributes["gen_ai.input.messages"] = _dumps(messages)
    if call.completion is not None:
        text, parts = _output_parts(call.completion)
        attributes["output.value"] = text
        message: dict[str, Any] = {"role": "assistant", "parts": parts}
        if call.finish_reason is not None:
            message["finish_reason"] = call.finish_reason
        attributes["gen_ai.output.messages"] = _dumps([message])
    return attributes


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _input_messages(prompt: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System instruction parts and messages of a stored prompt."""
    content = _loads(prompt)
    if not isinstance(content, dict):
        return [], [{"role": "user", "parts": [_text(prompt)]}]
    system = [part for key in _SYSTEM_KEYS for part in _parts(content.get(key))]
    messages: list[dict[str, Any]] = []
    for key in _MESSAGE_KEYS:
        value = content.get(key)
        if isinstance(value, list):
            messages.extend(_message(item) for item in value)
        elif value is not None:
            messages.append({"role": "user", "parts": _parts(value)})
    return system, messages


def _message(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return {"role": "user", "parts": _parts(item)}
    role = str(item.get("role") or "user")
    body = item.get("content", item.get("parts"))
    if role == "tool":
        response = {"type": "tool_call_response", "id": item.get("tool_call_id"), "response": body}
        return {"role": "tool", "parts": [response]}
    parts = _parts(body)
    for call in item.get("tool_calls") or ():
        function = call.get("function", {}) if isinstance(call, dict) else {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id") if isinstance(call, dict) else None,
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    return {"role": "assistant" if role == "model" else role, "parts": parts}


def _parts(value: Any) -> list[dict[str, Any]]:
    """Message content (a string, or a list of content blocks) as parts."""
    if value is None:
        return []
    if isinstance(value, str):
        return [_text(value)]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [_text(str(value))]
    parts: list[dict[str, Any]] = []
    for block in value:
        if isinstance(block, str):
            parts.append(_text(block))
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(_text(block["text"]))
        elif isinstance(block, dict):
            parts.append({**block, "type": str(block.get("type") or "unknown")})
    return parts


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _output_parts(completion: str) -> tuple[str, list[dict[str, Any]]]:
    """The answer's text and its parts (text, tool calls) from a stored completion."""
    answer = _loads(completion)
    if not isinstance(answer, dict):
        return completion, [_text(completion)]
    text = answer.get("text") or ""
    parts = [_text(text)] if text else []
    for call in answer.get("tool_calls") or ():
        if isinstance(call, dict):
            parts.append(
                {"type": "tool_call", "name": call.get("name"), "arguments": call.get("arguments")}
            )
    return str(text), parts
