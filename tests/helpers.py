"""Helpers shared by the capture tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import obsdeco
from obsdeco import LLMCall

CALL_FACTS = (
    "provider",
    "api",
    "model",
    "response_model",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "streamed",
    "success",
    "error_type",
)
"""What the capture tests compare of a recorded call, besides what a test adds."""


def call_facts(call: LLMCall, *more: str) -> dict[str, Any]:
    """`CALL_FACTS` (and `more`) of a recorded call, by name."""
    return {name: getattr(call, name) for name in (*CALL_FACTS, *more)}


def in_session(run: Callable[[], Any]) -> tuple[Any, list[LLMCall]]:
    """Run `run()` inside a fresh observed session; its value and the session's records."""
    box: dict[str, str] = {}

    @obsdeco.observe_session
    def session() -> Any:
        box["id"] = obsdeco.current_session().id
        return run()

    value = session()
    obsdeco.flush()
    return value, obsdeco.get_calls(box["id"])


async def in_async_session(run: Callable[[], Awaitable[Any]]) -> tuple[Any, list[LLMCall]]:
    """The async twin of `in_session`."""
    box: dict[str, str] = {}

    @obsdeco.observe_session
    async def session() -> Any:
        box["id"] = obsdeco.current_session().id
        return await run()

    value = await session()
    obsdeco.flush()
    return value, obsdeco.get_calls(box["id"])
