"""Calls as numpy columns: the shape every analyzer works on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from obsdeco.models import LLMCall

NONE_KEY = "(none)"

FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]
BoolArray = npt.NDArray[np.bool_]


def _counts(values: list[int | None]) -> FloatArray:
    """Token counts as floats, an unknown count as NaN."""
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)


class CallColumns:
    """One array per field, built on first use; token arrays hold NaN for unreported counts."""

    def __init__(self, calls: Sequence[LLMCall]) -> None:
        self._fields = [call.__dict__ for call in calls]
        self.size = len(self._fields)

    def _objects(self, name: str) -> ObjectArray:
        return np.array([f[name] for f in self._fields], dtype=object)

    def _named(self, name: str) -> ObjectArray:
        return np.array([f[name] or NONE_KEY for f in self._fields], dtype=object)

    def _counts(self, name: str) -> FloatArray:
        return _counts([f[name] for f in self._fields])

    @cached_property
    def provider_name(self) -> ObjectArray:
        """The service that answered (what calls are priced at and reports group by)."""
        return self._objects("provider_name")

    @cached_property
    def model(self) -> ObjectArray:
        """The returned model, else the requested one (the key reports group by)."""
        return np.array([f["response_model"] or f["model"] for f in self._fields], dtype=object)

    @cached_property
    def requested_model(self) -> ObjectArray:
        return self._objects("model")

    @cached_property
    def cache_hit(self) -> BoolArray:
        """Calls answered by obsdeco's response cache."""
        return np.array([f["cache_hit"] is True for f in self._fields], dtype=bool)

    @cached_property
    def cache_miss(self) -> BoolArray:
        """Calls inside `obsdeco.cache()` that the cache could not answer."""
        return np.array([f["cache_hit"] is False for f in self._fields], dtype=bool)

    @cached_property
    def routed_from(self) -> ObjectArray:
        """The route rule's `from_model` of a routed call, else None."""
        return self._objects("routed_from")

    @cached_property
    def shadow_model(self) -> ObjectArray:
        """The model a shadow route rule would have sent the call to, else None."""
        return self._objects("shadow_model")

    @cached_property
    def routed(self) -> BoolArray:
        return np.array([f["routed_from"] is not None for f in self._fields], dtype=bool)

    @cached_property
    def shadowed(self) -> BoolArray:
        return np.array([f["shadow_model"] is not None for f in self._fields], dtype=bool)

    @cached_property
    def agent(self) -> ObjectArray:
        return self._named("agent_name")

    @cached_property
    def operation(self) -> ObjectArray:
        return self._named("operation")

    @cached_property
    def prompt_tokens(self) -> FloatArray:
        return self._counts("prompt_tokens")

    @cached_property
    def completion_tokens(self) -> FloatArray:
        return self._counts("completion_tokens")

    @cached_property
    def cached_tokens(self) -> FloatArray:
        return self._counts("cached_tokens")

    @cached_property
    def cache_creation_tokens(self) -> FloatArray:
        return self._counts("cache_creation_tokens")

    @cached_property
    def reasoning_tokens(self) -> FloatArray:
        return self._counts("reasoning_tokens")

    @cached_property
    def retries(self) -> FloatArray:
        return np.array([f["retries"] for f in self._fields], dtype=np.float64)

    @cached_property
    def rate_limited_retries(self) -> FloatArray:
        return np.array([f["rate_limited_retries"] for f in self._fields], dtype=np.float64)

    @cached_property
    def latency_ms(self) -> FloatArray:
        return np.array([f["latency_ms"] for f in self._fields], dtype=np.float64)

    @cached_property
    def time_to_first_token_ms(self) -> FloatArray:
        return self._counts("time_to_first_token_ms")

    @cached_property
    def success(self) -> BoolArray:
        return np.array([f["success"] for f in self._fields], dtype=bool)

    @cached_property
    def error_type(self) -> ObjectArray:
        return np.array([f["error_type"] or "other" for f in self._fields], dtype=object)

    @cached_property
    def total_tokens(self) -> FloatArray:
        """prompt + completion per call; NaN only when both are unknown."""
        both_unknown = np.isnan(self.prompt_tokens) & np.isnan(self.completion_tokens)
        total = np.nan_to_num(self.prompt_tokens) + np.nan_to_num(self.completion_tokens)
        return np.where(both_unknown, np.nan, total)

    def groups(self, column: str) -> Groups:
        """The factorised name column (`provider_name`, `model`, `agent`, `operation`, ...)."""
        cache = self.__dict__.setdefault("_groups", {})
        if column not in cache:
            cache[column] = Groups.of(getattr(self, column))
        return cache[column]  # type: ignore[no-any-return]

    @cached_property
    def tokens_unknown(self) -> BoolArray:
        """Calls where the provider did not report prompt or completion tokens."""
        return np.isnan(self.prompt_tokens) | np.isnan(self.completion_tokens)


@dataclass(frozen=True, slots=True)
class Groups:
    """A name column factorised once: sorted distinct names, and each call's index into them."""

    names: list[str]
    codes: npt.NDArray[np.intp]

    @classmethod
    def of(cls, values: ObjectArray) -> Groups:
        names = sorted(set(values.tolist()))
        position = {name: index for index, name in enumerate(names)}
        codes = np.array([position[value] for value in values.tolist()], dtype=np.intp)
        return cls(names, codes)

    def members(self) -> list[tuple[str, BoolArray]]:
        """Each name with the mask of its calls."""
        return [(name, self.codes == code) for code, name in enumerate(self.names)]

    def sums(self, values: FloatArray) -> dict[str, float]:
        """`values` summed per name (NaN adds nothing)."""
        totals = np.bincount(self.codes, weights=np.nan_to_num(values), minlength=len(self.names))
        return {name: float(total) for name, total in zip(self.names, totals, strict=True)}

    def counts(self, rows: BoolArray) -> dict[str, int]:
        """How many of the selected calls each name has (names without any left out)."""
        found = np.bincount(self.codes[rows], minlength=len(self.names))
        return {name: int(n) for name, n in zip(self.names, found, strict=True) if n}
