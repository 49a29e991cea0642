"""The local provider server, driven by the real openai and anthropic SDKs over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import gc
import http.client
import json
import math
import socket
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from obsdeco.testing import (
    DEFAULT_TEXT,
    FIXTURES_ENV,
    ProviderServer,
    RecordedRequest,
    Reply,
    SSEEvent,
    count_request_tokens,
    count_tokens,
    fixture_request,
    fixtures_dir,
    load_fixture,
    split_sse,
)

# conftest.py clears OBSDECO_* variables for every test: keep the folder found at import.
FIXTURES = fixtures_dir()
INDEX: list[dict[str, Any]] = json.loads((FIXTURES / "index.json").read_text())
SSE_FIXTURES = sorted(e["response_file"] for e in INDEX if e["response_file"].endswith(".sse"))

CLIENT_TIMEOUT = 10.0  # a broken server fails a test instead of hanging it


@pytest.fixture(autouse=True)
def _fixture_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FIXTURES_ENV, str(FIXTURES))


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    with ProviderServer() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def oai(provider: ProviderServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        base_url=provider.openai_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    client.close()


@pytest.fixture
def claude(provider: ProviderServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=provider.anthropic_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    client.close()


@pytest.fixture
async def aoai(provider: ProviderServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=provider.openai_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    await client.close()


@pytest.fixture
async def aclaude(provider: ProviderServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=provider.anthropic_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    await client.close()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def drain(iterable: Any) -> list[Any]:
    return list(iterable)


# ------------------------------------------------------------------------------------------
# Lifecycle
# ------------------------------------------------------------------------------------------


def test_base_urls_and_port() -> None:
    server = ProviderServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.openai_base_url
    with server:
        assert server.running
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.openai_base_url == f"http://127.0.0.1:{server.port}/v1"
        assert server.anthropic_base_url == server.base_url
    assert not server.running


def test_explicit_start_stop_joins_threads_even_with_idle_keepalive_connections() -> None:
    other_servers = {t for t in threading.enumerate() if t.name.startswith("obsdeco-provider")}

    def provider_threads() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t.name.startswith("obsdeco-provider") and t not in other_servers
        ]

    server = ProviderServer().start()
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CLIENT_TIMEOUT)
    idle.request("POST", "/v1/embeddings", body=b'{"model":"m","input":"x","dimensions":2}')
    assert idle.getresponse().read()  # the keep-alive connection now sits idle on the server
    assert len(provider_threads()) == 2

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    assert provider_threads() == []
    server.stop()  # a second stop does nothing
    idle.close()

    server.start()  # and it can start again
    try:
        assert server.requests[0].path == "/v1/embeddings"
    finally:
        server.stop()


def test_no_resource_warning_from_a_full_lifecycle() -> None:
    gc.collect()  # what earlier tests left is theirs, not this lifecycle's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with ProviderServer() as server:
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
            client.chat.completions.create(model="gpt-4o", messages=user("hi"))
            server.enqueue(Reply.default(drop_after=2))
            with pytest.raises(openai.APIConnectionError):
                drain(client.chat.completions.create(model="m", messages=[], stream=True))
            client.close()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# ------------------------------------------------------------------------------------------
# Fixtures: files and byte-for-byte replay
# ------------------------------------------------------------------------------------------


def test_fixtures_dir_comes_from_the_environment_else_ships_with_obsdeco(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(FIXTURES_ENV, str(tmp_path))
    assert fixtures_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="no fixture"):
        Reply.fixture("openai/chat_completion.json")
    monkeypatch.delenv(FIXTURES_ENV)
    repo = Path(__file__).resolve().parents[1]
    assert fixtures_dir() == repo / "obsdeco" / "testing" / "fixtures"
    assert (fixtures_dir() / "SOURCES.md").is_file()


def test_fixture_names_with_and_without_extension() -> None:
    assert load_fixture("openai/chat_completion") == load_fixture("openai/chat_completion.json")
    assert (
        load_fixture("anthropic/messages_stream")
        == (FIXTURES / "anthropic" / "messages_stream.sse").read_bytes()
    )
    assert fixture_request("anthropic/messages_stream.sse")["stream"] is True


@pytest.mark.parametrize("name", SSE_FIXTURES)
def test_split_sse_keeps_every_byte_and_the_event_framing(name: str) -> None:
    data = load_fixture(name)
    frames = split_sse(data)
    assert b"".join(frames) == data
    assert all(frame.endswith(b"\n\n") for frame in frames)
    assert all(b"\n\n" not in frame.rstrip(b"\n") for frame in frames)


@pytest.mark.parametrize("entry", INDEX, ids=[e["response_file"] for e in INDEX])
def test_every_fixture_replays_byte_for_byte(provider: ProviderServer, entry: dict) -> None:
    provider.enqueue(Reply.fixture(entry["response_file"]))
    url = httpx2.URL(entry["url"])
    target = url.raw_path.decode()
    connection = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=CLIENT_TIMEOUT)
    try:
        request_body = (FIXTURES / entry["request_file"]).read_bytes()
        connection.request("POST", target, body=request_body)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == entry["status"]
    assert response.getheader("content-type") == entry["content_type"]
    assert body == load_fixture(entry["response_file"])
    assert provider.last_request.raw_body == request_body
    assert provider.last_request.path + (f"?{url.query.decode()}" if url.query else "") == target


def test_a_replayed_stream_is_sent_one_chunk_per_event(provider: ProviderServer) -> None:
    name = "anthropic/messages_stream.sse"
    provider.enqueue(Reply.fixture(name))
    with socket.create_connection(("127.0.0.1", provider.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}"
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"content-type: text/event-stream" in head.lower()
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    assert tuple(chunks) == split_sse(load_fixture(name))


def test_http10_clients_get_a_close_delimited_stream(provider: ProviderServer) -> None:
    name = "openai/chat_completion_stream_include_usage.sse"
    provider.enqueue(Reply.fixture(name))
    with socket.create_connection(("127.0.0.1", provider.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert body == load_fixture(name)


# ------------------------------------------------------------------------------------------
# OpenAI, sync
# ------------------------------------------------------------------------------------------


def test_openai_chat_fixture(provider: ProviderServer, oai: openai.OpenAI) -> None:
    provider.enqueue(Reply.fixture("openai/chat_completion.json"))
    request = fixture_request("openai/chat_completion.json")
    completion = oai.chat.completions.create(**request)
    assert completion.id == "chatcmpl-DPTBnLVEU6gLtntz301fthMFXeE4C"
    assert completion.model == "gpt-3.5-turbo-0125"
    assert completion.choices[0].message.content.startswith("Why did the Opentelemetry developer")
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (15, 31)
    assert completion.usage.total_tokens == 46
    assert completion._request_id == provider.last_request.request_id

    sent = provider.last_request
    assert (sent.method, sent.path, sent.query) == ("POST", "/v1/chat/completions", {})
    assert sent.headers["authorization"] == "Bearer test"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == request
    assert provider.pending == 0


@pytest.mark.parametrize(
    ("name", "cached", "reasoning"),
    [
        ("openai/chat_completion_cached_tokens.json", 1024, 0),
        ("openai/chat_completion_reasoning_tokens.json", 0, 192),
        ("openai/chat_completion_cache_read_reasoning.json", 5382, 32),
    ],
)
def test_openai_chat_fixture_token_details(
    provider: ProviderServer, oai: openai.OpenAI, name: str, cached: int, reasoning: int
) -> None:
    provider.enqueue(Reply.fixture(name))
    usage = oai.chat.completions.create(model="m", messages=user("x")).usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.completion_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == cached
    assert usage.completion_tokens_details.reasoning_tokens == reasoning


def test_openai_chat_tool_call_fixture(provider: ProviderServer, oai: openai.OpenAI) -> None:
    provider.enqueue(Reply.fixture("openai/chat_completion_tool_calls.json"))
    choice = oai.chat.completions.create(model="m", messages=user("x")).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    assert len(choice.message.tool_calls) == 1


def test_openai_chat_stream_fixture_with_usage(
    provider: ProviderServer, oai: openai.OpenAI
) -> None:
    name = "openai/chat_completion_stream_include_usage.sse"
    provider.enqueue(Reply.fixture(name))
    chunks = drain(oai.chat.completions.create(**fixture_request(name)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of the UK is London."
    assert chunks[-2].choices[0].finish_reason == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (78, 9)
    assert last.usage.total_tokens == 87
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_chat_stream_fixture_without_usage(
    provider: ProviderServer, oai: openai.OpenAI
) -> None:
    name = "openai/chat_completion_parallel_tool_calls_stream.sse"
    provider.enqueue(Reply.fixture(name))
    chunks = drain(oai.chat.completions.create(**fixture_request(name)))
    arguments: dict[int, str] = {}
    for chunk in chunks:
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.function is not None
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
    assert {i: json.loads(a) for i, a in arguments.items()} == {
        0: {"location": "San Francisco"},
        1: {"location": "Boston"},
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.usage is None for c in chunks)


def test_openai_chat_default(provider: ProviderServer, oai: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Say hello, please!"}]},
    ]
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == DEFAULT_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_request_tokens(provider.last_request.body) == 9
    assert completion.usage.completion_tokens == count_tokens(DEFAULT_TEXT)
    assert completion.usage.total_tokens == 9 + count_tokens(DEFAULT_TEXT)


def test_openai_chat_default_stream_without_usage(
    provider: ProviderServer, oai: openai.OpenAI
) -> None:
    chunks = drain(oai.chat.completions.create(model="gpt-4o", messages=user("hi"), stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.model == "gpt-4o" for c in chunks)
    assert provider.last_request.stream


def test_openai_chat_default_stream_with_usage(
    provider: ProviderServer, oai: openai.OpenAI
) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=user("one two"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = drain(stream)
    assert [c.usage is not None for c in chunks].count(True) == 1
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        2,
        count_tokens(DEFAULT_TEXT),
    )


def test_openai_chat_default_respects_max_tokens(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o", messages=user("hi"), max_completion_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Hello! This"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_openai_responses_stream_fixture(provider: ProviderServer, oai: openai.OpenAI) -> None:
    name = "openai/responses_create_stream.sse"
    provider.enqueue(Reply.fixture(name))
    events = drain(oai.responses.create(**fixture_request(name)))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "2 + 2 equals 4."
    final = events[-1].response
    assert final.output_text == "2 + 2 equals 4."
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (14, 9)
    assert final.usage.total_tokens == 23


def test_openai_responses_stream_default(provider: ProviderServer, oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-4.1-nano", input="What is 2+2?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == count_tokens(DEFAULT_TEXT)
    assert final.model == "gpt-4.1-nano"
    assert final.output_text == DEFAULT_TEXT
    assert final.usage is not None
    assert final.usage.input_tokens == count_tokens("What is 2+2?") == 6
    assert final.usage.output_tokens == count_tokens(DEFAULT_TEXT)
    assert provider.last_request.body["stream"] is True


def test_openai_responses_fixture_and_default(provider: ProviderServer, oai: openai.OpenAI) -> None:
    provider.enqueue(Reply.fixture("openai/responses_create_cache_read_reasoning.json"))
    response = oai.responses.create(model="gpt-5.6-luna", input="x")
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 5392
    assert response.usage.output_tokens_details.reasoning_tokens == 32

    response = oai.responses.create(model="gpt-4.1", input="hi", instructions="Be brief.")
    assert response.status == "completed"
    assert response.output_text == DEFAULT_TEXT
    assert response.usage is not None
    assert response.usage.input_tokens == count_tokens("hi Be brief.") == 4


def test_openai_embeddings_default_base64(provider: ProviderServer, oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "bye"])
    assert provider.last_request.body["encoding_format"] == "base64"  # the SDK's default
    assert [len(item.embedding) for item in result.data] == [1536, 1536]
    assert math.isclose(sum(v * v for v in result.data[0].embedding), 1.0, rel_tol=1e-4)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 3
    again = oai.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert again.data[0].embedding == result.data[0].embedding  # deterministic


def test_openai_embeddings_float_with_dimensions(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(
        model="text-embedding-3-large", input="x", dimensions=8, encoding_format="float"
    )
    assert result.model == "text-embedding-3-large"
    assert len(result.data[0].embedding) == 8


def test_openai_embeddings_fixture(provider: ProviderServer, oai: openai.OpenAI) -> None:
    provider.enqueue(Reply.fixture("openai/embeddings_base64.json"))
    result = oai.embeddings.create(model="text-embedding-ada-002", input="x")
    recorded = json.loads(load_fixture("openai/embeddings_base64.json"))
    assert (
        len(result.data[0].embedding)
        == len(base64.b64decode(recorded["data"][0]["embedding"])) // 4
    )
    assert (result.usage.prompt_tokens, result.model) == (8, "text-embedding-ada-002-v2")


def test_openai_rate_limit_error(provider: ProviderServer, oai: openai.OpenAI) -> None:
    provider.enqueue(Reply.error(429, headers={"retry-after": "0"}))
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "0"
    assert len(provider.requests) == 1  # max_retries=0


@pytest.mark.parametrize(
    ("name", "error", "code"),
    [
        ("openai/error_400_invalid_image_url.json", openai.BadRequestError, "invalid_image_url"),
        ("openai/error_401_invalid_api_key.json", openai.AuthenticationError, "invalid_api_key"),
    ],
)
def test_openai_error_fixtures(
    provider: ProviderServer, oai: openai.OpenAI, name: str, error: type, code: str
) -> None:
    provider.enqueue(Reply.fixture(name))
    with pytest.raises(error) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert caught.value.code == code


def test_openai_retry_after_a_429_gets_the_next_reply(provider: ProviderServer) -> None:
    provider.enqueue(Reply.error(429, headers={"retry-after-ms": "1"}), Reply.default(text="ok"))
    with openai.OpenAI(
        base_url=provider.openai_base_url, api_key="test", max_retries=1, timeout=CLIENT_TIMEOUT
    ) as client:
        completion = client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert completion.choices[0].message.content == "ok"
    first, second = provider.requests
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"


# ------------------------------------------------------------------------------------------
# Anthropic, sync
# ------------------------------------------------------------------------------------------


def test_anthropic_messages_fixture(provider: ProviderServer, claude: anthropic.Anthropic) -> None:
    provider.enqueue(Reply.fixture("anthropic/messages_create.json"))
    request = fixture_request("anthropic/messages_create.json")
    message = claude.messages.create(**request)
    assert message.content[0].type == "text"
    assert message.content[0].text == "The capital of France is **Paris**."
    assert (message.usage.input_tokens, message.usage.output_tokens) == (14, 11)
    assert message._request_id == provider.last_request.request_id

    sent = provider.last_request
    assert (sent.path, sent.query) == ("/v1/messages", {})
    assert sent.headers["authorization"] == "Bearer test"  # anthropic 2.x sends a bearer token
    assert "anthropic-version" in sent.headers
    assert sent.body == request


@pytest.mark.parametrize(
    ("name", "usage"),
    [
        ("anthropic/messages_create_cache_read.json", (21, 568, 1733, 0)),
        ("anthropic/messages_create_cache_write.json", (21, 561, 0, 1733)),
        ("anthropic/messages_create_legacy_usage.json", (17, 220, None, None)),
        ("anthropic/messages_thinking.json", (52, 215, 0, 0)),
    ],
)
def test_anthropic_usage_fixtures(
    provider: ProviderServer, claude: anthropic.Anthropic, name: str, usage: tuple
) -> None:
    provider.enqueue(Reply.fixture(name))
    got = claude.messages.create(model="m", max_tokens=10, messages=user("x")).usage
    assert (
        got.input_tokens,
        got.output_tokens,
        got.cache_read_input_tokens,
        got.cache_creation_input_tokens,
    ) == usage


def test_anthropic_tool_use_fixture(provider: ProviderServer, claude: anthropic.Anthropic) -> None:
    provider.enqueue(Reply.fixture("anthropic/messages_tool_use.json"))
    message = claude.messages.create(model="m", max_tokens=10, messages=user("x"))
    assert message.stop_reason == "tool_use"
    tools = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert tools == [
        ("get_weather", {"location": "New York, NY"}),
        ("get_time", {"timezone": "America/New_York"}),
    ]


def test_anthropic_raw_stream_fixture(
    provider: ProviderServer, claude: anthropic.Anthropic
) -> None:
    name = "anthropic/messages_stream.sse"
    provider.enqueue(Reply.fixture(name))
    events = drain(claude.messages.create(**fixture_request(name)))
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # the SDK skips the ping
    assert events[0].message.usage.input_tokens == 21
    assert events[-2].usage.output_tokens == 13


@pytest.mark.parametrize(
    ("name", "input_tokens", "output_tokens", "cache_read", "kinds"),
    [
        ("anthropic/messages_stream.sse", 21, 13, 0, ["text"]),
        ("anthropic/messages_stream_cache_read.sse", 4, 221, 1165, ["text"]),
        ("anthropic/messages_thinking_stream.sse", 52, 216, 0, ["thinking", "text"]),
        ("anthropic/messages_tool_use_stream.sse", 721, 113, 0, ["text", "tool_use", "tool_use"]),
    ],
)
def test_anthropic_stream_helper_fixtures(
    provider: ProviderServer,
    claude: anthropic.Anthropic,
    name: str,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    kinds: list[str],
) -> None:
    provider.enqueue(Reply.fixture(name))
    request = fixture_request(name)
    request.pop("stream")
    with claude.messages.stream(**request) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "".join(b.text for b in message.content if b.type == "text")
    assert [b.type for b in message.content] == kinds
    assert message.usage.input_tokens == input_tokens
    assert message.usage.output_tokens == output_tokens
    assert message.usage.cache_read_input_tokens == cache_read
    if name.endswith("tool_use_stream.sse"):
        assert message.content[1].input == {"location": "New York, NY"}
        assert message.content[2].input == {"timezone": "America/New_York"}


def test_anthropic_default_message(provider: ProviderServer, claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
    )
    assert message.model == "claude-sonnet-4-6"
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == count_request_tokens(provider.last_request.body) == 6
    assert message.usage.output_tokens == count_tokens(DEFAULT_TEXT)


def test_anthropic_default_stream_helper(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=256, messages=user("Hi")
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert message.model == "claude-haiku-4-5"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        1,
        count_tokens(DEFAULT_TEXT),
    )


def test_anthropic_default_raw_stream_and_max_tokens(claude: anthropic.Anthropic) -> None:
    events = drain(
        claude.messages.create(model="c", max_tokens=2, messages=user("Hi"), stream=True)
    )
    assert events[0].type == "message_start"
    assert events[-1].type == "message_stop"
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "max_tokens"
    assert delta.usage.output_tokens == 2


def test_anthropic_beta_error_fixture(
    provider: ProviderServer, claude: anthropic.Anthropic
) -> None:
    name = "anthropic/error_400_invalid_request.json"
    provider.enqueue(Reply.fixture(name))
    with pytest.raises(anthropic.BadRequestError) as caught:
        # Recorded as POST /v1/messages?beta=true; this SDK version no longer adds the query
        # itself, so pass it to check that the server routes and records it.
        claude.beta.messages.create(**fixture_request(name), extra_query={"beta": "true"})
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    sent = provider.last_request
    assert (sent.path, sent.query) == ("/v1/messages", {"beta": "true"})


def test_anthropic_synthesised_errors(
    provider: ProviderServer, claude: anthropic.Anthropic
) -> None:
    provider.enqueue(Reply.error(400, message="bad thing"), Reply.error(529))
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="c", max_tokens=5, messages=user("x"))
    assert bad.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad thing"},
        "request_id": provider.requests[0].request_id,
    }
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        claude.messages.create(model="c", max_tokens=5, messages=user("x"))
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"


def test_anthropic_scripted_sse_with_a_mid_stream_error_event(
    provider: ProviderServer, claude: anthropic.Anthropic
) -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "c",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    }
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    provider.enqueue(Reply.sse([start, overloaded], name_events=True))
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        drain(claude.messages.create(model="c", max_tokens=5, messages=user("x"), stream=True))


# ------------------------------------------------------------------------------------------
# Async clients
# ------------------------------------------------------------------------------------------


async def test_async_openai_chat(provider: ProviderServer, aoai: openai.AsyncOpenAI) -> None:
    provider.enqueue(Reply.fixture("openai/chat_completion.json"))
    completion = await aoai.chat.completions.create(model="gpt-3.5-turbo", messages=user("x"))
    assert completion.usage is not None
    assert completion.usage.total_tokens == 46

    stream = await aoai.chat.completions.create(
        model="gpt-4o", messages=user("hi"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_tokens(DEFAULT_TEXT)


async def test_async_openai_chat_stream_fixture(
    provider: ProviderServer, aoai: openai.AsyncOpenAI
) -> None:
    provider.enqueue(Reply.fixture("openai/chat_completion_stream_include_usage_legacy.sse"))
    stream = await aoai.chat.completions.create(
        model="gpt-3.5-turbo", messages=user("x"), stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens_details is None  # the 2024 shape had no details


async def test_async_openai_responses_and_embeddings(
    provider: ProviderServer, aoai: openai.AsyncOpenAI
) -> None:
    provider.enqueue(Reply.fixture("openai/responses_create_stream.sse"))
    async with aoai.responses.stream(model="gpt-4.1-nano", input="What is 2+2?") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "2 + 2 equals 4."
    assert final.usage is not None
    assert final.usage.total_tokens == 23

    embeddings = await aoai.embeddings.create(model="text-embedding-3-small", input="x")
    assert len(embeddings.data[0].embedding) == 1536


async def test_async_anthropic(provider: ProviderServer, aclaude: anthropic.AsyncAnthropic) -> None:
    message = await aclaude.messages.create(model="claude-x", max_tokens=50, messages=user("Hi"))
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_TEXT

    provider.enqueue(Reply.fixture("anthropic/messages_stream_cache_read.sse"))
    raw = await aclaude.messages.create(
        model="claude-x", max_tokens=50, messages=user("Hi"), stream=True
    )
    events = [event async for event in raw]
    assert events[0].type == "message_start"
    assert events[0].message.usage.cache_read_input_tokens == 1165

    provider.enqueue(Reply.fixture("anthropic/messages_thinking_stream.sse"))
    async with aclaude.messages.stream(model="c", max_tokens=50, messages=user("Hi")) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens == 216


async def test_async_concurrent_calls(provider: ProviderServer, aoai: openai.AsyncOpenAI) -> None:
    results = await asyncio.gather(
        *(aoai.chat.completions.create(model=f"model-{i}", messages=user("hi")) for i in range(20))
    )
    assert sorted(r.model for r in results) == sorted(f"model-{i}" for i in range(20))
    assert len(provider.requests) == 20


async def test_hold_before_headers_keeps_a_request_in_flight(
    provider: ProviderServer, aclaude: anthropic.AsyncAnthropic
) -> None:
    gate = threading.Event()
    provider.enqueue(Reply.default(hold=gate))
    task = asyncio.create_task(aclaude.messages.create(model="c", max_tokens=5, messages=user("x")))
    await asyncio.to_thread(provider.wait_for_requests, 1)
    assert not task.done()
    gate.set()
    message = await task
    assert message.model == "c"


# ------------------------------------------------------------------------------------------
# Scripting
# ------------------------------------------------------------------------------------------


def test_queue_is_fifo_and_path_specific(provider: ProviderServer, oai: openai.OpenAI) -> None:
    provider.enqueue(Reply.default(text="for messages"), path="/v1/messages")
    provider.enqueue(Reply.default(text="first"), Reply.default(text="second"))
    assert provider.pending == 3
    texts = [
        oai.chat.completions.create(model="m", messages=user("x")).choices[0].message.content
        for _ in range(3)
    ]
    assert texts == ["first", "second", DEFAULT_TEXT]
    assert provider.pending == 1
    provider.reset()
    assert (provider.pending, provider.requests) == (0, [])


def test_responder_and_default_reply(provider: ProviderServer, oai: openai.OpenAI) -> None:
    def echo_model(request: RecordedRequest) -> Reply:
        return Reply.default(text=f"you asked {request.model}")

    provider.enqueue(echo_model)
    content = oai.chat.completions.create(model="gpt-x", messages=[]).choices[0].message.content
    assert content == "you asked gpt-x"

    provider.default_reply = Reply.error(503)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=[])


def test_a_failing_responder_answers_500_and_is_recorded(oai: openai.OpenAI) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise ValueError("boom")

    with ProviderServer() as server:
        server.enqueue(broken)
        client = oai.with_options(base_url=server.openai_base_url)
        with pytest.raises(openai.InternalServerError, match="boom"):
            client.chat.completions.create(model="m", messages=[])
        assert [type(e) for e in server.errors] == [ValueError]


def test_default_with_usage_overrides(
    provider: ProviderServer, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    provider.enqueue(
        Reply.default(
            input_tokens=1000,
            output_tokens=50,
            usage={"prompt_tokens_details": {"cached_tokens": 800}},
        ),
        Reply.default(usage={"cache_read_input_tokens": 1200}, model="claude-pinned"),
    )
    usage = oai.chat.completions.create(model="m", messages=user("x")).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 50, 1050)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 800

    message = claude.messages.create(model="c", max_tokens=9, messages=user("x"))
    assert message.model == "claude-pinned"
    assert message.usage.cache_read_input_tokens == 1200


def test_scripted_json_and_sse(provider: ProviderServer, oai: openai.OpenAI) -> None:
    body = json.loads(load_fixture("openai/chat_completion.json"))
    body["usage"]["prompt_tokens"] = 99
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "multi\nline"}, "finish_reason": None}],
    }
    provider.enqueue(Reply.json(body), Reply.sse([chunk, SSEEvent(chunk)], done=True))
    usage = oai.chat.completions.create(model="m", messages=[]).usage
    assert usage is not None
    assert usage.prompt_tokens == 99
    chunks = drain(oai.chat.completions.create(model="m", messages=[], stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["multi\nline", "multi\nline"]


def test_invalid_requests_get_api_shaped_errors(provider: ProviderServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=CLIENT_TIMEOUT)
    try:
        for target, body, status in [
            ("/v1/nowhere", b"{}", 404),
            ("/v1/chat/completions", b"not json", 400),
            ("/v1/chat/completions", b'{"messages": []}', 400),
            ("/v1/messages", b'{"model": "c", "messages": []}', 400),
        ]:
            connection.request("POST", target, body=body)
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert response.status == status, target
            if target == "/v1/messages":
                assert payload["type"] == "error"
                assert payload["error"]["message"] == "max_tokens: Field required"
            else:
                assert payload["error"]["type"] == "invalid_request_error"
    finally:
        connection.close()


def test_wait_for_requests_times_out(provider: ProviderServer) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        provider.wait_for_requests(1, timeout=0.01)


def test_reply_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        Reply(status=42)
    with pytest.raises(ValueError, match="error status"):
        Reply.error(200)
    with pytest.raises(ValueError, match="hold_after"):
        Reply.default(hold_after=1)
    with pytest.raises(ValueError, match="drop_after"):
        Reply.default(drop_after=-1)


# ------------------------------------------------------------------------------------------
# Timing and faults
# ------------------------------------------------------------------------------------------


def test_stream_events_arrive_while_the_rest_is_held(
    provider: ProviderServer, oai: openai.OpenAI
) -> None:
    gate = threading.Event()
    name = "openai/chat_completion_stream_include_usage.sse"
    provider.enqueue(Reply.fixture(name, hold=gate, hold_after=2))
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=user("x"), stream=True)
    iterator = iter(stream)
    first, second = next(iterator), next(iterator)  # delivered while the server holds the rest
    assert first.choices[0].delta.role == "assistant"
    assert second.choices[0].delta.content == "The"
    gate.set()
    rest = list(iterator)
    assert rest[-1].usage is not None
    assert rest[-1].usage.total_tokens == 87


def test_delay_and_event_delay(provider: ProviderServer, claude: anthropic.Anthropic) -> None:
    provider.enqueue(Reply.default(delay=0.05, event_delay=0.01))
    started = time.perf_counter()
    arrivals = []
    with claude.messages.stream(model="c", max_tokens=50, messages=user("x")) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.perf_counter() - started)
    events = 3 + count_tokens(DEFAULT_TEXT) + 3  # start, block start, ping, deltas, stops, delta
    assert arrivals[0] >= 0.05  # time to first token includes the delay before the headers
    assert arrivals[-1] - arrivals[0] >= (count_tokens(DEFAULT_TEXT) - 1) * 0.01 * 0.9
    assert time.perf_counter() - started >= 0.05 + (events - 1) * 0.01 * 0.9


def test_dropped_streams_surface_as_connection_errors(
    provider: ProviderServer, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    provider.enqueue(
        Reply.fixture("openai/chat_completion_stream_include_usage.sse", drop_after=3),
        Reply.fixture("anthropic/messages_stream.sse", drop_after=4),
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        received.extend(oai.chat.completions.create(model="m", messages=user("x"), stream=True))
    assert len(received) == 3
    # The Anthropic SDK lets the transport error through from a stream.
    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)),
        claude.messages.stream(model="c", max_tokens=5, messages=user("x")) as stream,
    ):
        stream.until_done()


def test_disconnect_and_truncated_body(provider: ProviderServer, oai: openai.OpenAI) -> None:
    provider.enqueue(
        Reply.disconnect(), Reply.fixture("openai/chat_completion.json", drop_after=10)
    )
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="m", messages=user("x"))
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="m", messages=user("x"))
    # The server stays usable afterwards.
    assert oai.chat.completions.create(model="m", messages=user("x")).model == "m"


def test_hundreds_of_calls_from_several_threads(provider: ProviderServer) -> None:
    def work(worker: int) -> list[str]:
        with openai.OpenAI(
            base_url=provider.openai_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
        ) as client:
            return [
                client.chat.completions.create(model=f"w{worker}", messages=user("hi")).model
                for _ in range(75)
            ]

    with ThreadPoolExecutor(max_workers=4) as pool:
        models = [m for batch in pool.map(work, range(4)) for m in batch]
    assert len(models) == 300
    assert {m: models.count(m) for m in set(models)} == {f"w{i}": 75 for i in range(4)}
    assert len(provider.requests) == 300


def test_count_tokens() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0
    assert count_request_tokens({"input": [1, 2, 3]}) == 3
    assert (
        count_request_tokens(
            {"model": "m", "system": "a b", "messages": [{"role": "user", "content": "c"}]}
        )
        == 3
    )
