"""Test helpers shipped with obsdeco: a local server that answers like the provider APIs.

`ProviderServer` lets tests and examples drive the real OpenAI, Anthropic and google-genai SDKs
without an API key; see `obsdeco.testing.provider` for the details.
"""

from obsdeco.testing.provider import (
    DEFAULT_TEXT,
    FIXTURES_ENV,
    ProviderServer,
    RecordedRequest,
    Reply,
    Responder,
    SSEEvent,
    count_request_tokens,
    count_tokens,
    fixture_path,
    fixture_request,
    fixtures_dir,
    load_fixture,
    split_sse,
)

__all__ = [
    "DEFAULT_TEXT",
    "FIXTURES_ENV",
    "ProviderServer",
    "RecordedRequest",
    "Reply",
    "Responder",
    "SSEEvent",
    "count_request_tokens",
    "count_tokens",
    "fixture_path",
    "fixture_request",
    "fixtures_dir",
    "load_fixture",
    "split_sse",
]
