"""Helpers shared by the engine tests (response cache and model router)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import obsdeco
from obsdeco import LLMCall
from tests.helpers import call

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


async def close(closable: Any) -> None:
    """`closable.close()`, awaited for an async SDK object."""
    await call(closable.close)


def tracked() -> contextlib.AbstractContextManager[obsdeco.Session]:
    """A session of its own for the block: calls made in it land in it and nowhere else."""
    return obsdeco.Observatory().track("engine-test")


def calls_in(session: obsdeco.Session) -> list[LLMCall]:
    """Every record of the session, after everything queued so far was handled."""
    obsdeco.flush()
    return obsdeco.get_calls(session.id)
