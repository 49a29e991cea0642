"""Real agent frameworks reaching the SDKs through the paths obsdeco's seam must catch.

LangChain (langchain-openai, langchain-anthropic) calls `with_raw_response.create` and then
`.parse()`; pydantic-ai calls `client.beta.messages.create` (Anthropic, streamed when its
default max_tokens is too large for a plain request) and `chat.completions.create` (OpenAI). Each
framework talks to the local provider over real HTTP; the replies are recorded fixtures, so the
expected token counts are the fixtures' own. Each test skips when its framework is not installed.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai
import pytest

import obsdeco
from obsdeco import LLMCall, ModelProvider
from obsdeco.testing import ProviderServer, Reply
from tests.helpers import call_facts, in_async_session, in_session

# The model name the brief asks for is one the SDKs warn about; the warning is not under test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The model 'claude-sonnet-4-5' is deprecated:DeprecationWarning"
)

# openai/chat_completion.json: gpt-3.5-turbo-0125, prompt 15, completion 31, cached 0, reasoning 0
OPENAI_CHAT = "openai/chat_completion.json"
# final usage chunk: gpt-4o-mini-2024-07-18, prompt 78, completion 9, cached 0, reasoning 0
OPENAI_CHAT_STREAM = "openai/chat_completion_stream_include_usage.sse"
OPENAI_CHAT_STREAM_TEXT = "The capital of the UK is London."
# anthropic/messages_create.json: claude-sonnet-4-6, input 14 (+0 cache read, +0 write), output 11
ANTHROPIC_MESSAGE = "anthropic/messages_create.json"
# message_start input 21 (+0 +0); message_delta output 13
ANTHROPIC_STREAM = "anthropic/messages_stream.sse"


def _forget_langchain_async_http_clients() -> None:
    """LangChain caches its default async HTTP client per base URL (functools.lru_cache), but
    each async test runs on an event loop of its own: a closed client must not be reused."""
    for module_name, name in (
        ("langchain_anthropic._client_utils", "_get_default_async_httpx_client"),
        ("langchain_openai.chat_models._client_utils", "_cached_async_httpx_client"),
    ):
        cached = getattr(sys.modules.get(module_name), name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], None]]:
    """Register async SDK clients a test made; they are closed on the test's event loop after
    it (left to the garbage collector they would leave unclosed transports behind)."""
    clients: list[Any] = []
    yield clients.append
    for client in clients:
        await client.close()
    _forget_langchain_async_http_clients()


def summary(call: LLMCall) -> dict[str, Any]:
    return call_facts(call, "finish_reason")


def openai_chat_record(model: str, *, streamed: bool = False) -> dict[str, Any]:
    """What OPENAI_CHAT must be recorded as, requested as `model`."""
    return {
        "provider": ModelProvider.OPENAI,
        "api": "chat.completions",
        "model": model,
        "response_model": "gpt-3.5-turbo-0125",
        "prompt_tokens": 15,
        "completion_tokens": 31,
        "cached_tokens": 0,
        "cache_creation_tokens": None,  # OpenAI's details carry no cache_write_tokens here
        "reasoning_tokens": 0,
        "finish_reason": "stop",
        "streamed": streamed,
        "success": True,
        "error_type": None,
    }


def anthropic_message_record(model: str) -> dict[str, Any]:
    """What ANTHROPIC_MESSAGE must be recorded as, requested as `model`."""
    return {
        "provider": ModelProvider.ANTHROPIC,
        "api": "messages",
        "model": model,
        "response_model": "claude-sonnet-4-6",
        "prompt_tokens": 14,
        "completion_tokens": 11,
        "cached_tokens": 0,
        "cache_creation_tokens": 0,
        "reasoning_tokens": None,
        "finish_reason": "end_turn",
        "streamed": False,
        "success": True,
        "error_type": None,
    }


def anthropic_stream_record(model: str) -> dict[str, Any]:
    """What ANTHROPIC_STREAM must be recorded as, requested as `model`."""
    return {
        **anthropic_message_record(model),
        "prompt_tokens": 21,
        "completion_tokens": 13,
        "streamed": True,
    }


def assert_stream_timing(call: LLMCall) -> None:
    assert call.time_to_first_token_ms is not None
    assert 0 <= call.time_to_first_token_ms <= call.latency_ms


# --- LangChain: ChatOpenAI ------------------------------------------------------------------


def chat_openai(provider: ProviderServer, **options: Any) -> Any:
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(
        base_url=provider.openai_base_url,
        api_key="sk-test",
        model="gpt-4o-mini",
        max_retries=0,
        **options,
    )


def test_langchain_chat_openai_invoke(provider, patched):
    model = chat_openai(provider)
    provider.enqueue(Reply.fixture(OPENAI_CHAT))

    @obsdeco.observe_agent(name="Researcher")
    def research() -> Any:
        return model.invoke("hi")

    message, calls = in_session(research)

    assert message.usage_metadata["input_tokens"] == 15
    assert message.usage_metadata["output_tokens"] == 31
    assert message.content.startswith("Why did the Opentelemetry developer go broke?")
    assert provider.last_request.body["messages"] == [{"content": "hi", "role": "user"}]
    assert len(calls) == 1
    assert summary(calls[0]) == openai_chat_record("gpt-4o-mini")
    assert calls[0].agent_name == "Researcher"
    assert calls[0].time_to_first_token_ms is None


async def test_langchain_chat_openai_ainvoke(provider, patched, closing):
    model = chat_openai(provider)
    closing(model.root_async_client)
    provider.enqueue(Reply.fixture(OPENAI_CHAT))

    message, calls = await in_async_session(lambda: model.ainvoke("hi"))

    assert message.usage_metadata["total_tokens"] == 46
    assert len(calls) == 1
    assert summary(calls[0]) == openai_chat_record("gpt-4o-mini")


def test_langchain_chat_openai_stream_with_usage(provider, patched):
    model = chat_openai(provider, stream_usage=True)
    provider.enqueue(Reply.fixture(OPENAI_CHAT_STREAM))

    chunks, calls = in_session(lambda: list(model.stream("hi")))

    assert provider.last_request.body["stream_options"] == {"include_usage": True}
    assert "".join(chunk.content for chunk in chunks) == OPENAI_CHAT_STREAM_TEXT
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.usage_metadata["input_tokens"] == 78
    assert merged.usage_metadata["output_tokens"] == 9
    assert len(calls) == 1
    assert summary(calls[0]) == {
        **openai_chat_record("gpt-4o-mini", streamed=True),
        "response_model": "gpt-4o-mini-2024-07-18",
        "prompt_tokens": 78,
        "completion_tokens": 9,
    }
    assert_stream_timing(calls[0])


def test_langchain_chat_openai_stream_without_usage(provider, patched):
    # LangChain does not ask a custom base_url for stream usage: the counts are unknown (None).
    model = chat_openai(provider)
    provider.enqueue(Reply.default("Paris is the capital."))

    chunks, calls = in_session(lambda: list(model.stream("hi")))

    assert "stream_options" not in provider.last_request.body
    assert "".join(chunk.content for chunk in chunks) == "Paris is the capital."
    assert len(calls) == 1
    call = calls[0]
    assert call.streamed is True
    assert call.success is True
    assert call.finish_reason == "stop"
    assert (call.prompt_tokens, call.completion_tokens) == (None, None)
    assert_stream_timing(call)


def test_langchain_chat_openai_error(provider, patched):
    model = chat_openai(provider)
    provider.enqueue(Reply.error(429))

    def run() -> BaseException:
        with pytest.raises(openai.RateLimitError) as info:
            model.invoke("hi")
        return info.value

    error, calls = in_session(run)

    assert error.status_code == 429
    assert len(calls) == 1
    assert calls[0].success is False
    assert calls[0].error_type == "rate_limit"


# --- LangChain: ChatAnthropic ---------------------------------------------------------------


def chat_anthropic(provider: ProviderServer, **options: Any) -> Any:
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    return langchain_anthropic.ChatAnthropic(
        base_url=provider.anthropic_base_url,
        api_key="sk-ant-test",
        model="claude-sonnet-4-5",
        max_retries=0,
        **options,
    )


def test_langchain_chat_anthropic_invoke(provider, patched):
    model = chat_anthropic(provider)
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE))

    message, calls = in_session(lambda: model.invoke("hi"))

    assert message.content == "The capital of France is **Paris**."
    assert message.usage_metadata["input_tokens"] == 14
    assert message.usage_metadata["output_tokens"] == 11
    assert provider.last_request.body["messages"] == [{"role": "user", "content": "hi"}]
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_message_record("claude-sonnet-4-5")


async def test_langchain_chat_anthropic_ainvoke(provider, patched, closing):
    model = chat_anthropic(provider)
    closing(model._async_client)
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE))

    message, calls = await in_async_session(lambda: model.ainvoke("hi"))

    assert message.usage_metadata["total_tokens"] == 25
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_message_record("claude-sonnet-4-5")


def test_langchain_chat_anthropic_with_betas(provider, patched):
    # With betas LangChain goes through client.beta.messages.with_raw_response.create.
    model = chat_anthropic(provider, betas=["context-1m-2025-08-07"])
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE))

    message, calls = in_session(lambda: model.invoke("hi"))

    assert provider.last_request.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert message.usage_metadata["input_tokens"] == 14
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_message_record("claude-sonnet-4-5")


def test_langchain_chat_anthropic_stream(provider, patched):
    model = chat_anthropic(provider)
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM))

    chunks, calls = in_session(lambda: list(model.stream("hi")))

    assert provider.last_request.body["stream"] is True
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.usage_metadata["input_tokens"] == 21
    assert merged.usage_metadata["output_tokens"] == 13
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_stream_record("claude-sonnet-4-5")
    assert_stream_timing(calls[0])


async def test_langchain_chat_anthropic_astream(provider, patched, closing):
    model = chat_anthropic(provider)
    closing(model._async_client)
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM))

    async def run() -> list[Any]:
        return [chunk async for chunk in model.astream("hi")]

    chunks, calls = await in_async_session(run)

    assert "".join(str(chunk.content) for chunk in chunks if isinstance(chunk.content, str))
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_stream_record("claude-sonnet-4-5")


# --- pydantic-ai ----------------------------------------------------------------------------


def anthropic_agent(
    provider: ProviderServer, closing: Callable[[Any], None], **settings: Any
) -> Any:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    models = pytest.importorskip("pydantic_ai.models.anthropic")
    providers = pytest.importorskip("pydantic_ai.providers.anthropic")
    client = anthropic.AsyncAnthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=0
    )
    closing(client)
    model = models.AnthropicModel(
        "claude-sonnet-4-5", provider=providers.AnthropicProvider(anthropic_client=client)
    )
    return pydantic_ai.Agent(model, model_settings=settings or None)


def openai_agent(provider: ProviderServer, closing: Callable[[Any], None]) -> Any:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    models = pytest.importorskip("pydantic_ai.models.openai")
    providers = pytest.importorskip("pydantic_ai.providers.openai")
    openai_provider = providers.OpenAIProvider(base_url=provider.openai_base_url, api_key="sk-test")
    closing(openai_provider.client)
    return pydantic_ai.Agent(models.OpenAIChatModel("gpt-4o-mini", provider=openai_provider))


async def test_pydantic_ai_anthropic_agent_default_settings_streams(provider, patched, closing):
    # Its default max_tokens (64000) is too large for a plain request: it streams beta messages.
    agent = anthropic_agent(provider, closing)
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM))

    result, calls = await in_async_session(lambda: agent.run("hi"))

    assert result.output == "Sunlight scatters off air molecules."
    assert result.usage.input_tokens == 21
    assert result.usage.output_tokens == 13
    assert [request.body["stream"] for request in provider.requests] == [True]
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_stream_record("claude-sonnet-4-5")
    assert_stream_timing(calls[0])


async def test_pydantic_ai_anthropic_agent_plain_request(provider, patched, closing):
    agent = anthropic_agent(provider, closing, max_tokens=1024)
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE))

    @obsdeco.observe_agent(name="Geographer", operation="answer")
    async def answer() -> Any:
        return await agent.run("What's the capital of France?")

    result, calls = await in_async_session(answer)

    assert result.output == "The capital of France is **Paris**."
    assert result.usage.input_tokens == 14
    assert provider.last_request.body["max_tokens"] == 1024
    assert provider.last_request.body.get("stream", False) is False
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_message_record("claude-sonnet-4-5")
    assert (calls[0].agent_name, calls[0].operation) == ("Geographer", "answer")


async def test_pydantic_ai_anthropic_agent_run_stream(provider, patched, closing):
    agent = anthropic_agent(provider, closing, max_tokens=1024)
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM))

    async def run() -> str:
        async with agent.run_stream("Why is the sky blue?") as result:
            return await result.get_output()

    output, calls = await in_async_session(run)

    assert output == "Sunlight scatters off air molecules."
    assert len(calls) == 1
    assert summary(calls[0]) == anthropic_stream_record("claude-sonnet-4-5")


async def test_pydantic_ai_openai_chat_agent(provider, patched, closing):
    agent = openai_agent(provider, closing)
    provider.enqueue(Reply.fixture(OPENAI_CHAT))

    result, calls = await in_async_session(lambda: agent.run("Tell me a joke"))

    assert result.output.startswith("Why did the Opentelemetry developer go broke?")
    assert result.usage.input_tokens == 15
    assert result.usage.output_tokens == 31
    assert len(calls) == 1
    assert summary(calls[0]) == openai_chat_record("gpt-4o-mini")


async def test_pydantic_ai_openai_chat_agent_run_stream(provider, patched, closing):
    agent = openai_agent(provider, closing)
    provider.enqueue(Reply.fixture(OPENAI_CHAT_STREAM))

    async def run() -> str:
        async with agent.run_stream("What is the capital of the UK?") as result:
            return await result.get_output()

    output, calls = await in_async_session(run)

    assert output == OPENAI_CHAT_STREAM_TEXT
    assert provider.last_request.body["stream_options"] == {"include_usage": True}
    assert len(calls) == 1
    assert summary(calls[0]) == {
        **openai_chat_record("gpt-4o-mini", streamed=True),
        "response_model": "gpt-4o-mini-2024-07-18",
        "prompt_tokens": 78,
        "completion_tokens": 9,
    }
    assert_stream_timing(calls[0])
