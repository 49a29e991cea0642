"""Implicit capture of the google-genai SDK (`obsdeco.patch_all()`) over real HTTP.

The real SDK talks to the local provider's Gemini API, sync (httpx2, its default, and httpx) and
async (aiohttp, its default when installed, and httpx). Usage is normalised as API.md section 5
says: prompt_tokens = promptTokenCount (cached included), cached_tokens =
cachedContentTokenCount, completion_tokens = candidatesTokenCount + thoughtsTokenCount,
reasoning_tokens = thoughtsTokenCount, None when the answer does not carry it; a stream's last
usageMetadata counts, never a sum.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import genai_prices
import httpx
import pytest
from genai_prices import Usage

import obsdeco
from obsdeco import LLMCall, ModelProvider
from obsdeco.integrations import gemini as gemini_format
from obsdeco.integrations import recorder
from obsdeco.testing import ProviderServer, Reply
from tests.helpers import in_async_session, in_session

genai = pytest.importorskip("google.genai", reason="google-genai is not installed")
from google.genai import _api_client, errors, types  # noqa: E402

MODEL = "gemini-2.5-flash"
TEXT = "Hello! This is a reply from the obsdeco test provider."
PROMPT = "Hi there"
PROMPT_TOKENS = 2
TEXT_TOKENS = 12  # the server's count of TEXT

FUNCTION_CALLS = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "get_time", "args": {"zone": "CET"}}},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 31, "candidatesTokenCount": 14, "totalTokenCount": 45},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "fixed-function-calls",
}

THOUGHTFUL = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "Let me count the primes first.", "thought": True},
                    {"text": "2, 3 and 5."},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 8,
        "candidatesTokenCount": 7,
        "thoughtsTokenCount": 25,
        "totalTokenCount": 40,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "fixed-thoughtful",
}

TOOLS = types.GenerateContentConfig(
    tools=[
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(name="get_weather", description="Weather in a city"),
                types.FunctionDeclaration(name="get_time", description="Time in a zone"),
            ]
        )
    ]
)


def usd(prompt: int, completion: int, cached: int = 0, model: str = MODEL) -> float:
    """What genai-prices charges for these counts at Google's prices."""
    usage = Usage(input_tokens=prompt, cache_read_tokens=cached, output_tokens=completion)
    price = genai_prices.calc_price(usage, model_ref=model, provider_id="google")
    return float(price.total_price)


def sync_client(
    provider: ProviderServer, transport: str, retry: types.HttpRetryOptions | None = None
) -> genai.Client:
    options = types.HttpOptions(base_url=provider.gemini_base_url, retry_options=retry)
    if transport == "httpx":
        options.httpx_client = httpx.Client()
    return genai.Client(api_key="test", http_options=options)


def async_client(
    provider: ProviderServer, transport: str, retry: types.HttpRetryOptions | None = None
) -> genai.Client:
    options = types.HttpOptions(base_url=provider.gemini_base_url, retry_options=retry)
    if transport == "httpx":
        options.httpx_async_client = httpx.AsyncClient()
    client = genai.Client(api_key="test", http_options=options)
    assert client._api_client._use_aiohttp() is (transport == "aiohttp")
    return client


@pytest.fixture(params=["httpx2", "httpx"])
def client(request: pytest.FixtureRequest, provider: ProviderServer) -> genai.Client:
    """A sync client on each HTTP library google-genai can send with."""
    return sync_client(provider, request.param)


@pytest.fixture(params=["aiohttp", "httpx"])
def aclient(request: pytest.FixtureRequest, provider: ProviderServer) -> genai.Client:
    """A client whose `aio` side sends with each async HTTP library google-genai supports."""
    return async_client(provider, request.param)


@pytest.fixture
def plain_client(provider: ProviderServer) -> genai.Client:
    return sync_client(provider, "httpx2")


@contextlib.contextmanager
def patching() -> Iterator[None]:
    """patch_all() for a block, so that a test can first see what the SDK does without it."""
    obsdeco.patch_all()
    try:
        yield
    finally:
        obsdeco.unpatch_all()


def assert_call(
    calls: list[LLMCall],
    *,
    prompt: int,
    completion: int | None,
    streamed: bool,
    reasoning: int | None = None,
    cached: int | None = None,
    finish_reason: str = "STOP",
    tool_calls: int = 0,
) -> LLMCall:
    """Exactly one successful Gemini record with these facts, priced at Google's prices."""
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.provider is ModelProvider.GOOGLE
    assert call.api == "generate_content"
    assert call.model == MODEL
    assert call.response_model == MODEL
    assert (call.prompt_tokens, call.completion_tokens) == (prompt, completion)
    assert (call.reasoning_tokens, call.cached_tokens) == (reasoning, cached)
    assert call.cache_creation_tokens is None
    assert call.finish_reason == finish_reason
    assert call.tool_call_count == tool_calls
    assert call.success is True
    assert call.error_type is None
    assert call.streamed is streamed
    if completion is None:  # unknown tokens are never priced as 0
        assert call.cost_usd is None
    else:
        assert call.cost_usd == pytest.approx(usd(prompt, completion, cached or 0), rel=1e-9)
    if streamed:
        assert 0 <= call.time_to_first_token_ms <= call.latency_ms
    else:
        assert call.time_to_first_token_ms is None
    return call


def raised(run: Callable[[], Any]) -> Callable[[], BaseException]:
    def catch() -> BaseException:
        with pytest.raises(errors.APIError) as error:
            run()
        return error.value

    return catch


def dump(response: Any) -> dict[str, Any]:
    """A response as the user reads it (less the HTTP headers, which carry request ids)."""
    return response.model_dump(exclude={"sdk_http_response"})


# --- 1. plain, streamed, async ------------------------------------------------------------


def test_generate_content(provider, client, patched):
    response, calls = in_session(
        lambda: client.models.generate_content(model=MODEL, contents=PROMPT)
    )

    assert response.text == TEXT
    assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=False)


def test_generate_content_stream_counts_the_last_usage_not_the_sum(provider, client, patched):
    chunks, calls = in_session(
        lambda: list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    )

    # Every chunk repeats the usage so far: candidates 1, 2, ... 12, prompt 2 each time.
    assert [chunk.usage_metadata.candidates_token_count for chunk in chunks] == list(
        range(1, TEXT_TOKENS + 1)
    )
    assert "".join(chunk.text for chunk in chunks) == TEXT
    assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=True)


async def test_async_generate_content(provider, aclient, patched):
    response, calls = await in_async_session(
        lambda: aclient.aio.models.generate_content(model=MODEL, contents=PROMPT)
    )

    assert response.text == TEXT
    assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=False)


async def test_async_generate_content_stream(provider, aclient, patched):
    async def run() -> list[Any]:
        stream = await aclient.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        return [chunk async for chunk in stream]

    chunks, calls = await in_async_session(run)

    assert len(chunks) == TEXT_TOKENS
    assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=True)


def test_model_is_recorded_without_the_models_prefix(provider, plain_client, patched):
    _, calls = in_session(
        lambda: plain_client.models.generate_content(model=f"models/{MODEL}", contents=PROMPT)
    )

    assert provider.last_request.path.endswith(f"/models/{MODEL}:generateContent")
    assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=False)


def test_time_to_first_token_is_when_the_first_chunk_arrived(provider, plain_client, patched):
    release = threading.Event()
    provider.enqueue(Reply.default(hold=release, hold_after=1))

    def run() -> None:
        stream = plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        assert next(stream).text == "Hello"
        release.set()
        assert len(list(stream)) == TEXT_TOKENS - 1

    _, calls = in_session(run)

    call = assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=True)
    assert call.time_to_first_token_ms < call.latency_ms


# --- 2. chats --------------------------------------------------------------------------------


def test_chat_send_message_records_each_turn_for_its_agent(provider, plain_client, patched):
    chat = plain_client.chats.create(model=MODEL)

    @obsdeco.observe_agent(name="Researcher", operation="ask")
    def ask() -> list[str]:
        first = chat.send_message("What is a prime?")  # 5 tokens
        second = chat.send_message("And a twin prime?")  # history: 5 + 12 + 5
        return [first.text, second.text]

    texts, calls = in_session(ask)

    assert texts == [TEXT, TEXT]
    assert [call.prompt_tokens for call in calls] == [5, 5 + TEXT_TOKENS + 5]
    assert {(call.agent_name, call.operation) for call in calls} == {("Researcher", "ask")}
    assert all(call.completion_tokens == TEXT_TOKENS and not call.streamed for call in calls)


def test_chat_send_message_stream(provider, plain_client, patched):
    chat = plain_client.chats.create(model=MODEL)

    @obsdeco.observe_agent
    def streamer() -> str:
        return "".join(chunk.text for chunk in chat.send_message_stream(PROMPT))

    text, calls = in_session(streamer)

    assert text == TEXT
    call = assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=True)
    assert call.agent_name == "streamer"


async def test_async_chat_send_message_and_stream(provider, aclient, patched):
    chat = aclient.aio.chats.create(model=MODEL)

    @obsdeco.observe_agent(name="Talker")
    async def talk() -> str:
        first = await chat.send_message(PROMPT)
        streamed = [chunk.text async for chunk in await chat.send_message_stream("Go on")]
        return first.text + "".join(streamed)

    text, calls = await in_async_session(talk)

    assert text == TEXT + TEXT
    assert [(call.streamed, call.prompt_tokens) for call in calls] == [
        (False, PROMPT_TOKENS),
        (True, PROMPT_TOKENS + TEXT_TOKENS + 2),
    ]
    assert {call.agent_name for call in calls} == {"Talker"}
    assert all(call.completion_tokens == TEXT_TOKENS for call in calls)


# --- 3. thinking, cache, function calls, missing counts ---------------------------------------


def test_thoughts_count_as_completion_and_reasoning(provider, plain_client, patched):
    provider.enqueue(Reply.default(usage={"thoughtsTokenCount": 9}))

    _, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT)
    )

    assert_call(
        calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS + 9, reasoning=9, streamed=False
    )


def test_streamed_thoughts_are_counted_once(provider, plain_client, patched):
    provider.enqueue(Reply.default(usage={"thoughtsTokenCount": 9}))  # repeated on every chunk

    _, calls = in_session(
        lambda: list(plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    )

    assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS + 9, reasoning=9, streamed=True)


def test_cached_content_is_part_of_the_prompt(provider, plain_client, patched):
    provider.enqueue(Reply.default(input_tokens=40, usage={"cachedContentTokenCount": 30}))

    _, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT)
    )

    call = assert_call(calls, prompt=40, completion=TEXT_TOKENS, cached=30, streamed=False)
    # 10 uncached at $0.30/M, 30 cached at $0.03/M, 12 out at $2.50/M
    assert call.cost_usd == pytest.approx((10 * 0.30 + 30 * 0.03 + 12 * 2.50) / 1e6, rel=1e-9)


def test_function_calls_are_counted_and_captured(provider, plain_client, patched):
    obsdeco.configure(capture_content=True)
    provider.enqueue(Reply.json(FUNCTION_CALLS))

    response, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT, config=TOOLS)
    )

    assert [call.name for call in response.function_calls] == ["get_weather", "get_time"]
    call = assert_call(calls, prompt=31, completion=14, streamed=False, tool_calls=2)
    assert json.loads(call.completion) == {
        "text": "",
        "tool_calls": [
            {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"name": "get_time", "arguments": '{"zone": "CET"}'},
        ],
    }
    prompt = json.loads(call.prompt)
    assert prompt["contents"] == [{"parts": [{"text": PROMPT}], "role": "user"}]


def test_streamed_function_calls_and_text_are_captured(provider, plain_client, patched):
    obsdeco.configure(capture_content=True)
    text_chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking"}]}}]}
    call_chunk = {**FUNCTION_CALLS, "responseId": "fixed"}
    provider.enqueue(Reply.sse([text_chunk, call_chunk]))

    _, calls = in_session(
        lambda: list(
            plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT, config=TOOLS)
        )
    )

    call = assert_call(calls, prompt=31, completion=14, streamed=True, tool_calls=2)
    completion = json.loads(call.completion)
    assert completion["text"] == "Checking"
    assert [tool["name"] for tool in completion["tool_calls"]] == ["get_weather", "get_time"]


def test_thought_summaries_are_not_the_answer(provider, plain_client, patched):
    obsdeco.configure(capture_content=True)
    provider.enqueue(Reply.json(THOUGHTFUL))

    _, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT)
    )

    call = assert_call(calls, prompt=8, completion=7 + 25, reasoning=25, streamed=False)
    assert json.loads(call.completion) == {"text": "2, 3 and 5.", "tool_calls": []}


def test_system_instruction_is_captured_with_the_prompt(provider, plain_client, patched):
    obsdeco.configure(capture_content=True)
    config = types.GenerateContentConfig(system_instruction="Answer briefly.")

    _, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    )

    assert json.loads(calls[0].prompt) == {
        "systemInstruction": {"parts": [{"text": "Answer briefly."}], "role": "user"},
        "contents": [{"parts": [{"text": PROMPT}], "role": "user"}],
    }


def test_counts_the_answer_does_not_carry_are_unknown(provider, plain_client, patched):
    provider.enqueue(
        Reply.json(
            {"candidates": [{"content": {"parts": [{"text": "Hi"}]}}], "modelVersion": MODEL}
        )
    )

    _, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT)
    )

    (call,) = calls
    assert call.success is True
    assert (call.prompt_tokens, call.completion_tokens) == (None, None)
    assert (call.cached_tokens, call.reasoning_tokens) == (None, None)
    assert call.cost_usd is None


def test_automatic_function_calling_records_every_round_trip(provider, plain_client, patched):
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return f"Sunny in {city}"

    provider.enqueue(
        Reply.json(
            {
                **FUNCTION_CALLS,
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [
                                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
                            ],
                        },
                        "finishReason": "STOP",
                    }
                ],
            }
        )
    )
    config = types.GenerateContentConfig(tools=[get_weather])

    response, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    )

    assert response.text == TEXT
    assert len(provider.requests) == 2
    assert [call.tool_call_count for call in calls] == [1, 0]
    assert [call.completion_tokens for call in calls] == [14, TEXT_TOKENS]


# --- 4. failures ---------------------------------------------------------------------------


FAILURES = [
    (429, errors.ClientError, "rate_limit"),
    (500, errors.ServerError, "server_error"),
    (400, errors.ClientError, "bad_request"),
]


def assert_failed(calls: list[LLMCall], error_type: str, *, streamed: bool) -> LLMCall:
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.success is False
    assert call.error_type == error_type
    assert call.streamed is streamed
    assert call.model == MODEL
    assert call.provider is ModelProvider.GOOGLE
    assert call.prompt_tokens is None
    assert call.cost_usd is None
    return call


@pytest.mark.parametrize(("status", "error_class", "error_type"), FAILURES)
def test_failing_call_is_recorded_and_the_error_reaches_the_user_unchanged(
    provider, plain_client, status, error_class, error_type
):
    provider.enqueue(Reply.error(status))
    with pytest.raises(error_class) as baseline:
        plain_client.models.generate_content(model=MODEL, contents=PROMPT)

    with patching():
        provider.enqueue(Reply.error(status))
        error, calls = in_session(
            raised(lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT))
        )

    assert type(error) is error_class
    assert (error.code, error.status, error.details) == (
        baseline.value.code,
        baseline.value.status,
        baseline.value.details,
    )
    assert str(error) == str(baseline.value)
    call = assert_failed(calls, error_type, streamed=False)
    assert call.error_message == str(error)


@pytest.mark.parametrize(("status", "error_class", "error_type"), FAILURES)
def test_failing_stream_is_recorded(
    provider, plain_client, patched, status, error_class, error_type
):
    provider.enqueue(Reply.error(status))

    error, calls = in_session(
        raised(
            lambda: list(plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT))
        )
    )

    assert type(error) is error_class
    assert_failed(calls, error_type, streamed=True)


@pytest.mark.parametrize(("status", "error_class", "error_type"), FAILURES)
async def test_async_failing_calls_are_recorded(
    provider, aclient, patched, status, error_class, error_type
):
    async def run() -> list[BaseException]:
        failures = []
        provider.enqueue(Reply.error(status), Reply.error(status))
        with pytest.raises(error_class) as plain:
            await aclient.aio.models.generate_content(model=MODEL, contents=PROMPT)
        failures.append(plain.value)
        stream = await aclient.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        with pytest.raises(error_class) as streamed:  # raised when the stream is read
            await anext(stream)
        failures.append(streamed.value)
        return failures

    failures, calls = await in_async_session(run)

    assert [error.code for error in failures] == [status, status]
    assert [(call.streamed, call.error_type, call.success) for call in calls] == [
        (False, error_type, False),
        (True, error_type, False),
    ]


def test_error_inside_a_stream_keeps_what_came_before(provider, plain_client, patched):
    first = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Par"}]}}],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1},
        "modelVersion": MODEL,
    }
    failure = {
        "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
    }
    provider.enqueue(Reply.sse([first, failure]))
    seen: list[str] = []

    def run() -> None:
        for chunk in plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT):
            seen.append(chunk.text)

    error, calls = in_session(raised(run))

    assert seen == ["Par"]
    assert type(error) is errors.ServerError
    (call,) = calls
    assert (call.success, call.error_type, call.streamed) == (False, "server_error", True)
    assert (call.prompt_tokens, call.completion_tokens) == (2, 1)
    assert call.time_to_first_token_ms is not None


# --- 5. streams left early, records once -----------------------------------------------------


def test_stream_left_early_is_recorded_once_when_collected(provider, plain_client, patched):
    def run() -> int:
        for chunk in plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT):
            assert chunk.text == "Hello"
            break
        gc.collect()
        obsdeco.flush()
        return len(obsdeco.get_calls(obsdeco.current_session().id))

    recorded_inside, calls = in_session(run)

    assert recorded_inside == 1
    (call,) = calls
    assert (call.success, call.streamed) == (True, True)
    assert (call.prompt_tokens, call.completion_tokens) == (PROMPT_TOKENS, 1)  # as seen so far


def test_stream_not_started_sends_nothing_and_records_nothing(provider, plain_client, patched):
    def run() -> None:
        stream = plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        del stream
        gc.collect()

    _, calls = in_session(run)

    assert provider.requests == []
    assert calls == []


# --- 6. do no harm ---------------------------------------------------------------------------


def test_responses_are_the_same_with_and_without_obsdeco(provider, plain_client):
    def call_all() -> list[Any]:
        provider.enqueue(Reply.json(FUNCTION_CALLS), Reply.json(THOUGHTFUL))
        provider.enqueue(Reply.sse([THOUGHTFUL, FUNCTION_CALLS]))
        first = plain_client.models.generate_content(model=MODEL, contents=PROMPT, config=TOOLS)
        second = plain_client.models.generate_content(model=MODEL, contents=PROMPT)
        streamed = list(plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT))
        return [type(first), dump(first), dump(second), [dump(chunk) for chunk in streamed]]

    baseline = call_all()
    with patching():
        observed, calls = in_session(call_all)

    assert observed == baseline
    assert len(calls) == 3


async def test_async_responses_are_the_same_with_and_without_obsdeco(provider, aclient):
    async def call_all() -> list[Any]:
        provider.enqueue(Reply.json(THOUGHTFUL), Reply.sse([THOUGHTFUL, FUNCTION_CALLS]))
        plain = await aclient.aio.models.generate_content(model=MODEL, contents=PROMPT)
        stream = await aclient.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        return [dump(plain), [dump(chunk) async for chunk in stream]]

    baseline = await call_all()
    with patching():
        observed, calls = await in_async_session(call_all)

    assert observed == baseline
    assert len(calls) == 2


def _fail(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected reader fault")


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (gemini_format.GeminiFormat, "response_facts"),
        (gemini_format._ContentStream, "observe"),
        (gemini_format.GeminiFormat, "request_model"),
    ],
)
def test_a_fault_in_obsdeco_leaves_the_call_unchanged(
    provider, plain_client, monkeypatch, owner, name
):
    def call_both() -> list[Any]:
        provider.enqueue(Reply.json(THOUGHTFUL), Reply.sse([THOUGHTFUL]))
        plain = plain_client.models.generate_content(model=MODEL, contents=PROMPT)
        streamed = list(plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT))
        return [dump(plain), [dump(chunk) for chunk in streamed]]

    baseline = call_both()
    monkeypatch.setattr(owner, name, _fail)
    faults = obsdeco.stats().internal_faults
    with patching():
        observed, calls = in_session(call_both)

    assert observed == baseline
    assert obsdeco.stats().internal_faults > faults
    if name == "request_model":  # the call is not recognised: not recorded at all
        assert calls == []
    else:  # recorded, with what could be read
        assert [call.success for call in calls] == [True, True]


def test_the_call_is_in_flight_while_the_http_library_sends_it(provider, patched):
    """So that the HTTP transport seam below stands aside and the call is recorded once."""
    seen: list[Any] = []

    class Spy(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(recorder.in_flight())
            return super().handle_request(request)

    options = types.HttpOptions(
        base_url=provider.gemini_base_url, httpx_client=httpx.Client(transport=Spy())
    )
    client = genai.Client(api_key="test", http_options=options)

    def run() -> None:
        client.models.generate_content(model=MODEL, contents=PROMPT)
        list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))

    _, calls = in_session(run)

    assert len(seen) == 2
    assert all(isinstance(flight, recorder.CallRecorder) for flight in seen)
    assert [flight.streamed for flight in seen] == [False, True]
    assert len(calls) == 2
    assert recorder.in_flight() is None


async def test_the_async_call_is_in_flight_while_httpx_sends_it(provider, patched):
    seen: list[Any] = []

    class Spy(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(recorder.in_flight())
            return await super().handle_async_request(request)

    options = types.HttpOptions(
        base_url=provider.gemini_base_url, httpx_async_client=httpx.AsyncClient(transport=Spy())
    )
    client = genai.Client(api_key="test", http_options=options)

    async def run() -> None:
        await client.aio.models.generate_content(model=MODEL, contents=PROMPT)
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        [chunk async for chunk in stream]

    _, calls = await in_async_session(run)

    assert [flight.streamed for flight in seen] == [False, True]
    assert len(calls) == 2


def test_patch_all_names_google_genai_and_unpatch_all_restores_exactly(provider, plain_client):
    client_class = _api_client.BaseApiClient
    names = (
        "request",
        "request_streamed",
        "async_request",
        "async_request_streamed",
        "_request_once",
        "_async_request_once",
    )
    originals = {name: client_class.__dict__[name] for name in names}

    patched_names = obsdeco.patch_all()
    assert obsdeco.patch_all() == patched_names  # idempotent
    try:
        assert "google-genai" in patched_names
        assert all(client_class.__dict__[name] is not originals[name] for name in names)
    finally:
        obsdeco.unpatch_all()

    assert {name: client_class.__dict__[name] for name in names} == originals
    assert all(client_class.__dict__[name] is originals[name] for name in names)
    _, calls = in_session(
        lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT)
    )
    assert calls == []


def test_requests_that_are_no_model_call_are_not_recorded(provider, plain_client, patched):
    provider.enqueue(Reply.json({"totalTokens": 2}))

    count, calls = in_session(
        lambda: plain_client.models.count_tokens(model=MODEL, contents=PROMPT)
    )

    assert count.total_tokens == 2
    assert provider.last_request.path.endswith(":countTokens")
    assert calls == []


# --- 7. retries --------------------------------------------------------------------------------

RETRY = types.HttpRetryOptions(attempts=4, initial_delay=0, max_delay=0, jitter=0)


@pytest.mark.parametrize("transport", ["httpx2", "httpx"])
def test_the_sdks_retries_are_counted_on_the_call(provider, patched, transport):
    client = sync_client(provider, transport, RETRY)
    provider.enqueue(Reply.error(429), Reply.error(503))

    response, calls = in_session(
        lambda: client.models.generate_content(model=MODEL, contents=PROMPT)
    )

    assert response.text == TEXT
    assert len(provider.requests) == 3
    call = assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=False)
    assert (call.retries, call.rate_limited_retries) == (2, 1)


def test_a_stream_given_up_after_its_retries(provider, patched):
    client = sync_client(provider, "httpx2", RETRY)
    provider.enqueue(*[Reply.error(429)] * 4)

    error, calls = in_session(
        raised(lambda: list(client.models.generate_content_stream(model=MODEL, contents=PROMPT)))
    )

    assert error.code == 429
    call = assert_failed(calls, "rate_limit", streamed=True)
    assert (call.retries, call.rate_limited_retries) == (3, 3)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_async_retries_are_counted(provider, patched, transport):
    client = async_client(provider, transport, RETRY)
    provider.enqueue(Reply.error(500))

    _, calls = await in_async_session(
        lambda: client.aio.models.generate_content(model=MODEL, contents=PROMPT)
    )

    call = assert_call(calls, prompt=PROMPT_TOKENS, completion=TEXT_TOKENS, streamed=False)
    assert (call.retries, call.rate_limited_retries) == (1, 0)


def test_one_missing_target_disables_only_itself(monkeypatch, caplog, provider, plain_client):
    monkeypatch.delattr(_api_client.BaseApiClient, "async_request")

    with caplog.at_level(logging.WARNING, logger="obsdeco"):
        names = obsdeco.patch_all()
    try:
        assert "google-genai" in names
        assert "google.genai._api_client.BaseApiClient.async_request" in caplog.text
        _, calls = in_session(
            lambda: plain_client.models.generate_content(model=MODEL, contents=PROMPT)
        )
        assert len(calls) == 1
    finally:
        obsdeco.unpatch_all()


def test_google_genai_not_installed_is_skipped(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "google.genai" else find_spec(name, *args),
    )
    try:
        assert "google-genai" not in obsdeco.patch_all()
    finally:
        obsdeco.unpatch_all()


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("models/gemini-2.5-flash:generateContent", "gemini-2.5-flash"),
        ("models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini-2.5-flash"),
        ("/v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash"),
        (
            "projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro"
            ":generateContent",
            "gemini-2.5-pro",
        ),
        ("tunedModels/my-tuned:generateContent", "tunedModels/my-tuned"),
        ("projects/p/locations/l/endpoints/123:streamGenerateContent", "endpoints/123"),
    ],
)
def test_the_model_is_read_from_the_path_as_the_user_named_it(path, model):
    api = gemini_format.GEMINI.endpoint(path.split("?", 1)[0])

    assert api == "generate_content"
    assert gemini_format.GEMINI.request_model(api, path, {}) == model
    assert gemini_format.GEMINI.request_streamed(api, path, {}) is (
        ":streamGenerateContent" in path
    )


BLOCKED = {
    "promptFeedback": {"blockReason": "SAFETY"},
    "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    "modelVersion": MODEL,
}


@pytest.mark.parametrize("streamed", [False, True])
def test_a_blocked_prompt_is_recorded_with_its_block_reason(
    provider, plain_client, patched, streamed
):
    provider.enqueue(Reply.sse([BLOCKED]) if streamed else Reply.json(BLOCKED))
    models = plain_client.models

    def run() -> Any:
        if streamed:
            return list(models.generate_content_stream(model=MODEL, contents=PROMPT))[-1]
        return models.generate_content(model=MODEL, contents=PROMPT)

    response, calls = in_session(run)

    assert response.prompt_feedback.block_reason == "SAFETY"
    assert_call(calls, prompt=9, completion=None, streamed=streamed, finish_reason="SAFETY")


def test_stream_closed_early_is_recorded_once(provider, plain_client, patched):
    def run() -> None:
        stream = plain_client.models.generate_content_stream(model=MODEL, contents=PROMPT)
        next(stream)
        next(stream)
        stream.close()
        gc.collect()

    _, calls = in_session(run)

    (call,) = calls
    assert (call.success, call.streamed) == (True, True)
    assert (call.prompt_tokens, call.completion_tokens) == (PROMPT_TOKENS, 2)  # as seen so far
