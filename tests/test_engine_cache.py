"""The response cache (`obsdeco.cache(...)`, API.md section 6) with the real SDKs over HTTP.

Every request goes to the local provider, whose synthesised replies carry a new id each time
(`chatcmpl-test...N`, `msg_test...N`): an answer equal to an earlier one, id included, with no
new request in `provider.requests`, was served from the cache. Every test asks with a word of
its own (`nonce`), so no test meets another's entries whatever the store keeps.

Counts with the default reply: prompt 3 tokens ("Say hello <nonce>"), completion 12.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import types
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

import obsdeco
from obsdeco.engine import cache_store
from obsdeco.integrations import OpenAIIntegration
from obsdeco.integrations import engine as engine_module
from obsdeco.integrations.explicit import AnthropicIntegration
from obsdeco.testing import Reply, load_fixture, split_sse
from tests.conftest import IN_CI
from tests.engine_helpers import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    calls_in,
    close,
    messages,
    new_nonce,
    prompt,
    tracked,
)
from tests.helpers import call, drain, dumped, entered, take

pytestmark = pytest.mark.usefixtures("patched")

TTL_S = 600
"""Every entry a test writes expires: nothing is left behind in a shared Redis or database."""

REDIS_URL = os.environ.get("OBSDECO_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _require_redis() -> None:
    """Skip when Redis is down, except in CI where its tests must run."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        reason = f"Redis unreachable at {REDIS_URL} ({type(error).__name__})"
        if IN_CI:
            pytest.fail(f"{reason}; in CI the Redis tests must run")
        pytest.skip(reason)
    finally:
        client.close()


@pytest.fixture(params=["memory", "sqlite", "postgresql", "redis"])
def cache_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """obsdeco configured with each cache backend in turn (its records on SQLite)."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cache.db"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        _require_redis()
        url = REDIS_URL
    obsdeco.configure(database_url=f"sqlite:///{tmp_path}/default.db", cache_url=url)
    return url


@pytest.fixture
def nonce() -> str:
    return new_nonce()


@pytest.fixture(params=["sync", "async"])
def anthropic_any(
    request: pytest.FixtureRequest,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> anthropic.Anthropic | anthropic.AsyncAnthropic:
    """An Anthropic client: each test using it runs with the sync one, then the async one."""
    return anthropic_client if request.param == "sync" else async_anthropic_client


def hits(calls: list[obsdeco.LLMCall]) -> list[bool | None]:
    return [record.cache_hit for record in calls]


def usage(calls: list[obsdeco.LLMCall]) -> list[tuple[Any, ...]]:
    """(cache_hit, prompt, completion, streamed, success) of each record."""
    return [
        (
            record.cache_hit,
            record.prompt_tokens,
            record.completion_tokens,
            record.streamed,
            record.success,
        )
        for record in calls
    ]


def chat_kwargs(nonce: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": messages(nonce), **extra}


def anthropic_kwargs(nonce: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": messages(nonce),
        **extra,
    }


MISS_THEN_HIT = [
    (False, PROMPT_TOKENS, COMPLETION_TOKENS, False, True),
    (True, PROMPT_TOKENS, COMPLETION_TOKENS, False, True),
]
STREAMED_MISS_THEN_HIT = [(hit, p, c, True, ok) for hit, p, c, _, ok in MISS_THEN_HIT]


# ------------------------------------------------------------------------------------------
# 1. A repeat is served from the cache, as the SDK's own object: every backend
# ------------------------------------------------------------------------------------------


async def test_chat_completion_repeat_is_a_hit_on_every_backend(provider, client, cache_url, nonce):
    with tracked() as session, obsdeco.cache(ttl_s=TTL_S):
        first = await call(client.chat.completions.create, **chat_kwargs(nonce))
        second = await call(client.chat.completions.create, **chat_kwargs(nonce))

    assert len(provider.requests) == 1
    assert type(second) is openai.types.chat.ChatCompletion
    assert second.model_dump() == first.model_dump()
    assert second.choices[0].message.content == provider.default_text
    assert usage(calls_in(session)) == MISS_THEN_HIT


async def test_chat_stream_repeat_replays_the_same_chunks_on_every_backend(
    provider, client, cache_url, nonce
):
    kwargs = chat_kwargs(nonce, stream=True, stream_options={"include_usage": True})
    with tracked() as session, obsdeco.cache(ttl_s=TTL_S):
        first = await drain(await call(client.chat.completions.create, **kwargs))
        replayed = await call(client.chat.completions.create, **kwargs)
        second = await drain(replayed)

    assert len(provider.requests) == 1
    assert isinstance(replayed, openai.Stream | openai.AsyncStream)
    assert {type(chunk) for chunk in second} == {openai.types.chat.ChatCompletionChunk}
    assert dumped(second) == dumped(first)
    assert len(second) == 15  # role, 12 text deltas, finish_reason, usage
    assert "".join(c.choices[0].delta.content or "" for c in second if c.choices) == (
        provider.default_text
    )
    assert usage(calls_in(session)) == STREAMED_MISS_THEN_HIT


async def test_anthropic_message_and_stream_repeats_are_hits_on_every_backend(
    provider, anthropic_any, cache_url, nonce
):
    with tracked() as session, obsdeco.cache(ttl_s=TTL_S):
        first = await call(anthropic_any.messages.create, **anthropic_kwargs(nonce))
        second = await call(anthropic_any.messages.create, **anthropic_kwargs(nonce))
        streamed = await drain(
            await call(anthropic_any.messages.create, **anthropic_kwargs(nonce, stream=True))
        )
        restreamed = await drain(
            await call(anthropic_any.messages.create, **anthropic_kwargs(nonce, stream=True))
        )

    assert len(provider.requests) == 2  # one plain, one stream
    assert type(second) is anthropic.types.Message
    assert second.model_dump() == first.model_dump()
    assert dumped(restreamed) == dumped(streamed)
    assert restreamed[-1].type == "message_stop"
    assert usage(calls_in(session)) == MISS_THEN_HIT + STREAMED_MISS_THEN_HIT


@pytest.mark.parametrize("status", [429, 500])
async def test_a_failed_call_is_never_cached_on_any_backend(
    provider, client, cache_url, nonce, status
):
    provider.enqueue(Reply.error(status, message="try again later"))
    with tracked() as session, obsdeco.cache(ttl_s=TTL_S):
        with pytest.raises(openai.APIStatusError) as raised:
            await call(client.chat.completions.create, **chat_kwargs(nonce))
        answered = await call(client.chat.completions.create, **chat_kwargs(nonce))
        again = await call(client.chat.completions.create, **chat_kwargs(nonce))

    assert raised.value.status_code == status
    assert len(provider.requests) == 2  # the failure, then the first success
    assert again.model_dump() == answered.model_dump()
    records = calls_in(session)
    assert [(r.cache_hit, r.success) for r in records] == [
        (False, False),
        (False, True),
        (True, True),
    ]


# ------------------------------------------------------------------------------------------
# 2. Every OpenAI endpoint and helper, sync and async, plain and streamed
# ------------------------------------------------------------------------------------------


async def test_responses_create_repeat_is_a_hit(provider, client, nonce):
    kwargs = {"model": "gpt-4.1-nano", "input": prompt(nonce)}
    with tracked() as session, obsdeco.cache():
        first = await call(client.responses.create, **kwargs)
        second = await call(client.responses.create, **kwargs)

    assert len(provider.requests) == 1
    assert type(second) is openai.types.responses.Response
    assert second.model_dump() == first.model_dump()
    assert second.output_text == provider.default_text
    assert usage(calls_in(session)) == MISS_THEN_HIT


async def test_responses_stream_repeat_replays_the_same_events(provider, client, nonce):
    kwargs = {"model": "gpt-4.1-nano", "input": prompt(nonce), "stream": True}
    with tracked() as session, obsdeco.cache():
        first = await drain(await call(client.responses.create, **kwargs))
        second = await drain(await call(client.responses.create, **kwargs))

    assert len(provider.requests) == 1
    assert dumped(second) == dumped(first)
    assert second[-1].type == "response.completed"
    assert type(second[-1]) is openai.types.responses.ResponseCompletedEvent
    assert usage(calls_in(session)) == STREAMED_MISS_THEN_HIT


async def test_embeddings_repeat_is_a_hit(provider, client, nonce):
    kwargs = {"model": "text-embedding-3-small", "input": prompt(nonce), "dimensions": 8}
    with tracked() as session, obsdeco.cache():
        first = await call(client.embeddings.create, **kwargs)
        second = await call(client.embeddings.create, **kwargs)

    assert len(provider.requests) == 1
    assert type(second) is openai.types.CreateEmbeddingResponse
    assert second.model_dump() == first.model_dump()
    assert len(second.data[0].embedding) == 8
    assert usage(calls_in(session)) == [
        (False, PROMPT_TOKENS, 0, False, True),
        (True, PROMPT_TOKENS, 0, False, True),
    ]


async def test_chat_stream_helper_repeat_gives_the_same_events_and_final_completion(
    provider, client, nonce
):
    async def run() -> tuple[list[Any], Any]:
        async with entered(client.chat.completions.stream(**chat_kwargs(nonce))) as stream:
            events = await drain(stream)
            final = await call(stream.get_final_completion)
        return events, final

    with tracked() as session, obsdeco.cache():
        first_events, first_final = await run()
        events, final = await run()

    assert len(provider.requests) == 1
    assert [event.type for event in events] == [event.type for event in first_events]
    assert final.model_dump() == first_final.model_dump()
    assert final.choices[0].message.content == provider.default_text
    assert hits(calls_in(session)) == [False, True]


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_with_raw_response_repeat_is_a_hit(provider, client, nonce, streamed):
    kwargs = chat_kwargs(nonce, stream=True) if streamed else chat_kwargs(nonce)

    async def run() -> tuple[int, str, Any]:
        raw = await call(client.chat.completions.with_raw_response.create, **kwargs)
        parsed = await call(raw.parse)
        parsed = dumped(await drain(parsed)) if streamed else parsed.model_dump()
        return raw.status_code, raw.headers["content-type"], parsed

    with tracked() as session, obsdeco.cache():
        first = await run()
        second = await run()

    assert len(provider.requests) == 1
    assert second == first
    assert second[0] == 200
    assert hits(calls_in(session)) == [False, True]


async def test_with_streaming_response_repeat_is_a_hit(provider, client, nonce):
    async def parsed() -> Any:
        manager = client.chat.completions.with_streaming_response.create(**chat_kwargs(nonce))
        async with entered(manager) as response:
            return (await call(response.parse)).model_dump()

    async def lines() -> list[str]:
        manager = client.chat.completions.with_streaming_response.create(
            **chat_kwargs(nonce, stream=True)
        )
        async with entered(manager) as response:
            return await drain(response.iter_lines())

    with tracked() as session, obsdeco.cache():
        first_parsed, first_lines = await parsed(), await lines()
        second_parsed, second_lines = await parsed(), await lines()

    assert len(provider.requests) == 2  # one plain body, one stream read by lines
    assert second_parsed == first_parsed
    assert second_lines == first_lines
    assert [line for line in second_lines if line][-1] == "data: [DONE]"
    assert hits(calls_in(session)) == [False, False, True, True]


# ------------------------------------------------------------------------------------------
# 3. Anthropic's messages.stream helper
# ------------------------------------------------------------------------------------------


async def test_anthropic_stream_helper_repeat_gives_the_same_text_and_final_message(
    provider, anthropic_any, nonce
):
    async def run() -> tuple[list[str], Any]:
        async with entered(anthropic_any.messages.stream(**anthropic_kwargs(nonce))) as stream:
            text = await drain(stream.text_stream)
            final = await call(stream.get_final_message)
        return text, final

    with tracked() as session, obsdeco.cache():
        first_text, first_final = await run()
        text, final = await run()

    assert len(provider.requests) == 1
    assert text == first_text
    assert "".join(text) == provider.default_text
    assert isinstance(final, anthropic.types.Message)
    assert final.model_dump() == first_final.model_dump()
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert usage(calls_in(session)) == STREAMED_MISS_THEN_HIT


async def test_anthropic_tokens_of_a_hit_are_the_recorded_fixtures(provider, anthropic_any, nonce):
    # anthropic/messages_stream.sse: input 21, output 13 (message_start 7, message_delta 13).
    provider.enqueue(Reply.fixture("anthropic/messages_stream.sse"))
    with tracked() as session, obsdeco.cache():
        for _ in range(2):
            async with entered(anthropic_any.messages.stream(**anthropic_kwargs(nonce))) as s:
                await drain(s)
    assert len(provider.requests) == 1
    assert usage(calls_in(session)) == [(False, 21, 13, True, True), (True, 21, 13, True, True)]


# ------------------------------------------------------------------------------------------
# 4. What is not cached
# ------------------------------------------------------------------------------------------


async def test_calls_outside_a_cache_scope_neither_read_nor_write_it(provider, client, nonce):
    with tracked() as session:
        outside = await call(client.chat.completions.create, **chat_kwargs(nonce))
        with obsdeco.cache():
            miss = await call(client.chat.completions.create, **chat_kwargs(nonce))
        after = await call(client.chat.completions.create, **chat_kwargs(nonce))
        with obsdeco.cache():
            hit = await call(client.chat.completions.create, **chat_kwargs(nonce))

    assert len(provider.requests) == 3
    assert len({outside.id, miss.id, after.id}) == 3  # three answers of the provider
    assert hit.model_dump() == miss.model_dump()
    assert hits(calls_in(session)) == [None, False, None, True]


async def test_a_stream_closed_half_read_is_not_cached(provider, client, nonce):
    held = threading.Event()
    provider.enqueue(Reply.default(hold=held, hold_after=3))
    kwargs = chat_kwargs(nonce, stream=True)
    with tracked() as session, obsdeco.cache():
        stream = await call(client.chat.completions.create, **kwargs)
        assert len(await take(stream, 2)) == 2
        await close(stream)
        held.set()
        whole = await drain(await call(client.chat.completions.create, **kwargs))
        replayed = await drain(await call(client.chat.completions.create, **kwargs))

    assert len(provider.requests) == 2
    assert dumped(replayed) == dumped(whole)
    assert [(r.cache_hit, r.streamed) for r in calls_in(session)] == [
        (False, True),
        (False, True),
        (True, True),
    ]


async def test_a_stream_that_fails_midway_is_not_cached(provider, anthropic_any, nonce):
    frames = split_sse(load_fixture("anthropic/messages_stream.sse"))[:3]
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    provider.enqueue(Reply.sse([*frames, ("error", overloaded)]))
    kwargs = anthropic_kwargs(nonce, stream=True)
    with tracked() as session, obsdeco.cache():
        with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
            await drain(await call(anthropic_any.messages.create, **kwargs))
        whole = await drain(await call(anthropic_any.messages.create, **kwargs))
        replayed = await drain(await call(anthropic_any.messages.create, **kwargs))

    assert len(provider.requests) == 2
    assert dumped(replayed) == dumped(whole)
    assert hits(calls_in(session)) == [False, False, True]


async def test_a_connection_dropped_midway_is_not_cached(provider, client, nonce):
    provider.enqueue(Reply.default(drop_after=4))
    kwargs = chat_kwargs(nonce, stream=True)
    with tracked() as session, obsdeco.cache():
        with pytest.raises(openai.APIConnectionError):
            await drain(await call(client.chat.completions.create, **kwargs))
        await drain(await call(client.chat.completions.create, **kwargs))
        await drain(await call(client.chat.completions.create, **kwargs))

    assert len(provider.requests) == 2
    assert [(r.cache_hit, r.success) for r in calls_in(session)] == [
        (False, False),
        (False, True),
        (True, True),
    ]


async def test_a_call_retried_by_the_sdk_is_cached_once_it_succeeds(provider, nonce):
    provider.enqueue(Reply.error(500, headers={"retry-after-ms": "1"}))
    async with openai.AsyncOpenAI(
        base_url=provider.openai_base_url, api_key="sk-test", max_retries=2
    ) as retrying:
        with tracked() as session, obsdeco.cache():
            first = await retrying.chat.completions.create(**chat_kwargs(nonce))
            second = await retrying.chat.completions.create(**chat_kwargs(nonce))

    assert len(provider.requests) == 2  # the 500 and its retry
    assert second.model_dump() == first.model_dump()
    records = calls_in(session)
    assert [(r.cache_hit, r.success, r.retries) for r in records] == [
        (False, True, 1),
        (True, True, 0),
    ]


# ------------------------------------------------------------------------------------------
# 5. Requests that differ are never confused
# ------------------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}


def variants(nonce: str) -> dict[str, dict[str, Any]]:
    """Requests that each differ from `base` in one part."""
    base = chat_kwargs(nonce)
    return {
        "base": base,
        "model": {**base, "model": "gpt-4o-mini"},
        "message": {**base, "messages": messages(f"{nonce}x")},
        "system": {
            **base,
            "messages": [{"role": "system", "content": "Be brief."}, *base["messages"]],
        },
        "temperature": {**base, "temperature": 0.5},
        "top_p": {**base, "top_p": 0.5},
        "max_tokens": {**base, "max_tokens": 5},
        "seed": {**base, "seed": 7},
        "tools": {**base, "tools": [WEATHER_TOOL]},
        "response_format": {**base, "response_format": {"type": "json_object"}},
        "stream": {**base, "stream": True},
        "stream_usage": {**base, "stream": True, "stream_options": {"include_usage": True}},
    }


async def answer(client: Any, kwargs: dict[str, Any]) -> Any:
    result = await call(client.chat.completions.create, **kwargs)
    if kwargs.get("stream"):
        return dumped(await drain(result))
    return result.model_dump()


async def test_requests_differing_in_any_part_are_not_confused(provider, client, nonce):
    requests = variants(nonce)
    with tracked() as session, obsdeco.cache():
        first = {name: await answer(client, kwargs) for name, kwargs in requests.items()}
        second = {name: await answer(client, kwargs) for name, kwargs in requests.items()}

    assert len(provider.requests) == len(requests)
    assert [request.body for request in provider.requests] == list(requests.values())
    assert second == first
    assert len({json.dumps(value, sort_keys=True) for value in first.values()}) == len(requests)
    # A stream asked without its usage chunk is not replayed with one.
    assert first["stream"][-1]["choices"] != []
    assert first["stream_usage"][-1]["choices"] == []
    assert hits(calls_in(session)) == [False] * len(requests) + [True] * len(requests)


async def test_a_stream_and_a_plain_call_of_the_same_request_are_not_confused(
    provider, client, nonce
):
    with tracked() as session, obsdeco.cache():
        plain = await call(client.chat.completions.create, **chat_kwargs(nonce))
        streamed = await drain(
            await call(client.chat.completions.create, **chat_kwargs(nonce, stream=True))
        )
        plain_again = await call(client.chat.completions.create, **chat_kwargs(nonce))
        streamed_again = await drain(
            await call(client.chat.completions.create, **chat_kwargs(nonce, stream=True))
        )

    assert len(provider.requests) == 2
    assert type(plain_again) is openai.types.chat.ChatCompletion
    assert plain_again.model_dump() == plain.model_dump()
    assert dumped(streamed_again) == dumped(streamed)
    assert [(r.cache_hit, r.streamed) for r in calls_in(session)] == [
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    ]


async def test_the_same_request_to_another_host_is_not_confused(provider, nonce):
    other_host = provider.openai_base_url.replace("127.0.0.1", "localhost")
    async with (
        openai.AsyncOpenAI(base_url=provider.openai_base_url, api_key="k", max_retries=0) as one,
        openai.AsyncOpenAI(base_url=other_host, api_key="k", max_retries=0) as other,
    ):
        with obsdeco.cache():
            first = await one.chat.completions.create(**chat_kwargs(nonce))
            elsewhere = await other.chat.completions.create(**chat_kwargs(nonce))
            again = await other.chat.completions.create(**chat_kwargs(nonce))

    assert len(provider.requests) == 2
    assert elsewhere.id != first.id
    assert again.id == elsewhere.id


# ------------------------------------------------------------------------------------------
# 6. The scope: context manager, decorator, tasks, ttl_s
# ------------------------------------------------------------------------------------------


def test_decorated_sync_function_caches_its_calls(provider, openai_client, nonce):
    @obsdeco.cache(ttl_s=60)
    def ask() -> Any:
        """Ask once."""
        return openai_client.chat.completions.create(**chat_kwargs(nonce))

    with tracked() as session:
        first, second = ask(), ask()
        outside = openai_client.chat.completions.create(**chat_kwargs(nonce))

    assert (ask.__name__, ask.__doc__) == ("ask", "Ask once.")
    assert len(provider.requests) == 2
    assert second.model_dump() == first.model_dump()
    assert outside.id != first.id
    assert hits(calls_in(session)) == [False, True, None]


async def test_decorated_async_function_caches_its_calls(provider, async_openai_client, nonce):
    @obsdeco.cache(ttl_s=60)
    async def ask() -> Any:
        return await async_openai_client.chat.completions.create(**chat_kwargs(nonce))

    with tracked() as session:
        first = await ask()
        second = await ask()
        outside = await async_openai_client.chat.completions.create(**chat_kwargs(nonce))

    assert len(provider.requests) == 2
    assert second.model_dump() == first.model_dump()
    assert outside.id != first.id
    assert hits(calls_in(session)) == [False, True, None]


async def test_async_with_scope_reaches_the_tasks_it_starts(provider, async_openai_client, nonce):
    async def ask() -> Any:
        return await async_openai_client.chat.completions.create(**chat_kwargs(nonce))

    with tracked() as session:
        async with obsdeco.cache():
            first = await ask()
            answers = await asyncio.gather(ask(), ask(), ask())

    assert len(provider.requests) == 1
    assert {a.id for a in answers} == {first.id}
    assert hits(calls_in(session)) == [False, True, True, True]


@pytest.mark.parametrize(
    "ttl_s", [0, -1, -0.5, math.nan, math.inf, -math.inf, True, "60", [60]], ids=repr
)
def test_a_ttl_that_is_no_positive_number_of_seconds_is_refused(ttl_s):
    with pytest.raises(ValueError, match="cache ttl_s must be"):
        obsdeco.cache(ttl_s=ttl_s)


@pytest.mark.parametrize("ttl_s", [None, 1, 0.25, 86_400])
def test_a_ttl_of_seconds_or_none_is_taken(ttl_s):
    with obsdeco.cache(ttl_s=ttl_s):
        pass


# ------------------------------------------------------------------------------------------
# 7. Without the SDK seams: raw httpx / httpx2, litellm, explicit wrap_* clients
# ------------------------------------------------------------------------------------------

LIBRARIES = [pytest.param(httpx, id="httpx"), pytest.param(httpx2, id="httpx2")]


@pytest.fixture(params=LIBRARIES)
def lib(request: pytest.FixtureRequest) -> types.ModuleType:
    return request.param  # type: ignore[no-any-return]


def test_a_raw_post_is_cached(provider, lib, nonce):
    url = f"{provider.openai_base_url}/chat/completions"
    with lib.Client() as http, tracked() as session, obsdeco.cache():
        first = http.post(url, json=chat_kwargs(nonce))
        second = http.post(url, json=chat_kwargs(nonce))

    assert len(provider.requests) == 1
    assert type(second) is lib.Response
    assert second.status_code == 200
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.json() == first.json()
    assert usage(calls_in(session)) == MISS_THEN_HIT


async def test_a_raw_async_stream_is_cached(provider, lib, nonce):
    url = f"{provider.openai_base_url}/chat/completions"

    async def lines(http: Any) -> list[str]:
        async with http.stream("POST", url, json=chat_kwargs(nonce, stream=True)) as response:
            return [line async for line in response.aiter_lines()]

    async with lib.AsyncClient() as http:
        with tracked() as session, obsdeco.cache():
            first = await lines(http)
            second = await lines(http)

    assert len(provider.requests) == 1
    assert second == first
    assert [line for line in second if line][-1] == "data: [DONE]"
    assert [(r.cache_hit, r.streamed, r.completion_tokens) for r in calls_in(session)] == [
        (False, True, None),
        (True, True, None),
    ]


def test_a_raw_gemini_post_is_cached(provider, lib, nonce):
    url = f"{provider.gemini_base_url}/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": prompt(nonce)}]}]}
    with lib.Client() as http, tracked() as session, obsdeco.cache():
        first = http.post(url, json=body, headers={"x-goog-api-key": "k"})
        second = http.post(url, json=body, headers={"x-goog-api-key": "k"})

    assert len(provider.requests) == 1
    assert second.json() == first.json()
    assert [(r.cache_hit, r.model, r.prompt_tokens) for r in calls_in(session)] == [
        (False, "gemini-2.5-flash", PROMPT_TOKENS),
        (True, "gemini-2.5-flash", PROMPT_TOKENS),
    ]


def litellm_kwargs(provider: Any, nonce: str) -> dict[str, Any]:
    """An Anthropic model through litellm, which posts with httpx clients of its own."""
    return {
        "model": "anthropic/claude-sonnet-4-6",
        "messages": messages(nonce),
        "api_base": provider.anthropic_base_url,
        "api_key": "sk-ant-test",
        "max_tokens": 64,
        "num_retries": 0,
    }


@pytest.mark.filterwarnings("ignore:.*the `ReadOnly` qualifier:UserWarning")
async def test_litellm_calls_are_cached(provider, nonce):
    litellm = pytest.importorskip("litellm", reason="litellm is not installed")
    kwargs = litellm_kwargs(provider, nonce)
    with tracked() as session, obsdeco.cache():
        first = litellm.completion(**kwargs)
        second = await litellm.acompletion(**kwargs)
        third = litellm.completion(**kwargs)

    assert len(provider.requests) == 1
    assert second.choices[0].message.content == first.choices[0].message.content
    assert third.choices[0].message.content == provider.default_text
    assert (third.usage.prompt_tokens, third.usage.completion_tokens) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )
    assert usage(calls_in(session)) == [*MISS_THEN_HIT, MISS_THEN_HIT[1]]


@pytest.mark.xfail(
    strict=True,
    reason="litellm stops reading an Anthropic stream at message_delta, before message_stop, "
    "and closes it: the answer never arrived whole, so it is not stored",
)
@pytest.mark.filterwarnings("ignore:.*the `ReadOnly` qualifier:UserWarning")
def test_litellm_sync_streams_are_cached(provider, nonce):
    litellm = pytest.importorskip("litellm", reason="litellm is not installed")
    kwargs = litellm_kwargs(provider, nonce)
    with obsdeco.cache():
        texts = []
        for _ in range(2):
            stream = litellm.completion(**kwargs, stream=True)
            texts.append("".join(c.choices[0].delta.content or "" for c in stream))

    assert texts == [provider.default_text] * 2
    assert len(provider.requests) == 1


class TestExplicitClients:
    """`wrap_completion` / `wrap_message` without `patch_all()`."""

    @pytest.fixture(autouse=True)
    def _unpatched(self, patched: list[str]) -> None:
        """Undo the module's `patch_all()` (its teardown removes what the integrations
        install)."""
        obsdeco.unpatch_all()

    async def test_wrap_completion_is_cached(self, provider, client, nonce):
        integration = OpenAIIntegration()
        with tracked() as session, obsdeco.cache():
            first = await call(integration.wrap_completion, client, **chat_kwargs(nonce))
            second = await call(integration.wrap_completion, client, **chat_kwargs(nonce))
            plain = await call(client.chat.completions.create, **chat_kwargs(nonce))

        assert len(provider.requests) == 2  # the last call is neither patched nor wrapped
        assert second.model_dump() == first.model_dump()
        assert plain.id != first.id
        assert hits(calls_in(session)) == [False, True]

    async def test_wrap_message_stream_is_cached(self, provider, anthropic_any, nonce):
        integration = AnthropicIntegration()
        kwargs = anthropic_kwargs(nonce, stream=True)
        with tracked() as session, obsdeco.cache():
            first = await drain(await call(integration.wrap_message, anthropic_any, **kwargs))
            second = await drain(await call(integration.wrap_message, anthropic_any, **kwargs))

        assert len(provider.requests) == 1
        assert dumped(second) == dumped(first)
        assert usage(calls_in(session)) == STREAMED_MISS_THEN_HIT


# ------------------------------------------------------------------------------------------
# 8. Do no harm: a failing store leaves every call as it would be without the cache
# ------------------------------------------------------------------------------------------


@pytest.fixture
def store() -> Any:
    """The store `obsdeco.cache()` uses under the current configuration."""
    return cache_store.response_cache(obsdeco.get_settings())


def _broken(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("the cache store is down")


@pytest.mark.parametrize("method", ["get", "put"])
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_a_failing_store_sends_every_call_to_the_provider(
    provider, client, nonce, store, monkeypatch, method, streamed
):
    monkeypatch.setattr(type(store), method, _broken)
    kwargs = chat_kwargs(nonce, stream=streamed, stream_options={"include_usage": True})
    if not streamed:
        del kwargs["stream_options"]
    faults = obsdeco.stats().internal_faults
    with tracked() as session, obsdeco.cache():
        first = await answer(client, kwargs)
        second = await answer(client, kwargs)

    assert len(provider.requests) == 2
    assert first != second  # two answers of the provider (their ids differ)
    assert text_of(second) == provider.default_text
    assert obsdeco.stats().internal_faults == faults + 2  # one fault for each call
    miss = (False, PROMPT_TOKENS, COMPLETION_TOKENS, streamed, True)
    assert usage(calls_in(session)) == [miss, miss]


def text_of(answer: Any) -> str:
    """The assistant text of a dumped completion or of dumped stream chunks."""
    if isinstance(answer, dict):
        return answer["choices"][0]["message"]["content"]  # type: ignore[no-any-return]
    return "".join(c["choices"][0]["delta"]["content"] or "" for c in answer if c["choices"])


async def test_a_store_that_cannot_be_opened_leaves_calls_uncached(
    provider, client, nonce, monkeypatch
):
    monkeypatch.setattr(engine_module, "response_cache", _broken)
    faults = obsdeco.stats().internal_faults
    with tracked() as session, obsdeco.cache():
        first = await call(client.chat.completions.create, **chat_kwargs(nonce))
        second = await call(client.chat.completions.create, **chat_kwargs(nonce))

    assert len(provider.requests) == 2
    assert second.id != first.id
    assert obsdeco.stats().internal_faults == faults + 2
    assert hits(calls_in(session)) == [None, None]


async def test_a_hit_in_a_thread_without_the_scope_is_no_hit(provider, openai_client, nonce):
    done: list[Any] = []
    with obsdeco.cache():
        openai_client.chat.completions.create(**chat_kwargs(nonce))
        worker = threading.Thread(
            target=lambda: done.append(openai_client.chat.completions.create(**chat_kwargs(nonce)))
        )
        worker.start()
        worker.join()

    assert len(done) == 1
    assert len(provider.requests) == 2  # a plain thread does not inherit the scope


# gpt-4o: $2.50 per million input tokens, $10 per million output tokens (genai-prices).
GPT_4O_CALL_USD = (PROMPT_TOKENS * 2.50 + COMPLETION_TOKENS * 10.0) / 1e6


async def test_a_hit_costs_nothing_and_saves_what_the_call_would_have_cost(provider, client, nonce):
    with tracked() as session, obsdeco.cache():
        await call(client.chat.completions.create, **chat_kwargs(nonce))
        stream = await call(client.chat.completions.create, **chat_kwargs(nonce, stream=True))
        await drain(stream)
        await call(client.chat.completions.create, **chat_kwargs(nonce))

    miss, streamed_miss, hit = calls_in(session)
    assert (miss.cost_usd, miss.saved_usd) == (pytest.approx(GPT_4O_CALL_USD), None)
    assert streamed_miss.cache_hit is False
    assert (hit.cache_hit, hit.cost_usd) == (True, 0.0)
    assert hit.saved_usd == pytest.approx(GPT_4O_CALL_USD)
    report = obsdeco.get_report(session.id)
    assert (report.cache.hits, report.cache.misses) == (1, 2)
    assert report.cache.saved_usd == pytest.approx(GPT_4O_CALL_USD)
    assert report.totals.calls == 3
    assert report.cost.total_usd == pytest.approx(GPT_4O_CALL_USD + (streamed_miss.cost_usd or 0.0))
