"""The most a call can cost, known before it is sent (what a budget reserves for it).

Input tokens are bounded by the UTF-8 bytes of what the model reads (`request_size`); output
tokens by the request's own limit (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
Gemini's `generationConfig.maxOutputTokens`), else by the model's context window. Both are
priced at the model's rates, each at the price tier the input bound falls in, and cache reads
are not assumed: the bound holds whatever the provider caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from obsdeco.analyzers.cost_analyzer import PriceTable
from obsdeco.engine.request_size import input_bytes

_OUTPUT_LIMIT_KEYS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_NO_OUTPUT_APIS = frozenset({"embeddings"})


def output_limit(body: Mapping[str, Any]) -> int | None:
    """The output tokens a request allows itself, if it says."""
    for key in _OUTPUT_LIMIT_KEYS:
        value = body.get(key)
        if type(value) is int and value >= 0:
            return value
    config = body.get("generationConfig")
    if isinstance(config, Mapping):
        value = config.get("maxOutputTokens")
        if type(value) is int and value >= 0:
            return value
    return None


def worst_case_usd(
    prices: PriceTable, provider_name: str, model: str, api: str, body: Mapping[str, Any]
) -> float | None:
    """The highest cost the call can have; None when its model has no price or no bound on
    its output is known."""
    unit = prices.lookup(provider_name, model, model)
    if unit is None:
        return None
    prompt = input_bytes(body)
    if api in _NO_OUTPUT_APIS:
        output = 0
    else:
        output = output_limit(body)
        if output is None:
            output = prices.context_window(provider_name, model)
            if output is None:
                return None
    input_rate = max(unit.input.at(prompt), unit.cache_write.at(prompt))
    return (prompt * input_rate + output * unit.output.at(prompt)) / 1_000_000
