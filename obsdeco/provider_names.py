"""Provider names: OpenTelemetry's (what records and reports say) and genai-prices' (what prices
are looked up under), one mapping used both ways.

`LLMCall.provider_name` uses the OpenTelemetry GenAI names ("openai", "gcp.gemini",
"mistral_ai", ...). genai-prices names its providers by ids of its own ("google", "mistral",
...); where the two differ, `_OTEL_BY_PRICE_ID` says so, and every other id is the same in both.
"""

from __future__ import annotations

MAX_PROVIDER_NAME = 64
"""The longest provider name stored (the `provider_name` column's width)."""

_OTEL_BY_PRICE_ID = {
    "aws": "aws.bedrock",
    "azure": "azure.openai",
    "google": "gcp.gemini",
    "mistral": "mistral_ai",
    "x-ai": "x_ai",
}
_PRICE_ID_BY_OTEL = {otel: price_id for price_id, otel in _OTEL_BY_PRICE_ID.items()}


def otel_name(price_id: str) -> str:
    """The OpenTelemetry name of a genai-prices provider id ("google" -> "gcp.gemini")."""
    return _OTEL_BY_PRICE_ID.get(price_id, price_id)


def price_provider_id(provider_name: str) -> str:
    """The genai-prices id to look a provider name's prices up under ("gcp.gemini" ->
    "google"); a name genai-prices does not know comes back unchanged."""
    return _PRICE_ID_BY_OTEL.get(provider_name, provider_name)


def default_provider_name(provider: str) -> str:
    """The provider name of a `ModelProvider` value when the endpoint says nothing better.

    `ModelProvider`'s values are genai-prices ids ("openai", "anthropic", "google"), so this is
    their OpenTelemetry name; "other" stays "other".
    """
    return otel_name(provider)


def check_provider_name(name: object) -> str:
    """`name` if it can be a provider name (a non-blank string of at most 64 characters, with
    no surrounding spaces); ValueError saying why not otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"a provider name must be a string, got {type(name).__name__}")
    if not name.strip():
        raise ValueError("a provider name must not be empty")
    if name != name.strip() or not name.isprintable():
        raise ValueError(f"provider name {name!r} has surrounding spaces or control characters")
    if len(name) > MAX_PROVIDER_NAME:
        raise ValueError(
            f"provider name {name[:20]!r}... is longer than {MAX_PROVIDER_NAME} characters"
        )
    return name
