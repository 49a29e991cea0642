"""Implicit capture of the OpenAI SDK (openai 3.x on httpx2) through `obsdeco.patch_all()`.

Every test drives the real SDK, sync and async, over real HTTP against the local provider
server, which replays recorded API responses (obsdeco/testing/fixtures/openai) byte for
byte. Each test checks the one record obsdeco makes of a call (token counts exactly as the
fixture reports them, None where it reports nothing; timing; errors; attribution) and that
the user gets exactly what the SDK gives without obsdeco (compared with the same call made
unpatched).
"""

from __future__ import annotations

import contextlib
import gc
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest
from pydantic import BaseModel

import obsdeco
from obsdeco.collector import implicit_session
from obsdeco.testing import (
    RecordedRequest,
    Reply,
    fixture_request,
    load_fixture,
    split_sse,
)
from tests.helpers import call, drain, dumped, entered, take

pytestmark = pytest.mark.usefixtures("patched")

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
# What the local server reports for MESSAGES with its default reply: "What is the capital of
# France ?" is 7 tokens; "Hello ! This is a reply from the obsdeco test provider ." is 12.
DEFAULT_PROMPT_TOKENS = 7
DEFAULT_COMPLETION_TOKENS = 12

USAGE_STREAM = "openai/chat_completion_stream_include_usage.sse"
# The 11 chunks of USAGE_STREAM: role, 8 text deltas, finish_reason "stop", usage-only chunk.
USAGE_STREAM_CHUNKS = 11
USAGE_STREAM_MODEL = "gpt-4o-mini-2024-07-18"
USAGE_STREAM_TOKENS = (78, 9, 0, None, 0)
USAGE_STREAM_KWARGS: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": MESSAGES,
    "stream": True,
    "stream_options": {"include_usage": True},
}

UNKNOWN = (None, None, None, None, None)
"""(prompt, completion, cached, cache_creation, reasoning) when the provider reported none."""

CHAT = "chat.completions"
FACT_FIELDS = (
    "model",
    "response_model",
    "api",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "finish_reason",
    "tool_call_count",
    "streamed",
    "success",
    "error_type",
)


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def facts(call: obsdeco.LLMCall) -> dict[str, Any]:
    """The normalised facts of a record (timing and ids left out)."""
    return {name: getattr(call, name) for name in FACT_FIELDS}


def expected(
    model: str,
    response_model: str | None,
    tokens: tuple[int | None, ...],
    finish_reason: str | None,
    tool_call_count: int | None,
    *,
    api: str = CHAT,
    streamed: bool = False,
    error_type: str | None = None,
) -> dict[str, Any]:
    """The facts a record must have; `tokens` is (prompt, completion, cached, cache write,
    reasoning)."""
    prompt, completion, cached, cache_creation, reasoning = tokens
    return {
        "model": model,
        "response_model": response_model,
        "api": api,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cache_creation_tokens": cache_creation,
        "reasoning_tokens": reasoning,
        "finish_reason": finish_reason,
        "tool_call_count": tool_call_count,
        "streamed": streamed,
        "success": error_type is None,
        "error_type": error_type,
    }


def in_session() -> contextlib.AbstractContextManager[obsdeco.Session]:
    """A session of its own for the block: calls made in it land in it and nowhere else."""
    return obsdeco.Observatory().track("openai-capture-test")


def calls_in(session: obsdeco.Session | str) -> list[obsdeco.LLMCall]:
    """Every record of the session, after everything queued so far was handled."""
    obsdeco.flush()
    return obsdeco.get_calls(session if isinstance(session, str) else session.id)


def only_call(session: obsdeco.Session | str) -> obsdeco.LLMCall:
    """The one record of the session (fails when there are none or several)."""
    calls = calls_in(session)
    assert len(calls) == 1, f"expected exactly one record, got {len(calls)}: {calls}"
    return calls[0]


def assert_stream_timing(call: obsdeco.LLMCall) -> None:
    assert call.latency_ms > 0
    assert call.time_to_first_token_ms is not None
    assert 0 < call.time_to_first_token_ms <= call.latency_ms


def assert_plain_timing(call: obsdeco.LLMCall) -> None:
    assert call.latency_ms > 0
    assert call.time_to_first_token_ms is None


@contextlib.contextmanager
def unpatched() -> Iterator[None]:
    """Run the block as a user without obsdeco would (patched again afterwards)."""
    obsdeco.unpatch_all()
    try:
        yield
    finally:
        obsdeco.patch_all()


def is_async(client: Any) -> bool:
    return isinstance(client, openai.AsyncOpenAI)


async def drain_until_error(iterable: Any) -> tuple[list[Any], Exception]:
    """The items read before the iterable raised, and what it raised."""
    seen: list[Any] = []
    try:
        if hasattr(iterable, "__aiter__"):
            async for item in iterable:
                seen.append(item)
        else:
            for item in iterable:
                seen.append(item)
    except Exception as error:
        return seen, error
    raise AssertionError(f"the stream ended without an error after {len(seen)} items")


@pytest.fixture(autouse=True)
async def _clients_closed(
    openai_client: openai.OpenAI, async_openai_client: openai.AsyncOpenAI
) -> AsyncIterator[None]:
    """Close the clients while the test's event loop still runs."""
    yield
    openai_client.close()
    await async_openai_client.close()


class CityAnswer(BaseModel):
    city: str
    country: str


def structured_body() -> dict[str, Any]:
    """The recorded chat_completion.json whose message is JSON valid for `CityAnswer`."""
    body = json.loads(load_fixture("openai/chat_completion.json"))
    body["choices"][0]["message"]["content"] = json.dumps({"city": "Paris", "country": "France"})
    return body


def usage_on_request(request: RecordedRequest) -> Reply:
    """USAGE_STREAM answered like the API does: the usage-only chunk (and the `"usage": null`
    of the other chunks) only when the request asks for `stream_options.include_usage`."""
    frames = split_sse(load_fixture(USAGE_STREAM))
    options = request.body.get("stream_options") or {}
    if options.get("include_usage") is True:
        return Reply.sse(frames)
    return Reply.sse(
        [frame.replace(b',"usage":null', b"") for frame in frames if b'"choices":[]' not in frame]
    )


# ------------------------------------------------------------------------------------------
# 1. chat.completions.create, not streamed
# ------------------------------------------------------------------------------------------

CHAT_FIXTURES = [
    # fixture, model requested, model returned,
    # (prompt, completion, cached, cache write, reasoning), finish_reason, tool calls
    (
        "chat_completion.json",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        (15, 31, 0, None, 0),
        "stop",
        0,
    ),
    (
        "chat_completion_cached_tokens.json",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        (1149, 353, 1024, None, 0),
        "stop",
        0,
    ),
    (
        "chat_completion_reasoning_tokens.json",
        "gpt-5-nano",
        "gpt-5-nano-2025-08-07",
        (11, 228, 0, None, 192),
        "stop",
        0,
    ),
    (
        "chat_completion_cache_write_reasoning.json",
        "gpt-5.6-luna",
        "gpt-5.6-luna",
        (5395, 131, 0, 5392, 105),
        "stop",
        0,
    ),
    (
        "chat_completion_cache_read_reasoning.json",
        "gpt-5.6-luna",
        "gpt-5.6-luna",
        (5395, 177, 5382, 10, 32),
        "stop",
        0,
    ),
    (
        "chat_completion_tool_calls.json",
        "gpt-4",
        "gpt-4-0613",
        (67, 18, 0, None, 0),
        "tool_calls",
        1,
    ),
]


@pytest.mark.parametrize(
    ("fixture", "requested", "returned", "tokens", "finish_reason", "tool_calls"),
    CHAT_FIXTURES,
    ids=[row[0] for row in CHAT_FIXTURES],
)
async def test_chat_completion_is_recorded_exactly_as_the_fixture_reports(
    provider, client, fixture, requested, returned, tokens, finish_reason, tool_calls
):
    name = f"openai/{fixture}"
    provider.enqueue(Reply.fixture(name))
    with in_session() as session:
        completion = await call(
            client.chat.completions.create, **{**fixture_request(name), "model": requested}
        )

    assert completion.model == returned
    record = only_call(session)
    assert facts(record) == expected(requested, returned, tokens, finish_reason, tool_calls)
    assert record.provider is obsdeco.ModelProvider.OPENAI
    assert record.session_id == session.id
    assert (record.agent_name, record.operation, record.error_message) == (None, None, None)
    assert_plain_timing(record)


async def test_request_hash_is_stable_for_identical_requests_and_differs_otherwise(
    provider, openai_client, async_openai_client
):
    france = [{"role": "user", "content": "What is the capital of France?"}]
    spain = [{"role": "user", "content": "What is the capital of Spain?"}]
    with in_session() as session:
        openai_client.chat.completions.create(model="gpt-4o", messages=france)
        openai_client.chat.completions.create(model="gpt-4o", messages=france)
        await async_openai_client.chat.completions.create(model="gpt-4o", messages=france)
        openai_client.chat.completions.create(model="gpt-4o", messages=spain)
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=france)
        openai_client.chat.completions.create(model="gpt-4o", messages=france, temperature=0.5)

    hashes = [record.request_hash for record in calls_in(session)]
    assert len(hashes) == 6
    assert all(hashes)
    assert hashes[0] == hashes[1] == hashes[2]  # same request, sync or async
    assert len(set(hashes[2:])) == 4  # another message, model or parameter: another hash


# ------------------------------------------------------------------------------------------
# 2. chat.completions.create(stream=True) with stream_options.include_usage
# ------------------------------------------------------------------------------------------

USAGE_STREAM_FIXTURES = [
    # fixture, model requested, model returned, tokens, finish_reason, tool calls, chunks
    (
        "chat_completion_stream_include_usage.sse",
        "gpt-4o-mini",
        USAGE_STREAM_MODEL,
        USAGE_STREAM_TOKENS,
        "stop",
        0,
        USAGE_STREAM_CHUNKS,
    ),
    # Recorded in 2024: the usage chunk has no *_details, so those stay unknown.
    (
        "chat_completion_stream_include_usage_legacy.sse",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        (18, 15, None, None, None),
        "stop",
        0,
        18,
    ),
    (
        "chat_completion_tool_calls_stream_include_usage.sse",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        (53, 15, 0, None, 0),
        "tool_calls",
        1,
        8,
    ),
]


@pytest.mark.parametrize(
    ("fixture", "requested", "returned", "tokens", "finish_reason", "tool_calls", "chunks"),
    USAGE_STREAM_FIXTURES,
    ids=[row[0] for row in USAGE_STREAM_FIXTURES],
)
async def test_stream_with_include_usage_takes_the_usage_of_the_final_chunk(
    provider, client, fixture, requested, returned, tokens, finish_reason, tool_calls, chunks
):
    name = f"openai/{fixture}"
    kwargs = {**fixture_request(name), "model": requested}
    provider.enqueue(Reply.fixture(name), Reply.fixture(name))
    with unpatched():
        baseline = await drain(await call(client.chat.completions.create, **kwargs))
    with in_session() as session:
        seen = await drain(await call(client.chat.completions.create, **kwargs))

    assert dumped(seen) == dumped(baseline)
    assert len(seen) == chunks
    assert seen[-1].choices == []  # the user asked for the usage chunk: it is not hidden
    assert seen[-1].usage.prompt_tokens == tokens[0]
    baseline_request, observed_request = provider.requests
    assert observed_request.body == baseline_request.body
    record = only_call(session)
    assert facts(record) == expected(
        requested, returned, tokens, finish_reason, tool_calls, streamed=True
    )
    assert_stream_timing(record)


# ------------------------------------------------------------------------------------------
# 3. Streams without include_usage, and request_stream_usage
# ------------------------------------------------------------------------------------------


async def test_stream_without_include_usage_records_unknown_tokens_and_sends_the_request_as_is(
    provider, client
):
    name = "openai/chat_completion_parallel_tool_calls_stream.sse"  # no usage chunk at all
    kwargs = fixture_request(name)
    assert "stream_options" not in kwargs
    provider.enqueue(Reply.fixture(name), Reply.fixture(name))
    with unpatched():
        baseline = await drain(await call(client.chat.completions.create, **kwargs))
    with in_session() as session:
        seen = await drain(await call(client.chat.completions.create, **kwargs))

    assert dumped(seen) == dumped(baseline)
    assert len(seen) == 15
    baseline_request, observed_request = provider.requests
    assert observed_request.raw_body == baseline_request.raw_body
    assert "stream_options" not in observed_request.body
    record = only_call(session)
    # Two parallel tool calls (tool_calls index 0 and 1); no token count is invented.
    assert facts(record) == expected(
        "gpt-3.5-turbo", "gpt-3.5-turbo-0125", UNKNOWN, "tool_calls", 2, streamed=True
    )
    assert_stream_timing(record)


async def test_request_stream_usage_asks_for_usage_and_hides_the_usage_chunk(
    provider, client, sqlite_url
):
    provider.default_reply = usage_on_request
    kwargs = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with unpatched():
        baseline = await drain(await call(client.chat.completions.create, **kwargs))
    obsdeco.configure(database_url=sqlite_url, request_stream_usage=True)
    with in_session() as session:
        seen = await drain(await call(client.chat.completions.create, **kwargs))

    assert dumped(seen) == dumped(baseline)
    assert len(seen) == USAGE_STREAM_CHUNKS - 1  # everything but the usage-only chunk
    baseline_request, observed_request = provider.requests
    assert baseline_request.body == {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    assert observed_request.body == {
        **baseline_request.body,
        "stream_options": {"include_usage": True},
    }
    record = only_call(session)
    assert facts(record) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )
    assert_stream_timing(record)


async def test_request_stream_usage_keeps_the_usage_chunk_the_user_asked_for(
    provider, client, sqlite_url
):
    provider.default_reply = usage_on_request
    obsdeco.configure(database_url=sqlite_url, request_stream_usage=True)
    with in_session() as session:
        seen = await drain(await call(client.chat.completions.create, **USAGE_STREAM_KWARGS))

    assert len(seen) == USAGE_STREAM_CHUNKS
    assert seen[-1].usage.completion_tokens == 9
    assert provider.last_request.body["stream_options"] == {"include_usage": True}
    assert facts(only_call(session)) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )


async def test_request_stream_usage_with_the_stream_helper_gives_the_same_final_completion(
    provider, client, sqlite_url
):
    provider.default_reply = usage_on_request

    async def final_completion() -> Any:
        manager = client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES)
        async with entered(manager) as stream:
            return await call(stream.get_final_completion)

    with unpatched():
        baseline = await final_completion()
    obsdeco.configure(database_url=sqlite_url, request_stream_usage=True)
    with in_session() as session:
        final = await final_completion()

    assert final.model_dump() == baseline.model_dump()
    assert final.usage is None  # as without obsdeco: the user did not ask for usage
    assert facts(only_call(session)) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )


# ------------------------------------------------------------------------------------------
# 4. chat.completions.parse and the chat.completions.stream helper
# ------------------------------------------------------------------------------------------


async def test_parse_with_a_pydantic_model_is_recorded(provider, client):
    provider.enqueue(Reply.json(structured_body()))
    with in_session() as session:
        completion = await call(
            client.chat.completions.parse,
            model="gpt-4o-2024-08-06",
            messages=MESSAGES,
            response_format=CityAnswer,
        )

    assert completion.choices[0].message.parsed == CityAnswer(city="Paris", country="France")
    assert provider.last_request.body["response_format"]["type"] == "json_schema"
    record = only_call(session)
    # The usage of chat_completion.json: 15 prompt, 31 completion, 0 cached, 0 reasoning.
    assert facts(record) == expected(
        "gpt-4o-2024-08-06", "gpt-3.5-turbo-0125", (15, 31, 0, None, 0), "stop", 0
    )
    assert_plain_timing(record)


async def test_stream_helper_is_recorded_once_and_behaves_as_without_obsdeco(provider, client):
    provider.enqueue(Reply.fixture(USAGE_STREAM), Reply.fixture(USAGE_STREAM))
    kwargs = {key: value for key, value in USAGE_STREAM_KWARGS.items() if key != "stream"}

    async def run() -> tuple[list[Any], Any]:
        async with entered(client.chat.completions.stream(**kwargs)) as stream:
            events = await drain(stream)
            final = await call(stream.get_final_completion)
        return events, final

    with unpatched():
        baseline_events, baseline_final = await run()
    with in_session() as session:
        events, final = await run()

    assert [event.type for event in events] == [event.type for event in baseline_events]
    assert "content.done" in [event.type for event in events]
    assert final.model_dump() == baseline_final.model_dump()
    assert final.choices[0].message.content == "The capital of the UK is London."
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (78, 9)
    record = only_call(session)
    assert facts(record) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )
    assert_stream_timing(record)


# ------------------------------------------------------------------------------------------
# 5. responses.create and embeddings.create
# ------------------------------------------------------------------------------------------

RESPONSES_FIXTURES = [
    # fixture, model requested, model returned, tokens, function calls in the output
    ("responses_create.json", "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", (14, 8, 0, None, 0), 0),
    (
        "responses_create_reasoning.json",
        "gpt-5-nano",
        "gpt-5-nano-2025-08-07",
        (11, 131, 0, None, 64),
        0,
    ),
    # input 5405 of which 5392 read from the cache and 10 written to it; 32 of 179 reasoning.
    (
        "responses_create_cache_read_reasoning.json",
        "gpt-5.6-luna",
        "gpt-5.6-luna",
        (5405, 179, 5392, 10, 32),
        0,
    ),
    (
        "responses_function_call.json",
        "gpt-4.1-nano",
        "gpt-4.1-nano-2025-04-14",
        (59, 45, 0, None, 0),
        2,
    ),
]


@pytest.mark.parametrize(
    ("fixture", "requested", "returned", "tokens", "tool_calls"),
    RESPONSES_FIXTURES,
    ids=[row[0] for row in RESPONSES_FIXTURES],
)
async def test_responses_create_is_recorded_exactly_as_the_fixture_reports(
    provider, client, fixture, requested, returned, tokens, tool_calls
):
    name = f"openai/{fixture}"
    provider.enqueue(Reply.fixture(name))
    with in_session() as session:
        response = await call(
            client.responses.create, **{**fixture_request(name), "model": requested}
        )

    assert response.model == returned
    record = only_call(session)
    assert facts(record) == expected(
        requested, returned, tokens, "completed", tool_calls, api="responses"
    )
    assert_plain_timing(record)


async def test_responses_stream_is_recorded_from_its_completed_event(provider, client):
    name = "openai/responses_create_stream.sse"
    kwargs = fixture_request(name)
    provider.enqueue(Reply.fixture(name), Reply.fixture(name))
    with unpatched():
        baseline = await drain(await call(client.responses.create, **kwargs))
    with in_session() as session:
        events = await drain(await call(client.responses.create, **kwargs))

    assert dumped(events) == dumped(baseline)
    assert len(events) == 16
    assert events[-1].type == "response.completed"
    record = only_call(session)
    # response.completed: input 14 (0 cached), output 9 (0 reasoning), one message, no tools.
    assert facts(record) == expected(
        "gpt-4.1-nano",
        "gpt-4.1-nano-2025-04-14",
        (14, 9, 0, None, 0),
        "completed",
        0,
        api="responses",
        streamed=True,
    )
    assert_stream_timing(record)


async def test_embeddings_are_recorded_with_zero_completion_tokens(provider, client):
    name = "openai/embeddings_base64.json"
    kwargs = {"model": "text-embedding-ada-002", "input": "Tell me a joke about opentelemetry"}
    provider.enqueue(Reply.fixture(name), Reply.fixture(name))
    with unpatched():
        baseline = await call(client.embeddings.create, **kwargs)
    with in_session() as session:
        embeddings = await call(client.embeddings.create, **kwargs)

    # The SDK asked for base64 and decoded it to floats, with obsdeco as without.
    assert embeddings.model_dump() == baseline.model_dump()
    assert len(embeddings.data[0].embedding) == 1536
    record = only_call(session)
    assert facts(record) == expected(
        "text-embedding-ada-002",
        "text-embedding-ada-002-v2",
        (8, 0, None, None, None),
        None,
        None,
        api="embeddings",
    )
    assert_plain_timing(record)


# ------------------------------------------------------------------------------------------
# 6. with_raw_response and with_streaming_response
# ------------------------------------------------------------------------------------------


async def test_with_raw_response_is_recorded_without_parse_and_parses_as_without_obsdeco(
    provider, client
):
    name = "openai/chat_completion_tool_calls.json"
    kwargs = fixture_request(name)
    provider.enqueue(Reply.fixture(name), Reply.fixture(name))
    with unpatched():
        baseline = (await call(client.chat.completions.with_raw_response.create, **kwargs)).parse()
    with in_session() as session:
        raw = await call(client.chat.completions.with_raw_response.create, **kwargs)
        record = only_call(session)  # recorded although parse() was never called
        parsed = raw.parse()

    assert type(parsed) is type(baseline) is openai.types.chat.ChatCompletion
    assert parsed.model_dump() == baseline.model_dump()
    assert raw.headers["x-request-id"] == provider.requests[1].request_id
    assert facts(record) == expected("gpt-4", "gpt-4-0613", (67, 18, 0, None, 0), "tool_calls", 1)
    assert len(calls_in(session)) == 1  # parse() does not record it again


async def test_with_raw_response_stream_parsed_later_is_recorded_from_its_chunks(provider, client):
    provider.enqueue(Reply.fixture(USAGE_STREAM), Reply.fixture(USAGE_STREAM))
    create = client.chat.completions.with_raw_response.create
    with unpatched():
        baseline = await drain((await call(create, **USAGE_STREAM_KWARGS)).parse())
    with in_session() as session:
        raw = await call(create, **USAGE_STREAM_KWARGS)
        assert calls_in(session) == []  # nothing is known before the body is read
        stream = raw.parse()
        seen = await drain(stream)

    assert dumped(seen) == dumped(baseline)
    assert isinstance(stream, openai.AsyncStream if is_async(client) else openai.Stream)
    record = only_call(session)
    assert facts(record) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )
    assert_stream_timing(record)


async def test_with_raw_response_stream_parsed_in_one_expression_keeps_its_facts(provider, client):
    provider.enqueue(Reply.fixture(USAGE_STREAM))
    with in_session() as session:
        # The raw response is a temporary: only the parsed stream is kept.
        stream = (
            await call(client.chat.completions.with_raw_response.create, **USAGE_STREAM_KWARGS)
        ).parse()
        gc.collect()
        obsdeco.flush()  # the writer runs, as it does whenever anything else is recorded
        seen = await drain(stream)

    assert len(seen) == USAGE_STREAM_CHUNKS
    record = only_call(session)
    assert facts(record) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )
    assert_stream_timing(record)


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
async def test_with_streaming_response_parsed_inside_the_context(provider, client, streamed):
    if streamed:
        name, kwargs = USAGE_STREAM, USAGE_STREAM_KWARGS
        want = expected(
            "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
        )
    else:
        name, kwargs = (
            "openai/chat_completion.json",
            {"model": "gpt-3.5-turbo", "messages": MESSAGES},
        )
        want = expected("gpt-3.5-turbo", "gpt-3.5-turbo-0125", (15, 31, 0, None, 0), "stop", 0)
    provider.enqueue(Reply.fixture(name), Reply.fixture(name))

    async def run() -> Any:
        manager = client.chat.completions.with_streaming_response.create(**kwargs)
        async with entered(manager) as response:
            assert response.http_response.status_code == 200
            parsed = await call(response.parse)
            return dumped(await drain(parsed)) if streamed else parsed.model_dump()

    with unpatched():
        baseline = await run()
    with in_session() as session:
        result = await run()

    assert result == baseline
    record = only_call(session)
    assert facts(record) == want
    assert record.latency_ms > 0


async def test_with_streaming_response_read_as_lines_is_recorded_once_with_unknown_tokens(
    provider, client
):
    provider.enqueue(Reply.fixture(USAGE_STREAM), Reply.fixture(USAGE_STREAM))

    async def run() -> list[str]:
        manager = client.chat.completions.with_streaming_response.create(**USAGE_STREAM_KWARGS)
        async with entered(manager) as response:
            return await drain(response.iter_lines())

    with unpatched():
        baseline = await run()
    with in_session() as session:
        lines = await run()
        gc.collect()

    assert lines == baseline
    assert len([line for line in lines if line.startswith("data: ")]) == USAGE_STREAM_CHUNKS + 1
    record = only_call(session)
    # obsdeco never saw the chunks: nothing is known but what was asked.
    assert facts(record) == expected("gpt-4o-mini", None, UNKNOWN, None, None, streamed=True)
    assert record.latency_ms > 0


async def test_with_streaming_response_stream_left_early_keeps_what_was_seen(provider, client):
    provider.enqueue(Reply.fixture(USAGE_STREAM))
    with in_session() as session:
        manager = client.chat.completions.with_streaming_response.create(**USAGE_STREAM_KWARGS)
        async with entered(manager) as response:
            seen = await take(await call(response.parse), 2)
        gc.collect()
        calls = calls_in(session)

    assert len(seen) == 2
    assert len(calls) == 1
    assert facts(calls[0]) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, UNKNOWN, None, 0, streamed=True
    )
    assert_stream_timing(calls[0])


# ------------------------------------------------------------------------------------------
# 7. Clients created before patch_all(), and client.beta
# ------------------------------------------------------------------------------------------


async def test_a_client_created_and_used_before_patch_all_is_captured_after_it(provider):
    obsdeco.unpatch_all()
    sync_client = openai.OpenAI(base_url=provider.openai_base_url, api_key="sk-test", max_retries=0)
    async_client = openai.AsyncOpenAI(
        base_url=provider.openai_base_url, api_key="sk-test", max_retries=0
    )
    with in_session() as session:
        sync_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        await async_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert calls_in(session) == []

        obsdeco.patch_all()
        sync_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        await async_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    calls = calls_in(session)
    assert [(record.model, record.response_model) for record in calls] == [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
    ]
    for record in calls:
        assert (record.prompt_tokens, record.completion_tokens) == (
            DEFAULT_PROMPT_TOKENS,
            DEFAULT_COMPLETION_TOKENS,
        )
    await async_client.close()
    sync_client.close()


async def test_beta_chat_completions_are_captured(provider, client):
    provider.enqueue(Reply.fixture("openai/chat_completion.json"), Reply.json(structured_body()))
    with in_session() as session:
        await call(client.beta.chat.completions.create, model="gpt-3.5-turbo", messages=MESSAGES)
        parsed = await call(
            client.beta.chat.completions.parse,
            model="gpt-4o",
            messages=MESSAGES,
            response_format=CityAnswer,
        )

    assert parsed.choices[0].message.parsed == CityAnswer(city="Paris", country="France")
    assert [facts(record) for record in calls_in(session)] == [
        expected("gpt-3.5-turbo", "gpt-3.5-turbo-0125", (15, 31, 0, None, 0), "stop", 0),
        expected("gpt-4o", "gpt-3.5-turbo-0125", (15, 31, 0, None, 0), "stop", 0),
    ]


# ------------------------------------------------------------------------------------------
# 8. Errors
# ------------------------------------------------------------------------------------------


async def test_a_rate_limit_reaches_the_user_unchanged_and_is_recorded(provider, client):
    message = "Rate limit reached for gpt-4o on requests per min (RPM): Limit 3, Used 3."
    reply = Reply.error(429, message=message, headers={"retry-after": "0"})
    provider.enqueue(reply, reply)
    with unpatched(), pytest.raises(openai.RateLimitError) as baseline:
        await call(client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    with in_session() as session, pytest.raises(openai.RateLimitError) as raised:
        await call(client.chat.completions.create, model="gpt-4o", messages=MESSAGES)

    error = raised.value
    assert type(error) is type(baseline.value) is openai.RateLimitError
    assert error.status_code == baseline.value.status_code == 429
    assert error.message == baseline.value.message
    assert error.body == baseline.value.body
    assert error.body["message"] == message
    record = only_call(session)
    assert facts(record) == expected("gpt-4o", None, UNKNOWN, None, None, error_type="rate_limit")
    assert "429" in record.error_message
    assert message in record.error_message
    assert_plain_timing(record)


ERROR_FIXTURES = [
    # fixture, create method, SDK exception, status, error_type
    ("error_400_invalid_image_url.json", "chat", openai.BadRequestError, 400, "bad_request"),
    ("error_401_invalid_api_key.json", "chat", openai.AuthenticationError, 401, "auth"),
    # asked for a stream: the 400 still comes back as JSON before any event
    (
        "responses_error_400_invalid_param.json",
        "responses",
        openai.BadRequestError,
        400,
        "bad_request",
    ),
]


@pytest.mark.parametrize(
    ("fixture", "endpoint", "exception", "status", "error_type"),
    ERROR_FIXTURES,
    ids=[row[0] for row in ERROR_FIXTURES],
)
async def test_recorded_http_errors_reach_the_user_unchanged_and_are_classified(
    provider, client, fixture, endpoint, exception, status, error_type
):
    name = f"openai/{fixture}"
    kwargs = fixture_request(name)
    create = client.chat.completions.create if endpoint == "chat" else client.responses.create
    provider.enqueue(Reply.fixture(name), Reply.fixture(name))
    with unpatched(), pytest.raises(exception) as baseline:
        await call(create, **kwargs)
    with in_session() as session, pytest.raises(exception) as raised:
        await call(create, **kwargs)

    assert type(raised.value) is type(baseline.value)
    assert raised.value.status_code == status
    assert str(raised.value) == str(baseline.value)
    assert raised.value.body == baseline.value.body
    record = only_call(session)
    api = CHAT if endpoint == "chat" else "responses"
    assert facts(record) == expected(
        kwargs["model"],
        None,
        UNKNOWN,
        None,
        None,
        api=api,
        streamed=bool(kwargs.get("stream")),
        error_type=error_type,
    )
    assert record.error_message == str(raised.value)
    assert str(status) in record.error_message


async def test_a_connection_dropped_mid_stream_keeps_the_sdk_error_and_the_facts_seen(
    provider, client
):
    reply = Reply.fixture(USAGE_STREAM, drop_after=4)
    provider.enqueue(reply, reply)
    with unpatched():
        baseline = await call(client.chat.completions.create, **USAGE_STREAM_KWARGS)
        baseline_seen, baseline_error = await drain_until_error(baseline)
    with in_session() as session:
        stream = await call(client.chat.completions.create, **USAGE_STREAM_KWARGS)
        seen, error = await drain_until_error(stream)

    assert dumped(seen) == dumped(baseline_seen)
    assert len(seen) == 4
    assert type(error) is type(baseline_error) is openai.APIConnectionError
    assert str(error) == str(baseline_error)
    record = only_call(session)
    # Four chunks seen (role, "The", " capital", " of"): the model, no usage, no finish.
    assert facts(record) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, UNKNOWN, None, 0, streamed=True, error_type="connection"
    )
    assert record.error_message == str(error)
    assert_stream_timing(record)


async def test_a_timeout_before_the_response_is_recorded_as_timeout(provider, client):
    hold = threading.Event()
    provider.enqueue(Reply.fixture("openai/chat_completion.json", hold=hold))
    hurried = client.with_options(timeout=0.2)
    try:
        with in_session() as session, pytest.raises(openai.APITimeoutError) as raised:
            await call(hurried.chat.completions.create, model="gpt-3.5-turbo", messages=MESSAGES)
    finally:
        hold.set()

    assert type(raised.value) is openai.APITimeoutError
    record = only_call(session)
    assert facts(record) == expected(
        "gpt-3.5-turbo", None, UNKNOWN, None, None, error_type="timeout"
    )
    assert record.error_message == str(raised.value)
    assert_plain_timing(record)


async def test_a_timeout_mid_stream_is_recorded_as_timeout_with_the_facts_seen(provider, client):
    hold = threading.Event()
    provider.enqueue(Reply.fixture(USAGE_STREAM, hold=hold, hold_after=3))
    hurried = client.with_options(timeout=0.2)
    try:
        with in_session() as session:
            stream = await call(hurried.chat.completions.create, **USAGE_STREAM_KWARGS)
            seen, error = await drain_until_error(stream)
    finally:
        hold.set()

    assert len(seen) == 3
    assert type(error) is openai.APITimeoutError
    record = only_call(session)
    assert facts(record) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, UNKNOWN, None, 0, streamed=True, error_type="timeout"
    )
    assert_stream_timing(record)


# ------------------------------------------------------------------------------------------
# 9. Abandoned streams
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["break", "close", "context", "drop"])
async def test_an_abandoned_stream_is_recorded_once_with_what_was_seen(provider, client, how):
    provider.enqueue(Reply.fixture(USAGE_STREAM))

    async def read_two_chunks(session: obsdeco.Session) -> list[Any]:
        stream = await call(client.chat.completions.create, **USAGE_STREAM_KWARGS)
        if how == "break":  # break out of the loop; the stream goes when this function returns
            return await take(stream, 2)
        if how == "close":
            seen = await take(stream, 2)
            await call(stream.close)
        elif how == "context":
            async with entered(stream) as opened:
                seen = await take(opened, 2)
        else:
            seen = await take(stream, 2)
            del stream  # the last reference
            return seen
        assert stream.response.is_closed
        assert len(calls_in(session)) == 1  # recorded when closed, the stream still referenced
        return seen

    with in_session() as session:
        seen = await read_two_chunks(session)
        gc.collect()
        calls = calls_in(session)

    assert len(seen) == 2
    assert len(calls) == 1
    # Two chunks seen (role, "The"): the model is known, the usage and finish_reason are not.
    assert facts(calls[0]) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, UNKNOWN, None, 0, streamed=True
    )
    assert_stream_timing(calls[0])
    assert len(calls_in(session)) == 1  # and nothing more later


async def test_a_stream_read_to_the_end_then_closed_and_dropped_is_recorded_once(provider, client):
    provider.enqueue(Reply.fixture(USAGE_STREAM))
    with in_session() as session:
        stream = await call(client.chat.completions.create, **USAGE_STREAM_KWARGS)
        async with entered(stream):
            assert len(await drain(stream)) == USAGE_STREAM_CHUNKS
        await call(stream.close)
        del stream
        gc.collect()

    record = only_call(session)
    assert facts(record) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )


async def test_a_stream_abandoned_inside_a_session_function_stays_in_that_session(provider, client):
    provider.enqueue(Reply.fixture(USAGE_STREAM))

    @obsdeco.observe_session(name="first-chunk-only")
    async def handle() -> tuple[str, str]:
        stream = await call(client.chat.completions.create, **USAGE_STREAM_KWARGS)
        first = (await take(stream, 1))[0]  # the stream is dropped when handle() returns
        return obsdeco.current_session().id, first.model

    session_id, model = await handle()
    gc.collect()

    assert model == USAGE_STREAM_MODEL
    calls = calls_in(session_id)
    assert len(calls) == 1
    assert facts(calls[0]) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, UNKNOWN, None, 0, streamed=True
    )
    assert obsdeco.get_report(session_id).totals.calls == 1


# ------------------------------------------------------------------------------------------
# 10. An observed stream is the SDK's stream
# ------------------------------------------------------------------------------------------


async def test_an_observed_stream_behaves_like_the_sdks_own(provider, client):
    provider.enqueue(Reply.fixture(USAGE_STREAM), Reply.fixture(USAGE_STREAM))
    stream_type = openai.AsyncStream if is_async(client) else openai.Stream

    async def use() -> dict[str, Any]:
        stream = await call(client.chat.completions.create, **USAGE_STREAM_KWARGS)
        behaviour: dict[str, Any] = {
            "is_sdk_stream": isinstance(stream, stream_type),
            "response_type": type(stream.response),
            "request_id": stream.response.headers["x-request-id"],
        }
        async with entered(stream) as opened:
            behaviour["enter_returns_the_stream"] = opened is stream
            behaviour["first_pass"] = dumped(await drain(opened))
        behaviour["closed_after_exit"] = stream.response.is_closed
        behaviour["second_pass"] = await drain(stream)
        await call(stream.close)  # closing again is harmless
        return behaviour

    with unpatched():
        baseline = await use()
    with in_session() as session:
        observed = await use()

    assert observed["is_sdk_stream"] is True
    assert observed["response_type"] is httpx2.Response
    assert observed["enter_returns_the_stream"] is True
    assert observed["closed_after_exit"] is True
    assert len(observed["first_pass"]) == USAGE_STREAM_CHUNKS
    assert observed["second_pass"] == []
    assert baseline["request_id"] == provider.requests[0].request_id
    assert observed["request_id"] == provider.requests[1].request_id
    del baseline["request_id"], observed["request_id"]
    assert observed == baseline
    assert facts(only_call(session)) == expected(
        "gpt-4o-mini", USAGE_STREAM_MODEL, USAGE_STREAM_TOKENS, "stop", 0, streamed=True
    )


# ------------------------------------------------------------------------------------------
# 11. Attribution
# ------------------------------------------------------------------------------------------


async def test_calls_are_attributed_to_the_innermost_agent(provider, client):
    create = client.chat.completions.create
    if is_async(client):

        @obsdeco.observe_agent(name="Researcher", operation="search")
        async def research() -> None:
            await create(model="gpt-4o-mini", messages=MESSAGES)

        @obsdeco.observe_agent(name="Planner", operation="plan")
        async def plan() -> None:
            await create(model="gpt-4o", messages=MESSAGES)
            await research()
            await create(model="gpt-4.1", messages=MESSAGES)

        @obsdeco.observe_session(name="ticket")
        async def handle() -> str:
            await plan()
            await create(model="gpt-4.1-mini", messages=MESSAGES)
            return obsdeco.current_session().id

        session_id = await handle()
    else:

        @obsdeco.observe_agent(name="Researcher", operation="search")
        def research() -> None:
            create(model="gpt-4o-mini", messages=MESSAGES)

        @obsdeco.observe_agent(name="Planner", operation="plan")
        def plan() -> None:
            create(model="gpt-4o", messages=MESSAGES)
            research()
            create(model="gpt-4.1", messages=MESSAGES)

        @obsdeco.observe_session(name="ticket")
        def handle() -> str:
            plan()
            create(model="gpt-4.1-mini", messages=MESSAGES)
            return obsdeco.current_session().id

        session_id = handle()

    calls = calls_in(session_id)
    assert [(record.model, record.agent_name, record.operation) for record in calls] == [
        ("gpt-4o", "Planner", "plan"),
        ("gpt-4o-mini", "Researcher", "search"),
        ("gpt-4.1", "Planner", "plan"),
        ("gpt-4.1-mini", None, None),
    ]
    assert all(record.session_id == session_id for record in calls)


async def test_calls_outside_any_session_land_in_the_implicit_session(provider, client):
    @obsdeco.observe_agent(name="Loner")
    async def lone() -> None:
        await call(client.chat.completions.create, model="gpt-4o-mini", messages=MESSAGES)

    provider.enqueue(Reply.fixture(USAGE_STREAM))
    assert obsdeco.current_session() is None
    stream = await call(client.chat.completions.create, **USAGE_STREAM_KWARGS)
    await drain(stream)
    await call(client.chat.completions.create, model="gpt-4o", messages=MESSAGES)
    await lone()

    calls = calls_in(implicit_session().id)
    assert [(record.model, record.agent_name, record.streamed) for record in calls] == [
        ("gpt-4o-mini", None, True),
        ("gpt-4o", None, False),
        ("gpt-4o-mini", "Loner", False),
    ]
    assert all(record.success for record in calls)
    assert (calls[0].prompt_tokens, calls[0].completion_tokens) == (78, 9)
    assert (calls[2].prompt_tokens, calls[2].completion_tokens) == (
        DEFAULT_PROMPT_TOKENS,
        DEFAULT_COMPLETION_TOKENS,
    )


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": "lots", "completion_tokens": "7", "total_tokens": None}, (None, None)),
        ({"prompt_tokens": -3, "completion_tokens": 2**70, "total_tokens": 1}, (None, None)),
        ({"prompt_tokens": 12.0, "completion_tokens": 5, "total_tokens": 17}, (12, 5)),
    ],
)
def test_usage_no_store_can_hold_is_recorded_as_unknown(
    configured, provider, patched, openai_client, usage, expected
):
    """The SDK does not validate usage: what is no whole count is unknown, never dropped."""
    body = json.loads(load_fixture("openai/chat_completion.json"))
    body["usage"] = usage
    provider.enqueue(Reply.json(body))
    dropped_before = obsdeco.stats().dropped

    @obsdeco.observe_session("odd-usage", return_report=True)
    def handle() -> Any:
        return openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    completion, report = handle()
    obsdeco.flush()

    assert completion.id == body["id"]
    assert report.totals.calls == 1
    [call] = obsdeco.get_calls(report.session.id)
    assert (call.prompt_tokens, call.completion_tokens) == expected
    assert obsdeco.stats().dropped == dropped_before
    assert obsdeco.get_report(report.session.id).totals.calls == 1


def test_a_returned_model_name_no_store_holds_is_made_storable(
    configured, provider, patched, openai_client
):
    body = json.loads(load_fixture("openai/chat_completion.json"))
    body["model"] = "gpt-4o\u0000" + "x" * 300
    provider.enqueue(Reply.json(body))

    @obsdeco.observe_session("odd-model", return_report=True)
    def handle() -> Any:
        return openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    _, report = handle()
    obsdeco.flush()

    [call] = obsdeco.get_calls(report.session.id)
    assert call.response_model == ("gpt-4o" + "x" * 300)[:200]
    assert list(obsdeco.get_report(report.session.id).cost.by_model) == [call.response_model]


async def test_request_stream_usage_leaves_a_raw_stream_as_asked(provider, client):
    """A raw stream's chunks reach the user unparsed, so obsdeco cannot hide a usage chunk it
    asked for: it asks for none (the user reads exactly the lines of the request they made)."""
    obsdeco.configure(database_url=obsdeco.get_settings().database_url, request_stream_usage=True)
    kwargs = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}

    async def run() -> list[str]:
        manager = client.chat.completions.with_streaming_response.create(**kwargs)
        async with entered(manager) as response:
            return await drain(response.iter_lines())

    with unpatched():
        baseline = await run()
    with in_session():
        lines = await run()

    assert len(lines) == len(baseline)  # the same chunks (their ids are the server's own)
    assert not any('"choices":[]' in line for line in lines)  # no usage chunk to hide
    assert "stream_options" not in provider.requests[-1].body
