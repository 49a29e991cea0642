"""The legacy completions endpoint (`client.completions.create`, POST /v1/completions).

The real openai SDK, sync and async, talks over real HTTP to the local provider, whose
synthesised replies are deterministic: the prompt "Say this is a test" is 5 tokens and the
default answer "Hello! This is a reply from the obsdeco test provider." is 12 (one stream chunk
each). Legacy completions report no token details, so cached and reasoning tokens stay unknown.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

import obsdeco
from obsdeco import LLMCall, ModelProvider
from obsdeco.testing import DEFAULT_TEXT, Reply, count_tokens
from tests.helpers import call_facts

pytestmark = pytest.mark.usefixtures("patched")

MODEL = "gpt-3.5-turbo-instruct"
PROMPT = "Say this is a test"
PROMPT_TOKENS = 5
COMPLETION_TOKENS = 12
# One chunk per token of the answer, then the finish_reason chunk.
TEXT_CHUNKS = COMPLETION_TOKENS + 1


def test_the_expected_counts_are_the_providers_own() -> None:
    assert count_tokens(PROMPT) == PROMPT_TOKENS
    assert count_tokens(DEFAULT_TEXT) == COMPLETION_TOKENS


@pytest.fixture(autouse=True)
async def _clients_closed(async_openai_client: openai.AsyncOpenAI) -> AsyncIterator[None]:
    """Close the async client while the test's event loop still runs."""
    yield
    await async_openai_client.close()


async def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(...)`, awaited when it is an async SDK method."""
    result = function(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


async def drain(stream: Any) -> list[Any]:
    if hasattr(stream, "__aiter__"):
        return [chunk async for chunk in stream]
    return list(stream)


AGENT = ("Writer", "complete")


async def observed(client: Any, **kwargs: Any) -> tuple[Any, list[LLMCall]]:
    """`completions.create(**kwargs)` (a stream read to its end) by an agent in a session.

    Returns the value (or the exception raised) and the session's records.
    """
    box: dict[str, Any] = {}
    if isinstance(client, openai.AsyncOpenAI):

        @obsdeco.observe_agent(name=AGENT[0], operation=AGENT[1])
        async def write_async() -> Any:
            result = await client.completions.create(**kwargs)
            return [chunk async for chunk in result] if kwargs.get("stream") else result

        @obsdeco.observe_session(name="completions")
        async def session_async() -> Any:
            box["id"] = obsdeco.current_session().id
            try:
                return await write_async()
            except openai.APIError as error:
                return error

        value = await session_async()
    else:

        @obsdeco.observe_agent(name=AGENT[0], operation=AGENT[1])
        def write() -> Any:
            result = client.completions.create(**kwargs)
            return list(result) if kwargs.get("stream") else result

        @obsdeco.observe_session(name="completions")
        def session() -> Any:
            box["id"] = obsdeco.current_session().id
            try:
                return write()
            except openai.APIError as error:
                return error

        value = session()
    obsdeco.flush()
    calls = obsdeco.get_calls(box["id"])
    for call in calls:
        assert (call.session_id, call.agent_name, call.operation) == (box["id"], *AGENT)
    return value, calls


async def unpatched_value(client: Any, **kwargs: Any) -> Any:
    """What the SDK returns without obsdeco (a stream read to its end)."""
    obsdeco.unpatch_all()
    try:
        result = await run(client.completions.create, **kwargs)
        return await drain(result) if kwargs.get("stream") else result
    finally:
        obsdeco.patch_all()


def summary(call: LLMCall) -> dict[str, Any]:
    return call_facts(call, "finish_reason", "tool_call_count")


def completion_record(
    prompt: int | None = PROMPT_TOKENS,
    completion: int | None = COMPLETION_TOKENS,
    *,
    finish_reason: str | None = "stop",
    streamed: bool = False,
    error_type: str | None = None,
) -> dict[str, Any]:
    return {
        "provider": ModelProvider.OPENAI,
        "api": "completions",
        "model": MODEL,
        "response_model": MODEL if error_type is None else None,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": None,
        "cache_creation_tokens": None,
        "reasoning_tokens": None,
        "finish_reason": finish_reason,
        "tool_call_count": 0 if error_type is None else None,
        "streamed": streamed,
        "success": error_type is None,
        "error_type": error_type,
    }


def texts(chunks: list[Any]) -> list[str]:
    return [choice.text for chunk in chunks for choice in chunk.choices]


# --- plain --------------------------------------------------------------------------------


async def test_a_completion_is_recorded_once_with_exact_tokens(provider, client):
    completion, calls = await observed(client, model=MODEL, prompt=PROMPT)

    assert completion.choices[0].text == DEFAULT_TEXT
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 12)
    assert len(calls) == 1
    assert summary(calls[0]) == completion_record()
    assert calls[0].latency_ms > 0
    assert calls[0].time_to_first_token_ms is None
    assert provider.last_request.path == "/v1/completions"


async def test_a_truncated_completion_keeps_its_finish_reason(provider, client):
    completion, calls = await observed(client, model=MODEL, prompt=PROMPT, max_tokens=4)

    assert completion.choices[0].text == "Hello! This is"
    assert [summary(call) for call in calls] == [
        completion_record(completion=4, finish_reason="length")
    ]


async def test_a_completion_is_what_the_sdk_returns_without_obsdeco(provider, client):
    provider.enqueue(Reply.default(model="gpt-3.5-turbo-instruct:20230824-v2"))
    provider.enqueue(Reply.default(model="gpt-3.5-turbo-instruct:20230824-v2"))
    baseline = await unpatched_value(client, model=MODEL, prompt=[PROMPT, "and more"])
    completion, calls = await observed(client, model=MODEL, prompt=[PROMPT, "and more"])

    assert type(completion) is type(baseline)
    ignored = {"id", "created"}
    assert completion.model_dump(exclude=ignored) == baseline.model_dump(exclude=ignored)
    assert len(calls) == 1
    # a prompt list counts every prompt: 5 + 2 tokens
    assert (calls[0].prompt_tokens, calls[0].completion_tokens) == (7, 12)
    assert calls[0].response_model == "gpt-3.5-turbo-instruct:20230824-v2"


# --- streamed -----------------------------------------------------------------------------


async def test_a_stream_with_include_usage_is_recorded_from_its_usage_chunk(provider, client):
    chunks, calls = await observed(
        client,
        model=MODEL,
        prompt=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
    )

    assert len(chunks) == TEXT_CHUNKS + 1
    assert "".join(texts(chunks)) == DEFAULT_TEXT
    assert (chunks[-1].choices, chunks[-1].usage.completion_tokens) == ([], 12)
    assert [summary(call) for call in calls] == [completion_record(streamed=True)]
    call = calls[0]
    assert call.time_to_first_token_ms is not None
    assert 0 < call.time_to_first_token_ms <= call.latency_ms


async def test_a_stream_without_usage_records_unknown_tokens_and_is_sent_as_is(provider, client):
    chunks, calls = await observed(client, model=MODEL, prompt=PROMPT, stream=True)

    assert len(chunks) == TEXT_CHUNKS
    assert all(chunk.usage is None for chunk in chunks)
    assert "stream_options" not in provider.last_request.body
    assert [summary(call) for call in calls] == [completion_record(None, None, streamed=True)]


async def test_request_stream_usage_asks_for_usage_and_hides_the_usage_chunk(
    provider, client, sqlite_url
):
    kwargs = {"model": MODEL, "prompt": PROMPT, "stream": True}
    baseline = await unpatched_value(client, **kwargs)
    obsdeco.configure(database_url=sqlite_url, request_stream_usage=True)
    chunks, calls = await observed(client, **kwargs)

    ignored = {"id", "created"}
    assert [chunk.model_dump(exclude=ignored) for chunk in chunks] == [
        chunk.model_dump(exclude=ignored) for chunk in baseline
    ]
    assert len(chunks) == TEXT_CHUNKS  # the usage-only chunk obsdeco asked for is hidden
    without, with_usage = (request.body for request in provider.requests)
    assert without == kwargs
    assert with_usage == {**kwargs, "stream_options": {"include_usage": True}}
    assert [summary(call) for call in calls] == [completion_record(streamed=True)]


async def test_request_stream_usage_keeps_the_usage_chunk_the_user_asked_for(
    provider, client, sqlite_url
):
    obsdeco.configure(database_url=sqlite_url, request_stream_usage=True)
    chunks, calls = await observed(
        client, model=MODEL, prompt=PROMPT, stream=True, stream_options={"include_usage": True}
    )

    assert len(chunks) == TEXT_CHUNKS + 1
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS
    assert [summary(call) for call in calls] == [completion_record(streamed=True)]


# --- failing ------------------------------------------------------------------------------

FAILURES = [
    (429, openai.RateLimitError, "rate_limit", False),
    (400, openai.BadRequestError, "bad_request", False),
    (429, openai.RateLimitError, "rate_limit", True),
    (400, openai.BadRequestError, "bad_request", True),
]


@pytest.mark.parametrize(
    ("status", "exception", "error_type", "streamed"),
    FAILURES,
    ids=[f"{row[0]}-{'stream' if row[3] else 'plain'}" for row in FAILURES],
)
async def test_a_failing_completion_raises_the_sdks_error_and_is_recorded_once(
    provider, client, status, exception, error_type, streamed
):
    message = f"completions failed with {status}"
    provider.enqueue(Reply.error(status, message=message), Reply.error(status, message=message))
    kwargs = {"model": MODEL, "prompt": PROMPT, "stream": streamed}
    with pytest.raises(exception) as baseline:
        await unpatched_value(client, **kwargs)
    error, calls = await observed(client, **kwargs)

    assert type(error) is type(baseline.value)
    assert error.status_code == status
    assert str(error) == str(baseline.value)
    assert error.body == baseline.value.body
    assert [summary(call) for call in calls] == [
        completion_record(None, None, finish_reason=None, streamed=streamed, error_type=error_type)
    ]
    assert message in calls[0].error_message
