"""How big a request's prompt is, read from its JSON body without a tokenizer.

Two measures: the characters of its text (the router's estimate, about four a token) and the
UTF-8 bytes of everything the model reads as input (a bound: byte-level BPE tokenizers, as
OpenAI's and Anthropic's are, never make more tokens than bytes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PROMPT_KEYS = ("messages", "system", "instructions", "input", "prompt", "contents")
"""Where a request's prompt is, in the OpenAI, Anthropic and Gemini formats."""
INPUT_KEYS = (*PROMPT_KEYS, "tools", "functions", "systemInstruction", "toolConfig")
"""Everything of a request the model reads as input tokens."""
_TEXT_KEYS = frozenset({"content", "text", "parts", "input", "system", "instructions", "prompt"})


def text_characters(value: Any) -> int:
    """The characters of text in a prompt part (message contents, text parts)."""
    if type(value) is str:
        return len(value)
    if type(value) is list:
        return sum(text_characters(item) for item in value)
    if type(value) is dict:
        return sum(text_characters(item) for key, item in value.items() if key in _TEXT_KEYS)
    return 0


def prompt_characters(body: Mapping[str, Any]) -> int:
    """The characters of text in a request's prompt."""
    return sum(text_characters(body.get(key)) for key in PROMPT_KEYS)


def input_bytes(body: Mapping[str, Any]) -> int:
    """The UTF-8 bytes of a request's input parts as JSON: at least its input token count."""
    parts = {key: body[key] for key in INPUT_KEYS if body.get(key) is not None}
    return len(json.dumps(parts, ensure_ascii=False, default=str).encode()) if parts else 0
