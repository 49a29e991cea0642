"""Helpers shared by the capture tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import obsdeco
from obsdeco import LLMCall


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
