"""The local provider's Gemini API: generateContent and streamGenerateContent, JSON and SSE,
synthesised and scripted replies, Gemini's error envelope; checked on the wire and with the
real google-genai SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from obsdeco.testing import ProviderServer, Reply, count_request_tokens, count_tokens

genai = pytest.importorskip("google.genai", reason="google-genai is not installed")
from google.genai import errors, types  # noqa: E402

PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Name three primes, please."}]}]}
PROMPT_TOKENS = 6  # Name, three, primes, ",", please, "."
DEFAULT_TOKENS = count_tokens("Hello! This is a reply from the obsdeco test provider.")


@pytest.fixture
def http(provider: ProviderServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=provider.base_url) as client:
        yield client


@pytest.fixture
def gemini(provider: ProviderServer) -> genai.Client:
    return genai.Client(
        api_key="test", http_options=types.HttpOptions(base_url=provider.gemini_base_url)
    )


def sse_chunks(body: str) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line]


def test_prompt_tokens_are_counted_over_the_parts_texts() -> None:
    assert count_request_tokens(PROMPT) == PROMPT_TOKENS
    assert DEFAULT_TOKENS == 12


@pytest.mark.parametrize("version", ["v1", "v1beta", "v1alpha"])
def test_generate_content_default_reply(provider, http, version) -> None:
    response = http.post(f"/{version}/models/gemini-2.5-flash:generateContent", json=PROMPT)

    assert response.status_code == 200
    body = response.json()
    assert body["modelVersion"] == "gemini-2.5-flash"
    assert body["candidates"] == [
        {
            "content": {
                "parts": [{"text": "Hello! This is a reply from the obsdeco test provider."}],
                "role": "model",
            },
            "index": 0,
            "finishReason": "STOP",
        }
    ]
    assert body["usageMetadata"] == {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": DEFAULT_TOKENS,
        "totalTokenCount": PROMPT_TOKENS + DEFAULT_TOKENS,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
    }
    request = provider.last_request
    assert request.model == "gemini-2.5-flash"
    assert request.stream is False
    assert request.is_gemini is True


def test_stream_with_alt_sse_repeats_the_usage_cumulatively(provider, http) -> None:
    response = http.post(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        params={"alt": "sse"},
        json=PROMPT,
    )

    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(response.text)
    assert len(chunks) == DEFAULT_TOKENS
    assert [chunk["usageMetadata"]["candidatesTokenCount"] for chunk in chunks] == list(
        range(1, DEFAULT_TOKENS + 1)
    )
    assert {chunk["usageMetadata"]["promptTokenCount"] for chunk in chunks} == {PROMPT_TOKENS}
    text = "".join(chunk["candidates"][0]["content"]["parts"][0]["text"] for chunk in chunks)
    assert text == "Hello! This is a reply from the obsdeco test provider."
    reasons = [chunk["candidates"][0].get("finishReason") for chunk in chunks]
    assert reasons == [None] * (DEFAULT_TOKENS - 1) + ["STOP"]
    assert provider.last_request.stream is True


def test_stream_without_alt_is_a_json_array_of_the_same_chunks(http) -> None:
    response = http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent", json=PROMPT)

    chunks = response.json()
    assert isinstance(chunks, list)
    assert len(chunks) == DEFAULT_TOKENS
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == PROMPT_TOKENS + DEFAULT_TOKENS


def test_max_output_tokens_truncates_with_max_tokens(http) -> None:
    body = {**PROMPT, "generationConfig": {"maxOutputTokens": 3}}
    response = http.post("/v1/models/gemini-2.5-pro:generateContent", json=body).json()

    candidate = response["candidates"][0]
    assert candidate["content"]["parts"][0]["text"] == "Hello! This"
    assert candidate["finishReason"] == "MAX_TOKENS"
    assert response["usageMetadata"]["candidatesTokenCount"] == 3


def test_default_usage_merges_thoughts_and_cache_into_the_total(provider, http) -> None:
    provider.enqueue(
        Reply.default(
            input_tokens=40, usage={"thoughtsTokenCount": 9, "cachedContentTokenCount": 30}
        )
    )
    usage = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=PROMPT).json()[
        "usageMetadata"
    ]

    assert usage["promptTokenCount"] == 40
    assert usage["cachedContentTokenCount"] == 30
    assert usage["thoughtsTokenCount"] == 9
    assert usage["totalTokenCount"] == 40 + DEFAULT_TOKENS + 9


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "INVALID_ARGUMENT"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ],
)
def test_errors_use_geminis_envelope(provider, http, status, expected) -> None:
    provider.enqueue(Reply.error(status))
    response = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=PROMPT)

    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"code", "message", "status"}
    assert error["code"] == status
    assert error["status"] == expected


def test_error_message_and_status_can_be_scripted(provider, http) -> None:
    provider.enqueue(Reply.error(429, message="Quota exceeded.", error_type="QUOTA"))
    error = http.post("/v1/models/gemini-2.0-flash:generateContent", json=PROMPT).json()["error"]

    assert error == {"code": 429, "message": "Quota exceeded.", "status": "QUOTA"}


def test_a_request_without_contents_is_refused(http) -> None:
    response = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json={})

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "contents" in response.json()["error"]["message"]


def test_other_model_methods_are_not_found(http) -> None:
    response = http.post("/v1beta/models/gemini-2.5-flash:countTokens", json=PROMPT)

    assert response.status_code == 404


def test_the_sdk_talks_to_the_provider(provider, gemini) -> None:
    response = gemini.models.generate_content(model="gemini-2.5-flash", contents="Hi there")

    assert response.text == "Hello! This is a reply from the obsdeco test provider."
    assert response.usage_metadata.prompt_token_count == 2
    assert response.usage_metadata.candidates_token_count == DEFAULT_TOKENS
    assert response.model_version == "gemini-2.5-flash"
    request = provider.last_request
    assert request.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert request.headers["x-goog-api-key"] == "test"


def test_the_sdk_streams_from_the_provider(gemini) -> None:
    chunks = list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"))

    assert len(chunks) == DEFAULT_TOKENS
    assert "".join(chunk.text for chunk in chunks) == (
        "Hello! This is a reply from the obsdeco test provider."
    )
    assert chunks[-1].usage_metadata.candidates_token_count == DEFAULT_TOKENS


def test_the_sdk_reads_scripted_errors(provider, gemini) -> None:
    provider.enqueue(Reply.error(429))
    with pytest.raises(errors.ClientError) as raised:
        gemini.models.generate_content(model="gemini-2.5-flash", contents="Hi")

    assert raised.value.code == 429
    assert raised.value.status == "RESOURCE_EXHAUSTED"


def test_scripted_sse_reaches_the_sdk(provider, gemini) -> None:
    provider.enqueue(
        Reply.sse(
            [
                {"candidates": [{"content": {"parts": [{"text": "A"}], "role": "model"}}]},
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": "B"}], "role": "model"},
                            "finishReason": "STOP",
                        }
                    ],
                    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2},
                },
            ]
        )
    )
    chunks = list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"))

    assert [chunk.text for chunk in chunks] == ["A", "B"]
    assert chunks[-1].usage_metadata.candidates_token_count == 2
