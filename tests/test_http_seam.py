"""The HTTP transport seam: raw `httpx` / `httpx2` posts to the provider APIs, recorded with the
SDK seams' readers; everything else untouched.

Requests go over real HTTP to the local provider, which replays recorded fixtures byte for
byte, so the expected token counts are the fixtures' own:

- openai/chat_completion.json: gpt-3.5-turbo-0125, prompt 15, completion 31 (cached 0,
  reasoning 0), stop
- openai/chat_completion_stream_include_usage.sse: gpt-4o-mini-2024-07-18, prompt 78,
  completion 9, stop
- anthropic/messages_create.json: claude-sonnet-4-6, input 14 (+0 cache read, +0 write),
  output 11, end_turn
- anthropic/messages_stream.sse: message_start input 21, output 7; message_delta output 13
- anthropic/messages_tool_use.json: input 721, output 112, tool_use, two tool_use blocks
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import types
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

import obsdeco
from obsdeco import LLMCall, ModelProvider
from obsdeco.integrations import anthropic as anthropic_format
from obsdeco.integrations import http as http_seam
from obsdeco.integrations import seam
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.openai import OpenAIFormat
from obsdeco.integrations.sse import SSEDecoder
from obsdeco.testing import ProviderServer, Reply, fixture_request, load_fixture, split_sse
from tests.helpers import in_async_session, in_session

LIBRARIES = [pytest.param(httpx, id="httpx"), pytest.param(httpx2, id="httpx2")]


@pytest.fixture(params=LIBRARIES)
def lib(request: pytest.FixtureRequest) -> types.ModuleType:
    """Each test runs with httpx, then with httpx2."""
    return request.param  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Case:
    fixture: str
    path: str
    expected: dict[str, Any]


OPENAI_CHAT = Case(
    "openai/chat_completion.json",
    "/v1/chat/completions",
    {
        "provider": ModelProvider.OPENAI,
        "api": "chat.completions",
        "model": "gpt-3.5-turbo",
        "response_model": "gpt-3.5-turbo-0125",
        "prompt_tokens": 15,
        "completion_tokens": 31,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "finish_reason": "stop",
        "tool_call_count": 0,
        "streamed": False,
    },
)
OPENAI_STREAM = Case(
    "openai/chat_completion_stream_include_usage.sse",
    "/v1/chat/completions",
    {
        "provider": ModelProvider.OPENAI,
        "api": "chat.completions",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "prompt_tokens": 78,
        "completion_tokens": 9,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "finish_reason": "stop",
        "tool_call_count": 0,
        "streamed": True,
    },
)
ANTHROPIC_MESSAGE = Case(
    "anthropic/messages_create.json",
    "/v1/messages",
    {
        "provider": ModelProvider.ANTHROPIC,
        "api": "messages",
        "model": "claude-sonnet-4-6",
        "response_model": "claude-sonnet-4-6",
        "prompt_tokens": 14,
        "completion_tokens": 11,
        "cached_tokens": 0,
        "reasoning_tokens": None,
        "finish_reason": "end_turn",
        "tool_call_count": 0,
        "streamed": False,
    },
)
ANTHROPIC_STREAM = Case(
    "anthropic/messages_stream.sse",
    "/v1/messages",
    {
        "provider": ModelProvider.ANTHROPIC,
        "api": "messages",
        "model": "claude-sonnet-4-6",
        "response_model": "claude-sonnet-4-6",
        "prompt_tokens": 21,
        "completion_tokens": 13,
        "cached_tokens": 0,
        "reasoning_tokens": None,
        "finish_reason": "end_turn",
        "tool_call_count": 0,
        "streamed": True,
    },
)
ANTHROPIC_TOOL_USE = Case(
    "anthropic/messages_tool_use.json",
    "/v1/messages",
    {
        "provider": ModelProvider.ANTHROPIC,
        "api": "messages",
        "prompt_tokens": 721,
        "completion_tokens": 112,
        "finish_reason": "tool_use",
        "tool_call_count": 2,
        "streamed": False,
    },
)
PLAIN_CASES = [
    pytest.param(OPENAI_CHAT, id="openai"),
    pytest.param(ANTHROPIC_MESSAGE, id="anthropic"),
    pytest.param(ANTHROPIC_TOOL_USE, id="anthropic-tool-use"),
]
STREAM_CASES = [
    pytest.param(OPENAI_STREAM, id="openai"),
    pytest.param(ANTHROPIC_STREAM, id="anthropic"),
]


def summary(call: LLMCall, keys: Any) -> dict[str, Any]:
    return {key: getattr(call, key) for key in keys}


def assert_recorded(calls: list[LLMCall], case: Case, agent: str | None = "Caller") -> LLMCall:
    assert len(calls) == 1
    (call,) = calls
    assert summary(call, case.expected) == case.expected
    assert call.success is True
    assert call.error_type is None
    assert call.agent_name == agent
    assert call.request_hash is not None
    return call


def body_of(case: Case) -> dict[str, Any]:
    return fixture_request(case.fixture)  # type: ignore[no-any-return]


# --- plain requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", PLAIN_CASES)
def test_plain_post_is_recorded_with_the_fixture_tokens(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType, case: Case
) -> None:
    assert "http" in patched
    provider.enqueue(Reply.fixture(case.fixture))

    @obsdeco.observe_agent("Caller")
    def call() -> Any:
        with lib.Client() as client:
            return client.post(provider.base_url + case.path, json=body_of(case))

    response, calls = in_session(call)
    assert response.status_code == 200
    assert response.content == load_fixture(case.fixture)
    call_record = assert_recorded(calls, case)
    assert call_record.time_to_first_token_ms is None
    assert call_record.latency_ms > 0


@pytest.mark.parametrize("case", PLAIN_CASES)
async def test_async_plain_post_is_recorded(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType, case: Case
) -> None:
    provider.enqueue(Reply.fixture(case.fixture))

    @obsdeco.observe_agent("Caller")
    async def call() -> Any:
        async with lib.AsyncClient() as client:
            return await client.post(provider.base_url + case.path, json=body_of(case))

    response, calls = await in_async_session(call)
    assert response.json() == json.loads(load_fixture(case.fixture))
    assert_recorded(calls, case)


def test_an_sse_body_read_whole_is_recorded_as_a_stream(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM.fixture))

    @obsdeco.observe_agent("Caller")
    def call() -> Any:
        with lib.Client() as client:
            return client.post(
                provider.base_url + ANTHROPIC_STREAM.path, json=body_of(ANTHROPIC_STREAM)
            )

    response, calls = in_session(call)
    assert response.content == load_fixture(ANTHROPIC_STREAM.fixture)
    assert_recorded(calls, ANTHROPIC_STREAM)


# --- streams, every read style ------------------------------------------------------------------

SYNC_READS: dict[str, Callable[[Any], bytes]] = {
    "read": lambda response: response.read(),
    "iter_bytes": lambda response: b"".join(response.iter_bytes()),
    "iter_bytes_7": lambda response: b"".join(response.iter_bytes(chunk_size=7)),
    "iter_text": lambda response: "".join(response.iter_text()).encode(),
    "iter_lines": lambda response: "".join(f"{line}\n" for line in response.iter_lines()).encode(),
    "iter_raw": lambda response: b"".join(response.iter_raw()),
}


async def _join(chunks: Any) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def _join_text(chunks: Any) -> bytes:
    return "".join([chunk async for chunk in chunks]).encode()


async def _join_lines(lines: Any) -> bytes:
    return "".join([f"{line}\n" async for line in lines]).encode()


ASYNC_READS: dict[str, Callable[[Any], Awaitable[bytes]]] = {
    "aread": lambda response: response.aread(),
    "aiter_bytes": lambda response: _join(response.aiter_bytes()),
    "aiter_bytes_7": lambda response: _join(response.aiter_bytes(chunk_size=7)),
    "aiter_text": lambda response: _join_text(response.aiter_text()),
    "aiter_lines": lambda response: _join_lines(response.aiter_lines()),
    "aiter_raw": lambda response: _join(response.aiter_raw()),
}


def _expected_read(case: Case, style: str) -> bytes:
    data = load_fixture(case.fixture)
    if "lines" in style:
        return "".join(f"{line}\n" for line in data.decode().splitlines()).encode()
    return data


@pytest.mark.parametrize("case", STREAM_CASES)
@pytest.mark.parametrize("style", list(SYNC_READS))
def test_stream_is_recorded_whichever_way_it_is_read(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType, case: Case, style: str
) -> None:
    provider.enqueue(Reply.fixture(case.fixture))

    @obsdeco.observe_agent("Caller")
    def call() -> bytes:
        with (
            lib.Client() as client,
            client.stream("POST", provider.base_url + case.path, json=body_of(case)) as response,
        ):
            return SYNC_READS[style](response)

    data, calls = in_session(call)
    assert data == _expected_read(case, style)
    call_record = assert_recorded(calls, case)
    assert call_record.time_to_first_token_ms is not None
    assert 0 < call_record.time_to_first_token_ms <= call_record.latency_ms


@pytest.mark.parametrize("case", STREAM_CASES)
@pytest.mark.parametrize("style", list(ASYNC_READS))
async def test_async_stream_is_recorded_whichever_way_it_is_read(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType, case: Case, style: str
) -> None:
    provider.enqueue(Reply.fixture(case.fixture))

    @obsdeco.observe_agent("Caller")
    async def call() -> bytes:
        async with (
            lib.AsyncClient() as client,
            client.stream("POST", provider.base_url + case.path, json=body_of(case)) as response,
        ):
            return await ASYNC_READS[style](response)

    data, calls = await in_async_session(call)
    assert data == _expected_read(case, style)
    call_record = assert_recorded(calls, case)
    assert call_record.time_to_first_token_ms is not None


def _gzip_frames(data: bytes) -> list[bytes]:
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    frames = [
        compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH)
        for frame in split_sse(data)
    ]
    frames.append(compressor.flush())
    return frames


def _zstd_frames(data: bytes) -> list[bytes]:
    zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed")
    compressor = zstandard.ZstdCompressor().compressobj()
    frames = [
        compressor.compress(frame) + compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        for frame in split_sse(data)
    ]
    frames.append(compressor.flush())
    return frames


ENCODINGS = {"gzip": _gzip_frames, "zstd": _zstd_frames}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_a_compressed_stream_is_read_from_a_decoded_copy(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType, encoding: str
) -> None:
    case = ANTHROPIC_STREAM
    frames = ENCODINGS[encoding](load_fixture(case.fixture))
    provider.enqueue(Reply.sse(frames, headers={"Content-Encoding": encoding}))

    @obsdeco.observe_agent("Caller")
    def call() -> tuple[bytes, bytes]:
        with (
            lib.Client() as client,
            client.stream("POST", provider.base_url + case.path, json=body_of(case)) as response,
        ):
            return b"".join(response.iter_raw()), response.headers["content-encoding"]

    (raw, header), calls = in_session(call)
    assert raw == b"".join(frames)  # the caller's bytes are the compressed ones, unchanged
    assert header == encoding
    assert_recorded(calls, case)


async def test_an_async_gzip_stream_is_read_from_a_decoded_copy(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    case = OPENAI_STREAM
    provider.enqueue(
        Reply.sse(_gzip_frames(load_fixture(case.fixture)), headers={"Content-Encoding": "gzip"})
    )

    @obsdeco.observe_agent("Caller")
    async def call() -> bytes:
        async with (
            lib.AsyncClient() as client,
            client.stream("POST", provider.base_url + case.path, json=body_of(case)) as response,
        ):
            return await response.aread()

    data, calls = await in_async_session(call)
    assert data == load_fixture(case.fixture)
    assert_recorded(calls, case)


def test_a_gzip_json_body_is_recorded(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    case = OPENAI_CHAT
    body = gzip.compress(load_fixture(case.fixture))
    provider.enqueue(
        Reply.raw(body, content_type="application/json", headers={"Content-Encoding": "gzip"})
    )

    @obsdeco.observe_agent("Caller")
    def call() -> Any:
        with lib.Client() as client:
            return client.post(provider.base_url + case.path, json=body_of(case)).json()

    data, calls = in_session(call)
    assert data == json.loads(load_fixture(case.fixture))
    assert_recorded(calls, case)


def test_a_streamed_json_body_is_recorded_when_read(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    provider.enqueue(Reply.fixture(ANTHROPIC_MESSAGE.fixture))

    @obsdeco.observe_agent("Caller")
    def call() -> Any:
        with (
            lib.Client() as client,
            client.stream(
                "POST", provider.base_url + ANTHROPIC_MESSAGE.path, json=body_of(ANTHROPIC_MESSAGE)
            ) as response,
        ):
            return b"".join(response.iter_bytes(chunk_size=16))

    data, calls = in_session(call)
    assert data == load_fixture(ANTHROPIC_MESSAGE.fixture)
    assert_recorded(calls, ANTHROPIC_MESSAGE)


# --- a stream recorded exactly once: closed early, dropped ----------------------------------------


def test_a_stream_closed_early_is_recorded_once_with_what_was_read(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    case = ANTHROPIC_STREAM

    def call() -> list[str]:
        with (
            lib.Client() as client,
            client.stream("POST", provider.base_url + case.path, json=body_of(case)) as response,
        ):
            lines = response.iter_lines()
            first = [next(lines), next(lines)]  # message_start only
            response.close()
            return first

    provider.enqueue(Reply.fixture(case.fixture))
    first, calls = in_session(call)
    assert first[0] == "event: message_start"
    assert len(calls) == 1
    assert (calls[0].prompt_tokens, calls[0].completion_tokens, calls[0].finish_reason) == (
        21,
        7,
        None,
    )
    assert calls[0].success is True


def test_a_dropped_stream_is_recorded_once(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    case = OPENAI_STREAM
    client = lib.Client()

    def call() -> int:
        request = client.build_request("POST", provider.base_url + case.path, json=body_of(case))
        response = client.send(request, stream=True)
        status = response.status_code
        del response  # neither read nor closed
        gc.collect()
        return status

    provider.enqueue(Reply.fixture(case.fixture))
    try:
        status, calls = in_session(call)
    finally:
        client.close()
    assert status == 200
    assert len(calls) == 1
    assert calls[0].streamed is True
    assert calls[0].success is True
    assert calls[0].prompt_tokens is None  # nothing of the body was read


def test_a_stream_is_recorded_when_it_ends_not_when_it_is_closed(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    case = ANTHROPIC_STREAM
    box: dict[str, int] = {}

    def call() -> None:
        with (
            lib.Client() as client,
            client.stream("POST", provider.base_url + case.path, json=body_of(case)) as response,
        ):
            for _ in response.iter_raw():
                pass
            obsdeco.flush()
            box["before_close"] = len(obsdeco.get_calls(obsdeco.current_session().id))

    provider.enqueue(Reply.fixture(case.fixture))
    _, calls = in_session(call)
    assert box["before_close"] == 1
    assert len(calls) == 1


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "error_type", "message"),
    [
        (Reply.error(429), 429, "rate_limit", "HTTP 429: Rate limit reached for requests."),
        (
            Reply.fixture("openai/error_401_invalid_api_key.json"),
            401,
            "auth",
            "HTTP 401: Incorrect API key provided: sk-. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
        ),
        (Reply.raw("<html>bad gateway</html>", status=502), 502, "server_error", "HTTP 502"),
    ],
    ids=["429", "401-fixture", "502-html"],
)
def test_an_error_status_is_a_failed_call_with_the_providers_message(
    patched: list[str],
    provider: ProviderServer,
    lib: types.ModuleType,
    reply: Reply,
    status: int,
    error_type: str,
    message: str,
) -> None:
    provider.enqueue(reply)

    def call() -> Any:
        with lib.Client() as client:
            return client.post(provider.base_url + OPENAI_CHAT.path, json=body_of(OPENAI_CHAT))

    response, calls = in_session(call)
    assert response.status_code == status
    assert len(calls) == 1
    assert (calls[0].success, calls[0].error_type, calls[0].error_message) == (
        False,
        error_type,
        message,
    )
    assert calls[0].model == "gpt-3.5-turbo"
    assert calls[0].prompt_tokens is None


async def test_an_error_status_on_a_stream_is_a_failed_call(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    provider.enqueue(Reply.error(529, message="Overloaded", error_type="overloaded_error"))

    async def call() -> int:
        async with (
            lib.AsyncClient() as client,
            client.stream(
                "POST", provider.base_url + ANTHROPIC_STREAM.path, json=body_of(ANTHROPIC_STREAM)
            ) as response,
        ):
            await response.aread()
            return response.status_code  # type: ignore[no-any-return]

    status, calls = await in_async_session(call)
    assert status == 529
    assert len(calls) == 1
    assert (calls[0].success, calls[0].error_type, calls[0].error_message) == (
        False,
        "server_error",
        "HTTP 529: Overloaded",
    )
    assert calls[0].streamed is True


def test_an_exception_from_send_is_recorded_and_raised(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    provider.enqueue(Reply.disconnect())

    def call() -> BaseException:
        with lib.Client() as client:
            try:
                client.post(
                    provider.base_url + ANTHROPIC_MESSAGE.path, json=body_of(ANTHROPIC_MESSAGE)
                )
            except lib.RemoteProtocolError as error:
                return error
        raise AssertionError("the dropped connection did not raise")

    _, calls = in_session(call)
    assert len(calls) == 1
    assert (calls[0].success, calls[0].error_type, calls[0].model) == (
        False,
        "connection",
        "claude-sonnet-4-6",
    )


def test_a_stream_cut_mid_way_is_a_failed_call_with_what_was_read(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    case = ANTHROPIC_STREAM
    provider.enqueue(Reply.fixture(case.fixture, drop_after=3))
    box: dict[str, Any] = {}

    def call() -> None:
        with (
            lib.Client() as client,
            client.stream("POST", provider.base_url + case.path, json=body_of(case)) as response,
        ):
            try:
                response.read()
            except lib.HTTPError as error:
                box["error"] = error

    _, calls = in_session(call)
    assert isinstance(box["error"], lib.RemoteProtocolError)
    assert len(calls) == 1
    assert (calls[0].success, calls[0].error_type) == (False, "connection")
    assert (calls[0].prompt_tokens, calls[0].completion_tokens) == (21, 7)


# --- what is not an LLM call passes untouched ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("GET", "/v1/models", None),
        ("GET", "/v1/messages", None),
        ("POST", "/v1/files", b'{"model": "gpt-4o"}'),
        ("POST", "/v1/chat/completions", b"not json"),
        ("POST", "/v1/chat/completions", b'{"messages": []}'),
        ("POST", "/v1/messages", b'["model"]'),
    ],
    ids=["get", "get-llm-path", "post-unknown-path", "not-json", "no-model", "not-an-object"],
)
def test_a_request_that_is_no_llm_call_is_not_recorded(
    patched: list[str],
    provider: ProviderServer,
    lib: types.ModuleType,
    method: str,
    path: str,
    content: bytes | None,
) -> None:
    provider.enqueue(Reply.json({"ok": True}))

    def call() -> Any:
        with lib.Client() as client:
            return client.request(method, provider.base_url + path, content=content)

    response, calls = in_session(call)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert calls == []
    assert provider.last_request.raw_body == (content or b"")


def test_nothing_is_recorded_without_implicit_capture(
    provider: ProviderServer, lib: types.ModuleType
) -> None:
    assert http_seam.install_http_seam()
    try:
        provider.enqueue(Reply.fixture(OPENAI_CHAT.fixture))

        def call() -> Any:
            with lib.Client() as client:
                return client.post(provider.base_url + OPENAI_CHAT.path, json=body_of(OPENAI_CHAT))

        response, calls = in_session(call)
    finally:
        seam.restore_all()
    assert response.status_code == 200
    assert calls == []


# --- an SDK call is recorded once ----------------------------------------------------------------


def test_sdk_calls_are_recorded_once(
    patched: list[str],
    provider: ProviderServer,
    openai_client: openai.OpenAI,
    anthropic_client: anthropic.Anthropic,
) -> None:
    provider.enqueue(
        Reply.fixture(OPENAI_CHAT.fixture),
        Reply.fixture(ANTHROPIC_MESSAGE.fixture),
        Reply.fixture(OPENAI_STREAM.fixture),
        Reply.fixture(ANTHROPIC_STREAM.fixture),
    )

    @obsdeco.observe_agent("Caller")
    def call() -> None:
        openai_client.chat.completions.create(**body_of(OPENAI_CHAT))
        anthropic_client.messages.create(**body_of(ANTHROPIC_MESSAGE))
        for _ in openai_client.chat.completions.create(**body_of(OPENAI_STREAM)):
            pass
        with anthropic_client.messages.stream(
            **{key: value for key, value in body_of(ANTHROPIC_STREAM).items() if key != "stream"}
        ) as stream:
            stream.until_done()

    _, calls = in_session(call)
    assert [(call.provider, call.prompt_tokens, call.completion_tokens) for call in calls] == [
        (ModelProvider.OPENAI, 15, 31),
        (ModelProvider.ANTHROPIC, 14, 11),
        (ModelProvider.OPENAI, 78, 9),
        (ModelProvider.ANTHROPIC, 21, 13),
    ]


async def test_async_sdk_calls_are_recorded_once(
    patched: list[str],
    provider: ProviderServer,
    async_openai_client: openai.AsyncOpenAI,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    provider.enqueue(Reply.fixture(OPENAI_CHAT.fixture), Reply.fixture(ANTHROPIC_STREAM.fixture))

    async def call() -> None:
        await async_openai_client.chat.completions.create(**body_of(OPENAI_CHAT))
        stream = await async_anthropic_client.messages.create(**body_of(ANTHROPIC_STREAM))
        async for _ in stream:
            pass

    _, calls = await in_async_session(call)
    assert [(call.provider, call.prompt_tokens, call.completion_tokens) for call in calls] == [
        (ModelProvider.OPENAI, 15, 31),
        (ModelProvider.ANTHROPIC, 21, 13),
    ]


# --- do no harm ----------------------------------------------------------------------------------

STREAM_CHUNKS = [frame[:5] for frame in split_sse(load_fixture(ANTHROPIC_STREAM.fixture))] + [
    frame[5:] for frame in split_sse(load_fixture(ANTHROPIC_STREAM.fixture))
]


class _Boom(Exception):
    """What the mock transport raises."""


BOOM = _Boom("transport failed")


def _mock_handler(lib: types.ModuleType) -> Callable[[Any], Any]:
    """Answers like a provider, deterministically: the same bytes in the same chunks."""

    def handle(request: Any) -> Any:
        path = request.url.path
        if path.startswith("/boom/"):
            raise BOOM
        if b'"stream": true' in request.content or b'"stream":true' in request.content:
            return lib.Response(
                200,
                headers={"content-type": "text/event-stream", "x-extra": "1"},
                content=iter(STREAM_CHUNKS),
            )
        if path == "/v1/chat/completions" and b"fail" in request.content:
            return lib.Response(429, json={"error": {"message": "slow down"}})
        return lib.Response(200, content=load_fixture(OPENAI_CHAT.fixture))

    return handle


def _exercise(lib: types.ModuleType) -> list[Any]:
    """Everything a caller sees from a set of sync requests."""
    seen: list[Any] = []
    with lib.Client(transport=lib.MockTransport(_mock_handler(lib))) as client:
        base = "http://llm.test"
        response = client.post(base + OPENAI_CHAT.path, json=body_of(OPENAI_CHAT))
        seen += [response.status_code, list(response.headers.items()), response.content]
        seen.append(response.json())
        response = client.post(base + OPENAI_CHAT.path, json={"model": "m", "fail": 1})
        seen += [response.status_code, response.json()]
        for reader in ("iter_raw", "iter_bytes", "iter_lines", "iter_text"):
            with client.stream(
                "POST", base + ANTHROPIC_STREAM.path, json=body_of(ANTHROPIC_STREAM)
            ) as response:
                seen += [response.status_code, list(response.headers.items())]
                seen.append(list(getattr(response, reader)()))
                seen.append((response.is_stream_consumed, response.is_closed))
            seen.append(type(response.elapsed))  # httpx2 reads it from the closed stream
        request = client.build_request(
            "POST", base + ANTHROPIC_STREAM.path, json=body_of(ANTHROPIC_STREAM)
        )
        response = client.send(request, stream=True)
        seen.append(response.status_code)
        del response  # dropped unread
        gc.collect()
        response = client.get(base + "/v1/models")
        seen += [response.status_code, response.content]
        try:
            client.post(base + "/boom/v1/messages", json={"model": "m"})
        except _Boom as error:
            seen.append(error)
    return seen


async def _exercise_async(lib: types.ModuleType) -> list[Any]:
    """The async twin of `_exercise`."""
    seen: list[Any] = []

    async def handle(request: Any) -> Any:
        response = _mock_handler(lib)(request)
        if response.headers.get("content-type") == "text/event-stream":
            return lib.Response(200, headers=response.headers, content=_async_chunks())
        return response

    async with lib.AsyncClient(transport=lib.MockTransport(handle)) as client:
        base = "http://llm.test"
        response = await client.post(base + OPENAI_CHAT.path, json=body_of(OPENAI_CHAT))
        seen += [response.status_code, response.content]
        for reader in ("aiter_raw", "aiter_bytes", "aiter_lines", "aiter_text"):
            async with client.stream(
                "POST", base + ANTHROPIC_STREAM.path, json=body_of(ANTHROPIC_STREAM)
            ) as response:
                seen.append([chunk async for chunk in getattr(response, reader)()])
                seen.append((response.is_stream_consumed, response.is_closed))
        try:
            await client.post(base + "/boom/v1/messages", json={"model": "m"})
        except _Boom as error:
            seen.append(error)
    return seen


async def _async_chunks() -> Any:
    for chunk in STREAM_CHUNKS:
        yield chunk


def test_callers_see_the_same_with_and_without_patching(lib: types.ModuleType) -> None:
    unpatched = _exercise(lib)
    obsdeco.patch_all()
    try:
        patched_view, calls = in_session(lambda: _exercise(lib))
    finally:
        obsdeco.unpatch_all()
    assert patched_view == unpatched
    assert unpatched[-1] is BOOM  # the transport's own exception object, unwrapped
    # chat, the 429, four streams, the dropped one, the failed post; not the GET
    calls.sort(key=lambda call: call.timestamp)  # the dropped one was recorded last
    assert [(call.success, call.prompt_tokens) for call in calls] == [
        (True, 15),
        (False, None),
        *[(True, 21)] * 4,
        (True, None),
        (False, None),
    ]


async def test_async_callers_see_the_same_with_and_without_patching(
    lib: types.ModuleType,
) -> None:
    unpatched = await _exercise_async(lib)
    obsdeco.patch_all()
    try:
        patched_view, calls = await in_async_session(lambda: _exercise_async(lib))
    finally:
        obsdeco.unpatch_all()
    assert patched_view == unpatched
    assert unpatched[-1] is BOOM
    assert [(call.success, call.completion_tokens) for call in calls] == [
        (True, 31),
        *[(True, 13)] * 4,
        (False, None),
    ]


def _raise(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("injected obsdeco fault")


FAULTS = {
    "endpoint_of": (http_seam, "endpoint_of"),
    "json_object": (http_seam, "_json_object"),
    "recognises": (ProviderFormat, "recognises"),
    "body_read": (http_seam, "_body_read"),
    "body_reader": (http_seam._BodyReader, "__init__"),
    "decompressor": (http_seam, "_decompressor"),
    "sse_feed": (SSEDecoder, "feed"),
    "sse_finish": (SSEDecoder, "finish"),
    "accumulator": (anthropic_format._MessageStream, "observe"),
    "response_facts": (OpenAIFormat, "response_facts"),
    "error_message": (ProviderFormat, "error_message"),
    "record_later": (http_seam, "record_later"),
}


@pytest.mark.parametrize("place", list(FAULTS))
def test_a_fault_at_any_step_leaves_the_request_unchanged(
    lib: types.ModuleType, monkeypatch: pytest.MonkeyPatch, place: str
) -> None:
    unpatched = _exercise(lib)
    before = obsdeco.stats().internal_faults
    owner, name = FAULTS[place]
    monkeypatch.setattr(owner, name, _raise)
    obsdeco.patch_all()
    try:
        patched_view, _ = in_session(lambda: _exercise(lib))
        gc.collect()
        obsdeco.flush()
    finally:
        obsdeco.unpatch_all()
    assert patched_view == unpatched
    assert obsdeco.stats().internal_faults > before


def test_unpatch_all_restores_send_exactly() -> None:
    originals = {
        (lib, name): vars(getattr(lib, name))["send"]
        for lib in (httpx, httpx2)
        for name in ("Client", "AsyncClient")
    }
    obsdeco.patch_all()
    assert all(
        vars(getattr(lib, name))["send"] is not original
        for (lib, name), original in originals.items()
    )
    obsdeco.patch_all()  # idempotent
    obsdeco.unpatch_all()
    assert all(
        vars(getattr(lib, name))["send"] is original for (lib, name), original in originals.items()
    )


async def test_concurrent_calls_are_attributed_to_their_own_agents(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    provider.enqueue(Reply.fixture(ANTHROPIC_STREAM.fixture), path=ANTHROPIC_STREAM.path)
    provider.enqueue(Reply.fixture(OPENAI_STREAM.fixture), path=OPENAI_STREAM.path)

    async with lib.AsyncClient() as client:

        async def ask(agent: str, case: Case) -> None:
            @obsdeco.observe_agent(agent)
            async def run() -> None:
                async with client.stream(
                    "POST", provider.base_url + case.path, json=body_of(case)
                ) as response:
                    await response.aread()

            await run()

        async def both() -> None:
            await asyncio.gather(ask("Reader", ANTHROPIC_STREAM), ask("Writer", OPENAI_STREAM))

        _, calls = await in_async_session(both)
    by_agent = {call.agent_name: (call.prompt_tokens, call.completion_tokens) for call in calls}
    assert by_agent == {"Reader": (21, 13), "Writer": (78, 9)}


@pytest.mark.parametrize(
    ("fixture", "path", "expected"),
    [
        (
            "anthropic/messages_tool_use_stream.sse",
            "/v1/messages",
            (721, 113, "tool_use", 2),
        ),
        (
            "openai/chat_completion_parallel_tool_calls_stream.sse",
            "/v1/chat/completions",
            (None, None, "tool_calls", 2),  # no include_usage: the stream carries no usage
        ),
    ],
    ids=["anthropic", "openai"],
)
def test_streamed_tool_calls_are_counted(
    patched: list[str],
    provider: ProviderServer,
    lib: types.ModuleType,
    fixture: str,
    path: str,
    expected: tuple[Any, ...],
) -> None:
    provider.enqueue(Reply.fixture(fixture))

    def call() -> None:
        with (
            lib.Client() as client,
            client.stream(
                "POST", provider.base_url + path, json=fixture_request(fixture)
            ) as response,
        ):
            response.read()

    _, calls = in_session(call)
    assert [
        (call.prompt_tokens, call.completion_tokens, call.finish_reason, call.tool_call_count)
        for call in calls
    ] == [expected]


def test_a_body_in_an_encoding_obsdeco_cannot_undo_is_recorded_without_its_facts(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    data = load_fixture(ANTHROPIC_STREAM.fixture)
    provider.enqueue(Reply.sse(split_sse(data), headers={"Content-Encoding": "x-unknown"}))
    faults = obsdeco.stats().internal_faults

    def call() -> bytes:
        with (
            lib.Client() as client,
            client.stream(
                "POST", provider.base_url + ANTHROPIC_STREAM.path, json=body_of(ANTHROPIC_STREAM)
            ) as response,
        ):
            return response.read()

    read, calls = in_session(call)
    assert read == data  # the library does not know the encoding either: bytes as sent
    assert [(call.success, call.streamed, call.prompt_tokens) for call in calls] == [
        (True, True, None)
    ]
    assert obsdeco.stats().internal_faults == faults


# --- Gemini, posted without the SDK -----------------------------------------------------------

GEMINI_ANSWER = {
    "candidates": [
        {"content": {"parts": [{"text": "Paris."}], "role": "model"}, "finishReason": "STOP"}
    ],
    "usageMetadata": {
        "promptTokenCount": 9,
        "cachedContentTokenCount": 4,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 20,
        "totalTokenCount": 32,
    },
    "modelVersion": "gemini-2.5-flash",
}
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]}]}
GEMINI_EXPECTED = {
    "provider": ModelProvider.GOOGLE,
    "provider_name": "gcp.gemini",
    "api": "generate_content",
    "model": "gemini-2.5-flash",
    "response_model": "gemini-2.5-flash",
    "prompt_tokens": 9,
    "cached_tokens": 4,
    "completion_tokens": 23,
    "reasoning_tokens": 20,
    "finish_reason": "STOP",
    "agent_name": "Caller",
}


def test_a_gemini_post_is_recorded_with_the_gemini_reader(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    provider.enqueue(Reply.json(GEMINI_ANSWER))
    url = provider.base_url + "/v1beta/models/gemini-2.5-flash:generateContent"

    @obsdeco.observe_agent("Caller")
    def call() -> Any:
        with lib.Client() as client:
            return client.post(url, json=GEMINI_BODY)

    response, calls = in_session(call)

    assert response.json() == GEMINI_ANSWER
    [recorded] = calls
    assert summary(recorded, GEMINI_EXPECTED) == GEMINI_EXPECTED
    assert recorded.streamed is False


async def test_an_async_gemini_stream_is_recorded_from_its_last_usage(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    url = provider.base_url + "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse"

    @obsdeco.observe_agent("Caller")
    async def call() -> bytes:
        async with (
            lib.AsyncClient() as client,
            client.stream("POST", url, json=GEMINI_BODY) as response,
        ):
            return b"".join([chunk async for chunk in response.aiter_bytes()])

    body, calls = await in_async_session(call)

    chunks = [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert len(chunks) > 2
    last = chunks[-1]["usageMetadata"]
    [recorded] = calls
    assert recorded.streamed is True
    assert recorded.model == "gemini-2.5-flash"
    assert recorded.prompt_tokens == last["promptTokenCount"]
    assert recorded.completion_tokens == last["candidatesTokenCount"] + last.get(
        "thoughtsTokenCount", 0
    )
    assert recorded.time_to_first_token_ms is not None


def test_a_gemini_stream_sent_as_a_json_array_is_recorded_from_its_last_usage(
    patched: list[str], provider: ProviderServer, lib: types.ModuleType
) -> None:
    url = provider.base_url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent"

    @obsdeco.observe_agent("Caller")
    def call() -> Any:
        with lib.Client() as client:
            return client.post(url, json=GEMINI_BODY)

    response, calls = in_session(call)

    chunks = response.json()
    assert isinstance(chunks, list)
    assert len(chunks) > 2
    last = chunks[-1]["usageMetadata"]
    [recorded] = calls
    assert recorded.model == "gemini-2.5-flash"
    assert recorded.prompt_tokens == last["promptTokenCount"]
    assert recorded.completion_tokens == last["candidatesTokenCount"] + last.get(
        "thoughtsTokenCount", 0
    )
