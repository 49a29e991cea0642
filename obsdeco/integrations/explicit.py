"""The explicit integrations: `OpenAIIntegration(...).wrap_completion(...)` and
`AnthropicIntegration(...).wrap_message(...)`.

Each makes the SDK call and has it recorded once, by the same seam as `patch_all()` (installed
on first use if it is not yet; until `patch_all()` it observes explicit calls only), with the
collector's project and the agent and operation given.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from obsdeco.collector import MetricsCollector
from obsdeco.integrations.anthropic import AnthropicSDK
from obsdeco.integrations.http import install_http_seam
from obsdeco.integrations.openai import OpenAISDK
from obsdeco.integrations.recorder import Attribution, reset_explicit, set_explicit
from obsdeco.integrations.sdk import SDKSeam, install_sdk_seam


class _ExplicitIntegration:
    sdk: type[SDKSeam]

    def __init__(self, collector: MetricsCollector | None = None) -> None:
        self.collector = collector

    def _call(
        self,
        method: Callable[..., Any],
        kwargs: dict[str, Any],
        agent_name: str | None,
        operation: str | None,
    ) -> Any:
        install_sdk_seam(self.sdk)
        install_http_seam()  # where the engine (cache, router) acts
        project = self.collector.project_name if self.collector else None
        attribution = Attribution(project, agent_name, operation)
        token = set_explicit(attribution)
        try:
            result = method(**kwargs)
        finally:
            reset_explicit(token)
        if inspect.isawaitable(result):
            return _awaited_with(attribution, result)
        return result


async def _awaited_with(attribution: Attribution, awaitable: Awaitable[Any]) -> Any:
    token = set_explicit(attribution)
    try:
        return await awaitable
    finally:
        reset_explicit(token)


class OpenAIIntegration(_ExplicitIntegration):
    """Explicit OpenAI calls, recorded through `collector`'s project."""

    sdk = OpenAISDK

    def wrap_completion(
        self,
        client: Any,
        *,
        model: str,
        messages: list[Any],
        agent_name: str | None = None,
        operation: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """`client.chat.completions.create(model=..., messages=..., **kwargs)`, recorded.

        Same records as `patch_all()` would make (it does not matter whether patching is on),
        attributed to `agent_name` / `operation` when given.
        """
        return self._call(
            client.chat.completions.create,
            {"model": model, "messages": messages, **kwargs},
            agent_name,
            operation,
        )


class AnthropicIntegration(_ExplicitIntegration):
    """Explicit Anthropic calls, recorded through `collector`'s project."""

    sdk = AnthropicSDK

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
        return self._call(
            client.messages.create,
            {"model": model, "messages": messages, "max_tokens": max_tokens, **kwargs},
            agent_name,
            operation,
        )
