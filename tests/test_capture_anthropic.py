"""Implicit capture of the Anthropic SDK (`obsdeco.patch_all()`), sync and async, over real HTTP.

Every recorded Anthropic response in the recorded fixtures is replayed by the local provider to the
real `anthropic` SDK, and the `LLMCall` obsdeco keeps is compared field by field with what the
fixture says (API.md section 4): prompt_tokens = input_tokens + cache_read_input_tokens +
cache_creation_input_tokens, cached_tokens = the cache read, cache_creation_tokens = the cache
write, completion_tokens = output_tokens, reasoning_tokens =
usage.output_tokens_details.thinking_tokens where the API reports it (thinking is counted inside
output_tokens), else None: the recorded fixtures predate that field, so their reasoning is None.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import wrapt

import obsdeco
from obsdeco import LLMCall, ModelProvider
from obsdeco.testing import (
    ProviderServer,
    Reply,
    fixture_request,
    fixtures_dir,
    load_fixture,
    split_sse,
)
from tests.helpers import in_async_session, in_session


@dataclass(frozen=True)
class Expected:
    """The normalised facts a fixture must produce."""

    response_model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None
    cache_creation_tokens: int | None
    finish_reason: str
    tool_call_count: int


NON_STREAMING = {
    # input 14 + cache read 0 + cache write 0
    "anthropic/messages_create.json": Expected("claude-sonnet-4-6", 14, 11, 0, 0, "end_turn", 0),
    # input 21 + cache read 1733 + cache write 0 = 1754
    "anthropic/messages_create_cache_read.json": Expected(
        "claude-3-7-sonnet-20250219", 1754, 568, 1733, 0, "end_turn", 0
    ),
    # input 21 + cache read 0 + cache write 1733 = 1754
    "anthropic/messages_create_cache_write.json": Expected(
        "claude-3-7-sonnet-20250219", 1754, 561, 0, 1733, "end_turn", 0
    ),
    # 2024 usage shape: only input_tokens 17 / output_tokens 220, cache counts unknown
    "anthropic/messages_create_legacy_usage.json": Expected(
        "claude-3-opus-20240229", 17, 220, None, None, "end_turn", 0
    ),
    # text + two tool_use blocks
    "anthropic/messages_tool_use.json": Expected(
        "claude-sonnet-4-6", 721, 112, 0, 0, "tool_use", 2
    ),
    # thinking block + text block; the thinking tokens are inside output_tokens 215
    "anthropic/messages_thinking.json": Expected(
        "claude-3-7-sonnet-20250219", 52, 215, 0, 0, "end_turn", 0
    ),
}

STREAMING = {
    # message_start: input 21, cache 0/0, output 7; message_delta (cumulative): output 13
    "anthropic/messages_stream.sse": Expected("claude-sonnet-4-6", 21, 13, 0, 0, "end_turn", 0),
    # message_start: input 4 + cache read 1165 + write 0; message_delta has only output_tokens 221
    "anthropic/messages_stream_cache_read.sse": Expected(
        "claude-3-5-sonnet-20240620", 1169, 221, 1165, 0, "end_turn", 0
    ),
    # message_start: input 721; two tool_use content blocks; message_delta: output 113
    "anthropic/messages_tool_use_stream.sse": Expected(
        "claude-sonnet-4-6", 721, 113, 0, 0, "tool_use", 2
    ),
    # message_start: input 52; thinking block then text block; message_delta: output 216
    "anthropic/messages_thinking_stream.sse": Expected(
        "claude-3-7-sonnet-20250219", 52, 216, 0, 0, "end_turn", 0
    ),
}

SIMPLE = "anthropic/messages_create.json"
SIMPLE_STREAM = "anthropic/messages_stream.sse"


# --- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def patching() -> Iterator[None]:
    """patch_all() for a block, so that a test can first see what the SDK does without it."""
    obsdeco.patch_all()
    try:
        yield
    finally:
        obsdeco.unpatch_all()


def facts(call: LLMCall) -> dict[str, Any]:
    return {
        "response_model": call.response_model,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cached_tokens": call.cached_tokens,
        "cache_creation_tokens": call.cache_creation_tokens,
        "finish_reason": call.finish_reason,
        "tool_call_count": call.tool_call_count,
    }


def assert_recorded(
    calls: list[LLMCall], expected: Expected, *, model: str, streamed: bool
) -> LLMCall:
    """Exactly one successful Anthropic messages record with these facts."""
    assert len(calls) == 1, calls
    call = calls[0]
    assert facts(call) == asdict(expected)
    assert call.provider is ModelProvider.ANTHROPIC
    assert call.api == "messages"
    assert call.model == model
    assert call.reasoning_tokens is None
    assert call.success is True
    assert call.error_type is None
    assert call.error_message is None
    assert call.streamed is streamed
    if streamed:
        assert call.time_to_first_token_ms is not None
        assert 0 <= call.time_to_first_token_ms <= call.latency_ms
    else:
        assert call.time_to_first_token_ms is None
    return call


def dumped(events: list[Any]) -> list[dict[str, Any]]:
    return [event.model_dump() for event in events]


def read_stream(client: anthropic.Anthropic, provider: ProviderServer, name: str) -> list[Any]:
    provider.enqueue(Reply.fixture(name))
    stream = client.messages.create(**fixture_request(name))
    with stream:
        return list(stream)


async def async_read_stream(
    client: anthropic.AsyncAnthropic, provider: ProviderServer, name: str
) -> list[Any]:
    provider.enqueue(Reply.fixture(name))
    stream = await client.messages.create(**fixture_request(name))
    async with stream:
        return [event async for event in stream]


def test_every_anthropic_response_fixture_is_covered() -> None:
    folder = fixtures_dir() / "anthropic"
    responses = {
        f"anthropic/{path.name}"
        for path in folder.iterdir()
        if path.name.startswith("messages_") and not path.name.endswith(".request.json")
    }
    assert responses == set(NON_STREAMING) | set(STREAMING)


# --- 1. messages.create, not streamed ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NON_STREAMING))
def test_messages_create_records_the_fixture_usage(name, provider, anthropic_client, patched):
    body = fixture_request(name)
    provider.enqueue(Reply.fixture(name))

    message, calls = in_session(lambda: anthropic_client.messages.create(**body))

    assert isinstance(message, anthropic.types.Message)
    assert message.model == NON_STREAMING[name].response_model
    assert_recorded(calls, NON_STREAMING[name], model=body["model"], streamed=False)


@pytest.mark.parametrize("name", sorted(NON_STREAMING))
async def test_async_messages_create_records_the_fixture_usage(
    name, provider, async_anthropic_client, patched
):
    body = fixture_request(name)
    provider.enqueue(Reply.fixture(name))

    message, calls = await in_async_session(lambda: async_anthropic_client.messages.create(**body))

    assert isinstance(message, anthropic.types.Message)
    assert_recorded(calls, NON_STREAMING[name], model=body["model"], streamed=False)


def test_messages_create_returns_the_same_message_as_without_obsdeco(provider, anthropic_client):
    body = fixture_request(SIMPLE)
    provider.enqueue(Reply.fixture(SIMPLE))
    baseline = anthropic_client.messages.create(**body)

    with patching():
        provider.enqueue(Reply.fixture(SIMPLE))
        message, calls = in_session(lambda: anthropic_client.messages.create(**body))

    assert type(message) is type(baseline)
    assert message.model_dump() == baseline.model_dump()
    assert len(calls) == 1


def test_a_request_that_is_not_an_llm_call_is_not_recorded(provider, anthropic_client, patched):
    # count_tokens is POST /v1/messages/count_tokens: not a messages call.
    provider.enqueue(Reply.json({"input_tokens": 9}))

    counted, calls = in_session(
        lambda: anthropic_client.messages.count_tokens(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    )

    assert counted.input_tokens == 9
    assert calls == []


# --- 2. messages.create(stream=True) ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STREAMING))
def test_messages_stream_records_usage_merged_across_events(name, provider, anthropic_client):
    baseline = read_stream(anthropic_client, provider, name)

    with patching():
        events, calls = in_session(lambda: read_stream(anthropic_client, provider, name))

    assert dumped(events) == dumped(baseline)
    assert [type(event) for event in events] == [type(event) for event in baseline]
    assert_recorded(calls, STREAMING[name], model=fixture_request(name)["model"], streamed=True)


@pytest.mark.parametrize("name", sorted(STREAMING))
async def test_async_messages_stream_records_usage_merged_across_events(
    name, provider, async_anthropic_client
):
    baseline = await async_read_stream(async_anthropic_client, provider, name)

    with patching():
        events, calls = await in_async_session(
            lambda: async_read_stream(async_anthropic_client, provider, name)
        )

    assert dumped(events) == dumped(baseline)
    assert_recorded(calls, STREAMING[name], model=fixture_request(name)["model"], streamed=True)


def test_stream_is_still_the_sdks_stream(provider, anthropic_client, patched):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    def run() -> list[str]:
        stream = anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))
        assert isinstance(stream, anthropic.Stream)
        assert stream.response.status_code == 200
        with stream:
            return [event.type for event in stream]

    types, calls = in_session(run)

    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert len(calls) == 1


def test_time_to_first_token_is_when_the_first_event_arrived(provider, anthropic_client, patched):
    # The server sends message_start, then holds the rest until the test has seen it.
    release = threading.Event()
    provider.enqueue(Reply.fixture(SIMPLE_STREAM, hold=release, hold_after=1))

    def run() -> None:
        stream = anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))
        with stream:
            first = next(stream)
            assert first.type == "message_start"
            release.set()
            for _ in stream:
                pass

    _, calls = in_session(run)

    call = assert_recorded(
        calls, STREAMING[SIMPLE_STREAM], model="claude-sonnet-4-6", streamed=True
    )
    assert call.time_to_first_token_ms < call.latency_ms


# --- 3. the messages.stream() helper ------------------------------------------------------


def _stream_helper_body() -> dict[str, Any]:
    body = dict(fixture_request(SIMPLE_STREAM))
    del body["stream"]
    return body


def use_stream_helper(client: anthropic.Anthropic, provider: ProviderServer) -> tuple[str, Any]:
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))
    with client.messages.stream(**_stream_helper_body()) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return text, final


async def async_use_stream_helper(
    client: anthropic.AsyncAnthropic, provider: ProviderServer
) -> tuple[str, Any]:
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))
    async with client.messages.stream(**_stream_helper_body()) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    return text, final


def test_stream_helper_is_recorded_once(provider, anthropic_client):
    baseline_text, baseline_final = use_stream_helper(anthropic_client, provider)

    with patching():
        (text, final), calls = in_session(lambda: use_stream_helper(anthropic_client, provider))

    assert text == baseline_text
    assert text != ""
    assert final.model_dump() == baseline_final.model_dump()
    assert final.usage.output_tokens == 13
    assert_recorded(calls, STREAMING[SIMPLE_STREAM], model="claude-sonnet-4-6", streamed=True)


async def test_async_stream_helper_is_recorded_once(provider, async_anthropic_client):
    baseline_text, baseline_final = await async_use_stream_helper(async_anthropic_client, provider)

    with patching():
        (text, final), calls = await in_async_session(
            lambda: async_use_stream_helper(async_anthropic_client, provider)
        )

    assert text == baseline_text
    assert final.model_dump() == baseline_final.model_dump()
    assert_recorded(calls, STREAMING[SIMPLE_STREAM], model="claude-sonnet-4-6", streamed=True)


def test_stream_helper_get_final_message_alone(provider, anthropic_client, patched):
    provider.enqueue(Reply.fixture("anthropic/messages_tool_use_stream.sse"))
    body = dict(fixture_request("anthropic/messages_tool_use_stream.sse"))
    del body["stream"]

    def run() -> Any:
        with anthropic_client.messages.stream(**body) as stream:
            return stream.get_final_message()

    final, calls = in_session(run)

    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert_recorded(
        calls,
        STREAMING["anthropic/messages_tool_use_stream.sse"],
        model=body["model"],
        streamed=True,
    )


def test_stream_helper_left_early_is_recorded_once(provider, anthropic_client, patched):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    def run() -> None:
        with anthropic_client.messages.stream(**_stream_helper_body()) as stream:
            for event in stream:
                if event.type == "message_start":
                    break
        gc.collect()
        obsdeco.flush()

    _, calls = in_session(run)

    assert len(calls) == 1
    assert calls[0].success is True
    assert calls[0].prompt_tokens == 21  # message_start was seen
    assert calls[0].finish_reason is None  # message_delta was not


# --- 4. beta messages, raw and streaming responses -----------------------------------------


def test_beta_messages_create(provider, anthropic_client, patched):
    body = fixture_request(SIMPLE)
    provider.enqueue(Reply.fixture(SIMPLE))

    message, calls = in_session(
        lambda: anthropic_client.beta.messages.create(**body, betas=["context-1m-2025-08-07"])
    )

    assert message.usage.input_tokens == 14
    assert provider.last_request.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert_recorded(calls, NON_STREAMING[SIMPLE], model=body["model"], streamed=False)


async def test_async_beta_messages_create(provider, async_anthropic_client, patched):
    body = fixture_request(SIMPLE)
    provider.enqueue(Reply.fixture(SIMPLE))

    message, calls = await in_async_session(
        lambda: async_anthropic_client.beta.messages.create(**body)
    )

    assert message.usage.output_tokens == 11
    assert_recorded(calls, NON_STREAMING[SIMPLE], model=body["model"], streamed=False)


def test_beta_messages_create_streamed(provider, anthropic_client, patched):
    name = "anthropic/messages_tool_use_stream.sse"
    provider.enqueue(Reply.fixture(name))

    def run() -> list[Any]:
        stream = anthropic_client.beta.messages.create(**fixture_request(name))
        with stream:
            return list(stream)

    events, calls = in_session(run)

    assert events[-1].type == "message_stop"
    assert_recorded(calls, STREAMING[name], model="claude-sonnet-4-6", streamed=True)


async def test_async_beta_messages_create_streamed(provider, async_anthropic_client, patched):
    name = "anthropic/messages_thinking_stream.sse"
    provider.enqueue(Reply.fixture(name))

    async def run() -> list[Any]:
        stream = await async_anthropic_client.beta.messages.create(**fixture_request(name))
        return [event async for event in stream]

    events, calls = await in_async_session(run)

    assert events[-1].type == "message_stop"
    assert_recorded(calls, STREAMING[name], model="claude-3-7-sonnet-20250219", streamed=True)


def test_with_raw_response_then_parse(provider, anthropic_client):
    name = "anthropic/messages_create_cache_read.json"
    body = fixture_request(name)
    provider.enqueue(Reply.fixture(name))
    baseline = anthropic_client.messages.with_raw_response.create(**body).parse()

    with patching():
        provider.enqueue(Reply.fixture(name))

        def run() -> tuple[Any, Any]:
            raw = anthropic_client.messages.with_raw_response.create(**body)
            return raw, raw.parse()

        (raw, message), calls = in_session(run)

    assert raw.http_response.status_code == 200
    assert raw.headers["request-id"].startswith("req_test")
    assert message.model_dump() == baseline.model_dump()
    assert_recorded(calls, NON_STREAMING[name], model=body["model"], streamed=False)


async def test_async_with_raw_response_then_parse(provider, async_anthropic_client, patched):
    name = "anthropic/messages_create_cache_write.json"
    body = fixture_request(name)
    provider.enqueue(Reply.fixture(name))

    async def run() -> Any:
        raw = await async_anthropic_client.messages.with_raw_response.create(**body)
        return await raw.parse()

    message, calls = await in_async_session(run)

    assert message.usage.cache_creation_input_tokens == 1733
    assert_recorded(calls, NON_STREAMING[name], model=body["model"], streamed=False)


def test_with_raw_response_streamed_then_parse(provider, anthropic_client, patched):
    name = "anthropic/messages_stream_cache_read.sse"
    provider.enqueue(Reply.fixture(name))

    def run() -> list[Any]:
        raw = anthropic_client.messages.with_raw_response.create(**fixture_request(name))
        with raw.parse() as stream:
            return list(stream)

    events, calls = in_session(run)

    assert events[-1].type == "message_stop"
    assert_recorded(calls, STREAMING[name], model=fixture_request(name)["model"], streamed=True)


async def test_async_with_raw_response_streamed_then_parse(
    provider, async_anthropic_client, patched
):
    name = "anthropic/messages_stream_cache_read.sse"
    provider.enqueue(Reply.fixture(name))

    async def run() -> list[Any]:
        raw = await async_anthropic_client.messages.with_raw_response.create(
            **fixture_request(name)
        )
        stream = await raw.parse()
        async with stream:
            return [event async for event in stream]

    events, calls = await in_async_session(run)

    assert events[-1].type == "message_stop"
    assert_recorded(calls, STREAMING[name], model=fixture_request(name)["model"], streamed=True)


def test_beta_with_raw_response_then_parse(provider, anthropic_client, patched):
    # The path LangChain takes when betas are given.
    body = fixture_request(SIMPLE)
    provider.enqueue(Reply.fixture(SIMPLE))

    message, calls = in_session(
        lambda: anthropic_client.beta.messages.with_raw_response.create(**body).parse()
    )

    assert message.usage.input_tokens == 14
    assert_recorded(calls, NON_STREAMING[SIMPLE], model=body["model"], streamed=False)


def test_with_streaming_response_parsed_in_the_context(provider, anthropic_client):
    name = "anthropic/messages_tool_use.json"
    body = fixture_request(name)
    provider.enqueue(Reply.fixture(name))
    with anthropic_client.messages.with_streaming_response.create(**body) as response:
        baseline = response.parse()

    with patching():
        provider.enqueue(Reply.fixture(name))

        def run() -> Any:
            with anthropic_client.messages.with_streaming_response.create(**body) as response:
                assert response.http_response.status_code == 200
                return response.parse()

        message, calls = in_session(run)

    assert message.model_dump() == baseline.model_dump()
    assert_recorded(calls, NON_STREAMING[name], model=body["model"], streamed=False)


async def test_async_with_streaming_response_parsed_in_the_context(
    provider, async_anthropic_client, patched
):
    name = "anthropic/messages_tool_use.json"
    body = fixture_request(name)
    provider.enqueue(Reply.fixture(name))

    async def run() -> Any:
        async with async_anthropic_client.messages.with_streaming_response.create(
            **body
        ) as response:
            return await response.parse()

    message, calls = await in_async_session(run)

    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert_recorded(calls, NON_STREAMING[name], model=body["model"], streamed=False)


def test_with_streaming_response_of_a_stream(provider, anthropic_client, patched):
    name = SIMPLE_STREAM
    provider.enqueue(Reply.fixture(name))

    def run() -> list[Any]:
        with anthropic_client.messages.with_streaming_response.create(
            **fixture_request(name)
        ) as response:
            return list(response.parse())

    events, calls = in_session(run)

    assert events[-1].type == "message_stop"
    assert_recorded(calls, STREAMING[name], model="claude-sonnet-4-6", streamed=True)


def test_with_streaming_response_read_as_json(provider, anthropic_client, patched):
    # The body is read whole with .json() instead of .parse(): its usage is still there.
    body = fixture_request(SIMPLE)
    provider.enqueue(Reply.fixture(SIMPLE))

    def run() -> Any:
        with anthropic_client.messages.with_streaming_response.create(**body) as response:
            return response.json()

    payload, calls = in_session(run)

    assert payload["usage"]["input_tokens"] == 14
    assert_recorded(calls, NON_STREAMING[SIMPLE], model=body["model"], streamed=False)


# --- 5. errors ------------------------------------------------------------------------------


ERROR_NAME = "anthropic/error_400_invalid_request.json"


def _raise_in(run: Callable[[], Any], error_type: type[BaseException]) -> Callable[[], Any]:
    def catching() -> BaseException:
        with pytest.raises(error_type) as info:
            run()
        return info.value

    return catching


def _async_raise_in(
    run: Callable[[], Awaitable[Any]], error_type: type[BaseException]
) -> Callable[[], Awaitable[BaseException]]:
    async def catching() -> BaseException:
        with pytest.raises(error_type) as info:
            await run()
        return info.value

    return catching


def assert_error_record(calls: list[LLMCall], error_type: str, *, streamed: bool) -> LLMCall:
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.success is False
    assert call.error_type == error_type
    assert call.provider is ModelProvider.ANTHROPIC
    assert call.api == "messages"
    assert call.streamed is streamed
    return call


def test_bad_request_reaches_the_user_unchanged(provider, anthropic_client):
    body = fixture_request(ERROR_NAME)
    provider.enqueue(Reply.fixture(ERROR_NAME))
    with pytest.raises(anthropic.BadRequestError) as baseline:
        anthropic_client.messages.create(**body)

    with patching():
        provider.enqueue(Reply.fixture(ERROR_NAME))
        error, calls = in_session(
            _raise_in(lambda: anthropic_client.messages.create(**body), anthropic.BadRequestError)
        )

    assert type(error) is anthropic.BadRequestError
    assert error.status_code == 400
    assert str(error) == str(baseline.value)
    assert error.body == baseline.value.body
    call = assert_error_record(calls, "bad_request", streamed=False)
    assert call.model == "claude-opus-4-6"
    assert "effort level 'xhigh'" in call.error_message
    assert call.prompt_tokens is None
    assert call.completion_tokens is None


async def test_async_bad_request_reaches_the_user_unchanged(
    provider, async_anthropic_client, patched
):
    body = fixture_request(ERROR_NAME)
    provider.enqueue(Reply.fixture(ERROR_NAME))

    error, calls = await in_async_session(
        _async_raise_in(
            lambda: async_anthropic_client.messages.create(**body), anthropic.BadRequestError
        )
    )

    assert error.status_code == 400
    assert error.body["error"]["type"] == "invalid_request_error"
    assert_error_record(calls, "bad_request", streamed=False)


STATUS_ERRORS = [
    (429, anthropic.RateLimitError, "rate_limit"),
    (529, anthropic.OverloadedError, "server_error"),
]


@pytest.mark.parametrize(("status", "sdk_error", "error_type"), STATUS_ERRORS)
def test_status_errors_are_classified(
    status, sdk_error, error_type, provider, anthropic_client, patched
):
    provider.enqueue(Reply.error(status))
    body = fixture_request(SIMPLE)

    error, calls = in_session(
        _raise_in(lambda: anthropic_client.messages.create(**body), sdk_error)
    )

    assert type(error) is sdk_error
    assert error.status_code == status
    assert_error_record(calls, error_type, streamed=False)


@pytest.mark.parametrize(("status", "sdk_error", "error_type"), STATUS_ERRORS)
async def test_async_status_errors_are_classified(
    status, sdk_error, error_type, provider, async_anthropic_client, patched
):
    provider.enqueue(Reply.error(status))
    body = fixture_request(SIMPLE_STREAM)  # asked as a stream: the error comes before any event

    error, calls = await in_async_session(
        _async_raise_in(lambda: async_anthropic_client.messages.create(**body), sdk_error)
    )

    assert type(error) is sdk_error
    assert_error_record(calls, error_type, streamed=True)


def test_stream_dropped_midway_raises_the_sdks_error(provider, anthropic_client):
    # drop_after=3: message_start, content_block_start and ping arrive, then the connection ends.
    body = fixture_request(SIMPLE_STREAM)
    provider.enqueue(Reply.fixture(SIMPLE_STREAM, drop_after=3))
    with pytest.raises(httpx2.TransportError) as baseline:
        list(anthropic_client.messages.create(**body))

    with patching():
        provider.enqueue(Reply.fixture(SIMPLE_STREAM, drop_after=3))
        seen: list[str] = []

        def run() -> None:
            for event in anthropic_client.messages.create(**body):
                seen.append(event.type)

        error, calls = in_session(_raise_in(run, httpx2.TransportError))

    assert type(error) is type(baseline.value)
    assert seen == ["message_start", "content_block_start"]  # the SDK does not yield pings
    call = assert_error_record(calls, "connection", streamed=True)
    assert call.prompt_tokens == 21  # message_start had arrived
    assert call.response_model == "claude-sonnet-4-6"


async def test_async_stream_dropped_midway_raises_the_sdks_error(
    provider, async_anthropic_client, patched
):
    body = fixture_request(SIMPLE_STREAM)
    provider.enqueue(Reply.fixture(SIMPLE_STREAM, drop_after=3))

    async def run() -> None:
        stream = await async_anthropic_client.messages.create(**body)
        async for _ in stream:
            pass

    error, calls = await in_async_session(_async_raise_in(run, httpx2.TransportError))

    assert isinstance(error, httpx2.RemoteProtocolError)
    call = assert_error_record(calls, "connection", streamed=True)
    assert call.prompt_tokens == 21


def test_stream_helper_dropped_midway(provider, anthropic_client, patched):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM, drop_after=5))

    def run() -> None:
        with anthropic_client.messages.stream(**_stream_helper_body()) as stream:
            stream.get_final_message()

    _, calls = in_session(_raise_in(run, httpx2.TransportError))

    assert_error_record(calls, "connection", streamed=True)


# --- 6. abandoned streams ------------------------------------------------------------------


def test_stream_left_with_break_inside_with_is_recorded_once(provider, anthropic_client, patched):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    def run() -> None:
        with anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM)) as stream:
            for _ in stream:
                break
        del stream
        gc.collect()
        obsdeco.flush()

    _, calls = in_session(run)

    assert len(calls) == 1
    assert calls[0].success is True
    assert calls[0].streamed is True
    assert calls[0].prompt_tokens == 21
    assert calls[0].finish_reason is None


async def test_async_stream_left_with_break_is_recorded_once(
    provider, async_anthropic_client, patched
):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    async def run() -> None:
        stream = await async_anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))
        async with stream:
            async for _ in stream:
                break
        del stream
        gc.collect()
        obsdeco.flush()

    _, calls = await in_async_session(run)

    assert len(calls) == 1
    assert calls[0].prompt_tokens == 21


def test_stream_closed_early_is_recorded_once(provider, anthropic_client, patched):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    def run() -> None:
        stream = anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))
        next(stream)
        next(stream)
        stream.close()
        stream.close()
        del stream
        gc.collect()
        obsdeco.flush()

    _, calls = in_session(run)

    assert len(calls) == 1
    assert calls[0].prompt_tokens == 21
    assert calls[0].success is True


async def test_async_stream_closed_early_is_recorded_once(
    provider, async_anthropic_client, patched
):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    async def run() -> None:
        stream = await async_anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))
        await stream.__anext__()
        await stream.close()
        del stream
        gc.collect()
        obsdeco.flush()

    _, calls = await in_async_session(run)

    assert len(calls) == 1
    assert calls[0].prompt_tokens == 21


def test_stream_dropped_unread_is_recorded_when_collected(provider, anthropic_client, patched):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    def run() -> int:
        stream = anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))
        next(stream)
        obsdeco.flush()
        before = len(obsdeco.get_calls(obsdeco.current_session().id))
        del stream
        gc.collect()
        obsdeco.flush()
        return before

    before, calls = in_session(run)

    assert before == 0  # nothing is recorded while the stream is alive and unfinished
    assert len(calls) == 1
    assert calls[0].streamed is True
    assert calls[0].prompt_tokens == 21
    assert calls[0].success is True


async def test_async_stream_dropped_unread_is_recorded_when_collected(
    provider, async_anthropic_client, patched
):
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))

    async def run() -> None:
        stream = await async_anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))
        await stream.__anext__()
        await stream.response.aclose()  # release the connection; obsdeco is not told
        del stream
        gc.collect()
        obsdeco.flush()

    _, calls = await in_async_session(run)

    assert len(calls) == 1
    assert calls[0].prompt_tokens == 21


def test_stream_returned_by_the_session_and_read_after_it(provider, anthropic_client, patched):
    # A handler returns the stream; its caller reads it after the session function returned.
    provider.enqueue(Reply.fixture(SIMPLE_STREAM))
    box: dict[str, str] = {}

    @obsdeco.observe_session
    def handle() -> Any:
        box["id"] = obsdeco.current_session().id
        return anthropic_client.messages.create(**fixture_request(SIMPLE_STREAM))

    stream = handle()
    with stream:
        events = list(stream)
    obsdeco.flush()

    assert events[-1].type == "message_stop"
    calls = obsdeco.get_calls(box["id"])
    assert_recorded(calls, STREAMING[SIMPLE_STREAM], model="claude-sonnet-4-6", streamed=True)


# --- 7. clients made before patching, and unpatching ---------------------------------------


def _seam_functions() -> dict[str, Any]:
    return {
        "anthropic sync": anthropic._base_client.SyncAPIClient.request,
        "anthropic async": anthropic._base_client.AsyncAPIClient.request,
        "openai sync": openai._base_client.SyncAPIClient.request,
        "openai async": openai._base_client.AsyncAPIClient.request,
    }


def test_client_made_before_patch_all_is_captured_until_unpatch_all(provider):
    obsdeco.unpatch_all()  # a known starting point, whatever ran before
    originals = _seam_functions()
    for name, function in originals.items():
        assert inspect.isfunction(function), name
        assert not isinstance(function, wrapt.ObjectProxy), name

    client = anthropic.Anthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=0
    )
    body = fixture_request(SIMPLE)
    provider.enqueue(Reply.fixture(SIMPLE), Reply.fixture(SIMPLE), Reply.fixture(SIMPLE))

    def three_calls() -> list[int]:
        counts = []
        session_id = obsdeco.current_session().id
        client.messages.create(**body)  # not patched yet
        obsdeco.flush()
        counts.append(len(obsdeco.get_calls(session_id)))
        names = obsdeco.patch_all()
        assert {"anthropic", "openai"} <= set(names)
        assert all(_seam_functions()[name] is not originals[name] for name in originals)
        try:
            client.messages.create(**body)  # same client, now captured
            obsdeco.flush()
            counts.append(len(obsdeco.get_calls(session_id)))
        finally:
            obsdeco.unpatch_all()
        client.messages.create(**body)  # unpatched again
        obsdeco.flush()
        counts.append(len(obsdeco.get_calls(session_id)))
        return counts

    with client:
        counts, calls = in_session(three_calls)

    assert counts == [0, 1, 1]
    assert len(provider.requests) == 3
    assert_recorded(calls, NON_STREAMING[SIMPLE], model=body["model"], streamed=False)
    restored = _seam_functions()
    for name, original in originals.items():
        assert restored[name] is original, name
    assert anthropic._base_client.SyncAPIClient.__dict__["request"] is originals["anthropic sync"]
    assert openai._base_client.SyncAPIClient.__dict__["request"] is originals["openai sync"]


async def test_async_client_made_before_patch_all_is_captured(provider):
    obsdeco.unpatch_all()
    original = anthropic._base_client.AsyncAPIClient.request
    client = anthropic.AsyncAnthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=0
    )
    body = fixture_request(SIMPLE)
    provider.enqueue(Reply.fixture(SIMPLE), Reply.fixture(SIMPLE), Reply.fixture(SIMPLE))

    async def three_calls() -> None:
        await client.messages.create(**body)
        obsdeco.patch_all()
        try:
            await client.messages.create(**body)
        finally:
            obsdeco.unpatch_all()
        await client.messages.create(**body)

    async with client:
        _, calls = await in_async_session(three_calls)

    assert len(provider.requests) == 3
    assert_recorded(calls, NON_STREAMING[SIMPLE], model=body["model"], streamed=False)
    assert anthropic._base_client.AsyncAPIClient.request is original


def test_patch_all_is_idempotent(provider, anthropic_client):
    obsdeco.unpatch_all()
    seam = anthropic._base_client.SyncAPIClient
    original = seam.__dict__["request"]
    obsdeco.patch_all()
    try:
        first = seam.__dict__["request"]
        assert first is not original
        obsdeco.patch_all()
        assert seam.__dict__["request"] is first  # not wrapped a second time
        provider.enqueue(Reply.fixture(SIMPLE))
        _, calls = in_session(lambda: anthropic_client.messages.create(**fixture_request(SIMPLE)))
    finally:
        obsdeco.unpatch_all()

    assert len(calls) == 1  # patched twice, recorded once
    assert seam.__dict__["request"] is original


# --- thinking tokens: usage.output_tokens_details.thinking_tokens ---------------------------

THINKING = "anthropic/messages_thinking.json"
THINKING_STREAM = "anthropic/messages_thinking_stream.sse"
# Both recorded answers are 52 input tokens; output 215 (plain) and 216 (streamed), thinking
# included. The scripted replies add what the API now reports apart: the thinking part.
THINKING_TOKENS = 180


def thinking_message() -> Reply:
    """messages_thinking.json with `usage.output_tokens_details.thinking_tokens`."""
    body = json.loads(load_fixture(THINKING))
    body["usage"]["output_tokens_details"] = {"thinking_tokens": THINKING_TOKENS}
    return Reply.json(body)


def thinking_stream() -> Reply:
    """messages_thinking_stream.sse whose final message_delta usage carries
    `output_tokens_details` (message_start's usage does not)."""
    recorded = b'"usage":{"output_tokens":216}'
    reported = b'"usage":{"output_tokens":216,"output_tokens_details":{"thinking_tokens":%d}}'
    frames = split_sse(load_fixture(THINKING_STREAM))
    assert sum(recorded in frame for frame in frames) == 1
    return Reply.sse(frame.replace(recorded, reported % THINKING_TOKENS) for frame in frames)


def thinking_facts(call: LLMCall) -> tuple[Any, ...]:
    return (
        call.response_model,
        call.prompt_tokens,
        call.completion_tokens,
        call.reasoning_tokens,
        call.streamed,
        call.success,
    )


def test_thinking_tokens_of_a_message_are_reasoning_tokens(provider, anthropic_client, patched):
    provider.enqueue(thinking_message())

    message, calls = in_session(
        lambda: anthropic_client.messages.create(**fixture_request(THINKING))
    )

    assert message.usage.output_tokens_details.thinking_tokens == THINKING_TOKENS
    assert [thinking_facts(call) for call in calls] == [
        ("claude-3-7-sonnet-20250219", 52, 215, THINKING_TOKENS, False, True)
    ]


async def test_async_thinking_tokens_of_a_message_are_reasoning_tokens(
    provider, async_anthropic_client, patched
):
    provider.enqueue(thinking_message())

    message, calls = await in_async_session(
        lambda: async_anthropic_client.messages.create(**fixture_request(THINKING))
    )

    assert message.usage.output_tokens_details.thinking_tokens == THINKING_TOKENS
    assert [thinking_facts(call) for call in calls] == [
        ("claude-3-7-sonnet-20250219", 52, 215, THINKING_TOKENS, False, True)
    ]


def test_thinking_tokens_of_the_final_message_delta_are_reasoning_tokens(
    provider, anthropic_client, patched
):
    provider.enqueue(thinking_stream())

    def read() -> list[Any]:
        with anthropic_client.messages.create(**fixture_request(THINKING_STREAM)) as stream:
            return list(stream)

    events, calls = in_session(read)

    delta = next(event for event in events if event.type == "message_delta")
    assert delta.usage.output_tokens_details.thinking_tokens == THINKING_TOKENS
    assert [thinking_facts(call) for call in calls] == [
        ("claude-3-7-sonnet-20250219", 52, 216, THINKING_TOKENS, True, True)
    ]


async def test_async_thinking_tokens_of_the_message_stream_helper_are_reasoning_tokens(
    provider, async_anthropic_client, patched
):
    provider.enqueue(thinking_stream())
    body = {
        key: value for key, value in fixture_request(THINKING_STREAM).items() if key != "stream"
    }

    async def final_message() -> Any:
        async with async_anthropic_client.messages.stream(**body) as stream:
            return await stream.get_final_message()

    message, calls = await in_async_session(final_message)

    assert message.usage.output_tokens_details.thinking_tokens == THINKING_TOKENS
    assert [thinking_facts(call) for call in calls] == [
        ("claude-3-7-sonnet-20250219", 52, 216, THINKING_TOKENS, True, True)
    ]


@pytest.mark.parametrize("name", [THINKING, THINKING_STREAM])
def test_thinking_the_api_does_not_count_apart_leaves_reasoning_unknown(
    name, provider, anthropic_client, patched
):
    provider.enqueue(Reply.fixture(name))

    def create() -> Any:
        answer = anthropic_client.messages.create(**fixture_request(name))
        return list(answer) if name.endswith(".sse") else answer

    _, calls = in_session(create)

    completion = 216 if name.endswith(".sse") else 215
    assert [thinking_facts(call) for call in calls] == [
        ("claude-3-7-sonnet-20250219", 52, completion, None, name.endswith(".sse"), True)
    ]
