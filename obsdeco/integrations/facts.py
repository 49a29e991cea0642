"""The readers' vocabulary: what a response or a stream says about its call.

A provider format's readers turn a response (an SDK object, or the JSON body as a dict) into
`ResponseFacts`, and feed stream events (SDK event objects, or the JSON of each server-sent
event) to a `StreamAccumulator`. `field` reads both kinds alike, so one reader serves every seam.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from obsdeco.config import get_settings
from obsdeco.guard import fault


def field(obj: Any, name: str) -> Any:
    """`obj.name` for SDK objects, `obj[name]` for parsed JSON; None when absent."""
    if type(obj) is dict:
        return obj.get(name)
    return getattr(obj, name, None)


@dataclass(slots=True)
class ResponseFacts:
    """What a response (or a stream, once seen) says about the call. None means not reported."""

    response_model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    tool_call_count: int | None = None
    completion: Callable[[], str | None] | None = None
    """Builds the answer's text and tool calls as JSON; set only with capture_content."""


FactsSource = ResponseFacts | Callable[[], ResponseFacts] | None
"""Facts as known, or a function reading them later (off the caller's thread), or none."""


def completion_json(text: str, tool_calls: list[dict[str, str]]) -> str | None:
    """The stored form of an answer: {"text", "tool_calls": [{"name", "arguments"}]}."""
    if not text and not tool_calls:
        return None
    return json.dumps({"text": text, "tool_calls": tool_calls}, ensure_ascii=False)


def capturing() -> bool:
    """Whether prompts and completions are captured (`capture_content`)."""
    return get_settings().capture_content


class StreamAccumulator:
    """Collects facts from stream events; `observe` returns True for an event to hide.

    With capture_content, `capture` is True and the accumulator also gathers the answer's text
    and tool calls, which `facts.completion` turns into JSON when the record is built.
    """

    def __init__(self) -> None:
        self.facts = ResponseFacts()
        self.capture = capturing()

    def observe(self, event: Any) -> bool:
        raise NotImplementedError


def observe_event(accumulator: StreamAccumulator, event: Any) -> bool:
    """Feed one stream event to its accumulator; True to hide it. Never raises: a fault is
    noted and the stream is passed on as is."""
    try:
        return accumulator.observe(event)
    except Exception:
        fault(f"{type(accumulator).__qualname__}.observe")
        return False


def feed_events(accumulator: StreamAccumulator, events: Iterable[str]) -> None:
    """Feed the data of server-sent events to `accumulator`, each JSON event parsed; data that
    is no JSON (`[DONE]` and other markers) is passed over."""
    for data in events:
        try:
            event = json.loads(data)
        except ValueError:
            continue
        observe_event(accumulator, event)
