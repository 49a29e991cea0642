"""litellm and smolagents' `LiteLLMModel`, captured for real through the HTTP seam.

litellm posts Anthropic requests (`/v1/messages`) with httpx clients of its own, so only the
HTTP seam sees them; OpenAI models go through the openai SDK, whose seam records them (and
the HTTP seam under it stands aside). Every call goes to the local provider over real HTTP and
is answered with a recorded fixture, so the expected token counts are the fixture's:

- anthropic/messages_create.json: claude-sonnet-4-6, input 14, output 11, end_turn
- anthropic/messages_stream.sse: claude-sonnet-4-6, input 21, output 13, end_turn
- openai/chat_completion.json: gpt-3.5-turbo-0125, prompt 15, completion 31, stop

tests/conftest.py keeps litellm off the network (its cost map is the bundled copy).
"""

from __future__ import annotations

from typing import Any

import pytest

import obsdeco
from obsdeco import LLMCall, ModelProvider
from obsdeco.testing import ProviderServer, Reply
from tests.helpers import in_async_session, in_session

# litellm's own types make pydantic warn when first used; that is not under test.
pytestmark = pytest.mark.filterwarnings("ignore:.*the `ReadOnly` qualifier:UserWarning")

litellm = pytest.importorskip("litellm", reason="litellm is not installed (extra 'frameworks')")

MESSAGES = [{"role": "user", "content": "What's the capital of France?"}]
ANTHROPIC_MESSAGE = "anthropic/messages_create.json"
ANTHROPIC_STREAM = "anthropic/messages_stream.sse"
OPENAI_CHAT = "openai/chat_completion.json"


def anthropic_args(provider: ProviderServer, **extra: Any) -> dict[str, Any]:
    return {
        "model": "anthropic/claude-sonnet-4-6",
        "messages": MESSAGES,
        "api_base": provider.anthropic_base_url,
        "api_key": "sk-ant-test",
        "max_tokens": 64,
        "num_retries": 0,
        **extra,
    }


def facts(call: LLMCall) -> dict[str, Any]:
    return {
        "provider": call.provider,
        "api": call.api,
        "model": call.model,
        "response_model": call.response_model,
        "agent_name": call.agent_name,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cached_tokens": call.cached_tokens,
        "finish_reason": call.finish_reason,
        "streamed": call.streamed,
        "success": call.success,
        "error_type": call.error_type,
    }


def anthropic_facts(prompt: int, completion: int, streamed: bool) -> dict[str, Any]:
    return {
        "provider": ModelProvider.ANTHROPIC,
        "api": "messages",
        "model": "claude-sonnet-4-6",
        "response_model": "claude-sonnet-4-6",
        "agent_name": "Researcher",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": 0,
        "finish_reason": "end_turn",
        "streamed": streamed,
        "success": True,
        "error_type": None,
    }


def test_completion_on_an_anthropic_model(patched: list[str], provider: ProviderServer) -> None:
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE))

    @obsdeco.observe_agent("Researcher")
    def ask() -> Any:
        return litellm.completion(**anthropic_args(provider))

    response, calls = in_session(ask)
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (14, 11)
    assert [facts(call) for call in calls] == [anthropic_facts(14, 11, streamed=False)]


def test_streamed_completion_on_an_anthropic_model(
    patched: list[str], provider: ProviderServer
) -> None:
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM))

    @obsdeco.observe_agent("Researcher")
    def ask() -> str:
        stream = litellm.completion(**anthropic_args(provider, stream=True))
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    text, calls = in_session(ask)
    assert text == "Sunlight scatters off air molecules."
    assert [facts(call) for call in calls] == [anthropic_facts(21, 13, streamed=True)]
    assert calls[0].time_to_first_token_ms is not None


async def test_acompletion_on_an_anthropic_model(
    patched: list[str], provider: ProviderServer
) -> None:
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE))

    @obsdeco.observe_agent("Researcher")
    async def ask() -> Any:
        return await litellm.acompletion(**anthropic_args(provider))

    _, calls = await in_async_session(ask)
    assert [facts(call) for call in calls] == [anthropic_facts(14, 11, streamed=False)]


async def test_streamed_acompletion_on_an_anthropic_model(
    patched: list[str], provider: ProviderServer
) -> None:
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM))

    @obsdeco.observe_agent("Researcher")
    async def ask() -> str:
        stream = await litellm.acompletion(**anthropic_args(provider, stream=True))
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    text, calls = await in_async_session(ask)
    assert text == "Sunlight scatters off air molecules."
    assert [facts(call) for call in calls] == [anthropic_facts(21, 13, streamed=True)]


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [(429, "RateLimitError", "rate_limit"), (500, "InternalServerError", "server_error")],
)
def test_a_failing_completion_is_recorded_as_failed(
    patched: list[str], provider: ProviderServer, status: int, exception: str, error_type: str
) -> None:
    provider.enqueue(Reply.error(status, message="try again later"))

    @obsdeco.observe_agent("Researcher")
    def ask() -> BaseException:
        try:
            litellm.completion(**anthropic_args(provider))
        except Exception as error:
            return error
        raise AssertionError("the call did not fail")

    error, calls = in_session(ask)
    assert type(error).__name__ == exception
    assert len(provider.requests) == 1
    assert [
        (call.success, call.error_type, call.error_message, call.agent_name) for call in calls
    ] == [(False, error_type, f"HTTP {status}: try again later", "Researcher")]


async def test_a_failing_streamed_acompletion_is_recorded_as_failed(
    patched: list[str], provider: ProviderServer
) -> None:
    provider.enqueue(Reply.error(429))

    async def ask() -> BaseException:
        try:
            stream = await litellm.acompletion(**anthropic_args(provider, stream=True))
            async for _ in stream:
                pass
        except Exception as error:
            return error
        raise AssertionError("the call did not fail")

    error, calls = await in_async_session(ask)
    assert type(error).__name__ == "RateLimitError"
    assert [(call.success, call.error_type, call.streamed) for call in calls] == [
        (False, "rate_limit", True)
    ]


def test_completion_on_an_openai_model_is_recorded_once(
    patched: list[str], provider: ProviderServer
) -> None:
    provider.enqueue(Reply.fixture(OPENAI_CHAT))

    @obsdeco.observe_agent("Researcher")
    def ask() -> Any:
        return litellm.completion(
            model="openai/gpt-3.5-turbo",
            messages=MESSAGES,
            api_base=provider.openai_base_url,
            api_key="sk-test",
            num_retries=0,
        )

    _, calls = in_session(ask)
    assert len(provider.requests) == 1
    assert [facts(call) for call in calls] == [
        {
            "provider": ModelProvider.OPENAI,
            "api": "chat.completions",
            "model": "gpt-3.5-turbo",
            "response_model": "gpt-3.5-turbo-0125",
            "agent_name": "Researcher",
            "prompt_tokens": 15,
            "completion_tokens": 31,
            "cached_tokens": 0,
            "finish_reason": "stop",
            "streamed": False,
            "success": True,
            "error_type": None,
        }
    ]


def test_smolagents_litellm_model_on_an_anthropic_model(
    patched: list[str], provider: ProviderServer
) -> None:
    smolagents = pytest.importorskip("smolagents", reason="smolagents is not installed")
    model = smolagents.LiteLLMModel(
        model_id="anthropic/claude-sonnet-4-6",
        api_base=provider.anthropic_base_url,
        api_key="sk-ant-test",
        max_tokens=64,
    )
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE), Reply.fixture(ANTHROPIC_STREAM))
    question = smolagents.ChatMessage(
        role=smolagents.MessageRole.USER, content=[{"type": "text", "text": "Capital of France?"}]
    )

    @obsdeco.observe_agent("Researcher")
    def ask() -> tuple[Any, str]:
        answer = model.generate([question])
        streamed = "".join(delta.content or "" for delta in model.generate_stream([question]))
        return answer, streamed

    (answer, streamed), calls = in_session(ask)
    assert (answer.token_usage.input_tokens, answer.token_usage.output_tokens) == (14, 11)
    assert streamed == "Sunlight scatters off air molecules."
    assert [facts(call) for call in calls] == [
        anthropic_facts(14, 11, streamed=False),
        anthropic_facts(21, 13, streamed=True),
    ]
