"""Helpers shared by the engine tests (response cache and model router)."""

from __future__ import annotations

import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import obsdeco
from obsdeco import LLMCall

PROMPT_TOKENS = 3
"""What the local provider counts for `prompt(...)`: "Say", "hello" and the nonce."""
COMPLETION_TOKENS = 12
"""What it counts for its default reply ("Hello! This is a reply from the obsdeco test
provider.")."""


def new_nonce() -> str:
    """A word no other test sends, so that no test meets another's cache entries (whatever
    the store and however long it keeps them)."""
    return f"n{uuid.uuid4().hex[:16]}"


def prompt(nonce: str) -> str:
    return f"Say hello {nonce}"


def messages(nonce: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt(nonce)}]


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(...)`, awaited when it is an async SDK method."""
    result = function(*args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


async def drain(iterable: Any) -> list[Any]:
    """Every item of a sync or async iterable."""
    if hasattr(iterable, "__aiter__"):
        return [item async for item in iterable]
    return list(iterable)


async def take(iterable: Any, count: int) -> list[Any]:
    """The first `count` items, read as users do: a for loop they break out of."""
    seen: list[Any] = []
    if hasattr(iterable, "__aiter__"):
        async for item in iterable:
            seen.append(item)
            if len(seen) == count:
                break
    else:
        for item in iterable:
            seen.append(item)
            if len(seen) == count:
                break
    return seen


async def close(closable: Any) -> None:
    """`closable.close()`, awaited for an async SDK object."""
    await call(closable.close)


@contextlib.asynccontextmanager
async def entered(manager: Any) -> AsyncIterator[Any]:
    """`async with manager` for an async context manager, else `with manager`."""
    if inspect.iscoroutinefunction(getattr(type(manager), "__aenter__", None)):
        async with manager as value:
            yield value
    else:
        with manager as value:
            yield value


def dumped(items: list[Any]) -> list[dict[str, Any]]:
    return [item.model_dump() for item in items]


def tracked() -> contextlib.AbstractContextManager[obsdeco.Session]:
    """A session of its own for the block: calls made in it land in it and nowhere else."""
    return obsdeco.Observatory().track("engine-test")


def calls_in(session: obsdeco.Session) -> list[LLMCall]:
    """Every record of the session, after everything queued so far was handled."""
    obsdeco.flush()
    return obsdeco.get_calls(session.id)
