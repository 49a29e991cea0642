"""Prices from genai-prices' bundled snapshot (never fetched) and user overrides, per column.

A call is priced at the service that answered it (`provider_name`: an OpenAI SDK aimed at Groq
pays Groq's price), looked up under that provider's genai-prices id; a provider genai-prices
does not know (a private gateway, "other") is priced at the provider genai-prices finds for the
model. Unit prices are looked up once per distinct (provider, model); each call is then priced with
array arithmetic. With normalised tokens, input tokens are split into three disjoint parts:
uncached input, cache reads and cache writes, each priced once at its own rate (a rate the
model does not have falls back to the input rate, as genai-prices does). A call answered by
obsdeco's response cache costs nothing; what it and the router saved is priced the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

import numpy as np
import numpy.typing as npt
from genai_prices import __version__ as genai_prices_version
from genai_prices import data_snapshot
from genai_prices.data_snapshot import find_provider_by_id
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices

from obsdeco.analyzers.columns import CallColumns, FloatArray, ObjectArray
from obsdeco.models import CostBreakdown
from obsdeco.provider_names import price_provider_id

PRICE_SNAPSHOT = f"genai-prices {genai_prices_version} (bundled snapshot)"

_PRICE_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
}


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per million tokens: `base`, or a tier's price once input tokens pass its start."""

    base: float
    tiers: tuple[tuple[int, float], ...] = ()

    def at(self, input_tokens: float) -> float:
        """USD per million tokens for one call of `input_tokens` (the tier it falls in)."""
        price = self.base
        for start, tier_price in self.tiers:
            if input_tokens > start:
                price = tier_price
        return price

    def per_call(self, input_tokens: FloatArray) -> FloatArray:
        rate = np.full(input_tokens.shape, self.base)
        for start, price in self.tiers:
            rate = np.where(input_tokens > start, price, rate)
        return rate


@dataclass(frozen=True, slots=True)
class UnitPrices:
    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate


def _rate(value: Decimal | TieredPrices | None) -> Rate | None:
    if value is None:
        return None
    if isinstance(value, TieredPrices):
        tiers = tuple((tier.start, float(tier.price)) for tier in value.tiers)
        return Rate(float(value.base), tiers)
    return Rate(float(value))


def _unit_prices(model_price: Mapping[str, Rate | None]) -> UnitPrices | None:
    input_rate, output_rate = model_price.get("input"), model_price.get("output")
    if input_rate is None:
        return None
    return UnitPrices(
        input=input_rate,
        output=output_rate or Rate(0.0),
        cache_read=model_price.get("cache_read") or input_rate,
        cache_write=model_price.get("cache_write") or input_rate,
    )


@cache
def _snapshot_provider(provider_name: str) -> Provider | None:
    """The genai-prices provider of a provider name, None when genai-prices has none."""
    providers = data_snapshot.get_snapshot().providers
    return find_provider_by_id(providers, price_provider_id(provider_name))


@cache
def _snapshot_model(provider_name: str, model: str) -> ModelInfo | None:
    snapshot = data_snapshot.get_snapshot()
    try:
        _, model_info = snapshot.find_provider_model(
            model, _snapshot_provider(provider_name), None, None
        )
    except LookupError:
        return None
    return model_info


@cache
def _snapshot_prices(provider_name: str, model: str) -> UnitPrices | None:
    model_info = _snapshot_model(provider_name, model)
    if model_info is None:
        return None
    prices: ModelPrice = model_info.get_prices(datetime.now(UTC))
    return _unit_prices({key: _rate(getattr(prices, attr)) for key, attr in _PRICE_KEYS.items()})


class PriceTable:
    """Unit prices for (provider name, model) pairs: user overrides first, then the snapshot."""

    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self._overrides = {
            model: _unit_prices({key: Rate(float(value)) for key, value in prices.items()})
            for model, prices in (overrides or {}).items()
        }
        self.source = PRICE_SNAPSHOT
        if self._overrides:
            self.source += f" + user overrides for {', '.join(sorted(self._overrides))}"

    def lookup(self, provider_name: str, model: str, requested_model: str) -> UnitPrices | None:
        """The prices of `model` (else `requested_model`) as served by `provider_name`."""
        for name in (model, requested_model):
            if name in self._overrides:
                return self._overrides[name]
        return _snapshot_prices(provider_name, model) or _snapshot_prices(
            provider_name, requested_model
        )

    @staticmethod
    def context_window(provider_name: str, model: str) -> int | None:
        """The tokens `model` reads and writes at most in one call, as genai-prices knows it."""
        model_info = _snapshot_model(provider_name, model)
        window = None if model_info is None else model_info.context_window
        return window if isinstance(window, int) and window > 0 else None

    def list_prices(self, columns: CallColumns) -> FloatArray:
        """USD per call at its model's price, as if it had been sent (a cache hit included);
        NaN where the model has no price or the token counts are unknown."""
        keys = zip(columns.provider_name, columns.model, columns.requested_model, strict=True)
        return self._priced(columns, list(keys))

    def price_at(self, columns: CallColumns, models: ObjectArray) -> FloatArray:
        """Each call's tokens priced at the model `models` names for it (at the call's
        provider); NaN where that name is None or has no price."""
        keys = [
            None if model is None else (provider_name, model, model)
            for provider_name, model in zip(columns.provider_name, models, strict=True)
        ]
        return self._priced(columns, keys)

    def price_calls(self, columns: CallColumns) -> FloatArray:
        """USD per call as paid: its list price, 0 for a cache hit (no request was sent)."""
        return np.where(columns.cache_hit, 0.0, self.list_prices(columns))

    def call_prices(self, columns: CallColumns) -> CallPrices:
        """What each call cost and what the response cache and the router saved on it."""
        listed = self.list_prices(columns)
        hit, routed = columns.cache_hit, columns.routed
        cache_saved = np.where(hit, listed, 0.0)
        routing_saved = np.where(routed, self.price_at(columns, columns.routed_from) - listed, 0.0)
        return CallPrices(
            cost=np.where(hit, 0.0, listed),
            cache_saved=cache_saved,
            routing_saved=routing_saved,
            shadow_saved=np.where(
                columns.shadowed, listed - self.price_at(columns, columns.shadow_model), 0.0
            ),
            saved=np.where(hit | routed, cache_saved + routing_saved, np.nan),
        )

    def _priced(self, columns: CallColumns, keys: list[tuple[str, str, str] | None]) -> FloatArray:
        """USD per call at the (provider name, model, requested model) of each key; NaN where
        the key is None, has no price, or the token counts are unknown."""
        costs = np.full(columns.size, np.nan)
        if columns.size == 0:
            return costs
        groups: dict[tuple[str, str, str], int] = {}
        # A list first, not np.fromiter: numpy must not call back into Python here (a writer
        # thread inside such a callback at interpreter exit aborts the process).
        codes = np.array(
            [-1 if key is None else groups.setdefault(key, len(groups)) for key in keys],
            dtype=np.intp,
        )
        tokens = TokenColumns.of(columns)
        for (provider_name, model, requested), code in groups.items():
            prices = self.lookup(provider_name, model, requested)
            if prices is not None:
                rows = codes == code
                costs[rows] = tokens.select(rows).cost(prices)
        return costs

    def price_call(
        self, key: tuple[str, str, str], prompt: int, cached: int, written: int, completion: int
    ) -> float | None:
        """USD for one call's tokens at its (provider name, model, requested model), as
        `price_calls` prices it (without arrays: budgets price each call as it ends); None when
        the model has no price."""
        prices = self.lookup(*key)
        if prices is None:
            return None
        return (
            (prompt - cached - written) * prices.input.at(prompt)
            + cached * prices.cache_read.at(prompt)
            + written * prices.cache_write.at(prompt)
            + completion * prices.output.at(prompt)
        ) / 1_000_000

    def price_sums(
        self,
        key: tuple[str, str, str],
        prompt: float,
        cached: float,
        written: float,
        completion: float,
        largest_prompt: float,
    ) -> float | None:
        """USD for a group of calls of one (provider name, model, requested model) from their
        token sums; None when the model has no price or its calls may fall in different
        price tiers (then price them one by one)."""
        prices = self.lookup(*key)
        if prices is None:
            return None
        return self.price_sums_with(prices, prompt, cached, written, completion, largest_prompt)

    @staticmethod
    def price_sums_with(
        prices: UnitPrices,
        prompt: float,
        cached: float,
        written: float,
        completion: float,
        largest_prompt: float,
    ) -> float | None:
        """USD for token sums at `prices`; None if the largest prompt passes a price tier."""
        rates = (prices.input, prices.output, prices.cache_read, prices.cache_write)
        first_tier = min((start for rate in rates for start, _ in rate.tiers), default=None)
        if first_tier is not None and largest_prompt > first_tier:
            return None
        one = [np.array([value]) for value in (prompt, cached, written, completion)]
        return float(TokenColumns(*one, np.array([largest_prompt])).cost(prices)[0])


@dataclass(frozen=True, slots=True)
class CallPrices:
    """USD per call; NaN where a price is unknown (its model's, or the model compared with).

    A cache hit costs 0 and saves its list price; a routed call saves the price of its tokens
    at the rule's `from_model` less its own price (negative if the routed-to model is dearer).
    `saved` is the two together (an `LLMCall`'s `saved_usd`), NaN for calls neither served
    from the cache nor routed. `shadow_saved` is what a shadow rule's routing would have
    saved: the list price less the price at `shadow_model` (0 for the other calls).
    """

    cost: FloatArray
    cache_saved: FloatArray
    routing_saved: FloatArray
    shadow_saved: FloatArray
    saved: FloatArray


@dataclass(frozen=True, slots=True)
class TokenColumns:
    """The token counts pricing needs; cache counts unknown are taken as 0. `tier_input` is
    the input count that selects a price tier (each call's own, or a group's largest)."""

    prompt: FloatArray
    cached: FloatArray
    written: FloatArray
    completion: FloatArray
    tier_input: FloatArray

    @classmethod
    def of(cls, columns: CallColumns) -> TokenColumns:
        return cls(
            columns.prompt_tokens,
            np.nan_to_num(columns.cached_tokens),
            np.nan_to_num(columns.cache_creation_tokens),
            columns.completion_tokens,
            columns.prompt_tokens,
        )

    def select(self, rows: npt.NDArray[np.bool_]) -> TokenColumns:
        return TokenColumns(
            self.prompt[rows],
            self.cached[rows],
            self.written[rows],
            self.completion[rows],
            self.tier_input[rows],
        )

    def cost(self, prices: UnitPrices) -> FloatArray:
        """Each input token priced once: uncached, cache read or cache write; then output."""
        total_input = self.tier_input
        uncached = self.prompt - self.cached - self.written
        return (
            uncached * prices.input.per_call(total_input)
            + self.cached * prices.cache_read.per_call(total_input)
            + self.written * prices.cache_write.per_call(total_input)
            + self.completion * prices.output.per_call(total_input)
        ) / 1_000_000


def analyze_cost(columns: CallColumns, costs: FloatArray, price_source: str) -> CostBreakdown:
    """Cost totals and breakdowns; models without a price are listed, never guessed."""
    unpriced = np.isnan(costs)
    unpriced_models = sorted(
        {str(model) for model in columns.model[unpriced & ~columns.tokens_unknown]}
    )
    return CostBreakdown(
        total_usd=float(np.nansum(costs)),
        by_model=columns.groups("model").sums(costs),
        by_provider=columns.groups("provider_name").sums(costs),
        by_agent=columns.groups("agent").sums(costs),
        by_operation=columns.groups("operation").sums(costs),
        unpriced_models=unpriced_models,
        unpriced_calls=int(unpriced.sum()),
        price_source=price_source,
    )
